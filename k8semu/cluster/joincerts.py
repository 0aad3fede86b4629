"""A node's certificates by CertificateSigningRequest (`k8semu join --token`, kubeadm's TLS
bootstrap): keys made here and never sent; three requests over the API server's HTTPS port,
verified by the discovered CA:

- the kubelet's client certificate (signer kubernetes.io/kube-apiserver-client-kubelet,
  CN system:node:<name>, O system:nodes), asked as the bootstrap token;
- the proxy's (kubernetes.io/kube-apiserver-client, CN system:kube-proxy), as the token;
- the kubelet's serving certificate (kubernetes.io/kubelet-serving, the node's name and IP),
  asked as the node itself with the certificate just issued; the proxy serves with the same
  one (both listen on the node's IP).

The controller manager's csrapproving and csrsigning answer (docs/security.md). Files are
written only once every certificate is there (pki/ under the state dir: ca.crt,
kubelet-<name>, proxy-<name>, their -serving pairs, the kubeconfigs); a request that is
denied, fails or is not answered in time raises JoinError and nothing is written.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import ssl
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from k8semu import pki
from k8semu.api import csr as csrs
from k8semu.cluster import certs
from k8semu.cluster.clusterinfo import ClusterInfo

_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
_POLL_S = 0.2


class JoinError(Exception):
    """The node's certificates could not be had; nothing was written."""


@dataclass(frozen=True, slots=True)
class _Pair:
    key: bytes  # PEM
    cert: bytes  # PEM


class _Rest:
    """JSON requests to one API server over TLS verified by the cluster CA."""

    def __init__(self, server: str, ctx: ssl.SSLContext, token: str = "") -> None:
        host, _, port = server.rpartition(":")
        self.host, self.port, self.ctx = host.strip("[]"), int(port), ctx
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, doc: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=30, context=self.ctx)
        try:
            body = None if doc is None else json.dumps(doc)
            conn.request(method, path, body=body, headers=self.headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise JoinError(f"{method} {path}: {exc}") from None
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, None


def _request(
    cn: str, orgs: tuple[str, ...], hosts: Iterable[str]
) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    sans = pki.subject_alt_names(hosts)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    pem = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    return key, pem


def _obtain(
    api: _Rest, what: str, signer: str, subject: tuple[str, tuple[str, ...]],
    usages: tuple[str, ...], deadline: float, hosts: Iterable[str] = (),
) -> _Pair:  # fmt: skip
    """One CertificateSigningRequest to its certificate."""
    key, pem = _request(*subject, hosts)
    name = f"node-csr-{what}-{secrets.token_hex(4)}"
    doc = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64.b64encode(pem).decode(),
            "signerName": signer,
            "usages": list(usages),
        },
    }
    code, body = api.call("POST", _PATH, doc)
    if code != 201:
        message = body.get("message") if isinstance(body, dict) else body
        raise JoinError(f"the {what} CertificateSigningRequest was refused ({code}): {message}")
    while time.monotonic() < deadline:
        code, body = api.call("GET", f"{_PATH}/{name}")
        status = body.get("status", {}) if code == 200 and isinstance(body, dict) else {}
        for c in status.get("conditions") or []:
            if c.get("type") in (csrs.DENIED, csrs.FAILED) and c.get("status") == "True":
                raise JoinError(
                    f"the {what} CertificateSigningRequest {name}: {c['type']}:"
                    f" {c.get('message', '')}"
                )
        if status.get("certificate"):
            cert = base64.b64decode(status["certificate"])
            return _Pair(pki.key_pem(key), cert)
        time.sleep(_POLL_S)
    raise JoinError(
        f"the {what} CertificateSigningRequest {name} was not signed in time (is it pending?"
        f" `kubectl certificate approve {name}` approves it)"
    )


def _node_serving(
    server: str, ca: bytes, client: _Pair, node: tuple[str, str], deadline: float
) -> _Pair:
    """The kubelet's serving certificate, asked as the node (its client certificate)."""
    name, node_ip = node
    with tempfile.TemporaryDirectory(prefix="k8semu-join-") as tmp:
        cert, key = Path(tmp) / "c.crt", Path(tmp) / "c.key"
        cert.write_bytes(client.cert)
        key.touch(mode=0o600)
        key.write_bytes(client.key)
        ctx = ssl.create_default_context(cadata=ca.decode())
        ctx.load_cert_chain(str(cert), str(key))
    subject = (f"{csrs.NODE_PREFIX}{name}", (csrs.NODES,))
    return _obtain(
        _Rest(server, ctx), "serving", csrs.KUBELET_SERVING, subject, csrs.SERVING_USAGES,
        deadline, hosts=(node_ip, name),
    )  # fmt: skip


def request_node(
    info: ClusterInfo, token: str, state_dir: Path, name: str, node_ip: str, timeout: float
) -> certs.PKIPaths:
    """This node's certificates and kubeconfigs under `state_dir`, by CertificateSigningRequests
    to the API server `info.rest` names; JoinError (nothing written) otherwise."""
    server = info.rest.partition("://")[2]
    deadline = time.monotonic() + timeout
    api = _Rest(server, ssl.create_default_context(cadata=info.ca.decode()), token)
    node_subject = (f"{csrs.NODE_PREFIX}{name}", (csrs.NODES,))
    kubelet = _obtain(
        api, "kubelet", csrs.KUBELET_CLIENT, node_subject, csrs.CLIENT_USAGES, deadline
    )
    proxy = _obtain(
        api, "proxy", csrs.APISERVER_CLIENT, (csrs.PROXY_USER, ()), csrs.CLIENT_USAGES, deadline
    )
    serving = _node_serving(server, info.ca, kubelet, (name, node_ip), deadline)
    paths = certs.PKIPaths(state_dir)
    files = {
        f"kubelet-{name}": kubelet,
        f"proxy-{name}": proxy,
        f"kubelet-{name}{certs.SERVING_SUFFIX}": serving,
        f"proxy-{name}{certs.SERVING_SUFFIX}": serving,
    }
    pki.write_file(paths.root / "ca.crt", info.ca, 0o644)
    for stem, pair in files.items():
        pki.write_file(paths.root / f"{stem}.key", pair.key, 0o600)
        pki.write_file(paths.root / f"{stem}.crt", pair.cert, 0o644)
    certs.write_kubeconfigs(paths, (f"kubelet-{name}", f"proxy-{name}"), info.servers)
    return paths
