"""Named error values of the Raft core.

The core raises only for misuse by its local caller (the driver); input from the network never
raises, it is ignored. The whole hierarchy::

    RaftError
    ├── ProposalDropped     propose()/read_index() while no leader is known
    │   └── TransferInProgress  propose() on a leader handing leadership over
    └── SnapshotRejected    set_snapshot() with metadata the log cannot vouch for
"""

from __future__ import annotations

__all__ = ["ProposalDropped", "RaftError", "SnapshotRejected", "TransferInProgress"]


class RaftError(Exception):
    """Base of every error the Raft core raises."""


class ProposalDropped(RaftError):
    """The request was not accepted: no leader is known (election in progress or no quorum).

    The caller retries later; the store maps this to gRPC UNAVAILABLE.
    """


class TransferInProgress(ProposalDropped):
    """The leader is transferring leadership (Raft thesis 3.10) and takes no new proposals.

    Nothing was appended; the store maps this to etcd's "leader changed" (UNAVAILABLE).
    """


class SnapshotRejected(RaftError):
    """set_snapshot() was given an index beyond the commit index or a term the log contradicts."""
