"""raft.db: what is saved is what is loaded, suffixes are replaced, damage is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from k8semu.pb.raft import raft_pb2
from k8semu.raft.errors import CorruptLogError
from k8semu.raft.storage import RaftStorage

CLUSTER, MEMBER = 0xC1, 0xFFFF_FFFF_FFFF_FF01  # member id above 2**63 exercises the u64 mapping


def _entries(first: int, last: int, term: int) -> list[raft_pb2.Entry]:
    return [raft_pb2.Entry(index=i, term=term, data=b"x%d" % i) for i in range(first, last + 1)]


async def test_save_load_roundtrip_and_suffix_replacement(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    storage = await RaftStorage.open(path, cluster_id=CLUSTER, member_id=MEMBER)
    await storage.save(raft_pb2.HardState(term=2, vote=MEMBER, commit=3), _entries(1, 5, 2))
    # A new leader's entries overwrite the conflicting suffix from index 4 on.
    await storage.save(None, _entries(4, 6, 3))
    await storage.close()

    storage = await RaftStorage.open(path, cluster_id=CLUSTER, member_id=MEMBER)
    state = await storage.load()
    await storage.close()
    assert (state.hard_state.term, state.hard_state.vote, state.hard_state.commit) == (2, MEMBER, 3)
    assert [(e.index, e.term) for e in state.entries] == [
        (1, 2),
        (2, 2),
        (3, 2),
        (4, 3),
        (5, 3),
        (6, 3),
    ]


async def test_snapshot_compacts_and_installed_snapshot_replaces_log(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    storage = await RaftStorage.open(path, cluster_id=CLUSTER, member_id=MEMBER)
    await storage.save(raft_pb2.HardState(term=1, commit=10), _entries(1, 10, 1))
    meta = raft_pb2.SnapshotMetadata(index=8, term=1, voters=[1, 2, 3])
    await storage.set_snapshot(meta, compact_to=5)
    state = await storage.load()
    assert state.snapshot is not None and state.snapshot.index == 8
    assert [e.index for e in state.entries] == [9, 10]

    installed = raft_pb2.SnapshotMetadata(index=20, term=4, voters=[1, 2, 3])
    await storage.save(raft_pb2.HardState(term=4, commit=20), [], snapshot=installed)
    state = await storage.load()
    await storage.close()
    assert state.snapshot is not None and (state.snapshot.index, state.snapshot.term) == (20, 4)
    assert list(state.snapshot.voters) == [1, 2, 3]
    assert state.entries == []


async def test_refuses_data_dir_of_another_member(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    storage = await RaftStorage.open(path, cluster_id=CLUSTER, member_id=MEMBER)
    await storage.close()
    with pytest.raises(CorruptLogError, match="belongs to cluster"):
        await RaftStorage.open(path, cluster_id=CLUSTER, member_id=7)


async def test_refuses_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CorruptLogError, match=str(path)):
        await RaftStorage.open(path, cluster_id=CLUSTER, member_id=MEMBER)
