"""The store with etcd's security flags: mutual TLS on its client and peer ports.

One 3-replica store for the module, every port TLS with client certificates required. Each
way in without a certificate the cluster CA signed is refused (gRPC UNAVAILABLE: the
handshake fails; the peer port closes the connection), and nothing is written; etcdctl with
--cacert/--cert/--key works, as against a real etcd started with the same flags.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from pathlib import Path

import grpc
import pytest

from k8semu import transport
from k8semu.cluster.processes import EtcdCluster, K8semuStoreCluster, ProcessCluster
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from k8semu.pb.raft import raft_pb2
from k8semu.pb.store import internal_pb2
from k8semu.raft import framing
from k8semu.raft.transport import request
from tests.security.conftest import PKIFiles

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
pytestmark = pytest.mark.skipif(not Path(ETCDCTL).exists(), reason="etcdctl not installed")


def etcdctl(
    cluster: ProcessCluster, *args: str, creds: list[str], timeout: str = "10s"
) -> subprocess.CompletedProcess[str]:
    """etcdctl on every member; `timeout`: its --command-timeout (a refused call is retried
    until then)."""
    endpoints = ",".join(m.client_url for m in cluster.members.values())
    return subprocess.run(
        [ETCDCTL, "--endpoints", endpoints, "--dial-timeout", "3s",
         "--command-timeout", timeout, *creds, *args],
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def creds(pki_: PKIFiles, user: str = "admin") -> list[str]:
    files = pki_[user]
    return ["--cacert", str(pki_.ca), "--cert", str(files.cert), "--key", str(files.key)]


def test_etcdctl_with_certificates_works(
    tls_store: K8semuStoreCluster, cluster_pki: PKIFiles
) -> None:
    put = etcdctl(tls_store, "put", "/tls/ok", "yes", creds=creds(cluster_pki))
    assert put.returncode == 0, put.stderr
    got = etcdctl(tls_store, "get", "/tls/ok", "--print-value-only", creds=creds(cluster_pki))
    assert got.returncode == 0 and got.stdout.strip() == "yes", got.stderr
    members = etcdctl(tls_store, "member", "list", creds=creds(cluster_pki))
    assert members.returncode == 0 and "https://127.0.0.1:" in members.stdout, members


@pytest.mark.parametrize(
    "how", ["no client certificate", "certificate of another CA", "server of another CA"]
)
def test_etcdctl_without_the_right_certificate_is_refused(
    tls_store: K8semuStoreCluster, cluster_pki: PKIFiles, rogue_pki: PKIFiles, how: str
) -> None:
    flags = {
        "no client certificate": ["--cacert", str(cluster_pki.ca)],
        "certificate of another CA": [
            "--cacert", str(cluster_pki.ca),
            "--cert", str(rogue_pki["admin"].cert), "--key", str(rogue_pki["admin"].key),
        ],
        "server of another CA": creds(rogue_pki),
    }[how]  # fmt: skip
    key = f"/tls/refused/{how}"
    put = etcdctl(tls_store, "put", key, "x", creds=flags, timeout="2s")
    assert put.returncode != 0, put.stdout
    got = etcdctl(tls_store, "get", key, creds=creds(cluster_pki))
    assert got.returncode == 0 and got.stdout == "", got.stdout  # nothing written


def _put(endpoint: str, tls: transport.ClientTLS | None) -> grpc.StatusCode:
    async def call() -> grpc.StatusCode:
        async with transport.channel(endpoint, tls) as channel:
            try:
                await rpc_pb2_grpc.KVStub(channel).Put(
                    rpc_pb2.PutRequest(key=b"/tls/grpc", value=b"x"), timeout=5
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

    return asyncio.run(call())


def test_grpc_clients_need_a_certificate_of_the_cluster_ca(
    tls_store: K8semuStoreCluster, cluster_pki: PKIFiles, rogue_pki: PKIFiles
) -> None:
    endpoint = tls_store.endpoints[0]
    admin, rogue = cluster_pki["admin"], rogue_pki["admin"]
    ca = cluster_pki.ca
    refused = {
        "plain text": _put(endpoint, None),
        "no certificate": _put(endpoint, transport.ClientTLS(ca_file=ca)),
        "another CA's": _put(
            endpoint, transport.ClientTLS(ca_file=ca, cert_file=rogue.cert, key_file=rogue.key)
        ),
    }
    assert refused == dict.fromkeys(refused, grpc.StatusCode.UNAVAILABLE)
    good = transport.ClientTLS(ca_file=ca, cert_file=admin.cert, key_file=admin.key)
    assert _put(endpoint, good) == grpc.StatusCode.OK


def _status(cluster: ProcessCluster) -> rpc_pb2.StatusResponse:
    statuses = cluster.statuses()
    status = statuses[next(iter(cluster.members))]
    assert isinstance(status, rpc_pb2.StatusResponse), status
    return status


def _peer_address(cluster: ProcessCluster) -> tuple[str, int]:
    url = next(iter(cluster.members.values())).peer_url.removeprefix("https://")
    host, _, port = url.rpartition(":")
    return host, int(port)


def test_forged_raft_frames_without_a_peer_certificate_are_refused(
    tls_store: K8semuStoreCluster, cluster_pki: PKIFiles, rogue_pki: PKIFiles
) -> None:
    before = _status(tls_store)
    cluster_id, term = before.header.cluster_id, before.raftTerm
    # A heartbeat from a made-up leader with a far higher term: accepted, it would make the
    # replica step down and adopt the term.
    forged = raft_pb2.MessageBatch(
        cluster_id=cluster_id,
        messages=[raft_pb2.Message(type=raft_pb2.MSG_HEARTBEAT, term=term + 1000, to=1)],
    )
    setattr(forged, "from", 12345)
    host, port = _peer_address(tls_store)
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.settimeout(5)
        sock.sendall(framing.frame(framing.BATCH, forged.SerializeToString()))
        try:
            answer = sock.recv(1024)  # a TLS server answers garbage with an alert, then closes
        except (ConnectionResetError, TimeoutError):
            answer = b""
        assert not answer.startswith(framing.HEADER.pack(0, 0)[:0] + b"\x00")
    after = _status(tls_store)
    assert after.raftTerm < term + 1000 and after.header.cluster_id == cluster_id


@pytest.mark.parametrize("how", ["plain text", "no certificate", "certificate of another CA"])
def test_peer_requests_need_a_peer_certificate(
    tls_store: K8semuStoreCluster, cluster_pki: PKIFiles, rogue_pki: PKIFiles, how: str
) -> None:
    """The peer port's membership request (what a joining member asks) is answered only to
    a peer with a certificate of the cluster CA."""
    host, port = _peer_address(tls_store)
    ca = cluster_pki.ca
    rogue = rogue_pki["admin"]
    contexts = {
        "plain text": None,
        "no certificate": transport.client_ssl_context(transport.ClientTLS(ca_file=ca)),
        "certificate of another CA": transport.client_ssl_context(
            transport.ClientTLS(ca_file=ca, cert_file=rogue.cert, key_file=rogue.key)
        ),
        "peer": transport.client_ssl_context(cluster_pki.member_tls().client()),
    }
    payload = internal_pb2.ClusterRequest().SerializeToString()

    async def ask(name: str) -> bytes:
        return await request(f"{host}:{port}", framing.CLUSTER, payload, 5, ssl=contexts[name])

    with pytest.raises(framing.RemoteError) as refused:
        asyncio.run(ask(how))
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE.value[0]
    info = internal_pb2.ClusterInfo.FromString(asyncio.run(ask("peer")))
    assert len(info.members) == 3


@pytest.mark.skipif(not EtcdCluster.available(), reason="etcd not installed")
def test_the_same_flags_on_a_real_etcd(
    cluster_pki: PKIFiles, rogue_pki: PKIFiles, tmp_path: Path
) -> None:
    """Side by side: etcd started with the flags our store takes answers etcdctl alike."""
    with EtcdCluster(tmp_path / "etcd", 1, tls=cluster_pki.member_tls()) as etcd:
        etcd.start()
        etcd.wait_ready(timeout=60)
        assert etcdctl(etcd, "put", "/tls/ok", "yes", creds=creds(cluster_pki)).returncode == 0
        got = etcdctl(etcd, "get", "/tls/ok", "--print-value-only", creds=creds(cluster_pki))
        assert got.stdout.strip() == "yes"
        only_ca = ["--cacert", str(cluster_pki.ca)]
        no_cert = etcdctl(etcd, "put", "/tls/no", "x", creds=only_ca, timeout="2s")
        assert no_cert.returncode != 0
