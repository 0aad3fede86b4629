"""The CLI config (``~/.k8semu/config``, the format of ``k8semu/cli/_kubeconfig.py``) that makes a
launched cluster the default target of ``k8semu get/apply/...``, and kubectl's too.

The file is a real kubeconfig (apiVersion v1, kind Config: clusters whose server is the first
API server's REST URL, users, contexts naming them) whose contexts also carry k8semu's own
``servers`` (the gRPC API servers) and ``namespace``: kubectl ignores those, k8semu reads them,
so ``KUBECONFIG=<state-dir>/kubeconfig kubectl get pods`` and ``k8semu get pods`` both work.

``k8semu up`` writes ``<state-dir>/kubeconfig`` (one context, named after the cluster, listing
its API servers) and merges the same context into the user's config - ``$K8SEMU_CONFIG`` when
set, else ``~/.k8semu/config`` - making it the current context, as ``kind create cluster`` does
with kubectl's. Other contexts in that file are kept. ``k8semu down`` removes the context again
(and clears current-context if it pointed there). The caller passes the path in; this module
must not read the environment.

With TLS (``Credentials``) the cluster entry carries ``certificate-authority-data`` (the
cluster CA) and the user ``client-certificate-data``/``client-key-data`` (the admin's
certificate, CN=kubernetes-admin O=system:masters), base64 PEM as kubectl reads them; the k8semu
CLI reads the same fields through the context's ``context: {cluster, user}``.
"""

from __future__ import annotations

import base64
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from k8semu.cluster.errors import ClusterError

__all__ = [
    "Credentials",
    "kubeconfig",
    "remove_context",
    "set_context",
    "user_config_path",
    "write_kubeconfig",
]

ENV_VAR = "K8SEMU_CONFIG"


def user_config_path(environ: Mapping[str, str]) -> Path:
    """``$K8SEMU_CONFIG``, else ``$HOME/.k8semu/config``."""
    named = environ.get(ENV_VAR)
    if named:
        return Path(named)
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".k8semu" / "config"


@dataclass(frozen=True, slots=True)
class Credentials:
    """PEM bytes of the cluster CA and of a user's client certificate and key."""

    ca: bytes
    cert: bytes
    key: bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _context(name: str, servers: tuple[str, ...], rest: str, linked: bool) -> dict[str, Any]:
    context: dict[str, Any] = {"name": name, "servers": list(servers), "namespace": "default"}
    if linked:
        context["context"] = {"cluster": name, "user": name, "namespace": "default"}
    return context


def _upsert(data: dict[str, Any], section: str, entry: dict[str, Any]) -> None:
    kept = [e for e in data.get(section) or [] if _name(e) != entry["name"]]
    data[section] = [*kept, entry]


def _set(
    data: dict[str, Any],
    name: str,
    servers: tuple[str, ...],
    rest: str,
    creds: Credentials | None = None,
) -> None:
    """Context ``name`` (and, with a REST URL or credentials, kubectl's cluster and user of
    that name)."""
    linked = bool(rest) or creds is not None
    if linked:
        data.setdefault("apiVersion", "v1")
        data.setdefault("kind", "Config")
        cluster: dict[str, str] = {"server": rest} if rest else {}
        user: dict[str, str] = {}
        if creds is not None:
            cluster["certificate-authority-data"] = _b64(creds.ca)
            user["client-certificate-data"] = _b64(creds.cert)
            user["client-key-data"] = _b64(creds.key)
        _upsert(data, "clusters", {"name": name, "cluster": cluster})
        _upsert(data, "users", {"name": name, "user": user})
    _upsert(data, "contexts", _context(name, servers, rest, linked))
    data["current-context"] = name


def kubeconfig(
    name: str, servers: tuple[str, ...], rest: str = "", creds: Credentials | None = None
) -> dict[str, Any]:
    """A config with just this cluster's context, current; `rest` the REST URL kubectl uses
    ("" when the API servers serve none), `creds` the CA and user certificate (TLS)."""
    data: dict[str, Any] = {}
    _set(data, name, servers, rest, creds)
    return data


def set_context(
    path: Path,
    name: str,
    servers: tuple[str, ...],
    rest: str = "",
    creds: Credentials | None = None,
    *,
    fresh: bool = False,
) -> None:
    """Add or replace context ``name`` (and its cluster and user) in the config at ``path``
    and make it current; `fresh`: the file has only that (`write_kubeconfig`)."""
    data = {} if fresh else _read(path)
    _set(data, name, servers, rest, creds)
    _write(path, data)


write_kubeconfig = functools.partial(set_context, fresh=True)
"""The file of `kubeconfig(name, servers, rest, creds)`."""


def current_context(path: Path) -> str:
    """The current context's name in the config at ``path`` ("" when none, or unreadable)."""
    try:
        data = _read(path)
    except ClusterError:
        return ""
    value = data.get("current-context")
    return value if isinstance(value, str) else ""


def remove_context(path: Path, name: str) -> bool:
    """Remove context ``name`` from the config at ``path``; whether it was there."""
    if not path.exists():
        return False
    data = _read(path)
    contexts = data.get("contexts") or []
    kept = [c for c in contexts if _name(c) != name]
    if len(kept) == len(contexts):
        return False
    data["contexts"] = kept
    for section in ("clusters", "users"):
        if isinstance(data.get(section), list):
            data[section] = [e for e in data[section] if _name(e) != name]
    if data.get("current-context") == name:
        data.pop("current-context")
    _write(path, data)
    return True


def _name(context: object) -> object:
    return context.get("name") if isinstance(context, dict) else None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise ClusterError(f"cannot update the CLI config {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("contexts") or [], list):
        raise ClusterError(
            f"cannot update the CLI config {path}: it is not a k8semu config (a mapping with a"
            " list of contexts)"
        )
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        # It may hold a private key: readable by its owner only, from the first byte on.
        tmp.touch(mode=0o600)
        tmp.chmod(0o600)
        tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise ClusterError(f"cannot write the CLI config {path}: {exc.strerror}") from exc
