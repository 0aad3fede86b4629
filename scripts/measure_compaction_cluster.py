#!/usr/bin/env python3
"""Compaction and defragmentation on a real 3-replica store, through etcdctl (docs/store.md).

Fills the store with 10,000 keys x 10 versions of 256 bytes (1,000 txns of 100 puts), then
times `etcdctl compaction --physical` and `etcdctl defrag` on every member, printing each
member's Raft term, leader and dbSize/dbSizeInUse before and after (the term and leader must
not change), and the replicas' own log lines with the longest batch of each run.

Usage: scripts/measure_compaction_cluster.py [DIR]   (default: a temporary directory)
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from k8semu import transport
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

KEYS, VERSIONS, VALUE, PER_TXN = 10_000, 10, 256, 100


def _etcdctl(endpoints: list[str], *args: str) -> str:
    argv = ["etcdctl", "--endpoints", ",".join(endpoints), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def _status(endpoints: list[str]) -> list[tuple[int, str, int, int]]:
    rows = json.loads(_etcdctl(endpoints, "endpoint", "status", "-w", "json"))
    return [
        (s["raftTerm"], f"{s['leader']:x}", s["dbSize"], s["dbSizeInUse"])
        for s in (r["Status"] for r in rows)
    ]


async def _fill(endpoint: str) -> int:
    async with transport.channel(endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        revision = 0
        for version in range(VERSIONS):
            value = b"v" * VALUE + bytes([version])
            for first in range(0, KEYS, PER_TXN):
                ops = [
                    rpc_pb2.RequestOp(
                        request_put=rpc_pb2.PutRequest(key=b"key/%08d" % k, value=value)
                    )
                    for k in range(first, first + PER_TXN)
                ]
                for _ in range(5):  # a loaded machine may cost a leader
                    try:
                        reply = await kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=20)
                        revision = reply.header.revision
                        break
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(1)
        return revision


def main() -> None:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    cluster = K8semuStoreCluster(base / "cluster", 3)
    try:
        with cluster:
            cluster.start()
            cluster.wait_ready(timeout=120)
            t0 = time.perf_counter()
            revision = asyncio.run(_fill(cluster.member("s1").endpoint))
            print(f"filled in {time.perf_counter() - t0:.1f}s, revision {revision}")
            endpoints = cluster.endpoints
            print("before      (term, leader, dbSize, dbSizeInUse):", _status(endpoints))
            t0 = time.perf_counter()
            _etcdctl(endpoints[:1], "compaction", "--physical", str(revision))
            print(f"etcdctl compaction --physical: {time.perf_counter() - t0:.2f}s")
            # The other members carry it out on their own; wait until all have.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len({s[3] for s in _status(endpoints)}) > 1:
                time.sleep(0.2)
            print("compacted   ", _status(endpoints))
            t0 = time.perf_counter()
            _etcdctl(endpoints, "defrag")
            print(f"etcdctl defrag (3 members): {time.perf_counter() - t0:.2f}s")
            print("defragmented", _status(endpoints))
            for name, member in cluster.members.items():
                for line in member.log_path.read_text().splitlines():
                    if "compaction carried out" in line or "defragmented" in line:
                        print(name, line.split("] ", 1)[-1])
    finally:
        if len(sys.argv) <= 1:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
