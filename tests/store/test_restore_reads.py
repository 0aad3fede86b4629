"""Linearizable reads around a snapshot install, on one replica's state machine (no Raft, no
processes): a read waits for the read index the leader gave it, and what it then reads must
hold every entry up to that index, whether they came by snapshot or by the log after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from k8semu.pb.etcd import rpc_pb2
from k8semu.pb.raft import raft_pb2
from k8semu.pb.store import internal_pb2
from k8semu.store import snapshot
from k8semu.store.errors import CorruptSnapshotError
from k8semu.store.mvcc import MVCCStore, write_snapshot_of
from k8semu.store.statemachine import StoreStateMachine

TERM = 2


def _put(index: int) -> raft_pb2.Entry:
    """Entry `index` puts k = v<index> (so the value says which entry a read saw)."""
    request = internal_pb2.InternalRequest(
        id=index, put=rpc_pb2.PutRequest(key=b"k", value=b"v%d" % index)
    )
    return raft_pb2.Entry(index=index, term=TERM, data=request.SerializeToString())


def _snapshot_at(tmp_path: Path, index: int) -> Path:
    """A snapshot file of a store that applied entries 1..index, as a leader makes it."""
    kv = tmp_path / "leader" / "kv.db"
    kv.parent.mkdir()
    with MVCCStore(kv) as leader:
        leader.apply_batch([(e.index, e.term, e.data) for e in map(_put, range(1, index + 1))])
    path = tmp_path / f"{index:016x}.snap"
    write_snapshot_of(kv, path)
    return path


async def _value(sm: StoreStateMachine) -> bytes:
    response = await sm.run(sm.mvcc.range, rpc_pb2.RangeRequest(key=b"k"))
    return bytes(response.kvs[0].value) if response.kvs else b""


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[StoreStateMachine]:
    """A replica that joined empty (as a replaced member does) and applied entries 1..3."""
    (tmp_path / "replica").mkdir()
    sm = StoreStateMachine(tmp_path / "replica" / "kv.db")
    await sm.open()
    await sm.apply([_put(i) for i in (1, 2, 3)])
    yield sm
    await sm.close()


async def test_a_read_waiting_for_an_index_the_snapshot_covers_reads_the_snapshot(
    replica: StoreStateMachine, tmp_path: Path
) -> None:
    """No entry follows the snapshot: the waiting read is released by the install itself
    (before, it waited for the next apply, which an idle store never made)."""
    snap = _snapshot_at(tmp_path, 10)
    read = asyncio.create_task(replica.wait_applied(8))
    await asyncio.sleep(0)
    assert not read.done()
    await replica.restore(snap, raft_pb2.SnapshotMetadata(index=10, term=TERM))
    await asyncio.wait_for(read, timeout=10)
    assert await _value(replica) == b"v10"


async def test_a_read_waiting_past_the_snapshot_waits_for_the_entries_after_it(
    replica: StoreStateMachine, tmp_path: Path
) -> None:
    snap = _snapshot_at(tmp_path, 10)
    read = asyncio.create_task(replica.wait_applied(12))
    await replica.restore(snap, raft_pb2.SnapshotMetadata(index=10, term=TERM))
    await asyncio.sleep(0)
    assert not read.done(), "released before entry 12 was applied"
    await replica.apply([_put(11)])
    await asyncio.sleep(0)
    assert not read.done(), "released before entry 12 was applied"
    await replica.apply([_put(12)])
    await asyncio.wait_for(read, timeout=10)
    assert await _value(replica) == b"v12"


async def test_a_snapshot_of_another_index_is_refused_and_the_state_stays(
    replica: StoreStateMachine, tmp_path: Path
) -> None:
    """A file taken at index 10 offered as index 12: installed, it would claim entries 11
    and 12 without holding them, and a read waiting for 12 would be served v10."""
    snap = _snapshot_at(tmp_path, 10)
    with pytest.raises(CorruptSnapshotError, match="taken at Raft index 10, installed as 12"):
        await replica.verify_snapshot(snap, 12)
    read = asyncio.create_task(replica.wait_applied(12))
    with pytest.raises(CorruptSnapshotError, match="installed as 12"):
        await replica.restore(snap, raft_pb2.SnapshotMetadata(index=12, term=TERM))
    await asyncio.sleep(0)
    assert not read.done()
    assert replica.applied_index == 3
    assert await _value(replica) == b"v3"  # the old state still serves
    assert not (tmp_path / "replica" / "kv.restore").exists()
    read.cancel()


async def test_a_bad_snapshot_file_leaves_the_state_serving(
    replica: StoreStateMachine, tmp_path: Path
) -> None:
    snap = _snapshot_at(tmp_path, 10)
    data = bytearray(snap.read_bytes())
    data[-100] ^= 0xFF
    snap.write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshotError):
        await replica.restore(snap, raft_pb2.SnapshotMetadata(index=10, term=TERM))
    assert replica.applied_index == 3
    assert await _value(replica) == b"v3"
    assert snapshot.read_header(snap).raft_index == 10
