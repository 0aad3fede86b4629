"""Every error the store returns, as named values.

    StoreError                  a request the store refused; carries a gRPC status code
    +-- CorruptDataError        a data file on disk failed its integrity check
    +-- CorruptSnapshotError    a snapshot file failed its checksum or format check

The messages are etcd's own, so etcdctl prints the same text against k8semu as against etcd.
Servicers translate a StoreError into a gRPC status at the boundary; nothing else should.
"""

from __future__ import annotations

import grpc


class StoreError(Exception):
    """A refused request: `code` is the gRPC status, `message` the text clients see."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"StoreError({self.code.name}, {self.message!r})"


class CorruptDataError(StoreError):
    """A data file (kv.db, raft.db) is damaged; the replica refuses to start on it."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.DATA_LOSS, message)


class CorruptSnapshotError(StoreError):
    """A snapshot file is truncated, has a bad checksum or is not a k8semu snapshot."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.DATA_LOSS, message)


_C = grpc.StatusCode

ErrCompacted = StoreError(_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
ErrFutureRev = StoreError(
    _C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"
)
ErrKeyNotFound = StoreError(_C.INVALID_ARGUMENT, "etcdserver: key not found")
ErrEmptyKey = StoreError(_C.INVALID_ARGUMENT, "etcdserver: key is not provided")
ErrDuplicateKey = StoreError(_C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
ErrTooManyOps = StoreError(_C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
ErrRequestTooLarge = StoreError(_C.INVALID_ARGUMENT, "etcdserver: request is too large")
ErrLeaseNotFound = StoreError(_C.NOT_FOUND, "etcdserver: requested lease not found")
ErrLeaseExist = StoreError(_C.FAILED_PRECONDITION, "etcdserver: lease already exists")
ErrLeaseTTLTooLarge = StoreError(_C.OUT_OF_RANGE, "etcdserver: too large lease TTL")
ErrNoLeader = StoreError(_C.UNAVAILABLE, "etcdserver: no leader")
ErrTimeout = StoreError(_C.UNAVAILABLE, "etcdserver: request timed out")
ErrLeaderChanged = StoreError(_C.UNAVAILABLE, "etcdserver: leader changed")
ErrStopped = StoreError(_C.UNAVAILABLE, "etcdserver: server stopped")
ErrNotCapable = StoreError(_C.UNIMPLEMENTED, "etcdserver: not capable")
ErrWatchIDExists = StoreError(_C.INVALID_ARGUMENT, "mvcc: watcher ID already exists")
