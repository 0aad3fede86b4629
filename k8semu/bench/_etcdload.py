"""The load generator over the etcd v3 API behind ``k8semu bench store`` and ``--sustained``.

Put clients in the two client shapes (``per-client``: a channel, so a TCP connection, per
client, as etcd's own benchmark has it; ``shared``: every client's calls on one channel per
member), the counted load run (``run_load``), the leader kill under load (``run_failover``)
and the lookup of the leader's endpoint. It works against any etcd v3 endpoint list, so one
workload drives a ``k8semu store`` cluster and a real etcd alike.

The client shares the CPUs with the servers, so every request is serialized once up front,
responses are never parsed (a status of OK is the acknowledgement), and nothing is logged per
request. Every run stops after a count or a wall-clock cap. It also holds what both store
benchmarks say about the clusters they compare: the timings each starts with, etcd's version.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import math
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from k8semu.bench._common import BenchError, Stopwatch, percentile
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.processes import ProcessCluster
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

__all__ = [
    "CHANNEL_OPTIONS",
    "ETCD_DEFAULT_ELECTION_MS",
    "ETCD_DEFAULT_HEARTBEAT_MS",
    "K8SEMU_ELECTION_MS",
    "K8SEMU_HEARTBEAT_MS",
    "SHAPES",
    "FailoverResult",
    "LoadResult",
    "PutClient",
    "Workload",
    "connect",
    "error_text",
    "etcd_version",
    "find_leader_index",
    "run_failover",
    "run_load",
]

# etcd's own defaults, which is what an etcd user runs and what the 1.8 s was measured at.
ETCD_DEFAULT_HEARTBEAT_MS = 100
ETCD_DEFAULT_ELECTION_MS = 1000
# k8semu's store timings for the comparison (the harness defaults).
K8SEMU_HEARTBEAT_MS = 50
K8SEMU_ELECTION_MS = 500

PUT_METHOD = "/etcdserverpb.KV/Put"
SHAPES = ("per-client", "shared")

# A client whose attempt failed faster than this waits this long before the next one, so a
# cluster that refuses everything at once (no leader) is not drowned in retries while it elects.
FAST_FAIL_PAUSE_S = 0.002

CHANNEL_OPTIONS = (
    ("grpc.enable_http_proxy", 0),
    # Without this, channels to the same address share one connection; a client is meant to be
    # one connection, as in etcd's own benchmark.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
)


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What each load run writes. Every run stops after ``puts`` puts or ``max_seconds``."""

    puts: int = 10_000
    value_size: int = 256
    key_space: int = 10_000
    attempt_timeout: float = 5.0
    max_seconds: float = 120.0

    def payloads(self) -> list[bytes]:
        """The PutRequests of one run, serialized once: ``min(key_space, puts)`` distinct keys."""
        value = (b"k8semu-bench-value-" * (self.value_size // 19 + 1))[: self.value_size]
        return [
            rpc_pb2.PutRequest(key=b"/bench/%08d" % i, value=value).SerializeToString()
            for i in range(max(1, min(self.key_space, self.puts)))
        ]


@dataclass
class LoadResult:
    """One load run at one client count. Latencies in milliseconds."""

    clients: int
    puts: int
    errors: int
    seconds: float
    throughput: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_s: float
    capped: bool
    target: str
    last_error: str = ""
    # CPU time all member processes used during the run, when their pids are known.
    server_cpu_s: float | None = None
    # "per-client": a channel (connection) per client; "shared": one channel for all.
    shape: str = "per-client"

    @property
    def server_cpu_us_per_put(self) -> float | None:
        if self.server_cpu_s is None or not self.puts:
            return None
        return self.server_cpu_s / self.puts * 1e6


@dataclass
class FailoverResult:
    """One leader kill. ``seconds`` is None when no put was acknowledged within the cap."""

    clients: int
    killed: str
    new_leader: str
    seconds: float | None
    acks_before_kill: int
    errors_after_kill: int
    attempt_timeout: float


# -- the clients -------------------------------------------------------------------------------


class PutClient:
    """One benchmark client: one channel per member (opened on first use), one of them in use.

    With ``shared``, the channels are that dict's, shared with other clients and closed by
    whoever made the dict."""

    __slots__ = ("_channels", "_endpoints", "_index", "_owned", "put")

    def __init__(
        self, endpoints: Sequence[str], index: int, shared: dict[int, Any] | None = None
    ) -> None:
        self._endpoints = endpoints
        self._owned = shared is None
        self._channels: dict[int, Any] = {} if shared is None else shared
        self._index = index % len(endpoints)
        self.put: Any = self._callable(self._index)

    def _callable(self, index: int) -> Any:
        channel = self._channels.get(index)
        if channel is None:
            channel = grpc.aio.insecure_channel(self._endpoints[index], options=CHANNEL_OPTIONS)
            self._channels[index] = channel
        # No serializers: requests go out as the bytes we pre-serialized, responses come back as
        # bytes nobody parses; a status of OK is the acknowledgement.
        return channel.unary_unary(PUT_METHOD)

    def next_endpoint(self) -> None:
        self._index = (self._index + 1) % len(self._endpoints)
        self.put = self._callable(self._index)

    async def close(self) -> None:
        if self._owned:
            await close_channels(self._channels)


async def close_channels(channels: dict[int, Any]) -> None:
    for channel in channels.values():
        await channel.close()


def error_text(exc: Any) -> str:
    """``CODE: details`` of a failed call, for a report."""
    return f"{exc.code().name}: {exc.details()}"


async def connect(
    clients: Sequence[PutClient], payload: bytes, attempt_timeout: float, within: float
) -> None:
    """One acknowledged put per client, untimed, so connection setup stays out of the figures."""
    deadline = time.perf_counter() + within

    async def one(c: PutClient) -> None:
        while True:
            try:
                await c.put(payload, timeout=min(attempt_timeout, within))
                return
            except grpc.aio.AioRpcError as exc:
                if time.perf_counter() >= deadline:
                    raise BenchError(
                        f"no member accepted a put within {within} s: {error_text(exc)}"
                    ) from exc
                c.next_endpoint()
                await asyncio.sleep(0.05)

    await asyncio.gather(*(one(c) for c in clients))


# -- a counted load run -------------------------------------------------------------------------


class _CountedPuts:
    """The puts of one load run split evenly over the clients, and what they recorded: per
    client its latencies (first attempt to acknowledgement, retries included) and errors."""

    def __init__(self, pool: Sequence[PutClient], payloads: Sequence[bytes], workload: Workload):
        n = len(pool)
        self.pool = pool
        self.payloads = payloads
        self.timeout = workload.attempt_timeout
        self.latencies = [array.array("d") for _ in range(n)]
        self.errors = [0] * n
        self.last_error = ""
        base, extra = divmod(workload.puts, n)
        self.shares = [base + (1 if k < extra else 0) for k in range(n)]

    async def client(self, k: int) -> None:
        """Client k's share: puts k, k + n, k + 2n, ... of the payloads, each retried on the
        next endpoint until acknowledged."""
        c = self.pool[k]
        payloads, n_payloads, clients = self.payloads, len(self.payloads), len(self.pool)
        timeout = self.timeout
        record = self.latencies[k].append
        perf_counter = time.perf_counter
        i = k
        for _ in range(self.shares[k]):
            request = payloads[i % n_payloads]
            i += clients
            start = perf_counter()
            while True:
                attempt = perf_counter()
                try:
                    await c.put(request, timeout=timeout)
                    break
                except grpc.aio.AioRpcError as exc:
                    self.errors[k] += 1
                    self.last_error = error_text(exc)
                    c.next_endpoint()
                    if perf_counter() - attempt < FAST_FAIL_PAUSE_S:
                        await asyncio.sleep(FAST_FAIL_PAUSE_S)
            record(perf_counter() - start)

    def samples(self) -> list[float]:
        """Every acknowledged put's latency in seconds, sorted."""
        return sorted(x for lat in self.latencies for x in lat)


async def run_load(
    endpoints: Sequence[str],
    clients: int,
    workload: Workload,
    *,
    payloads: Sequence[bytes] | None = None,
    leader_index: int | None = None,
    connect_within: float = 30.0,
    server_pids: Sequence[int] = (),
    shape: str = "per-client",
) -> LoadResult:
    """Write ``workload.puts`` puts from ``clients`` concurrent clients and measure them.

    Clients start round-robin over ``endpoints``, or all at ``leader_index`` when given. A failed
    attempt is retried on the next endpoint; its time counts in that put's latency. With
    ``server_pids``, the CPU time those processes used during the run is reported too.
    ``shape`` "shared" puts every client on one channel per member.
    """
    if clients < 1:
        raise ValueError(f"clients: must be >= 1, got {clients}")
    if shape not in SHAPES:
        raise ValueError(f"shape: must be one of {', '.join(SHAPES)}, got {shape!r}")
    shared: dict[int, Any] | None = {} if shape == "shared" else None
    if payloads is None:
        payloads = workload.payloads()
    pool = [
        PutClient(endpoints, k if leader_index is None else leader_index, shared)
        for k in range(clients)
    ]
    puts = _CountedPuts(pool, payloads, workload)
    watch = Stopwatch(server_pids)
    capped = False
    try:
        await connect(pool, payloads[0], workload.attempt_timeout, connect_within)
        watch.start()
        try:
            async with asyncio.timeout(workload.max_seconds):
                await asyncio.gather(*(puts.client(k) for k in range(clients)))
        except TimeoutError:
            capped = True
        watch.stop()
    finally:
        await asyncio.gather(*(c.close() for c in pool), return_exceptions=True)
        if shared is not None:
            await close_channels(shared)

    samples = puts.samples()
    elapsed = watch.seconds
    return LoadResult(
        shape=shape,
        clients=clients,
        puts=len(samples),
        errors=sum(puts.errors),
        seconds=elapsed,
        throughput=len(samples) / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(samples, 50) * 1e3,
        p99_ms=percentile(samples, 99) * 1e3,
        max_ms=(samples[-1] if samples else 0.0) * 1e3,
        client_cpu_s=watch.client_cpu_s,
        capped=capped,
        target="leader" if leader_index is not None else "round-robin",
        last_error=puts.last_error,
        server_cpu_s=watch.server_cpu_s,
    )


# -- a leader kill under load -------------------------------------------------------------------


class _FailoverClock:
    """What the failover clients share: the kill time and the first acknowledgement after it."""

    def __init__(self) -> None:
        self.kill_at = math.inf
        self.first_ack = math.inf
        self.acks = 0
        self.errors_after_kill = 0
        self.done = asyncio.Event()

    async def client(
        self, c: PutClient, k: int, clients: int, payloads: Sequence[bytes], deadline: float
    ) -> None:
        """Client k writes until the first put sent after the kill is acknowledged; each
        attempt times out after ``deadline`` and is retried at once on the next member."""
        perf_counter = time.perf_counter
        n_payloads = len(payloads)
        i = k
        while not self.done.is_set():
            request = payloads[i % n_payloads]
            i += clients
            sent = perf_counter()
            try:
                await c.put(request, timeout=deadline)
            except grpc.aio.AioRpcError:
                if sent >= self.kill_at:
                    self.errors_after_kill += 1
                c.next_endpoint()
                if perf_counter() - sent < FAST_FAIL_PAUSE_S:
                    await asyncio.sleep(FAST_FAIL_PAUSE_S)
                continue
            acked = perf_counter()
            self.acks += 1
            if sent >= self.kill_at and acked < self.first_ack:
                self.first_ack = acked
                self.done.set()

    @property
    def seconds(self) -> float | None:
        """From the kill to the first acknowledgement after it; None if none came."""
        return self.first_ack - self.kill_at if self.first_ack < math.inf else None


async def run_failover(
    cluster: ProcessCluster,
    clients: int,
    payloads: Sequence[bytes],
    *,
    warmup_s: float = 1.0,
    cap_s: float = 30.0,
    attempt_timeout: float = 0.25,
    ready_timeout: float = 60.0,
) -> FailoverResult:
    """Kill the leader under load and time until a put sent after the kill is acknowledged.

    Afterwards the killed member is restarted and the cluster is ready again, so runs can follow
    one another. The load runs ``warmup_s`` before the kill and at most ``cap_s`` after it.

    Client k's attempts time out after ``attempt_timeout * (0.5 + (k + 0.5) / clients)``: during
    an election every attempt hangs until its deadline, and with one deadline for all the clients
    would retry in step, so the figure would only resolve to multiples of the deadline. Spread
    deadlines keep the retries apart and the resolution near ``attempt_timeout / clients``.
    """
    old = cluster.leader(timeout=ready_timeout)
    pool = [PutClient(cluster.endpoints, k) for k in range(clients)]
    clock = _FailoverClock()
    acks_before = 0
    try:
        await connect(pool, payloads[0], attempt_timeout * 4, ready_timeout)
        tasks = [
            asyncio.create_task(
                clock.client(c, k, clients, payloads, attempt_timeout * (0.5 + (k + 0.5) / clients))
            )
            for k, c in enumerate(pool)
        ]
        try:
            # A steady load, not a wait for some condition: the kill must land mid-stream.
            await asyncio.sleep(warmup_s)
            acks_before = clock.acks
            clock.kill_at = time.perf_counter()
            cluster.kill(old, wait=False)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(cap_s):
                    await clock.done.wait()
        finally:
            clock.done.set()
            # Each client is inside at most one attempt, bounded by 1.5 * attempt_timeout.
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await asyncio.gather(*(c.close() for c in pool), return_exceptions=True)

    try:
        new = cluster.leader(timeout=ready_timeout)
    except ClusterError:
        new = ""
    cluster.restart(old)
    cluster.wait_ready(timeout=ready_timeout)
    return FailoverResult(
        clients=clients,
        killed=old,
        new_leader=new,
        seconds=clock.seconds,
        acks_before_kill=acks_before,
        errors_after_kill=clock.errors_after_kill,
        attempt_timeout=attempt_timeout,
    )


async def find_leader_index(endpoints: Sequence[str], within: float = 10.0) -> int:
    """The index in ``endpoints`` of the member that says it is the leader (via Status)."""
    deadline = time.monotonic() + within
    channels = [grpc.aio.insecure_channel(ep, options=CHANNEL_OPTIONS) for ep in endpoints]
    try:
        while True:
            for i, channel in enumerate(channels):
                stub = rpc_pb2_grpc.MaintenanceStub(channel)
                try:
                    status = await stub.Status(rpc_pb2.StatusRequest(), timeout=1.0)
                except grpc.aio.AioRpcError:
                    continue
                if status.leader and status.leader == status.header.member_id:
                    return i
            if time.monotonic() >= deadline:
                raise BenchError(f"no endpoint of {', '.join(endpoints)} says it is the leader")
            await asyncio.sleep(0.1)
    finally:
        for channel in channels:
            await channel.close()


def etcd_version(binary: str) -> str:
    """``etcd 3.4.x`` as ``binary --version`` says, or ``etcd`` when it cannot say."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "etcd"
    first = out.splitlines()[0] if out else ""
    return "etcd " + first.split(":", 1)[1].strip() if ":" in first else "etcd"
