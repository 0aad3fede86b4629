"""The API server's client of the store, through the etcd v3 gRPC API only.

Works against `k8semu store` and a real etcd 3.4 alike. Every call has a deadline; reads
(Range) are retried once on UNAVAILABLE, writes never (a Txn that timed out may have
happened). gRPC errors from the store are translated here into apiserver errors, so the
servicer never sees an AioRpcError: compaction becomes Gone, a full store (etcd's NOSPACE
alarm) StorageFull, the rest Unavailable.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from k8semu import transport
from k8semu.apiserver.errors import Gone, StatusError, StorageFull, Unavailable
from k8semu.log import get_logger
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

log = get_logger(__name__)

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
# etcd's exact text for a write refused under the NOSPACE alarm (ErrGRPCNoSpace, sent with
# RESOURCE_EXHAUSTED); k8semu store answers the same.
NO_SPACE = "etcdserver: mvcc: database space exceeded"
NO_SPACE_HINT = (
    "the store's space quota (--quota-backend-bytes) is used up and it refuses writes until"
    " its history is compacted, it is defragmented and the NOSPACE alarm is disarmed"
    " (etcdctl alarm disarm); reads and deletes still work"
)


class StoreCompacted(Gone):
    """The revision asked for has been compacted away."""

    def __init__(self, message: str, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


def translate(exc: grpc.aio.AioRpcError, what: str) -> StatusError:
    details = exc.details() or ""
    if exc.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
        return StoreCompacted(details)
    if "database space exceeded" in details:
        return StorageFull(f"{NO_SPACE}: {NO_SPACE_HINT}")
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable(f"store: {what}: no answer in time (a write may or may not be done)")
    return Unavailable(f"store: {what}: {exc.code().name}: {details}")


class Store:
    """KV and Watch stubs on one round-robin channel over every store endpoint."""

    def __init__(self, endpoints: Sequence[str], *, deadline: float) -> None:
        self.endpoints = list(endpoints)
        self.deadline = deadline
        self.channel = transport.channel(self.endpoints)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.watch_stub = rpc_pb2_grpc.WatchStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        for attempt in (1, 2):
            try:
                resp: rpc_pb2.RangeResponse = await self.kv.Range(req, timeout=self.deadline)
                return resp
            except grpc.aio.AioRpcError as exc:
                if attempt == 1 and exc.code() in _RETRYABLE:
                    log.debug("range retried", error=exc.details())
                    continue
                raise translate(exc, "range") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, key: bytes) -> rpc_pb2.RangeResponse:
        return await self.range(rpc_pb2.RangeRequest(key=key))

    async def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        try:
            resp: rpc_pb2.TxnResponse = await self.kv.Txn(req, timeout=self.deadline)
            return resp
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "txn") from None

    async def compact(self, revision: int) -> None:
        """etcd's Compact: forget every version older than `revision` (not physical: the
        store reclaims the space in the background, as kube-apiserver asks it to)."""
        try:
            await self.kv.Compact(
                rpc_pb2.CompactionRequest(revision=revision), timeout=self.deadline
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "compact") from None

    async def delete_range(self, key: bytes, end: bytes) -> rpc_pb2.DeleteRangeResponse:
        try:
            resp: rpc_pb2.DeleteRangeResponse = await self.kv.DeleteRange(
                rpc_pb2.DeleteRangeRequest(key=key, range_end=end), timeout=self.deadline
            )
            return resp
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "delete range") from None
