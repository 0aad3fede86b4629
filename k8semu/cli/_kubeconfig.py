"""The CLI's small kubeconfig: which API servers to talk to and which namespace by default.

    # ~/.k8semu/config (or --kubeconfig FILE, or $K8SEMU_CONFIG)
    current-context: local
    contexts:
      - name: local
        servers: [127.0.0.1:6443, 127.0.0.1:6444]
        namespace: default

A context that names kubectl's cluster and user (`context: {cluster: NAME, user: NAME}`, as
`k8semu up` writes them) takes their TLS credentials: the cluster's certificate-authority-data
and the user's client-certificate-data/client-key-data (or the -file forms: certificate-authority,
client-certificate, client-key), as kubectl does.

Precedence: --server beats the context's servers, -n beats the context's namespace,
--context beats current-context. A missing default file is not an error (127.0.0.1:6443,
namespace "default"); a missing file the user named is. Pure apart from reading the file.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from k8semu.transport import ClientTLS

DEFAULT_SERVER = "127.0.0.1:6443"
DEFAULT_NAMESPACE = "default"
ENV_VAR = "K8SEMU_CONFIG"
DEFAULT_PATH = Path("~/.k8semu/config")


class ConfigError(ValueError):
    """A kubeconfig that cannot be read or does not have the expected shape."""


@dataclass(frozen=True)
class Target:
    """Where commands go: API server endpoints (HOST:PORT, at least one) and a namespace."""

    servers: tuple[str, ...]
    namespace: str
    context: str = ""
    #: PEM bytes of the cluster CA and the user's certificate and key (None: plain text).
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    def tls(self) -> ClientTLS | None:
        """The credentials as `k8semu.transport` takes them (imported here: gRPC is loaded
        only by commands that talk to a server)."""
        if self.ca is None:
            return None
        from k8semu.transport import ClientTLS

        return ClientTLS(ca_file=self.ca, cert_file=self.cert, key_file=self.key)


def parse_servers(text: str) -> tuple[str, ...]:
    """`host:port,host:port` (also accepts `http://` and `grpc://` prefixes)."""
    servers = []
    for part in text.split(","):
        item = part.strip()
        for scheme in ("http://", "grpc://"):
            item = item.removeprefix(scheme)
        item = item.rstrip("/")
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"server {part.strip()!r}: expected HOST:PORT")
        servers.append(item)
    if not servers:
        raise ConfigError(f"no server in {text!r}: expected HOST:PORT[,HOST:PORT]")
    return tuple(servers)


def _read(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        text = path.expanduser().read_text()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"kubeconfig {path}: no such file") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"kubeconfig {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"kubeconfig {path}: expected a mapping at the top level")
    return data


def _context(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    contexts = data.get("contexts") or []
    if not isinstance(contexts, list):
        raise ConfigError(f"kubeconfig {path}: contexts: expected a list")
    for i, ctx in enumerate(contexts):
        if not isinstance(ctx, dict):
            raise ConfigError(f"kubeconfig {path}: contexts[{i}]: expected a mapping")
        if ctx.get("name") == name:
            return ctx
    raise ConfigError(f'kubeconfig {path}: context "{name}" not found')


def resolve(
    *,
    server: str | None = None,
    namespace: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    environ: dict[str, str] | None = None,
) -> Target:
    """The target of one command from its flags, the environment and the config file."""
    env = os.environ if environ is None else environ
    named = kubeconfig or env.get(ENV_VAR) or ""
    path = Path(named) if named else DEFAULT_PATH
    data = _read(path, required=bool(named))
    ctx_name = context or data.get("current-context") or ""
    ctx: dict[str, Any] = {}
    if ctx_name:
        ctx = _context(data, str(ctx_name), path)
    elif context:
        raise ConfigError(f'context "{context}" not found')
    if server:
        servers = parse_servers(server)
    else:
        raw = ctx.get("servers", ctx.get("server", DEFAULT_SERVER))
        if isinstance(raw, list):
            raw = ",".join(str(s) for s in raw)
        if not isinstance(raw, str):
            raise ConfigError(f"kubeconfig {path}: servers: expected a list of HOST:PORT")
        servers = parse_servers(raw)
    ns = namespace or str(ctx.get("namespace") or DEFAULT_NAMESPACE)
    ca, cert, key = _credentials(data, ctx, path)
    return Target(servers=servers, namespace=ns, context=str(ctx_name), ca=ca, cert=cert, key=key)


def _entry(data: dict[str, Any], section: str, name: object, path: Path) -> dict[str, Any]:
    """The `cluster:`/`user:` mapping of entry `name` of `section` ({} when not there)."""
    field = section.removesuffix("s")
    for entry in data.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            inner = entry.get(field) or {}
            if not isinstance(inner, dict):
                raise ConfigError(f"kubeconfig {path}: {section}[{name}].{field}: not a mapping")
            return inner
    return {}


def _pem(entry: dict[str, Any], key: str, path: Path) -> bytes | None:
    """`key`-data (base64) or `key` (a file) of a kubeconfig entry; None when neither."""
    data = entry.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"kubeconfig {path}: {key}-data: not base64") from None
    named = entry.get(key)
    if not named:
        return None
    try:
        return Path(str(named)).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"kubeconfig {path}: {key}: {named}: {exc.strerror}") from None


def _credentials(
    data: dict[str, Any], ctx: dict[str, Any], path: Path
) -> tuple[bytes | None, bytes | None, bytes | None]:
    link = ctx.get("context")
    if not isinstance(link, dict):
        return None, None, None
    cluster = _entry(data, "clusters", link.get("cluster"), path)
    user = _entry(data, "users", link.get("user"), path)
    ca = _pem(cluster, "certificate-authority", path)
    cert, key = _pem(user, "client-certificate", path), _pem(user, "client-key", path)
    if (cert is None) != (key is None):
        raise ConfigError(f"kubeconfig {path}: user {link.get('user')}: a certificate needs a key")
    return ca, cert, key
