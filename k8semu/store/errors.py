"""Every error the store returns, as named exception classes.

    StoreError                      a request the store refused; carries a gRPC status code
    +-- ErrCompacted, ErrFutureRev, ErrKeyNotFound, ... (one class per etcd error)
    +-- CorruptDataError            a data file on disk failed its integrity check
    +-- CorruptSnapshotError        a snapshot file failed its checksum or format check
    +-- MemberDataLostError         a bootstrapped member whose Raft log is missing or empty

The messages are etcd's own, so etcdctl prints the same text against k8semu as against etcd.
Each is a class, not a shared instance: `raise errors.ErrNoLeader` makes a fresh exception
every time (a shared instance would pile up tracebacks, and the frames they hold, with every
raise), and callers test with `isinstance`. Servicers translate a StoreError into a gRPC
status at the boundary; nothing else should. Raft raises its own errors
(`k8semu.raft.errors`); the replica turns them into these with `from_raft` where it calls Raft.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

from k8semu.raft import errors as raft_errors

_C = grpc.StatusCode


class StoreError(Exception):
    """A refused request: `code` is the gRPC status, `message` the text clients see."""

    code: ClassVar[grpc.StatusCode] = _C.UNKNOWN
    message: str = "etcdserver: unknown error"

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r})"


class CorruptDataError(StoreError):
    """A data file (kv.db, raft.db) is damaged; the replica refuses to start on it."""

    code = _C.DATA_LOSS


class CorruptSnapshotError(StoreError):
    """A snapshot file is truncated, has a bad checksum or is not a k8semu snapshot."""

    code = _C.DATA_LOSS


class MemberDataLostError(StoreError):
    """A member that was already part of a cluster lost its Raft log; it must not rejoin
    as a fresh member under its old id (it could vote twice in one term)."""

    code = _C.FAILED_PRECONDITION


class ErrCompacted(StoreError):
    code = _C.OUT_OF_RANGE
    message = "etcdserver: mvcc: required revision has been compacted"


class ErrFutureRev(StoreError):
    code = _C.OUT_OF_RANGE
    message = "etcdserver: mvcc: required revision is a future revision"


class ErrKeyNotFound(StoreError):
    code = _C.INVALID_ARGUMENT
    message = "etcdserver: key not found"


class ErrEmptyKey(StoreError):
    code = _C.INVALID_ARGUMENT
    message = "etcdserver: key is not provided"


class ErrDuplicateKey(StoreError):
    code = _C.INVALID_ARGUMENT
    message = "etcdserver: duplicate key given in txn request"


class ErrTooManyOps(StoreError):
    code = _C.INVALID_ARGUMENT
    message = "etcdserver: too many operations in txn request"


class ErrRequestTooLarge(StoreError):
    code = _C.INVALID_ARGUMENT
    message = "etcdserver: request is too large"


class ErrNoSpace(StoreError):
    code = _C.RESOURCE_EXHAUSTED
    message = "etcdserver: mvcc: database space exceeded"


class ErrTooManyRequests(StoreError):
    code = _C.RESOURCE_EXHAUSTED
    message = "etcdserver: too many requests"


class ErrLeaseNotFound(StoreError):
    code = _C.NOT_FOUND
    message = "etcdserver: requested lease not found"


class ErrLeaseExist(StoreError):
    code = _C.FAILED_PRECONDITION
    message = "etcdserver: lease already exists"


class ErrLeaseTTLTooLarge(StoreError):
    code = _C.OUT_OF_RANGE
    message = "etcdserver: too large lease TTL"


class ErrNoLeader(StoreError):
    code = _C.UNAVAILABLE
    message = "etcdserver: no leader"


class ErrTimeout(StoreError):
    code = _C.UNAVAILABLE
    message = "etcdserver: request timed out"


class ErrLeaderChanged(StoreError):
    code = _C.UNAVAILABLE
    message = "etcdserver: leader changed"


class ErrNotLeader(StoreError):
    code = _C.FAILED_PRECONDITION
    message = "etcdserver: not leader"


class ErrBadLeaderTransferee(StoreError):
    code = _C.FAILED_PRECONDITION
    message = "etcdserver: bad leader transferee"


class ErrTimeoutLeaderTransfer(StoreError):
    code = _C.UNAVAILABLE
    message = "etcdserver: request timed out, leader transfer took too long"


class ErrStopped(StoreError):
    code = _C.UNAVAILABLE
    message = "etcdserver: server stopped"


class ErrWatchIDExists(StoreError):
    code = _C.INVALID_ARGUMENT
    message = "mvcc: watcher ID already exists"


# Not etcd errors (etcd clamps TTLs and never sees undecodable entries).


class ErrLeaseTTLInvalid(StoreError):
    code = _C.INVALID_ARGUMENT
    message = "etcdserver: lease TTL must be positive"


class ErrMalformedEntry(StoreError):
    code = _C.INVALID_ARGUMENT
    message = "k8semu: malformed raft entry (not an InternalRequest)"


class ErrTooManyKeys(StoreError):
    code = _C.INVALID_ARGUMENT
    message = "k8semu: too many keys written in one revision"


class ErrResponseTooLarge(StoreError):
    """etcd would build the response and gRPC would refuse to send it; k8semu stops building
    at the limit instead (docs/store.md, "Bounded responses")."""

    code = _C.RESOURCE_EXHAUSTED
    message = "k8semu: range response too large"


class ErrTooManySnapshots(StoreError):
    code = _C.RESOURCE_EXHAUSTED
    message = "k8semu: a snapshot is already being sent by this member; try again later"


class ErrCorrupt(StoreError):
    code = _C.DATA_LOSS
    message = "etcdserver: corrupt cluster"


# Membership changes (etcd's rpctypes texts for the Cluster service).
class ErrMemberExist(StoreError):
    code = _C.FAILED_PRECONDITION
    message = "etcdserver: member ID already exist"


class ErrPeerURLExist(StoreError):
    code = _C.FAILED_PRECONDITION
    message = "etcdserver: Peer URLs already exists"


class ErrMemberNotEnoughStarted(StoreError):
    code = _C.FAILED_PRECONDITION
    message = "etcdserver: re-configuration failed due to not enough started members"


class ErrMemberBadURLs(StoreError):
    code = _C.INVALID_ARGUMENT
    message = "etcdserver: given member URLs are invalid"


class ErrMemberNotFound(StoreError):
    code = _C.NOT_FOUND
    message = "etcdserver: member not found"


class ErrUnhealthy(StoreError):
    code = _C.UNAVAILABLE
    message = "etcdserver: unhealthy cluster"


class ErrTooManyLearners(StoreError):
    code = _C.FAILED_PRECONDITION
    message = "etcdserver: too many learner members in cluster"


class ErrMemberNotLearner(StoreError):
    code = _C.FAILED_PRECONDITION
    message = "etcdserver: can only promote a learner member"


class ErrLearnerNotReady(StoreError):
    code = _C.FAILED_PRECONDITION
    message = "etcdserver: can only promote a learner member which is in sync with leader"


class ErrConfChangeInProgress(StoreError):
    code = _C.UNAVAILABLE
    message = "k8semu: another membership change is not applied yet; retry"


class ErrMemberRemoved(StoreError):
    code = _C.FAILED_PRECONDITION
    message = "the member has been permanently removed from the cluster"


class JoinError(StoreError):
    """A member started with --initial-cluster-state existing cannot join (it is not an
    added member of a cluster its --initial-cluster reaches)."""

    code = _C.FAILED_PRECONDITION


# Raft's errors as etcd names them (etcdserver's own translation of raft.ErrProposalDropped
# and its leader-transfer errors); the most specific class wins.
_FROM_RAFT: dict[type, type[StoreError]] = {
    raft_errors.TransferInProgress: ErrLeaderChanged,
    raft_errors.ProposalDropped: ErrNoLeader,
    raft_errors.LeaderChanged: ErrLeaderChanged,
    raft_errors.NodeStopped: ErrStopped,
    raft_errors.NotLeader: ErrNotLeader,
    raft_errors.BadTransferee: ErrBadLeaderTransferee,
    raft_errors.TransferTimeout: ErrTimeoutLeaderTransfer,
    raft_errors.ConfChangeInProgress: ErrConfChangeInProgress,
}


def from_raft(exc: raft_errors.RaftError) -> StoreError:
    """The store's error for one of Raft's (a damaged raft.db keeps its message)."""
    if isinstance(exc, raft_errors.CorruptLogError):
        return CorruptDataError(str(exc))
    for cls in type(exc).__mro__:
        store_error = _FROM_RAFT.get(cls)
        if store_error is not None:
            return store_error()
    return StoreError(f"raft: {exc}")


def remote(code: grpc.StatusCode, details: str) -> StoreError:
    """The error another replica answered with (a forwarded request): the same class when
    it is one of ours, so clients see exactly what the other replica said."""
    pending: list[type[StoreError]] = [StoreError]
    while pending:
        cls = pending.pop()
        if cls.code == code and cls.message == details:
            return cls()
        pending.extend(cls.__subclasses__())
    return StoreError(details)
