"""The driver's rule for applying committed entries while a Ready is being written."""

from __future__ import annotations

from k8semu.pb.raft import raft_pb2
from k8semu.raft import Ready
from k8semu.raft.driver import durable_prefix


def _entries(first: int, last: int, term: int = 1) -> list[raft_pb2.Entry]:
    return [raft_pb2.Entry(index=i, term=term) for i in range(first, last + 1)]


def test_entries_already_on_disk_may_be_applied_during_the_write() -> None:
    rd = Ready(soft_state=None, hard_state=None, committed_entries=_entries(5, 7))
    assert durable_prefix(rd, stored_last_index=10) == 3
    assert durable_prefix(rd, stored_last_index=6) == 2  # entry 7 arrives with this Ready


def test_entries_this_ready_overwrites_wait_for_the_write() -> None:
    # A new leader's entries replace the stored suffix from index 6 on, and its commit index
    # already covers them: the stored 6 and 7 are stale, so only 5 is durable as committed.
    rd = Ready(
        soft_state=None,
        hard_state=None,
        entries=_entries(6, 8, term=2),
        committed_entries=[*_entries(5, 5), *_entries(6, 7, term=2)],
    )
    assert durable_prefix(rd, stored_last_index=9) == 1


def test_nothing_is_applied_early_with_a_snapshot() -> None:
    rd = Ready(
        soft_state=None,
        hard_state=None,
        snapshot=raft_pb2.SnapshotMetadata(index=4, term=1),
        committed_entries=_entries(5, 6),
    )
    assert durable_prefix(rd, stored_last_index=10) == 0
