"""Real store processes: auto-compaction, Raft identity protection, request limits.

The quota and alarm behaviour is compared with a real etcd in test_etcdctl_compat.py.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from k8semu import transport
from k8semu.backup import take
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.store.conftest import Client
from tests.support.poll import Eventually

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 60.0
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _kv(endpoint: str) -> tuple[grpc.aio.Channel, Client]:
    channel = transport.channel(endpoint)
    return channel, Client(channel)


async def test_periodic_auto_compaction(tmp_path: Path) -> None:
    """--auto-compaction-retention 2s: the leader proposes Compact on etcd's schedule; an old
    revision is then compacted on every replica, and the replicas still agree (HashKV)."""
    cluster = K8semuStoreCluster(
        tmp_path / "c",
        3,
        extra_args=("--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s"),
    )
    with cluster:
        cluster.start()
        cluster.wait_ready(timeout=START_TIMEOUT_S)
        channels = {n: transport.channel(m.endpoint) for n, m in cluster.members.items()}
        try:
            c = Client(channels["s1"])
            first = await c.kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"1"), timeout=10)
            old = first.header.revision
            await c.kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"2"), timeout=10)

            async def compacted() -> bool:
                # Keep writing, so the retained window moves past `old`.
                try:
                    await c.kv.Put(rpc_pb2.PutRequest(key=b"b", value=b"x"), timeout=10)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() in RETRYABLE:  # a busy machine can cost a leader
                        return False
                    raise
                try:
                    await c.kv.Range(rpc_pb2.RangeRequest(key=b"a", revision=old), timeout=10)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.OUT_OF_RANGE, exc
                    assert "required revision has been compacted" in (exc.details() or "")
                    return True
                return False

            await Eventually(interval=0.25)(compacted, what="auto-compaction")
            # Every replica applied the same compaction (through the log) and hashes alike.
            hashes = set()
            rev = (await c.kv.Range(rpc_pb2.RangeRequest(key=b"a"), timeout=10)).header.revision
            for ch in channels.values():
                m = rpc_pb2_grpc.MaintenanceStub(ch)
                # HashKV is local: a follower may not have applied `rev` yet (future revision).
                h = await Eventually(retry_on=(grpc.aio.AioRpcError,))(
                    lambda m=m: m.HashKV(rpc_pb2.HashKVRequest(revision=rev), timeout=10),
                    what="HashKV at the same revision",
                )
                assert h.compact_revision >= old
                hashes.add(h.hash)
            assert len(hashes) == 1
            value = await c.kv.Range(rpc_pb2.RangeRequest(key=b"a"), timeout=10)
            assert value.kvs[0].value == b"2"
        finally:
            for ch in channels.values():
                await ch.close()


def _start_alone(cluster: K8semuStoreCluster, name: str, *extra: str) -> subprocess.Popen[str]:
    m = cluster.member(name)
    argv = [*cluster.command(m), *extra]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cluster.base_dir
    )


def test_member_with_lost_raft_log_refuses_to_start(tmp_path: Path) -> None:
    """A bootstrapped member whose raft.db is empty or missing exits 1 with a message that
    says its data is lost and how to replace it; with its log back, it starts."""
    cluster = K8semuStoreCluster(tmp_path / "c", 1)
    with cluster:
        cluster.start()
        cluster.wait_ready(timeout=START_TIMEOUT_S)
        with grpc.insecure_channel(cluster.member("s1").endpoint) as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"a", value=b"1"), timeout=10)
        cluster.stop("s1")
        data = cluster.member("s1").data_dir
        raft_db = data / "raft.db"
        saved = raft_db.read_bytes()
        for damage in ("empty", "missing"):
            if damage == "empty":
                raft_db.write_bytes(b"")
            else:
                raft_db.unlink()
            proc = _start_alone(cluster, "s1")
            try:
                out, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert proc.returncode == 1, (damage, out, err)
            assert "already bootstrapped" in err and "Raft data is lost" in err, err
            assert "etcdctl member remove" in err and "etcdctl member add" in err, err
            assert "snapshot restore" in err, err
            assert not raft_db.exists() or raft_db.stat().st_size == 0, "refusal wrote raft.db"
        raft_db.write_bytes(saved)
        for suffix in ("-wal", "-shm"):
            raft_db.with_name(raft_db.name + suffix).unlink(missing_ok=True)
        cluster.start_member("s1")
        cluster.wait_ready(timeout=START_TIMEOUT_S)
        with grpc.insecure_channel(cluster.member("s1").endpoint) as ch:
            got = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"a"), timeout=10)
            assert got.kvs[0].value == b"1"


def test_existing_member_without_data_refuses_to_start(tmp_path: Path) -> None:
    """--initial-cluster-state existing on an empty data dir with no other member to join:
    refused, nothing written; the same member with state new starts (a brand-new cluster)."""
    cluster = K8semuStoreCluster(tmp_path / "c", 1)
    with cluster:
        proc = _start_alone(cluster, "s1", "--initial-cluster-state", "existing")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1, (out, err)
        assert "--initial-cluster-state existing" in err and "no member but s1" in err, err
        cluster.start()
        cluster.wait_ready(timeout=START_TIMEOUT_S)
        assert (cluster.member("s1").data_dir / "member").exists()


class _CountingMaintenance:
    """A Maintenance stub that counts its Snapshot calls."""

    def __init__(self, stub: rpc_pb2_grpc.MaintenanceStub) -> None:
        self.stub = stub
        self.calls = 0

    def Snapshot(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.stub.Snapshot(*args, **kwargs)


async def test_request_limits(store_cluster: K8semuStoreCluster, tmp_path: Path) -> None:
    """Nested txns count against --max-txn-ops; one Snapshot stream at a time per replica,
    and a backup waits for the one being sent (it retries a refusal) instead of failing."""
    channel, c = _kv(store_cluster.member("s1").endpoint)
    try:
        get = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"k"))
        nested = rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[get] * 100))
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await c.kv.Txn(rpc_pb2.TxnRequest(success=[nested, nested]), timeout=10)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ei.value.details() == "etcdserver: too many operations in txn request"
        ok = await c.kv.Txn(rpc_pb2.TxnRequest(success=[nested]), timeout=10)
        assert ok.succeeded

        # Enough data that a snapshot does not fit in the flow-control window of a channel
        # that does not grow it (no BDP probing): the first stream stays open while unread.
        for i in range(40):
            await c.kv.Put(rpc_pb2.PutRequest(key=b"big%d" % i, value=b"x" * 50_000), timeout=10)
        slow = grpc.aio.insecure_channel(
            store_cluster.member("s1").endpoint, options=[("grpc.http2.bdp_probe", 0)]
        )
        first = rpc_pb2_grpc.MaintenanceStub(slow).Snapshot(rpc_pb2.SnapshotRequest(), timeout=60)
        chunk = await first.read()
        assert isinstance(chunk, rpc_pb2.SnapshotResponse) and chunk.remaining_bytes > 0
        second = c.maintenance.Snapshot(rpc_pb2.SnapshotRequest(), timeout=60)
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            async for _ in second:
                pass
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "snapshot is already being sent" in (ei.value.details() or "")
        counting = _CountingMaintenance(c.maintenance)
        waiting = asyncio.create_task(
            take._stream_when_free(counting, tmp_path / "snap", 60)  # type: ignore[arg-type]
        )
        await Eventually()(lambda: counting.calls >= 2, what="the backup retried")
        assert not waiting.done()
        total = len(chunk.blob)
        while (more := await first.read()) is not grpc.aio.EOF:
            assert isinstance(more, rpc_pb2.SnapshotResponse)
            total += len(more.blob)
        assert total > 2_000_000
        await waiting  # the first stream is done: the waiting backup got its snapshot
        assert (tmp_path / "snap").stat().st_size > 2_000_000
        # Once the first is done, the next one is served.
        async for _ in c.maintenance.Snapshot(rpc_pb2.SnapshotRequest(), timeout=60):
            pass
        await slow.close()
    finally:
        await channel.close()


async def test_compaction_and_defrag_reclaim_space(store_cluster: K8semuStoreCluster) -> None:
    """Compact frees pages (dbSizeInUse drops below dbSize); Defragment gives them back
    (dbSize drops), on each member it is sent to, without losing current data."""
    channel, c = _kv(store_cluster.member("s1").endpoint)
    try:
        for i in range(60):
            await c.kv.Put(
                rpc_pb2.PutRequest(key=b"k%d" % (i % 6), value=b"v" * 20_000), timeout=10
            )
        put = await c.kv.Put(rpc_pb2.PutRequest(key=b"last", value=b"1"), timeout=10)
        before = await c.maintenance.Status(rpc_pb2.StatusRequest(), timeout=10)
        await c.kv.Compact(
            rpc_pb2.CompactionRequest(revision=put.header.revision, physical=True), timeout=30
        )
        compacted = await c.maintenance.Status(rpc_pb2.StatusRequest(), timeout=10)
        assert compacted.dbSizeInUse < before.dbSizeInUse / 2, (before, compacted)
        assert compacted.dbSize == before.dbSize
        await c.maintenance.Defragment(rpc_pb2.DefragmentRequest(), timeout=60)
        after = await c.maintenance.Status(rpc_pb2.StatusRequest(), timeout=10)
        assert after.dbSize == after.dbSizeInUse < before.dbSize / 2, (before, after)
        file = store_cluster.member("s1").data_dir / "kv.db"
        assert file.stat().st_size <= after.dbSize
        got = await c.kv.Range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l"), timeout=10)
        assert len(got.kvs) == 6 and all(kv.value == b"v" * 20_000 for kv in got.kvs)
        # Alarm GET answers with no alarms on a healthy cluster.
        alarms = await c.maintenance.Alarm(rpc_pb2.AlarmRequest(), timeout=10)
        assert list(alarms.alarms) == []
    finally:
        await channel.close()
