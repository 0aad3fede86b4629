"""The cluster config: what ``k8semu up`` starts, as a small typed model read from YAML.

A config is a YAML document (``cluster_configs/*.yaml``; the default one ships inside the
package as ``k8semu/cluster/default.yaml``)::

    kind: ClusterConfig
    version: v1alpha1
    name: local
    store: {replicas: 3, heartbeatInterval: 50ms, electionTimeout: 500ms, snapshotCount: 10000,
            members: [{name: s1, clientURL: "http://127.0.0.1:2379", peerURL: ...}, ...]}
    launcher: {readyTimeout: 30s, stopGracePeriod: 5s, restartBackoff: 500ms, ...}

Keys are camelCase, as in Kubernetes' own component configs; durations are strings with a unit
(``500ms``, ``2s``, ``1m30s``) and are held as whole milliseconds. Every default lives in the
constants below (the store's timings are the store's own defaults, from
``k8semu.store.config``), and a field left out of the YAML takes it. Unknown keys, wrong types
and bad values are ClusterConfigError naming the field path (``store.replicas: must be >= 1``).

Later sections (apiserver, scheduler, controllerManager, nodes) are added as further optional
top-level keys of the same document; ``version`` changes only for an incompatible change.

This module reads and validates; it must not start processes or touch the network.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import io
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from k8semu import durations
from k8semu.cluster.errors import ClusterConfigError
from k8semu.store import config as store_config
from k8semu.transport import AddressError, parse_url

__all__ = [
    "KIND",
    "VERSION",
    "ClusterConfig",
    "LauncherSpec",
    "StoreMemberSpec",
    "StoreSpec",
    "default_config_text",
    "default_store_members",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration_ms",
]

KIND = "ClusterConfig"
VERSION = "v1alpha1"
DEFAULT_CONFIG_RESOURCE = "default.yaml"
DEFAULT_CONFIG_SOURCE = "<built-in default config>"

# -- defaults: the one place ------------------------------------------------------------------

DEFAULT_NAME = "local"
DEFAULT_STORE_REPLICAS = 3
# etcd's well-known ports for the first member; member i (from 0) adds i * the stride, which is
# the layout of etcd's own local-cluster examples: 2379/2380, 12379/12380, 22379/22380.
DEFAULT_STORE_HOST = "127.0.0.1"
DEFAULT_STORE_CLIENT_PORT = 2379
DEFAULT_STORE_PEER_PORT = 2380
DEFAULT_STORE_PORT_STRIDE = 10_000
DEFAULT_STORE_HEARTBEAT_MS = store_config.DEFAULT_HEARTBEAT_MS
DEFAULT_STORE_ELECTION_MS = store_config.DEFAULT_ELECTION_MS
DEFAULT_STORE_SNAPSHOT_COUNT = store_config.DEFAULT_SNAPSHOT_COUNT
# The store refuses an election timeout shorter than this many heartbeats.
STORE_MIN_ELECTION_HEARTBEATS = 5

DEFAULT_READY_TIMEOUT_MS = 30_000
DEFAULT_STOP_GRACE_MS = 5_000
DEFAULT_RESTART_BACKOFF_MS = 500
DEFAULT_MAX_RESTART_BACKOFF_MS = 10_000
DEFAULT_BACKOFF_RESET_AFTER_MS = 10_000
DEFAULT_MAX_RESTARTS = 5

# A member name becomes a directory and file name and seeds the member id.
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


# -- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreMemberSpec:
    """One store replica: its name and its client and peer URLs, ``http://HOST:PORT``."""

    name: str
    client_url: str
    peer_url: str

    @property
    def client_address(self) -> str:
        """``HOST:PORT`` of the client URL (what etcdctl's ``--endpoints`` takes)."""
        return self.client_url.removeprefix("http://")

    @property
    def peer_address(self) -> str:
        """``HOST:PORT`` of the peer URL."""
        return self.peer_url.removeprefix("http://")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSpec:
    """The ``store`` section: a static cluster of ``replicas`` store processes.

    Invariants after construction: ``len(members) == replicas`` (an empty ``members`` becomes
    the default layout), member names and addresses are unique, URLs are ``http://HOST:PORT``
    with a non-zero port, and the timings are ones the store accepts.
    """

    replicas: int = DEFAULT_STORE_REPLICAS
    heartbeat_ms: int = DEFAULT_STORE_HEARTBEAT_MS
    election_ms: int = DEFAULT_STORE_ELECTION_MS
    snapshot_count: int = DEFAULT_STORE_SNAPSHOT_COUNT
    members: tuple[StoreMemberSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ClusterConfigError("store.replicas", "must be >= 1")
        if self.heartbeat_ms < 1:
            raise ClusterConfigError("store.heartbeatInterval", "must be at least 1ms")
        if self.election_ms < STORE_MIN_ELECTION_HEARTBEATS * self.heartbeat_ms:
            raise ClusterConfigError(
                "store.electionTimeout",
                f"must be at least {STORE_MIN_ELECTION_HEARTBEATS}x store.heartbeatInterval "
                f"({format_duration(self.election_ms)} < {STORE_MIN_ELECTION_HEARTBEATS} x "
                f"{format_duration(self.heartbeat_ms)})",
            )
        if self.snapshot_count < 1:
            raise ClusterConfigError("store.snapshotCount", "must be >= 1")
        if not self.members:
            object.__setattr__(self, "members", default_store_members(self.replicas))
        elif len(self.members) != self.replicas:
            raise ClusterConfigError(
                "store.members",
                f"lists {len(self.members)} members but store.replicas is {self.replicas}; list "
                "one member per replica, or leave store.members out to use the default ports",
            )
        object.__setattr__(self, "members", tuple(_checked_members(self.members)))


@dataclass(frozen=True, slots=True, kw_only=True)
class LauncherSpec:
    """The ``launcher`` section: how ``k8semu up`` waits for, restarts and stops processes.

    A process that exits unexpectedly is started again after ``restart_backoff_ms``, doubling
    per crash up to ``max_restart_backoff_ms``; one that ran ``backoff_reset_after_ms`` without
    exiting starts from the first delay again. After ``max_restarts`` restarts in a row that
    each crashed sooner than that, the launcher gives up and stops the cluster.
    """

    ready_timeout_ms: int = DEFAULT_READY_TIMEOUT_MS
    stop_grace_ms: int = DEFAULT_STOP_GRACE_MS
    restart_backoff_ms: int = DEFAULT_RESTART_BACKOFF_MS
    max_restart_backoff_ms: int = DEFAULT_MAX_RESTART_BACKOFF_MS
    backoff_reset_after_ms: int = DEFAULT_BACKOFF_RESET_AFTER_MS
    max_restarts: int = DEFAULT_MAX_RESTARTS

    def __post_init__(self) -> None:
        if self.ready_timeout_ms < 1:
            raise ClusterConfigError("launcher.readyTimeout", "must be at least 1ms")
        if self.stop_grace_ms < 0:
            raise ClusterConfigError("launcher.stopGracePeriod", "must be >= 0")
        if self.restart_backoff_ms < 1:
            raise ClusterConfigError("launcher.restartBackoff", "must be at least 1ms")
        if self.max_restart_backoff_ms < self.restart_backoff_ms:
            raise ClusterConfigError(
                "launcher.maxRestartBackoff",
                f"must be >= launcher.restartBackoff ({format_duration(self.restart_backoff_ms)})",
            )
        if self.backoff_reset_after_ms < 1:
            raise ClusterConfigError("launcher.backoffResetAfter", "must be at least 1ms")
        if self.max_restarts < 0:
            raise ClusterConfigError("launcher.maxRestarts", "must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """A whole cluster config. ``name`` names the cluster: it picks the default data directory
    (``.k8semu/<name>``) and the store's cluster token, so the same name finds the same data."""

    name: str = DEFAULT_NAME
    store: StoreSpec = field(default_factory=StoreSpec)
    launcher: LauncherSpec = field(default_factory=LauncherSpec)
    #: Where the config came from (a file name, or the built-in default), for messages.
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise ClusterConfigError(
                "name",
                f"{self.name!r} must be 1-63 lowercase letters, digits and '-', starting and "
                "ending with a letter or digit",
            )

    @property
    def store_token(self) -> str:
        """The store's ``--initial-cluster-token``; a data dir remembers it."""
        return f"k8semu-{self.name}"

    @property
    def default_data_dir(self) -> Path:
        """``.k8semu/<name>``, relative to the working directory."""
        return Path(".k8semu") / self.name


def default_store_members(replicas: int) -> tuple[StoreMemberSpec, ...]:
    """``s1``..``sN`` on 127.0.0.1 at 2379/2380, 12379/12380, 22379/22380, ..."""
    last_port = DEFAULT_STORE_PEER_PORT + (replicas - 1) * DEFAULT_STORE_PORT_STRIDE
    if last_port > 65535:
        raise ClusterConfigError(
            "store.replicas",
            f"{replicas} replicas do not fit the default ports (2379/2380 + "
            f"{DEFAULT_STORE_PORT_STRIDE} per replica); list store.members with their URLs",
        )
    return tuple(
        StoreMemberSpec(
            name=f"s{i + 1}",
            client_url=f"http://{DEFAULT_STORE_HOST}:"
            f"{DEFAULT_STORE_CLIENT_PORT + i * DEFAULT_STORE_PORT_STRIDE}",
            peer_url=f"http://{DEFAULT_STORE_HOST}:"
            f"{DEFAULT_STORE_PEER_PORT + i * DEFAULT_STORE_PORT_STRIDE}",
        )
        for i in range(replicas)
    )


def _checked_members(members: tuple[StoreMemberSpec, ...]) -> Iterator[StoreMemberSpec]:
    """Each member with normalized URLs; errors name ``store.members[i].<field>``."""
    names: dict[str, int] = {}
    addresses: dict[str, str] = {}
    for i, m in enumerate(members):
        path = f"store.members[{i}]"
        if not _NAME_RE.fullmatch(m.name):
            raise ClusterConfigError(
                f"{path}.name",
                f"{m.name!r} must be 1-63 lowercase letters, digits and '-', starting and ending "
                "with a letter or digit",
            )
        if m.name in names:
            raise ClusterConfigError(
                f"{path}.name", f"{m.name!r} is already the name of store.members[{names[m.name]}]"
            )
        names[m.name] = i
        urls = {}
        for key, url in (("clientURL", m.client_url), ("peerURL", m.peer_url)):
            where = f"{path}.{key}"
            try:
                address = parse_url(url, flag=where)
            except AddressError as exc:
                raise ClusterConfigError(where, str(exc).removeprefix(f"{where}: ")) from exc
            host, _, port = address.rpartition(":")
            if int(port) == 0:
                raise ClusterConfigError(
                    where, f"{url!r}: port 0 is not allowed (peers and clients need a fixed port)"
                )
            if _is_unspecified(host):
                raise ClusterConfigError(
                    where, f"{url!r}: give the address to listen on and advertise, not {host}"
                )
            if address in addresses:
                raise ClusterConfigError(where, f"{address} is also {addresses[address]}")
            addresses[address] = where
            urls[key] = f"http://{address}"
        yield StoreMemberSpec(name=m.name, client_url=urls["clientURL"], peer_url=urls["peerURL"])


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


# -- durations ----------------------------------------------------------------------------------


def parse_duration_ms(value: object, path: str) -> int:
    """``"500ms"``, ``"1.5s"``, ``"1m30s"`` -> whole milliseconds; errors name ``path``."""
    if not isinstance(value, str):
        raise ClusterConfigError(
            path, f"expected a duration such as 500ms or 2s, got {_describe(value)}"
        )
    try:
        return durations.parse_ms(value)
    except ValueError as exc:
        raise ClusterConfigError(path, str(exc)) from None


format_duration = durations.format_ms


# -- reading YAML -------------------------------------------------------------------------------


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key_node.value!r} is given twice", key_node.start_mark
                )
            seen.add(key_node.value)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Fields:
    """One YAML mapping being read at ``path``; a key never read is an unknown field."""

    def __init__(self, raw: object, path: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ClusterConfigError(path, f"expected a mapping, got {_describe(raw)}")
        for key in raw:
            if not isinstance(key, str):
                raise ClusterConfigError(path, f"keys must be strings, got {_describe(key)}")
        self.raw: dict[str, object] = raw
        self.path = path
        self._read: list[str] = []

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> object:
        """The raw value, or None when absent (an explicit null counts as absent)."""
        self._read.append(key)
        return self.raw.get(key)

    def integer(self, key: str, default: int) -> int:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ClusterConfigError(
                self.where(key), f"expected an integer, got {_describe(value)}"
            )
        return value

    def string(self, key: str, default: str) -> str:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ClusterConfigError(self.where(key), f"expected a string, got {_describe(value)}")
        return value

    def duration_ms(self, key: str, default: int) -> int:
        value = self.get(key)
        return default if value is None else parse_duration_ms(value, self.where(key))

    def section(self, key: str) -> _Fields:
        return _Fields(self.get(key), self.where(key))

    def items(self, key: str) -> list[tuple[str, object]] | None:
        """The list at ``key`` as (path, item) pairs, or None when absent."""
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise ClusterConfigError(self.where(key), f"expected a list, got {_describe(value)}")
        return [(f"{self.where(key)}[{i}]", item) for i, item in enumerate(value)]

    def finish(self) -> None:
        """Raise for the first key that was never read."""
        for key in self.raw:
            if key not in self._read:
                known = sorted(set(self._read))
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise ClusterConfigError(
                    self.where(key), f"unknown field ({hint}known: {', '.join(known)})"
                )


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value)
    )
    if kind is not None:
        return f"{kind} ({value!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _read_store(f: _Fields) -> StoreSpec:
    replicas = f.get("replicas")
    heartbeat_ms = f.duration_ms("heartbeatInterval", DEFAULT_STORE_HEARTBEAT_MS)
    election_ms = f.duration_ms("electionTimeout", DEFAULT_STORE_ELECTION_MS)
    snapshot_count = f.integer("snapshotCount", DEFAULT_STORE_SNAPSHOT_COUNT)
    members: list[StoreMemberSpec] = []
    for i, (path, item) in enumerate(f.items("members") or ()):
        m = _Fields(item, path)
        members.append(
            StoreMemberSpec(
                name=m.string("name", f"s{i + 1}"),
                client_url=_required_str(m, "clientURL"),
                peer_url=_required_str(m, "peerURL"),
            )
        )
        m.finish()
    if f.get("members") is not None and not members:
        raise ClusterConfigError(f.where("members"), "must list at least one member")
    f.finish()
    if replicas is None:
        count = len(members) or DEFAULT_STORE_REPLICAS
    elif isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ClusterConfigError(
            f.where("replicas"), f"expected an integer, got {_describe(replicas)}"
        )
    else:
        count = replicas
    return StoreSpec(
        replicas=count,
        heartbeat_ms=heartbeat_ms,
        election_ms=election_ms,
        snapshot_count=snapshot_count,
        members=tuple(members),
    )


