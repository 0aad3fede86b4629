"""Named error values of the Raft core.

The core raises only for misuse by its local caller (the driver); input from the network never
raises, it is ignored. The whole hierarchy::

    RaftError
    ├── ProposalDropped     propose()/read_index() while no leader is known
    └── SnapshotRejected    set_snapshot() with metadata the log cannot vouch for
"""

from __future__ import annotations

__all__ = ["ProposalDropped", "RaftError", "SnapshotRejected"]


class RaftError(Exception):
    """Base of every error the Raft core raises."""


class ProposalDropped(RaftError):
    """The request was not accepted: no leader is known (election in progress or no quorum).

    The caller retries later; the store maps this to gRPC UNAVAILABLE.
    """


class SnapshotRejected(RaftError):
    """set_snapshot() was given an index beyond the commit index or a term the log contradicts."""
