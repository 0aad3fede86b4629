"""kubeadm's discovery: the `cluster-info` ConfigMap in kube-public, and reading it by token.

`k8semu up` (TLS) applies, with the add-ons, ConfigMap `kube-public/cluster-info` whose
`kubeconfig` is a kubeconfig naming the cluster CA (certificate-authority-data) and the first
API server's REST URL, its context also listing every API server's gRPC address (k8semu's
`servers`, what a kubelet dials), plus kubeadm's Role `kubeadm:bootstrap-signer-clusterinfo`
(get on that one ConfigMap) bound to the group `system:bootstrappers`: kubeadm binds it to
`system:anonymous`, but anonymous requests are off here, so the bootstrap token
authenticates the read.

`discover()` is the joining side (`k8semu join --token`): it reads the ConfigMap over TLS
*without* trusting the server (it has no CA yet), takes the CA from it, checks the CA's
SubjectPublicKeyInfo SHA-256 against the pin (`--discovery-token-ca-cert-hash`), then reads
it again over TLS verified by that CA (the server's certificate must chain to it and name the
address) and requires the same content. Any mismatch raises DiscoveryError before anything is
written.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import http.client
import json
import re
import ssl
from dataclasses import dataclass
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

NAMESPACE = "kube-public"
NAME = "cluster-info"
KEY = "kubeconfig"
ROLE = "kubeadm:bootstrap-signer-clusterinfo"  # kubeadm's name for it
BOOTSTRAPPERS = "system:bootstrappers"
PIN_FLAG = "--discovery-token-ca-cert-hash"
_PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{NAME}"
_PIN = re.compile(r"sha256:([0-9a-f]{64})")


class DiscoveryError(Exception):
    """The cluster could not be discovered or is not the one pinned; nothing was written."""


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    ca: bytes  # PEM
    rest: str  # https://HOST:PORT
    servers: tuple[str, ...]  # the API servers' gRPC HOST:PORT


def ca_hash(ca_pem: bytes) -> str:
    """kubeadm's pin: `sha256:` and the hex SHA-256 of the CA's DER SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return "sha256:" + digest.finalize().hex()


def parse_pin(text: str) -> str:
    """The pin as `ca_hash` writes it; ValueError naming the flag otherwise."""
    pin = text.strip().lower()
    if not _PIN.fullmatch(pin):
        raise ValueError(f"{PIN_FLAG}: {text!r}: expected sha256:<64 hex digits>")
    return pin


def kubeconfig(ca_pem: bytes, rest: str, servers: tuple[str, ...]) -> dict[str, Any]:
    """The ConfigMap's kubeconfig: no user (it is public to bootstrappers)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "",
                "cluster": {
                    "server": rest,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "contexts": [{"name": "", "servers": list(servers)}],
    }


def manifest(ca_pem: bytes, rest: str, servers: tuple[str, ...]) -> str:
    """The objects `up` applies: the ConfigMap and the Role and RoleBinding that let
    bootstrappers read it (and nothing else)."""
    rbac = "rbac.authorization.k8s.io/v1"
    meta = {"name": ROLE, "namespace": NAMESPACE}
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "data": {KEY: yaml.safe_dump(kubeconfig(ca_pem, rest, servers), sort_keys=False)},
        },
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [NAME],
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BOOTSTRAPPERS}
            ],
        },
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


def _fetch(server: str, token: str, ctx: ssl.SSLContext, timeout: float) -> str:
    """The ConfigMap's kubeconfig text read from https://server as the token's user."""
    host, _, port = server.rpartition(":")
    conn = http.client.HTTPSConnection(host.strip("[]"), int(port), timeout=timeout, context=ctx)
    try:
        conn.request("GET", _PATH, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        body = resp.read()
    except ssl.SSLCertVerificationError as exc:
        raise DiscoveryError(
            f"the API server at {server} has a certificate the pinned CA does not vouch for:"
            f" {exc.verify_message}"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise DiscoveryError(f"cannot read {NAMESPACE}/{NAME} from {server}: {exc}") from None
    finally:
        conn.close()
    if resp.status == 401:
        raise DiscoveryError(
            f"{server} refused the token (401): it is unknown, expired, or its secret is wrong"
        )
    if resp.status != 200:
        raise DiscoveryError(f"reading {NAMESPACE}/{NAME} from {server}: HTTP {resp.status}")
    try:
        text = json.loads(body)["data"][KEY]
    except (ValueError, KeyError, TypeError):
        raise DiscoveryError(f"{NAMESPACE}/{NAME} on {server} has no {KEY!r}") from None
    if not isinstance(text, str):
        raise DiscoveryError(f"{NAMESPACE}/{NAME} on {server}: {KEY!r} is not text")
    return text


def parse(text: str) -> ClusterInfo:
    try:
        data = yaml.safe_load(text)
        cluster = data["clusters"][0]["cluster"]
        ca = base64.b64decode(cluster["certificate-authority-data"], validate=True)
        x509.load_pem_x509_certificate(ca)
        servers = tuple(str(s) for s in data["contexts"][0]["servers"])
        return ClusterInfo(ca=ca, rest=str(cluster["server"]), servers=servers)
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError, binascii.Error) as exc:
        raise DiscoveryError(f"{NAMESPACE}/{NAME}: not a kubeconfig with a CA: {exc}") from None


def discover(server: str, token: str, pin: str, *, timeout: float = 30.0) -> ClusterInfo:
    """Read cluster-info from https://server (HOST:PORT) with the bootstrap token; the CA it
    names must have the pinned hash and the server a certificate from that CA."""
    blind = ssl.create_default_context()
    blind.check_hostname = False
    blind.verify_mode = ssl.CERT_NONE  # nothing is trusted from this read until pinned below
    first = _fetch(server, token, blind, timeout)
    info = parse(first)
    found = ca_hash(info.ca)
    if not hmac.compare_digest(found, pin):
        raise DiscoveryError(
            f"{PIN_FLAG}: the cluster CA at {server} has public key hash {found}, not the"
            f" pinned {pin}: not the cluster you meant (or a wrong hash)"
        )
    trusted = ssl.create_default_context(cadata=info.ca.decode())
    if _fetch(server, token, trusted, timeout) != first:
        raise DiscoveryError(f"{NAMESPACE}/{NAME} on {server} changed between two reads")
    return info
