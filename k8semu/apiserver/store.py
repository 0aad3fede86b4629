"""The API server's client of the store, through the etcd v3 gRPC API only.

Works against `k8semu store` and a real etcd 3.4 alike. Every call has a deadline. A call
answered UNAVAILABLE moves to another store endpoint: reads always, writes only when the store
cannot have applied them (not connected, "no leader"); a write that may have happened (timed
out, "leader changed") is never resent. Each call goes to the endpoint with the fewest calls
in flight, so a replica that stops answering holds up the calls it has, not every caller.
gRPC errors from the store are translated here into apiserver errors, so the servicer never
sees an AioRpcError: compaction becomes Gone, a full store (etcd's NOSPACE alarm)
StorageFull, the rest Unavailable. With an encryption configuration (`encryption.py`) the
values of the resources it lists are sealed here on their way to the store and opened here on
their way back, so nothing above sees ciphertext and the store sees nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from k8semu import transport
from k8semu.apiserver.encryption import Transformer
from k8semu.apiserver.errors import Gone, StatusError, StorageFull, Unavailable
from k8semu.apiserver.objects import range_end
from k8semu.log import get_logger
from k8semu.pb.etcd import kv_pb2, rpc_pb2, rpc_pb2_grpc

log = get_logger(__name__)

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
# At most this many endpoints are tried per call (all of a 3-replica store).
_MAX_TRIES = 3
# An endpoint that answered UNAVAILABLE, or not at all in time, is tried last for this long
# (a restart, an election, a replica that stopped answering).
AVOID_FAILED_ENDPOINT_S = 2.0
# etcd's text (ErrGRPCNoLeader): the replica refused before proposing.
NO_LEADER = "etcdserver: no leader"
# gRPC's texts when no connection could be made: nothing reached the store.
_NOT_CONNECTED = ("failed to connect to all addresses", "Connection refused")
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
    """The etcd client: unary calls on one channel per store endpoint, spread round-robin and
    moved to another endpoint when one answers UNAVAILABLE (docs/apiserver.md, "Store
    endpoint fail-over"); watches on one round-robin channel over every endpoint."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        deadline: float,
        tls: transport.ClientTLS | None = None,
        transformer: Transformer | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("store endpoints: at least one is needed")
        self.endpoints = list(endpoints)
        self.tls = tls  # how to reach the members (the dashboard asks each for its Status)
        self.deadline = deadline
        self.transformer = transformer  # encryption at rest; None: values as they are
        self.channel = transport.channel(self.endpoints, tls)
        self.watch_stub = rpc_pb2_grpc.WatchStub(self.channel)
        self._channels = [transport.channel(e, tls) for e in self.endpoints]
        self._kvs = [rpc_pb2_grpc.KVStub(ch) for ch in self._channels]
        self._next = 0
        # Per endpoint: until when (monotonic) it is tried last, after it answered UNAVAILABLE.
        self._avoid_until = [0.0] * len(self.endpoints)
        # Per endpoint: calls sent and not answered yet.
        self._in_flight = [0] * len(self.endpoints)

    async def close(self) -> None:
        await self.channel.close()
        for ch in self._channels:
            await ch.close()

    def _order(self) -> list[int]:
        """Endpoints to try, in order: those with the fewest calls in flight first, ties in
        round-robin order from the next one, those that failed recently last. A lone endpoint
        is tried twice (a retry is all there is to do)."""
        n = len(self._kvs)
        start = self._next
        self._next = (start + 1) % n
        ring = [(start + i) % n for i in range(n)]
        now = time.monotonic()
        # Stable sort: those that failed come last, the most recent failure last of all (when
        # all failed lately, a dead one is tried last). Among the others the least busy comes
        # first: round-robin alone sends every caller in turn to a replica that holds its calls
        # (one starting up, catching up, or stalled), and callers that wait for their answer
        # before the next call then all end up waiting there, the others idle.
        order = sorted(ring, key=lambda i: (max(self._avoid_until[i], now), self._in_flight[i]))
        return order[:_MAX_TRIES] if n > 1 else order * 2

    async def _unary(
        self, what: str, call: Callable[[rpc_pb2_grpc.KVStub, float], Any], *, read: bool
    ) -> Any:
        """One call, moved to the next endpoint on UNAVAILABLE when that is safe: reads always
        (they change nothing), writes only when the store cannot have applied them (no
        connection made, or the replica knew no leader and refused before proposing)."""
        order = self._order()
        loop_deadline = time.monotonic() + self.deadline
        for n, i in enumerate(order):
            remaining = loop_deadline - time.monotonic()
            self._in_flight[i] += 1
            try:
                # The generated stubs are typed as if synchronous; aio stubs return calls.
                return await call(self._kvs[i], max(remaining, 0.001))
            except grpc.aio.AioRpcError as exc:
                # CANCELLED: the replica stopped while serving the call (its gRPC server's
                # grace ran out); safe to resend for reads only.
                code = exc.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    # No answer in time (a write's outcome is unknown: not resent); the
                    # replica is tried last for a while rather than holding the next calls.
                    self._avoid_until[i] = time.monotonic() + AVOID_FAILED_ENDPOINT_S
                if code not in _RETRYABLE and not (read and code == grpc.StatusCode.CANCELLED):
                    raise translate(exc, what) from None
                self._avoid_until[i] = time.monotonic() + AVOID_FAILED_ENDPOINT_S
                last = n == len(order) - 1
                if last or remaining <= 0 or not (read or not_applied(exc)):
                    raise translate(exc, what) from None
                log.debug(
                    "store call moved to another endpoint",
                    call=what,
                    endpoint=self.endpoints[i],
                    error=exc.details(),
                )
            finally:
                self._in_flight[i] -= 1
        raise AssertionError("unreachable")  # pragma: no cover

    async def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        resp: rpc_pb2.RangeResponse = await self._unary(
            "range", lambda kv, t: kv.Range(req, timeout=t), read=True
        )
        if self.transformer is not None:
            self.transformer.open_kvs(resp.kvs)
        return resp

    async def get(self, key: bytes) -> rpc_pb2.RangeResponse:
        return await self.range(rpc_pb2.RangeRequest(key=key))

    async def scan(
        self, start: bytes, *, revision: int = 0, keys_only: bool = False
    ) -> rpc_pb2.RangeResponse:
        """Every key starting with `start` (at `revision`; 0: the latest), in one Range."""
        return await self.range(
            rpc_pb2.RangeRequest(
                key=start, range_end=range_end(start), revision=revision, keys_only=keys_only
            )
        )

    async def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        read = all(op.WhichOneof("request") == "request_range" for op in _ops(req))
        if self.transformer is not None:
            req = self.transformer.seal_txn(req)
        resp: rpc_pb2.TxnResponse = await self._unary(
            "txn", lambda kv, t: kv.Txn(req, timeout=t), read=read
        )
        if self.transformer is not None:
            self.transformer.open_txn(resp)
        return resp

    def opened(self, events: Sequence[kv_pb2.Event]) -> Sequence[kv_pb2.Event]:
        """A watch response's events with their values decrypted (the watch cache's)."""
        if self.transformer is not None:
            self.transformer.open_events(events)
        return events

    def stale(self, key: bytes) -> bool:
        """Whether `key` was last read encrypted otherwise than a write would be now (another
        provider or key): an update rewrites it even when nothing changed (key rotation)."""
        return self.transformer is not None and self.transformer.is_stale(key)

    async def compact(self, revision: int) -> None:
        """etcd's Compact: forget every version older than `revision` (not physical: the
        store reclaims the space in the background, as kube-apiserver asks it to)."""
        req = rpc_pb2.CompactionRequest(revision=revision)
        await self._unary("compact", lambda kv, t: kv.Compact(req, timeout=t), read=False)

    async def delete_range(self, key: bytes, end: bytes) -> rpc_pb2.DeleteRangeResponse:
        req = rpc_pb2.DeleteRangeRequest(key=key, range_end=end)
        resp: rpc_pb2.DeleteRangeResponse = await self._unary(
            "delete range", lambda kv, t: kv.DeleteRange(req, timeout=t), read=False
        )
        if self.transformer is not None:
            self.transformer.open_kvs(resp.prev_kvs)
        return resp


def not_applied(exc: grpc.aio.AioRpcError) -> bool:
    """Whether an UNAVAILABLE answer proves the write was not applied: the connection was
    never made, or the replica refused it before proposing because it knew no leader. Not
    "leader changed", "request timed out" or "server stopped": those may come after the
    proposal entered the log."""
    details = exc.details() or ""
    return details == NO_LEADER or any(text in details for text in _NOT_CONNECTED)


def _ops(req: rpc_pb2.TxnRequest) -> list[rpc_pb2.RequestOp]:
    """Every operation of a Txn, nested ones included."""
    out: list[rpc_pb2.RequestOp] = []
    stack = [*req.success, *req.failure]
    while stack:
        op = stack.pop()
        out.append(op)
        if op.WhichOneof("request") == "request_txn":
            stack.extend([*op.request_txn.success, *op.request_txn.failure])
    return out