def _read_launcher(f: _Fields) -> LauncherSpec:
    spec = LauncherSpec(
        ready_timeout_ms=f.duration_ms("readyTimeout", DEFAULT_READY_TIMEOUT_MS),
        stop_grace_ms=f.duration_ms("stopGracePeriod", DEFAULT_STOP_GRACE_MS),
        restart_backoff_ms=f.duration_ms("restartBackoff", DEFAULT_RESTART_BACKOFF_MS),
        max_restart_backoff_ms=f.duration_ms("maxRestartBackoff", DEFAULT_MAX_RESTART_BACKOFF_MS),
        backoff_reset_after_ms=f.duration_ms("backoffResetAfter", DEFAULT_BACKOFF_RESET_AFTER_MS),
        max_restarts=f.integer("maxRestarts", DEFAULT_MAX_RESTARTS),
    )
    f.finish()
    return spec


def _required_str(f: _Fields, key: str) -> str:
    if f.get(key) is None:
        raise ClusterConfigError(f.where(key), "required")
    return f.string(key, "")


def _read_document(raw: object) -> ClusterConfig:
    if raw is None:
        raise ClusterConfigError("", f"empty document; a config starts with kind: {KIND}")
    top = _Fields(raw, "")
    for key, want in (("kind", KIND), ("version", VERSION)):
        value = top.get(key)
        if value is None:
            raise ClusterConfigError(key, f"required; must be {want}")
        if value != want:
            raise ClusterConfigError(key, f"must be {want}, got {value!r}")
    name = top.string("name", DEFAULT_NAME)
    store = _read_store(top.section("store"))
    launcher = _read_launcher(top.section("launcher"))
    top.finish()
    return ClusterConfig(name=name, store=store, launcher=launcher)


