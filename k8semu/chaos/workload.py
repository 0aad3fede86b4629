"""A recorded register workload against etcd v3 endpoints, for linearizability tests.

This module owns the client side of a linearizability test: concurrent clients doing puts,
linearizable gets, deletes and compare-and-swaps (Txn) on a few keys through the etcd v3 KV
API, each call recorded in a :class:`~k8semu.chaos.linearizability.HistoryRecorder`, and
the rule that decides what a failed call means for the history (:func:`outcome_of`). It works
against any etcd v3 server, a ``k8semu store`` cluster or a real etcd.

It must not start, stop or signal processes (faults are the caller's business), send traffic
anywhere but the endpoints it is given, or retry a write behind the recorder's back: every
attempt is one recorded operation, so the history is exactly what the clients saw.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import grpc

from k8semu import transport
from k8semu.chaos.linearizability import HistoryRecorder, Input, Kind, Op, Output, Status, Value
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from k8semu.pb.etcd.rpc_pb2_grpc import KVAsyncStub

__all__ = [
    "DEFAULT_MIX",
    "NO_LEADER",
    "RegisterClient",
    "Reply",
    "Tally",
    "Workload",
    "dump_history",
    "outcome_of",
    "read_all",
    "run_workload",
]

# etcd's message for a request refused because the replica knows no leader. The store raises it
# only before the request entered the log or was forwarded (docs/store.md, "Failing fast"), so a
# write refused with it certainly did not happen.
NO_LEADER = "etcdserver: no leader"

# Operation mix: linearizable gets, puts of unique values, compare-and-swaps, deletes. Deletes
# are frequent enough that "must be absent" swaps get their chance.
DEFAULT_MIX: tuple[tuple[Kind, float], ...] = (
    ("get", 0.35),
    ("put", 0.25),
    ("cas", 0.25),
    ("delete", 0.15),
)

_R = TypeVar("_R")


def outcome_of(kind: Kind, exc: grpc.aio.AioRpcError) -> Literal["fail", "unknown"]:
    """What a call that ended with ``exc`` means for the history.

    A read has no effect, so a failed read simply did not happen ("fail"). A write refused
    with UNAVAILABLE "etcdserver: no leader" was refused before it was proposed ("fail").
    Every other write error - a deadline, "leader changed", "request timed out", a connection
    reset mid-call - leaves the outcome open: the write may or may not have been applied
    ("unknown"). When in doubt a write is unknown, which can only make the check weaker,
    never wrong.
    """
    if kind == "get":
        return "fail"
    if exc.code() == grpc.StatusCode.UNAVAILABLE and exc.details() == NO_LEADER:
        return "fail"
    return "unknown"


@dataclass(frozen=True, slots=True)
class Reply:
    """The end of one recorded call: its status in the history, its output when acknowledged,
    and ``error`` (``CODE: details``) otherwise."""

    status: Status
    output: Output = None
    error: str = ""


class RegisterClient:
    """One client of the register workload: a channel per endpoint, one of them in use.

    Every method records exactly one operation under client id ``client``, sends it with a
    deadline of ``rpc_timeout`` seconds and returns how it ended. After any error the client
    moves on to the next endpoint: the one it used may be dead, paused or leaderless, and a
    following call there would likely fail the same way. Gets are linearizable (no
    ``serializable``). Close it with :meth:`close`.
    """

    def __init__(
        self,
        client: int,
        endpoints: Sequence[str],
        recorder: HistoryRecorder,
        *,
        rpc_timeout: float = 2.0,
        tls: transport.ClientTLS | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("endpoints: must not be empty")
        self.client = client
        self.endpoints = list(endpoints)
        self.recorder = recorder
        self.rpc_timeout = rpc_timeout
        self._channels = [transport.channel(e, tls=tls) for e in self.endpoints]
        self._stubs: list[KVAsyncStub] = [rpc_pb2_grpc.KVStub(ch) for ch in self._channels]
        self._index = client % len(self.endpoints)
        # What the last acknowledged cas showed the key to hold (see cas()).
        self.last_seen: bytes | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint the next call goes to."""
        return self.endpoints[self._index]

    def rotate(self) -> None:
        """Send the following calls to the next endpoint."""
        self._index = (self._index + 1) % len(self.endpoints)

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close()

    async def put(self, key: bytes, value: bytes) -> Reply:
        async def call(kv: KVAsyncStub) -> rpc_pb2.PutResponse:
            return await kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=self.rpc_timeout)

        return await self._record("put", key, value, call, lambda _: None)

    async def get(self, key: bytes) -> Reply:
        async def call(kv: KVAsyncStub) -> rpc_pb2.RangeResponse:
            return await kv.Range(rpc_pb2.RangeRequest(key=key), timeout=self.rpc_timeout)

        return await self._record("get", key, None, call, _range_value)

    async def delete(self, key: bytes) -> Reply:
        async def call(kv: KVAsyncStub) -> rpc_pb2.DeleteRangeResponse:
            request = rpc_pb2.DeleteRangeRequest(key=key)
            return await kv.DeleteRange(request, timeout=self.rpc_timeout)

        return await self._record("delete", key, None, call, lambda r: int(r.deleted))

    async def cas(self, key: bytes, expected: bytes | None, new: bytes) -> Reply:
        """Put ``new`` if the key holds ``expected`` (None: if the key is absent).

        The output is whether the swap happened. A failed swap's Txn also reads the key; that
        read is not part of the history (the checker models a cas as a bool), but callers
        may learn the current value from :attr:`last_seen`.
        """
        if expected is None:
            compare = rpc_pb2.Compare(
                key=key,
                target=rpc_pb2.Compare.CREATE,
                result=rpc_pb2.Compare.EQUAL,
                create_revision=0,
            )
        else:
            compare = rpc_pb2.Compare(
                key=key,
                target=rpc_pb2.Compare.VALUE,
                result=rpc_pb2.Compare.EQUAL,
                value=expected,
            )
        request = rpc_pb2.TxnRequest(
            compare=[compare],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=new))],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
        )
        self.last_seen = None

        async def call(kv: KVAsyncStub) -> rpc_pb2.TxnResponse:
            return await kv.Txn(request, timeout=self.rpc_timeout)

        def output(response: rpc_pb2.TxnResponse) -> bool:
            if response.succeeded:
                self.last_seen = new
            elif response.responses:
                self.last_seen = _range_value(response.responses[0].response_range)
            return bool(response.succeeded)

        return await self._record("cas", key, (expected, new), call, output)

    async def _record(
        self,
        kind: Kind,
        key: bytes,
        value: Input,
        call: Callable[[KVAsyncStub], Awaitable[_R]],
        output: Callable[[_R], Output],
    ) -> Reply:
        handle = self.recorder.invoke(self.client, kind, key, value)
        try:
            response = await call(self._stubs[self._index])
        except grpc.aio.AioRpcError as exc:
            if outcome_of(kind, exc) == "fail":
                self.recorder.fail(handle)
                status: Status = "fail"
            else:
                self.recorder.unknown(handle)
                status = "unknown"
            self.rotate()
            return Reply(status, None, f"{exc.code().name}: {exc.details()}")
        result = output(response)
        self.recorder.complete(handle, result)
        return Reply("ok", result)


