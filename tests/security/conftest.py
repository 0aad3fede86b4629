"""Certificates for the security tests, made once per session (ECDSA P-256: ~1 ms a key).

Two CAs: `pki` is the cluster's (every component and user), `rogue` another one whose
certificates must be refused everywhere."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from k8semu import pki
from k8semu.cluster.processes import K8semuStoreCluster, MemberTLS

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
