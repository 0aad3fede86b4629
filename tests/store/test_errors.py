"""Raft's errors become etcd's at the store's boundary: the same status and text for clients."""

from __future__ import annotations

import grpc
import pytest

from k8semu.raft import errors as raft_errors
from k8semu.store import errors


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (raft_errors.ProposalDropped("no leader"), errors.ErrNoLeader),
        # A subclass wins over its base: a transfer means the leader is about to change.
        (raft_errors.TransferInProgress("transfer"), errors.ErrLeaderChanged),
        (raft_errors.LeaderChanged(), errors.ErrLeaderChanged),
        (raft_errors.NodeStopped(), errors.ErrStopped),
        (raft_errors.NotLeader(), errors.ErrNotLeader),
        (raft_errors.BadTransferee(), errors.ErrBadLeaderTransferee),
        (raft_errors.TransferTimeout(), errors.ErrTimeoutLeaderTransfer),
    ],
)
def test_raft_errors_map_to_etcds(
    raised: raft_errors.RaftError, expected: type[errors.StoreError]
) -> None:
    translated = errors.from_raft(raised)
    assert type(translated) is expected
    assert translated.message == expected.message


def test_a_damaged_raft_log_keeps_its_message() -> None:
    translated = errors.from_raft(raft_errors.CorruptLogError("/d/raft.db: integrity check"))
    assert isinstance(translated, errors.CorruptDataError)
    assert translated.code is grpc.StatusCode.DATA_LOSS
    assert translated.message == "/d/raft.db: integrity check"


def test_every_raft_error_has_a_translation() -> None:
    """A new Raft error must not reach clients as a bare UNKNOWN by accident."""
    named = [
        getattr(raft_errors, name)
        for name in raft_errors.__all__
        if name not in ("RaftError", "SnapshotRejected")  # the driver's misuse, never a request
    ]
    for cls in named:
        exc = cls("x")
        assert type(errors.from_raft(exc)) is not errors.StoreError, cls
