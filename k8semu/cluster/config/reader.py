"""Reading a cluster config from YAML: one reader per section, strict about what it accepts.

Each section's reader takes the raw mapping, reads every key it knows (with its default) and
builds that section's dataclass, which checks the values. A key never read is an unknown field,
a key given twice in one mapping is refused, and a value of the wrong type is an error naming
its path: ``store.replicas: expected an integer, got a string ('three')``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from k8semu.api.names import is_dns1123_label
from k8semu.cluster.config import defaults
from k8semu.cluster.config.autoscaling import (
    HPA_DURATION_KEYS,
    HPA_SECTION,
    HorizontalPodAutoscalerSpec,
)
from k8semu.cluster.config.backups import BackupsSpec
from k8semu.cluster.config.cluster import CONTROL_PLANE, ClusterConfig
from k8semu.cluster.config.hosts import (
    ControlPlaneSpec,
    HostSpec,
    InstanceSpec,
    default_instances,
    default_rest_port,
)
from k8semu.cluster.config.network import NetworkSpec
from k8semu.cluster.config.nodes import (
    DEFAULT_SCALE_DOWN_UNNEEDED_MS,
    DEFAULT_SCALE_DOWN_UTILIZATION,
    AutoscalingSpec,
    NodeSpec,
    Taint,
)
from k8semu.cluster.config.security import SecuritySpec
from k8semu.cluster.config.store import StoreMemberSpec, StoreSpec
from k8semu.cluster.config.timings import TIMING_KEYS, LauncherSpec, TimingsSpec
from k8semu.cluster.config.values import (
    check_optional_port,
    check_port,
    describe,
    parse_duration_ms,
)
from k8semu.cluster.errors import ClusterConfigError

__all__ = ["default_config_text", "load_config", "parse_config"]

_Spec = TypeVar(
    "_Spec",
    NetworkSpec,
    TimingsSpec,
    LauncherSpec,
    BackupsSpec,
    HorizontalPodAutoscalerSpec,
    SecuritySpec,
)


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
    resource = importlib.resources.files("k8semu.cluster").joinpath(
        defaults.DEFAULT_CONFIG_RESOURCE
    )
    return resource.read_text(encoding="utf-8")


def load_config(path: Path | None = None) -> ClusterConfig:
    """The config in the file at ``path``, or the built-in default when ``path`` is None."""
    if path is None:
        return parse_config(default_config_text(), source=defaults.DEFAULT_CONFIG_SOURCE)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ClusterConfigError("", f"cannot read: {exc.strerror}", source=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ClusterConfigError("", f"not UTF-8 text: {exc}", source=str(path)) from exc
    return parse_config(text, source=str(path))


# -- YAML mappings ------------------------------------------------------------------------------

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
            raise ClusterConfigError(path, f"expected a mapping, got {describe(raw)}")
        for key in raw:
            if not isinstance(key, str):
                raise ClusterConfigError(path, f"keys must be strings, got {describe(key)}")
        self.raw: dict[str, object] = raw
        self.path = path
        self._read: list[str] = []

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> object:
        """The raw value, or None when absent (an explicit null counts as absent)."""
        self._read.append(key)
        return self.raw.get(key)

    def optional_integer(self, key: str) -> int | None:
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ClusterConfigError(self.where(key), f"expected an integer, got {describe(value)}")
        return value

    def integer(self, key: str, default: int) -> int:
        value = self.optional_integer(key)
        return default if value is None else value

    def string(self, key: str, default: str) -> str:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ClusterConfigError(self.where(key), f"expected a string, got {describe(value)}")
        return value

    def required_string(self, key: str) -> str:
        if self.raw.get(key) is None:
            self._read.append(key)
            raise ClusterConfigError(self.where(key), "required")
        return self.string(key, "")

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ClusterConfigError(
                self.where(key), f"expected true or false, got {describe(value)}"
            )
        return value

    def number(self, key: str, default: float) -> float:
        """An integer or a decimal number (``0.1``)."""
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ClusterConfigError(self.where(key), f"expected a number, got {describe(value)}")
        return float(value)

    def duration_ms(self, key: str, default: int) -> int:
        value = self.get(key)
        return default if value is None else parse_duration_ms(value, self.where(key))

    def duration_or_off_ms(self, key: str, default: int) -> int:
        """A duration that ``0`` turns off (as for kube-apiserver: Go's durations accept a bare
        0): 0 then."""
        value = self.raw.get(key)
        if value == "0" or (type(value) is int and value == 0):
            self._read.append(key)
            return 0
        return self.duration_ms(key, default)

    def mapping(self, key: str) -> tuple[tuple[str, str], ...] | None:
        """A mapping of strings (numbers are taken as their text: ``cpu: 4``)."""
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ClusterConfigError(self.where(key), f"expected a mapping, got {describe(value)}")
        out = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise ClusterConfigError(
                    self.where(key), f"keys must be strings, got {describe(k)}"
                )
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise ClusterConfigError(
                    f"{self.where(key)}.{k}", f"expected a string or a number, got {describe(v)}"
                )
            out.append((k, str(v)))
        return tuple(out)

    def section(self, key: str) -> _Fields:
        return _Fields(self.get(key), self.where(key))

    def items(self, key: str) -> list[tuple[str, object]] | None:
        """The list at ``key`` as (path, item) pairs, or None when absent."""
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise ClusterConfigError(self.where(key), f"expected a list, got {describe(value)}")
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


# (attribute, YAML key, reader of the key): one field of a flat section.
_Field = tuple[str, str, Callable[[_Fields, str, Any], Any]]

# -- the document and its sections ---------------------------------------------------------------


def _read_document(raw: object) -> ClusterConfig:
    if raw is None:
        raise ClusterConfigError("", f"empty document; a config starts with kind: {defaults.KIND}")
    top = _Fields(raw, "")
    for key, want in (("kind", defaults.KIND), ("version", defaults.VERSION)):
        value = top.get(key)
        if value is None:
            raise ClusterConfigError(key, f"required; must be {want}")
        if value != want:
            raise ClusterConfigError(key, f"must be {want}, got {value!r}")
    name = top.string("name", defaults.DEFAULT_NAME)
    hosts = _read_hosts(top)
    first = hosts[0].name if hosts else defaults.DEFAULT_HOST_NAME
    store = _read_store(top.section("store"))
    api_server, scheduler, controller_manager = (
        _read_control_plane(top.section(key), key, prefix, port, stride, first)
        for _, key, prefix, port, stride in CONTROL_PLANE
    )
    nodes = _read_nodes(top, first)
    network = _read_flat(top.section("network"), NetworkSpec, _NETWORK_FIELDS)
    timings = _read_flat(top.section("timings"), TimingsSpec, _TIMINGS_FIELDS)
    launcher = _read_flat(top.section("launcher"), LauncherSpec, _LAUNCHER_FIELDS)
    backups = _read_flat(top.section("backups"), BackupsSpec, _BACKUPS_FIELDS)
    security = _read_flat(top.section("security"), SecuritySpec, _SECURITY_FIELDS)
    hpa = _read_flat(top.section(HPA_SECTION), HorizontalPodAutoscalerSpec, _HPA_FIELDS)
    addons = _read_addons(top)
    top.finish()
    return ClusterConfig(
        name=name,
        hosts=hosts,
        store=store,
        api_server=api_server,
        scheduler=scheduler,
        controller_manager=controller_manager,
        nodes=nodes,
        network=network,
        timings=timings,
        launcher=launcher,
        backups=backups,
        security=security,
        horizontal_pod_autoscaler=hpa,
        addons=addons,
    )


def _read_hosts(f: _Fields) -> tuple[HostSpec, ...]:
    hosts = []
    items = f.items("hosts")
    if items is not None and not items:
        raise ClusterConfigError(f.where("hosts"), "must list at least one host")
    for path, item in items or ():
        h = _Fields(item, path)
        hosts.append(HostSpec(name=h.required_string("name"), address=h.required_string("address")))
        h.finish()
    return tuple(hosts)


def _read_store(f: _Fields) -> StoreSpec:
    f.get("replicas")  # read below, once it is known whether it may be given
    heartbeat_ms = f.duration_ms("heartbeatInterval", defaults.DEFAULT_STORE_HEARTBEAT_MS)
    election_ms = f.duration_ms("electionTimeout", defaults.DEFAULT_STORE_ELECTION_MS)
    snapshot_count = f.integer("snapshotCount", defaults.DEFAULT_STORE_SNAPSHOT_COUNT)
    compaction_mode = f.string("autoCompactionMode", defaults.DEFAULT_STORE_AUTO_COMPACTION_MODE)
    retention = f.get("autoCompactionRetention")
    if retention is None:
        retention = defaults.DEFAULT_STORE_AUTO_COMPACTION_RETENTION
    elif isinstance(retention, bool) or not isinstance(retention, int | str):
        raise ClusterConfigError(
            f.where("autoCompactionRetention"),
            f"expected a duration (10m) or a number, got {describe(retention)}",
        )
    quota = f.integer("quotaBackendBytes", defaults.DEFAULT_STORE_QUOTA_BACKEND_BYTES)
    members = _read_store_members(f)
    backend = f.string("backend", defaults.DEFAULT_STORE_BACKEND)
    binary = f.string("etcdBinary", defaults.DEFAULT_ETCD_BINARY)
    endpoints = _read_store_endpoints(f)
    f.finish()
    if endpoints:
        for key in ("members", "replicas"):
            if f.raw.get(key) is not None:
                raise ClusterConfigError(
                    f.where(key),
                    "not with store.endpoints (an external etcd: nothing of the store is started)",
                )
        return StoreSpec(backend=backend, endpoints=endpoints, etcd_binary=binary)
    if f.raw.get("endpoints") is not None:
        raise ClusterConfigError(f.where("endpoints"), "must list at least one HOST:PORT")
    replicas = f.optional_integer("replicas")
    return StoreSpec(
        replicas=(len(members) or defaults.DEFAULT_STORE_REPLICAS)
        if replicas is None
        else replicas,
        heartbeat_ms=heartbeat_ms,
        election_ms=election_ms,
        snapshot_count=snapshot_count,
        auto_compaction_mode=compaction_mode,
        auto_compaction_retention=str(retention),
        quota_backend_bytes=quota,
        members=members,
        backend=backend,
        etcd_binary=binary,
    )


def _read_store_members(f: _Fields) -> tuple[StoreMemberSpec, ...]:
    members: list[StoreMemberSpec] = []
    for i, (path, item) in enumerate(f.items("members") or ()):
        m = _Fields(item, path)
        members.append(
            StoreMemberSpec(
                name=m.string("name", f"s{i + 1}"),
                client_url=m.required_string("clientURL"),
                peer_url=m.required_string("peerURL"),
                host=m.string("host", ""),
                metrics_url=m.string("metricsURL", ""),
            )
        )
        m.finish()
    if f.raw.get("members") is not None and not members:
        raise ClusterConfigError(f.where("members"), "must list at least one member")
    return tuple(members)


def _read_store_endpoints(f: _Fields) -> tuple[str, ...]:
    endpoints: list[str] = []
    for path, item in f.items("endpoints") or ():
        if not isinstance(item, str):
            raise ClusterConfigError(path, f"expected HOST:PORT, got {describe(item)}")
        endpoints.append(item.removeprefix("http://"))
    return tuple(endpoints)


def _read_control_plane(
    f: _Fields, key: str, prefix: str, port: int, stride: int, first_host: str
) -> ControlPlaneSpec:
    f.get("replicas")
    items = f.items("instances")
    f.finish()
    replicas = f.optional_integer("replicas")
    if items is None:
        count = 1 if replicas is None else replicas
        if count < 0:
            raise ClusterConfigError(f.where("replicas"), "must be >= 0")
        return ControlPlaneSpec(
            replicas=count,
            instances=default_instances(key, prefix, count, first_host, port, stride),
        )
    instances = []
    for i, (path, item) in enumerate(items):
        g = _Fields(item, path)
        inst = InstanceSpec(
            name=g.string("name", f"{prefix}-{i + 1}"),
            host=g.string("host", first_host),
            port=g.integer("port", port + i * stride),
            metrics_port=g.integer("metricsPort", 0),
            rest_port=(
                g.integer("restPort", default_rest_port(key, port + i * stride))
                if key == "apiServer"
                else 0
            ),
        )
        g.finish()
        if not is_dns1123_label(inst.name):
            raise ClusterConfigError(f"{path}.name", f"{inst.name!r} must be a DNS label")
        check_port(inst.port, f"{path}.port")
        check_optional_port(inst.metrics_port, f"{path}.metricsPort")
        check_optional_port(inst.rest_port, f"{path}.restPort")
        instances.append(inst)
    if replicas is not None and replicas != len(instances):
        raise ClusterConfigError(
            f.where("instances"),
            f"lists {len(instances)} instances but {f.where('replicas')} is {replicas}",
        )
    return ControlPlaneSpec(replicas=len(instances), instances=tuple(instances))


def _read_nodes(top: _Fields, first_host: str) -> tuple[NodeSpec, ...] | None:
    items = top.items("nodes")
    pools = top.items("hollowNodes")
    if items is None and pools is None:
        return None
    nodes = [
        _read_node(_Fields(item, path), i, first_host) for i, (path, item) in enumerate(items or ())
    ]
    for i, (path, item) in enumerate(pools or ()):
        nodes.append(_read_hollow_pool(_Fields(item, path), i, first_host))
    return tuple(nodes)


def _read_node(n: _Fields, index: int, first_host: str) -> NodeSpec:
    node = NodeSpec(
        name=n.string("name", f"node-{index + 1}"),
        host=n.string("host", first_host),
        node_ip=(node_ip := n.string("nodeIP", f"{defaults.DEFAULT_NODE_IP_PREFIX}{index + 1}")),
        runtime=n.string("runtime", defaults.DEFAULT_RUNTIME),
        capacity=n.mapping("capacity") or defaults.DEFAULT_CAPACITY,
        labels=n.mapping("labels") or (),
        taints=_read_taints(n),
        kubelet_port=n.integer("kubeletPort", defaults.DEFAULT_KUBELET_PORT),
        proxy_port=n.integer("proxyPort", defaults.DEFAULT_PROXY_PORT),
        tunnel_port=n.integer("tunnelPort", defaults.default_tunnel_port(node_ip)),
        ingress_port=n.integer("ingressPort", defaults.DEFAULT_INGRESS_PORT),
        ingress_tls_port=n.integer("ingressTLSPort", defaults.DEFAULT_INGRESS_TLS_PORT),
        kubelet_metrics_port=n.integer("kubeletMetricsPort", 0),
        proxy_metrics_port=n.integer("proxyMetricsPort", 0),
        proxy=n.boolean("proxy", True),
        autoscaling=_read_autoscaling(n, None),
        index=index,
    )
    n.finish()
    return node


def _read_hollow_pool(n: _Fields, index: int, first_host: str) -> NodeSpec:
    count = n.optional_integer("count")
    autoscaling = _read_autoscaling(n, count)
    if autoscaling is not None:
        count = autoscaling.max_nodes  # its slots; the YAML count is the initial size
    elif count is None or count < 1:
        raise ClusterConfigError(n.where("count"), "required, and must be >= 1")
    pool = NodeSpec(
        name=n.string("name", f"hollow-{index + 1}"),
        host=n.string("host", first_host),
        node_ip=n.string("nodeIP", f"{defaults.DEFAULT_HOLLOW_IP_PREFIX}{index + 1}"),
        runtime="simulated",
        capacity=n.mapping("capacity") or defaults.DEFAULT_CAPACITY,
        labels=n.mapping("labels") or (),
        taints=_read_taints(n),
        proxy=False,
        kubelet_metrics_port=n.integer("kubeletMetricsPort", 0),
        count=count,
        autoscaling=autoscaling,
        index=index,
    )
    n.finish()
    return pool


def _read_autoscaling(n: _Fields, count: int | None) -> AutoscalingSpec | None:
    """A pool's ``autoscaling`` (None when absent). ``count`` is a hollow pool's ``count``,
    which is then its initial size (default ``minNodes``, as ``initialNodes`` of a process
    pool)."""
    if n.get("autoscaling") is None:
        return None
    a = n.section("autoscaling")
    min_nodes = a.integer("minNodes", 0)
    initial = a.optional_integer("initialNodes")
    if initial is not None and count is not None:
        raise ClusterConfigError(a.where("initialNodes"), f"{n.where('count')} is also given")
    utilization = a.get("scaleDownUtilization")
    if utilization is None:
        utilization = DEFAULT_SCALE_DOWN_UTILIZATION
    if isinstance(utilization, bool) or not isinstance(utilization, int | float):
        raise ClusterConfigError(
            a.where("scaleDownUtilization"), f"expected a number, got {describe(utilization)}"
        )
    spec = AutoscalingSpec(
        min_nodes=min_nodes,
        max_nodes=a.integer("maxNodes", 0),
        initial_nodes=min_nodes if initial is None else initial,
        scale_down_utilization=float(utilization),
        scale_down_unneeded_ms=a.duration_ms(
            "scaleDownUnneededTime", DEFAULT_SCALE_DOWN_UNNEEDED_MS
        ),
    )
    a.finish()
    spec.check(a.path)
    if count is not None:
        if not spec.min_nodes <= count <= spec.max_nodes:
            raise ClusterConfigError(
                n.where("count"),
                f"the initial size of an autoscaled pool: must be between {a.path}.minNodes"
                f" ({spec.min_nodes}) and {a.path}.maxNodes ({spec.max_nodes}), got {count}",
            )
        spec = dataclasses.replace(spec, initial_nodes=count)
    return spec


def _read_taints(f: _Fields) -> tuple[Taint, ...]:
    taints = []
    for path, item in f.items("taints") or ():
        t = _Fields(item, path)
        taints.append(
            Taint(key=t.required_string("key"), value=t.string("value", ""),
                  effect=t.required_string("effect"))
        )  # fmt: skip
        t.finish()
    return tuple(taints)


# (attribute, YAML key, how it is read) of the sections whose every key fills one attribute;
# a left-out key takes the attribute's default.
_NETWORK_FIELDS: tuple[_Field, ...] = (
    ("cluster_cidr", "clusterCIDR", _Fields.string),
    ("node_cidr_mask_size", "nodeCIDRMaskSize", _Fields.integer),
    ("service_cidr", "serviceCIDR", _Fields.string),
    ("node_port_range", "nodePortRange", _Fields.string),
    ("load_balancer_pool", "loadBalancerPool", _Fields.string),
    ("cluster_dns", "clusterDNS", _Fields.string),
    ("cluster_domain", "clusterDomain", _Fields.string),
)
_TIMINGS_FIELDS: tuple[_Field, ...] = (
    *((attr, key, _Fields.duration_ms) for attr, key in TIMING_KEYS),
    ("etcd_compaction_interval_ms", "etcdCompactionInterval", _Fields.duration_or_off_ms),
    ("event_ttl_ms", "eventTTL", _Fields.duration_or_off_ms),
    ("metric_resolution_ms", "metricResolution", _Fields.duration_or_off_ms),
)
_LAUNCHER_FIELDS: tuple[_Field, ...] = (
    ("ready_timeout_ms", "readyTimeout", _Fields.duration_ms),
    ("stop_grace_ms", "stopGracePeriod", _Fields.duration_ms),
    ("restart_backoff_ms", "restartBackoff", _Fields.duration_ms),
    ("max_restart_backoff_ms", "maxRestartBackoff", _Fields.duration_ms),
    ("backoff_reset_after_ms", "backoffResetAfter", _Fields.duration_ms),
    ("max_restarts", "maxRestarts", _Fields.integer),
    ("log_max_size_mb", "logMaxSizeMB", _Fields.integer),
    ("log_max_backups", "logMaxBackups", _Fields.integer),
)

_BACKUPS_FIELDS: tuple[_Field, ...] = (
    ("interval_ms", "interval", _Fields.duration_or_off_ms),
    ("directory", "directory", _Fields.string),
    ("keep", "keep", _Fields.integer),
)
_SECURITY_FIELDS: tuple[_Field, ...] = (("tls", "tls", _Fields.boolean),)
_HPA_FIELDS: tuple[_Field, ...] = (
    *((attr, key, _Fields.duration_ms) for attr, key, _ in HPA_DURATION_KEYS),
    ("tolerance", "tolerance", _Fields.number),
)


def _read_flat(f: _Fields, spec: type[_Spec], fields: Sequence[_Field]) -> _Spec:
    """The section ``spec`` (a dataclass) from ``f``, one attribute per key of ``fields``."""
    default = spec()
    values = {attr: read(f, key, getattr(default, attr)) for attr, key, read in fields}
    f.finish()
    return spec(**values)


def _read_addons(f: _Fields) -> tuple[str, ...]:
    items = f.items("addons")
    if items is None:
        return defaults.DEFAULT_ADDONS
    names = []
    for where, item in items:
        if item not in defaults.KNOWN_ADDONS:
            raise ClusterConfigError(
                where, f"unknown add-on {item!r} (known: {', '.join(defaults.KNOWN_ADDONS)})"
            )
        names.append(str(item))
    return tuple(names)
