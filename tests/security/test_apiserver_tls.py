"""The API server with kube-apiserver's TLS flags, on a TLS store.

gRPC: a client needs a certificate of the cluster CA (else UNAVAILABLE: the handshake fails,
nothing is written). REST: kubectl with the kubeconfig `k8semu up` writes (the CA and the
admin's certificate as data) works; plain HTTP and a certificate of another CA are refused at
the handshake. A REST client without a certificate gets through TLS (it may bring a token
instead); refusing anonymous requests is the authenticator's job, not the transport's.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from k8semu import transport
from k8semu.client import NO_RETRIES, Client, ClientError
from k8semu.cluster import clientconfig
from k8semu.cluster.processes import K8semuStoreCluster, free_loopback_ports
from k8semu.pb.api.v1 import core_pb2
from tests.security.conftest import PKIFiles
from tests.support.apiserver import APIServerProcess

KUBECTL = shutil.which("kubectl")


class TLSAPIServer:
    def __init__(self, process: APIServerProcess, rest: str) -> None:
        self.process = process
        self.rest = rest


@pytest.fixture(scope="module")
def tls_apiserver(
    tls_store: K8semuStoreCluster, cluster_pki: PKIFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TLSAPIServer]:
    server, admin = cluster_pki["server"], cluster_pki["admin"]
    rest = f"127.0.0.1:{free_loopback_ports(1)[0]}"
    flags = [
        "--rest-address", rest,
        "--tls-cert-file", str(server.cert), "--tls-private-key-file", str(server.key),
        "--client-ca-file", str(cluster_pki.ca),
        "--etcd-cafile", str(cluster_pki.ca),
        "--etcd-certfile", str(admin.cert), "--etcd-keyfile", str(admin.key),
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("tls-apiserver") / "apiserver.log"
    process = APIServerProcess(tls_store, log, flags, start=False)
    process.probe_tls = admin_tls(cluster_pki)
    process.start()
    try:
        process.wait_serving()
        yield TLSAPIServer(process, f"https://{rest}")
    finally:
        process.close()


def admin_tls(pki_: PKIFiles, user: str = "admin") -> transport.ClientTLS:
    files = pki_[user]
    return transport.ClientTLS(ca_file=pki_.ca, cert_file=files.cert, key_file=files.key)


async def _create(address: str, name: str, tls: transport.ClientTLS | None) -> str:
    """Create ConfigMap `name`; "ok" or the error's class name."""
    async with Client([address], retries=NO_RETRIES, tls=tls) as client:
        cm = core_pb2.ConfigMap()
        cm.metadata.name, cm.metadata.namespace = name, "default"
        try:
            await client.create(cm)
        except ClientError as exc:
            return type(exc).__name__
        return "ok"


async def _exists(address: str, name: str, tls: transport.ClientTLS) -> bool:
    async with Client([address], tls=tls) as client:
        names = [
            c.metadata.name
            for c in (await client.list(core_pb2.ConfigMap, namespace="default")).items
        ]
        return name in names


def test_grpc_needs_a_client_certificate_of_the_cluster_ca(
    tls_apiserver: TLSAPIServer, cluster_pki: PKIFiles, rogue_pki: PKIFiles
) -> None:
    address, good = tls_apiserver.process.address, admin_tls(cluster_pki)
    attempts = {
        "plain text": None,
        "no certificate": transport.ClientTLS(ca_file=cluster_pki.ca),
        "another CA's certificate": transport.ClientTLS(
            ca_file=cluster_pki.ca,
            cert_file=rogue_pki["admin"].cert,
            key_file=rogue_pki["admin"].key,
        ),
    }
    for i, (how, tls) in enumerate(attempts.items()):
        outcome = asyncio.run(_create(address, f"refused-{i}", tls))
        assert outcome in ("ConnectFailed", "Unavailable"), (how, outcome)
        assert not asyncio.run(_exists(address, f"refused-{i}", good)), how
    assert asyncio.run(_create(address, "admitted", good)) == "ok"
    assert asyncio.run(_exists(address, "admitted", good))


def _kubeconfig(path: Path, server: TLSAPIServer, pki_: PKIFiles) -> Path:
    admin = pki_["admin"]
    creds = clientconfig.Credentials(
        pki_.ca.read_bytes(), admin.cert.read_bytes(), admin.key.read_bytes()
    )
    clientconfig.write_kubeconfig(path, "tls", (server.process.address,), server.rest, creds=creds)
    return path


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
def test_kubectl_and_the_cli_with_the_kubeconfig(
    tls_apiserver: TLSAPIServer, cluster_pki: PKIFiles, tmp_path: Path
) -> None:
    config = _kubeconfig(tmp_path / "kubeconfig", tls_apiserver, cluster_pki)
    assert config.stat().st_mode & 0o077 == 0  # it holds the admin's key
    assert KUBECTL is not None
    env = {"KUBECONFIG": str(config), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(
        [KUBECTL, "get", "namespaces", "-o", "name", "--request-timeout", "20s"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0 and "namespace/default" in run.stdout, run.stderr
    cli = subprocess.run(
        [sys.executable, "-m", "k8semu", "get", "namespaces",
         "--kubeconfig", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 0 and "default" in cli.stdout, cli.stderr


def test_rest_refuses_plain_http_and_other_cas(
    tls_apiserver: TLSAPIServer, cluster_pki: PKIFiles, rogue_pki: PKIFiles
) -> None:
    url = tls_apiserver.rest + "/api/v1/namespaces"
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(url.replace("https://", "http://"), timeout=10)
    rogue = transport.client_ssl_context(
        transport.ClientTLS(
            ca_file=cluster_pki.ca,
            cert_file=rogue_pki["admin"].cert,
            key_file=rogue_pki["admin"].key,
        )
    )
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(url, timeout=10, context=rogue).read()
    good = transport.client_ssl_context(admin_tls(cluster_pki))
    with urllib.request.urlopen(url, timeout=10, context=good) as answer:
        assert answer.status == 200