def _range_value(response: rpc_pb2.RangeResponse) -> bytes | None:
    return bytes(response.kvs[0].value) if response.kvs else None


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What :func:`run_workload` does: ``clients`` concurrent clients over ``keys`` keys, until
    ``max_seconds`` pass, ``max_ops`` calls were made (all clients together) or the caller
    says stop. A client whose call failed waits ``error_pause`` seconds before the next, so a
    leaderless cluster refusing everything at once is not flooded."""

    clients: int = 8
    keys: int = 8
    max_seconds: float = 20.0
    max_ops: int = 50_000
    rpc_timeout: float = 2.0
    error_pause: float = 0.02
    mix: tuple[tuple[Kind, float], ...] = DEFAULT_MIX
    key_prefix: bytes = b"/linearizability/"

    def key_names(self) -> list[bytes]:
        return [self.key_prefix + b"k%d" % i for i in range(self.keys)]


async def run_workload(
    endpoints: Sequence[str],
    recorder: HistoryRecorder,
    workload: Workload,
    *,
    seed: int | str,
    stop: asyncio.Event | None = None,
    tls: transport.ClientTLS | None = None,
) -> None:
    """Run ``workload`` against ``endpoints``, recording every call in ``recorder``.

    Client ``i`` draws its operations from ``random.Random(f"{seed}/{i}")``; put values are
    unique (``c<i>-<n>``). Swaps expect the value the client last saw for the key (None, "must
    be absent", when it saw none), so many of them succeed. Returns when every client stopped.
    """
    deadline = time.monotonic() + workload.max_seconds
    keys = workload.key_names()
    kinds = [k for k, _ in workload.mix]
    weights = [w for _, w in workload.mix]
    budget = [workload.max_ops]

    def go_on() -> bool:
        if stop is not None and stop.is_set():
            return False
        if time.monotonic() >= deadline or budget[0] <= 0:
            return False
        budget[0] -= 1
        return True

    async def one(i: int) -> None:
        rng = random.Random(f"{seed}/{i}")
        seen: dict[bytes, bytes | None] = {}
        client = RegisterClient(i, endpoints, recorder, rpc_timeout=workload.rpc_timeout, tls=tls)
        n = 0
        try:
            while go_on():
                key = rng.choice(keys)
                kind = rng.choices(kinds, weights)[0]
                n += 1
                value = b"c%d-%d" % (i, n)
                if kind == "get":
                    reply = await client.get(key)
                    if reply.status == "ok":
                        seen[key] = _as_bytes(reply.output)
                elif kind == "put":
                    reply = await client.put(key, value)
                    if reply.status == "ok":
                        seen[key] = value
                elif kind == "delete":
                    reply = await client.delete(key)
                    if reply.status == "ok":
                        seen[key] = None
                else:
                    reply = await client.cas(key, seen.get(key), value)
                    if reply.status == "ok":
                        seen[key] = _as_bytes(client.last_seen)
                if reply.status != "ok":
                    await asyncio.sleep(workload.error_pause)
        finally:
            await client.close()

    async with asyncio.TaskGroup() as tg:
        for i in range(workload.clients):
            tg.create_task(one(i))


def _as_bytes(output: Output | Value) -> bytes | None:
    return output if isinstance(output, bytes) else None


async def read_all(
    endpoints: Sequence[str],
    recorder: HistoryRecorder,
    keys: Sequence[bytes],
    *,
    client: int,
    within: float = 30.0,
    rpc_timeout: float = 2.0,
    error_pause: float = 0.05,
    tls: transport.ClientTLS | None = None,
) -> dict[bytes, bytes | None]:
    """A recorded linearizable get of every key, retried (each attempt recorded) until
    acknowledged. Returns key -> value (None if absent); raises TimeoutError after ``within``
    seconds naming the key and the last error."""
    reader = RegisterClient(client, endpoints, recorder, rpc_timeout=rpc_timeout, tls=tls)
    deadline = time.monotonic() + within
    values: dict[bytes, bytes | None] = {}
    try:
        for key in keys:
            while True:
                reply = await reader.get(key)
                if reply.status == "ok":
                    values[key] = _as_bytes(reply.output)
                    break
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"no linearizable get of {key!r} within {within} s: {reply.error}"
                    )
                await asyncio.sleep(error_pause)
    finally:
        await reader.close()
    return values


@dataclass(frozen=True, slots=True)
class Tally:
    """Counts of a history's operations by (kind, status), and of swaps that succeeded."""

    counts: Counter[tuple[str, str]]
    swapped: int

    @classmethod
    def of(cls, history: Sequence[Op]) -> Tally:
        counts: Counter[tuple[str, str]] = Counter((op.kind, op.status) for op in history)
        swapped = sum(
            op.kind == "cas" and op.status == "ok" and op.output is True for op in history
        )
        return cls(counts, swapped)

    def status(self, status: Status) -> int:
        return sum(n for (_, s), n in self.counts.items() if s == status)

    def kind(self, kind: Kind, status: Status = "ok") -> int:
        return self.counts[(kind, status)]

    def __str__(self) -> str:
        kinds = ", ".join(
            f"{k} {self.kind(k)}/{self.kind(k, 'unknown')}/{self.kind(k, 'fail')}"
            for k in ("get", "put", "cas", "delete")
        )
        return (
            f"{sum(self.counts.values())} ops: {self.status('ok')} ok, "
            f"{self.status('unknown')} unknown, {self.status('fail')} failed "
            f"(ok/unknown/fail: {kinds}; {self.swapped} swaps succeeded)"
        )


def dump_history(history: Sequence[Op], path: Path) -> None:
    """Write ``history`` as JSON lines (bytes as text), so a failure can be replayed offline."""

    def plain(x: object) -> object:
        if isinstance(x, bytes):
            return x.decode("utf-8", "backslashreplace")
        if isinstance(x, tuple):
            return [plain(v) for v in x]
        if isinstance(x, float) and math.isinf(x):
            return None
        return x

    with path.open("w") as f:
        for op in history:
            row = {
                "client": op.client,
                "call": op.call,
                "ret": plain(op.ret),
                "kind": op.kind,
                "key": plain(op.key),
                "value": plain(op.value),
                "output": plain(op.output),
                "status": op.status,
            }
            f.write(json.dumps(row) + "\n")
