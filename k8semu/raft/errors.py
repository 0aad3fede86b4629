"""Named error values of Raft: the pure core, its asyncio driver and raft.db.

The core raises only for misuse by its local caller (the driver); input from the network never
raises, it is ignored. The driver and the storage raise the rest. Nothing here knows etcd: the
store translates these into etcd's errors at its boundary (``k8semu.store.errors.from_raft``).
The whole hierarchy::

    RaftError
    ├── ProposalDropped     propose()/read_index() while no leader is known
    │   └── TransferInProgress  propose() on a leader handing leadership over
    ├── SnapshotRejected    set_snapshot() with metadata the log cannot vouch for
    ├── LeaderChanged       a read in flight whose leader changed (outcome unknown)
    ├── NodeStopped         the node was stopped, or its loop failed
    ├── NotLeader           transfer_leader() on a replica that does not lead
    ├── BadTransferee       transfer_leader() to a replica that is not a member
    ├── TransferTimeout     the transfer's target did not lead in time
    ├── ConfChangeInProgress  a membership change while another is not applied yet
    └── CorruptLogError     raft.db is damaged, or belongs to another cluster or member

Each is a class: the driver fails waiting futures with the class, so every waiter gets a fresh
instance (a shared one would pile up tracebacks).
"""

from __future__ import annotations

__all__ = [
    "BadTransferee",
    "ConfChangeInProgress",
    "CorruptLogError",
    "LeaderChanged",
    "NodeStopped",
    "NotLeader",
    "ProposalDropped",
    "RaftError",
    "SnapshotRejected",
    "TransferInProgress",
    "TransferTimeout",
]


class RaftError(Exception):
    """Base of every error Raft raises."""


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


class LeaderChanged(RaftError):
    """A read index was asked of a leader that is no longer known to lead: it may never be
    answered. Reads have no side effects, so the caller may retry at once."""


class NodeStopped(RaftError):
    """The node is stopped (or its loop failed and stopped it): nothing more will be done."""


class NotLeader(RaftError):
    """Only the leader can hand leadership over."""


class BadTransferee(RaftError):
    """The target of a leadership transfer is not a member."""


class TransferTimeout(RaftError):
    """The target of a leadership transfer did not become leader in time."""


class ConfChangeInProgress(RaftError):
    """A membership change was proposed while an earlier one is not applied yet: Raft's
    single-server changes are safe one at a time only (thesis 4.1). The caller retries."""


class CorruptLogError(RaftError):
    """raft.db cannot be used: damaged, unreadable, or of another cluster or member. The
    message names the file and the defect; the replica must not start on it."""
