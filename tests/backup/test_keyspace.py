"""Keyspace export/import (JSON lines) between our store and a real etcd 3.4, both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k8semu import transport
from k8semu.backup import keyspace
from k8semu.backup.archive import BackupError
from k8semu.cluster.processes import EtcdCluster, K8semuStoreCluster
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not EtcdCluster.available(), reason="no etcd binary installed"),
]

START_TIMEOUT_S = 60.0


async def _fill(endpoint: str) -> None:
    async with transport.channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        lease = await rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(
            rpc_pb2.LeaseGrantRequest(TTL=600), timeout=10
        )
        for i in range(300):  # more than one export page and one import txn
            key = f"/registry/configmaps/ns{i % 3}/cm-{i:03d}".encode()
            await kv.Put(rpc_pb2.PutRequest(key=key, value=bytes(range(256)) * 2), timeout=10)
        await kv.Put(rpc_pb2.PutRequest(key=b"/registry/leases/x", value=b"\0\xff"), timeout=10)
        await kv.Put(
            rpc_pb2.PutRequest(key=b"/registry/leases/held", value=b"v", lease=lease.ID),
            timeout=10,
        )
        await kv.Put(rpc_pb2.PutRequest(key=b"/registry/leases/x", value=b"v2"), timeout=10)


def _content(path: Path) -> tuple[list[tuple[str, str, bool]], list[int]]:
    """(key, value, has a lease) of every kv line, and the leases' ids."""
    kvs, leases = [], []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["type"] == "kv":
            kvs.append((record["key"], record["value"], record["lease"] != 0))
        elif record["type"] == "lease":
            leases.append(record["id"])
    return kvs, leases


async def test_our_store_to_etcd_and_back(tmp_path: Path) -> None:
    ours = K8semuStoreCluster(tmp_path / "ours", 1)
    etcd = EtcdCluster(tmp_path / "etcd", 1)
    back = K8semuStoreCluster(tmp_path / "back", 1)
    with ours, etcd, back:
        for c in (ours, etcd, back):
            c.start()
        for c in (ours, etcd, back):
            c.wait_ready(timeout=START_TIMEOUT_S)
        await _fill(ours.endpoints[0])
        first = tmp_path / "ours.jsonl"
        with first.open("w") as f:
            assert await keyspace.export_keyspace(ours.endpoints, f) == (302, 1)

        report = await keyspace.import_keyspace(etcd.endpoints, first)
        assert (report.keys, report.leases) == (302, 1)
        from_etcd = tmp_path / "etcd.jsonl"
        with from_etcd.open("w") as f:
            await keyspace.export_keyspace(etcd.endpoints, f)
        assert _content(from_etcd) == _content(first)

        await keyspace.import_keyspace(back.endpoints, from_etcd)
        again = tmp_path / "back.jsonl"
        with again.open("w") as f:
            await keyspace.export_keyspace(back.endpoints, f)
        assert _content(again) == _content(first)

        # Refused, and nothing written: a non-empty target; a truncated file.
        with pytest.raises(BackupError, match="holds 302 keys"):
            await keyspace.import_keyspace(etcd.endpoints, first)
        truncated = tmp_path / "truncated.jsonl"
        truncated.write_text("\n".join(first.read_text().splitlines()[:-1]) + "\n")
        with pytest.raises(BackupError, match="truncated: no footer"):
            keyspace.read_records(truncated)
        broken = tmp_path / "broken.jsonl"
        lines = first.read_text().splitlines()
        lines[5] = lines[5].replace('"key":"', '"key":"!!')
        broken.write_text("\n".join(lines) + "\n")
        with pytest.raises(BackupError, match=r"broken.jsonl:6: key/value"):
            keyspace.read_records(broken)