def parse_config(text: str, *, source: str = "<string>") -> ClusterConfig:
    """Read a config from YAML text. Errors are ClusterConfigError naming ``source`` and the
    field path."""
    try:
        stream = io.StringIO(text)
        stream.name = source  # PyYAML names the stream in its errors
        raw = yaml.load(stream, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ClusterConfigError("", f"not valid YAML: {exc}", source=source) from exc
    try:
        config = _read_document(raw)
    except ClusterConfigError as exc:
        raise ClusterConfigError(exc.path, exc.reason, source=source) from None
    return dataclasses.replace(config, source=source)


def default_config_text() -> str:
    """The built-in default config (``k8semu/cluster/default.yaml``) as YAML text."""
    resource = importlib.resources.files("k8semu.cluster").joinpath(DEFAULT_CONFIG_RESOURCE)
    return resource.read_text(encoding="utf-8")


def load_config(path: Path | None = None) -> ClusterConfig:
    """The config in the file at ``path``, or the built-in default when ``path`` is None."""
    if path is None:
        return parse_config(default_config_text(), source=DEFAULT_CONFIG_SOURCE)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ClusterConfigError("", f"cannot read: {exc.strerror}", source=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ClusterConfigError("", f"not UTF-8 text: {exc}", source=str(path)) from exc
    return parse_config(text, source=str(path))
