"""Fixtures of the security tests.

- Certificates, made once per session (ECDSA P-256: ~1 ms a key): two CAs, `pki` the
  cluster's (every component and user), `rogue` another one whose certificates must be
  refused everywhere; a three-replica store with mutual TLS.
- One store and one API server with authentication (a static token file, ServiceAccount
  keys), `--authorization-mode Node,RBAC` and an audit log, for the package; and helpers
  speaking to it as a given user over REST (urllib, kubectl) and gRPC."""

from __future__ import annotations

import asyncio
import gc
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from k8semu import pki
from k8semu.cluster.processes import K8semuStoreCluster, MemberTLS, free_loopback_ports
from tests.support.apiserver import APIServerProcess, running
from tests.support.poll import Eventually

LOCAL = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class PKIFiles:
    """The files of one CA and its certificates, by name."""

    ca: Path
    certs: dict[str, pki.CertFiles]

    def __getitem__(self, name: str) -> pki.CertFiles:
        return self.certs[name]

    def member_tls(self) -> MemberTLS:
        server, client = self["server"], self["admin"]
        return MemberTLS(self.ca, server.cert, server.key, client.cert, client.key)


_SPECS = [
    pki.CertSpec("server", "k8semu-server", hosts=(*LOCAL, "kubernetes")),
    pki.CertSpec("admin", "kubernetes-admin", ("system:masters",), server=False),
    pki.CertSpec("node1", "system:node:node1", ("system:nodes",), server=False),
]


def _make(directory: Path) -> PKIFiles:
    certs = pki.ensure_all(directory, _SPECS)
    return PKIFiles(directory / "ca.crt", certs)


@pytest.fixture(scope="session")
def cluster_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PKIFiles]:
    yield _make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def rogue_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PKIFiles]:
    yield _make(tmp_path_factory.mktemp("rogue-pki"))


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """A connection a test left open shows as a ResourceWarning in that test, not later."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def tls_store(
    cluster_pki: PKIFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[K8semuStoreCluster]:
    """Three replicas, client and peer ports mutual TLS (etcd's flags)."""
    with K8semuStoreCluster(
        tmp_path_factory.mktemp("tls-store"), 3, tls=cluster_pki.member_tls()
    ) as cluster:
        cluster.start()
        cluster.wait_ready(timeout=60)
        yield cluster


TIMEOUT = 30.0
# token -> (user, groups): the static token file of the secured API server.
USERS = {
    "admin-token": ("admin", "system:masters"),
    "alice-token": ("alice", ""),
    "node1-token": ("system:node:node-1", "system:nodes"),
    "node2-token": ("system:node:node-2", "system:nodes"),
}


@dataclass(frozen=True)
class Secured:
    url: str
    grpc_address: str
    audit_log: Path
    signing_key: Path
    base: Path
    store_endpoints: tuple[str, ...]

    def request(
        self, method: str, path: str, token: str = "", doc: Any = None, content_type: str = ""
    ) -> tuple[int, Any]:
        """(status, parsed JSON body) of one request as the bearer of `token`."""
        body = None if doc is None else json.dumps(doc).encode()
        hdrs = {"Authorization": f"Bearer {token}"} if token else {}
        if body is not None:
            hdrs["Content-Type"] = content_type or "application/json"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                code, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            code, raw = exc.code, exc.read()
        try:
            return code, json.loads(raw) if raw else None
        except ValueError:
            return code, raw.decode()


def wait_until(check: Callable[[], object], *, timeout: float, message: str) -> Any:
    """The shared poll (tests/support/poll.py) for these synchronous tests."""
    return asyncio.run(Eventually()(check, timeout, message))


def write_rsa_key(path: Path) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key


@pytest.fixture(scope="package")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    base: Path = tmp_path_factory.mktemp("secured")
    tokens = base / "tokens.csv"
    tokens.write_text("".join(f'{t},{u},uid-{u},"{g}"\n' for t, (u, g) in USERS.items()))
    key = base / "sa.key"
    write_rsa_key(key)
    audit = base / "audit.log"
    port = free_loopback_ports(1)[0]
    args = [
        "--rest-address", f"127.0.0.1:{port}",
        "--token-auth-file", str(tokens),
        "--service-account-signing-key-file", str(key),
        "--service-account-key-file", str(key),
        "--authorization-mode", "Node,RBAC",
        "--audit-log-path", str(audit),
    ]  # fmt: skip
    with running(K8semuStoreCluster(base / "store", 1)) as store:
        server = APIServerProcess(store, base / "apiserver.log", args)
        try:
            server.wait_serving()
            yield Secured(
                f"http://127.0.0.1:{port}", server.address, audit, key, base, tuple(store.endpoints)
            )
        finally:
            server.close()
