"""Micro-benchmark of the pure core: propose -> ready -> advance on a 3-node in-memory cluster.

Run: ``.venv/bin/python -m tests.raft.bench_core``. Messages are handed straight to the
receiver and "persisting" is a no-op, so this measures the core's own CPU cost per proposal
(protobuf construction included), i.e. the ceiling the store's throughput can reach.
"""

from __future__ import annotations

import random
import time

from k8semu.pb.raft.raft_pb2 import SnapshotMetadata
from k8semu.raft import Config, Raft, StateRole

# Like the driver's default snapshot_count: the in-memory log stays bounded.
SNAPSHOT_EVERY = 10_000


def cluster(n: int = 3) -> dict[int, Raft]:
    voters = tuple(range(1, n + 1))
    nodes = {i: Raft(Config(id=i, voters=voters), random.Random(i)) for i in voters}
    while nodes[1].role is not StateRole.LEADER:
        nodes[1].tick()
        pump(nodes)
    return nodes


def pump(nodes: dict[int, Raft]) -> int:
    """Run every node's Ready loop until quiet; returns entries applied by node 1."""
    applied = 0
    busy = True
    while busy:
        busy = False
        for node_id, raft in nodes.items():
            if not raft.has_ready():
                continue
            busy = True
            rd = raft.ready()
            for m in rd.messages:
                nodes[m.to].step(m)
            if node_id == 1:
                applied += len(rd.committed_entries)
            raft.advance(rd)
            snap = raft.snapshot_meta
            if raft.applied - (snap.index if snap else 0) >= SNAPSHOT_EVERY:
                term = raft.log_term(raft.applied)
                assert term is not None
                raft.set_snapshot(SnapshotMetadata(index=raft.applied, term=term))
                raft.compact(raft.applied)
    return applied


def run(batch: int, total: int, size: int = 128) -> float:
    nodes = cluster()
    leader = nodes[1]
    payload = bytes(size)
    done = 0
    start = time.perf_counter()
    while done < total:
        leader.propose_batch([payload] * batch)
        done += pump(nodes)
    return done / (time.perf_counter() - start)


def main() -> None:
    for batch in (1, 10, 100, 1000):
        total = 50_000 if batch > 1 else 5_000
        rate = run(batch, total)
        print(f"batch {batch:>4}: {rate:>10,.0f} proposals/s committed and applied (3 nodes)")


if __name__ == "__main__":
    main()
