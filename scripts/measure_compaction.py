#!/usr/bin/env python3
"""How long compaction and defragmentation hold the MVCC thread (figures for docs/store.md).

Fills a kv.db directly through MVCCStore (KEYS keys, VERSIONS versions each, VALUE bytes per
value), compacts at the newest revision, then carries the compaction out with compact_step and
the defragmentation with defrag_step exactly as a replica does, timing every batch: the longest
batch is how long an apply can wait behind it. For comparison, one full VACUUM of the same file.

Usage: scripts/measure_compaction.py [--keys 20000] [--versions 10] [--value 256] [--dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from k8semu.pb.etcd import rpc_pb2
from k8semu.pb.store import internal_pb2
from k8semu.store.mvcc import MVCCStore


def _fill(store: MVCCStore, keys: int, versions: int, value: bytes) -> None:
    index = store.applied_index
    batch: list[tuple[int, int, bytes]] = []
    for v in range(versions):
        for k in range(keys):
            index += 1
            req = internal_pb2.InternalRequest(
                id=index, put=rpc_pb2.PutRequest(key=b"key/%08d" % k, value=value + bytes([v]))
            )
            batch.append((index, 1, req.SerializeToString()))
            if len(batch) == 500:
                store.apply_batch(batch)
                batch.clear()
    if batch:
        store.apply_batch(batch)


def _timed_steps(step: object) -> tuple[int, float, float]:
    """(batches, longest batch, total) in wall time; prints the median and the CPU time of
    the longest batch too (on a shared machine wall time includes waiting for a core)."""
    assert callable(step)
    walls: list[tuple[float, float]] = []
    started = time.perf_counter()
    while True:
        t0, c0 = time.perf_counter(), time.thread_time()
        more = step()
        walls.append((time.perf_counter() - t0, time.thread_time() - c0))
        if not more:
            break
    ordered = sorted(walls)
    median, (longest, cpu) = ordered[len(ordered) // 2][0], ordered[-1]
    print(
        f"  batches: median {median * 1000:.1f} ms; longest {longest * 1000:.1f} ms wall,"
        f" {cpu * 1000:.1f} ms CPU"
    )
    return len(walls), longest, time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=20_000)
    p.add_argument("--versions", type=int, default=10)
    p.add_argument("--value", type=int, default=256)
    p.add_argument("--dir", type=Path, default=None, help="where kv.db goes (default: a tmp dir)")
    ns = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="k8semu-compaction-", dir=ns.dir))
    try:
        path = work / "kv.db"
        store = MVCCStore(path)
        t0 = time.perf_counter()
        _fill(store, ns.keys, ns.versions, b"v" * ns.value)
        print(
            f"filled {ns.keys} keys x {ns.versions} versions of {ns.value} B in "
            f"{time.perf_counter() - t0:.1f}s: db {store.db_size() / 1e6:.1f} MB"
        )
        req = internal_pb2.InternalRequest(
            id=0, compaction=rpc_pb2.CompactionRequest(revision=store.revision)
        )
        t0 = time.perf_counter()
        store.apply_batch([(store.applied_index + 1, 1, req.SerializeToString())])
        print(f"applying the Compact entry: {(time.perf_counter() - t0) * 1000:.2f} ms")
        batches, longest, total = _timed_steps(store.compact_step)
        print(
            f"compaction carried out: {batches} batches, longest {longest * 1000:.1f} ms, "
            f"total {total:.2f}s; db {store.db_size() / 1e6:.1f} MB, "
            f"in use {store.db_size_in_use() / 1e6:.1f} MB"
        )
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        copy = work / "copy.db"
        shutil.copyfile(path, copy)
        batches, longest, total = _timed_steps(store.defrag_step)
        print(
            f"defragmented: {batches} batches, longest {longest * 1000:.1f} ms, total "
            f"{total:.2f}s; db {store.db_size() / 1e6:.1f} MB, "
            f"file {path.stat().st_size / 1e6:.1f} MB"
        )
        store.close()
        db = sqlite3.connect(copy, isolation_level=None)
        t0 = time.perf_counter()
        db.execute("VACUUM")
        print(f"for comparison, one full VACUUM of the same file: {time.perf_counter() - t0:.2f}s")
        db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
