"""Consensus is never held up by background work: a 3-replica store under sustained writes,
with snapshots every few dozen entries and Compact calls, keeps its leader and its term."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc

from k8semu import transport
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.etcd import rpc_pb2

from .conftest import Client

WRITERS = 16
WRITES_EACH = 100
SNAPSHOT_COUNT = 100


async def _statuses(clients: dict[str, Client]) -> dict[str, tuple[int, int]]:
    out = {}
    for name, c in clients.items():
        st = await c.maintenance.Status(rpc_pb2.StatusRequest(), timeout=5)
        out[name] = (st.leader, st.raftTerm)
    return out


async def test_leader_and_term_survive_snapshots_and_compactions(tmp_path: Path) -> None:
    cluster = K8semuStoreCluster(
        tmp_path / "c",
        3,
        extra_args=["--snapshot-count", str(SNAPSHOT_COUNT), "--log-format", "json"],
    )
    with cluster:
        cluster.start()
        cluster.wait_ready(timeout=60)
        channels = {n: transport.channel(m.endpoint) for n, m in cluster.members.items()}
        try:
            clients = {n: Client(ch) for n, ch in channels.items()}
            before = await _statuses(clients)
            assert len(set(before.values())) == 1, before
            names = list(clients)
            failures: list[str] = []

            async def writer(k: int) -> None:
                c = clients[names[k % len(names)]]
                for i in range(WRITES_EACH):
                    key = b"/sustained/%02d/%04d" % (k, i % 50)
                    try:
                        resp = await c.kv.Put(
                            rpc_pb2.PutRequest(key=key, value=b"v" * 200), timeout=10
                        )
                    except grpc.aio.AioRpcError as exc:
                        failures.append(f"{exc.code().name}: {exc.details()}")
                        continue
                    if k == 0 and i % 25 == 24:
                        # Compaction goes through the log too; physical=True waits for it.
                        await c.kv.Compact(
                            rpc_pb2.CompactionRequest(
                                revision=resp.header.revision - 10, physical=True
                            ),
                            timeout=10,
                        )

            await asyncio.gather(*(writer(k) for k in range(WRITERS)))
            after = await _statuses(clients)
        finally:
            for ch in channels.values():
                await ch.close()
        assert not failures, failures[:5]
        assert after == before, f"leader/term changed: before {before}, after {after}"
        snapshots = 0
        for m in cluster.members.values():
            for line in m.log_path.read_text().splitlines():
                if '"snapshot taken"' in line:
                    snapshots += 1
                    assert json.loads(line)["index"] > 0
        # Every replica takes its own: several each.
        assert snapshots >= 3 * (WRITERS * WRITES_EACH // SNAPSHOT_COUNT // 2), snapshots
