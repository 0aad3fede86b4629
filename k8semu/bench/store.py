"""Store benchmark: put throughput, put latency and leader-failover time over the etcd v3 API.

This module owns the load generator and the comparison run behind ``k8semu bench store``. The
load generator is a Python grpc.aio client that works against any etcd v3 endpoint list, so one
workload drives a ``k8semu store`` cluster and a real etcd alike. ``--compare`` (the default)
starts a 3-replica cluster of each on this machine, one after the other so they never compete
for the CPUs, runs the same workload on both and prints a Markdown table for the README.

What is measured:

load
    ``--puts`` puts of ``--value-size``-byte values over ``--key-space`` keys, split evenly over
    C concurrent clients, for each C in ``--clients``, in each client shape of ``--shapes``:
    ``per-client`` gives each client its own gRPC channel (its own TCP connection) to one
    member, as etcd's own benchmark does; ``shared`` puts every client's calls on one channel
    per member (many concurrent streams on one HTTP/2 connection, what a single process such as
    an API server does). Clients go round-robin over the members, or all to the leader with
    ``--to-leader``. Throughput is acknowledged puts over wall time; latency is per put, from its
    first attempt to its acknowledgement, retries included.
failover
    While ``--failover-clients`` clients keep writing, the leader is SIGKILLed; the figure is the
    time from the kill to the first acknowledgement of a put *sent after* the kill. After any
    error a client retries at once on the next member. Each attempt has a short deadline
    (``--failover-attempt-timeout``, spread over the clients): a put that a follower forwarded
    to the dead leader is never answered, and the deadline is what frees the client to retry.
    The median over ``--failover-runs`` kills is reported, with the range: one unlucky split
    vote costs a whole extra election timeout.

It must not run without a count and a wall-clock bound, send traffic beyond 127.0.0.0/8 unless
the user says so (``--allow-remote``), or log per request. The client shares the CPUs with the
servers, so every request is serialized once up front, responses are never parsed, and
progress goes to stderr once per phase.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from k8semu.cluster.errors import ClusterError, MemberExitedError
from k8semu.cluster.processes import (
    DEFAULT_ETCD_BINARY,
    EtcdCluster,
    K8semuStoreCluster,
    ProcessCluster,
)
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

__all__ = [
    "BenchError",
    "BenchOptions",
    "FailoverResult",
    "LoadResult",
    "SystemResult",
    "Workload",
    "main",
    "run_failover",
    "run_load",
]

PUT_METHOD = "/etcdserverpb.KV/Put"
SHAPES = ("per-client", "shared")

# etcd's own defaults, which is what an etcd user runs and what the issue's 1.8 s was measured at.
ETCD_DEFAULT_HEARTBEAT_MS = 100
ETCD_DEFAULT_ELECTION_MS = 1000
# k8semu's store timings for the comparison (the harness defaults).
K8SEMU_HEARTBEAT_MS = 50
K8SEMU_ELECTION_MS = 500

# The issue's targets, printed next to the figures.
TARGET_THROUGHPUT_RATIO = 0.5  # ours / etcd at TARGET_THROUGHPUT_CLIENTS clients, at least
TARGET_THROUGHPUT_CLIENTS = 64
TARGET_P50_RATIO = 2.0  # ours / etcd at 1 client, at most
TARGET_FAILOVER_S = 1.0  # ours, at most
ISSUE_ETCD_FAILOVER_S = 1.8

# A client whose attempt failed faster than this waits this long before the next one, so a
# cluster that refuses everything at once (no leader) is not drowned in retries while it elects.
FAST_FAIL_PAUSE_S = 0.002

_CHANNEL_OPTIONS = (
    ("grpc.enable_http_proxy", 0),
    # Without this, channels to the same address share one connection; a client is meant to be
    # one connection, as in etcd's own benchmark.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
)


class BenchError(RuntimeError):
    """The benchmark could not run (no endpoint accepts writes, bad endpoint list)."""


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


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """Everything a run needs besides the cluster: the workload and the failover settings."""

    workload: Workload = Workload()
    clients: tuple[int, ...] = (1, 16, 64)
    shapes: tuple[str, ...] = ("per-client", "shared")
    to_leader: bool = False
    failover_clients: int = 16
    failover_runs: int = 5
    failover_warmup_s: float = 1.0
    failover_cap_s: float = 30.0
    failover_attempt_timeout: float = 0.25
    ready_timeout: float = 60.0


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


@dataclass
class SystemResult:
    """All runs against one cluster. ``error`` is set when the cluster or a run failed."""

    system: str
    label: str
    heartbeat_ms: int
    election_ms: int
    loads: list[LoadResult] = field(default_factory=list)
    failovers: list[FailoverResult] = field(default_factory=list)
    error: str = ""

    def load(self, clients: int, shape: str = "per-client") -> LoadResult | None:
        return next((r for r in self.loads if (r.clients, r.shape) == (clients, shape)), None)

    def failover_seconds(self) -> list[float | None]:
        return [f.seconds for f in self.failovers]


# -- the load generator ----------------------------------------------------------------------


class _Client:
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
            channel = grpc.aio.insecure_channel(self._endpoints[index], options=_CHANNEL_OPTIONS)
            self._channels[index] = channel
        # No serializers: requests go out as the bytes we pre-serialized, responses come back as
        # bytes nobody parses; a status of OK is the acknowledgement.
        return channel.unary_unary(PUT_METHOD)

    def next_endpoint(self) -> None:
        self._index = (self._index + 1) % len(self._endpoints)
        self.put = self._callable(self._index)

    async def close(self) -> None:
        if self._owned:
            await _close_channels(self._channels)


async def _close_channels(channels: dict[int, Any]) -> None:
    for channel in channels.values():
        await channel.close()


def _error_text(exc: Any) -> str:
    return f"{exc.code().name}: {exc.details()}"


async def _connect(
    clients: Sequence[_Client], payload: bytes, attempt_timeout: float, within: float
) -> None:
    """One acknowledged put per client, untimed, so connection setup stays out of the figures."""
    deadline = time.perf_counter() + within

    async def one(c: _Client) -> None:
        while True:
            try:
                await c.put(payload, timeout=min(attempt_timeout, within))
                return
            except grpc.aio.AioRpcError as exc:
                if time.perf_counter() >= deadline:
                    raise BenchError(
                        f"no member accepted a put within {within} s: {_error_text(exc)}"
                    ) from exc
                c.next_endpoint()
                await asyncio.sleep(0.05)

    await asyncio.gather(*(one(c) for c in clients))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _processes_cpu_seconds(pids: Sequence[int]) -> float | None:
    """User + system CPU seconds of ``pids`` so far (from /proc), None if one cannot be read."""
    total = 0
    try:
        for pid in pids:
            stat = Path(f"/proc/{pid}/stat").read_text()
            # Fields after the command name, which may itself hold spaces and parentheses.
            fields = stat.rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


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
    n_payloads = len(payloads)
    timeout = workload.attempt_timeout
    pool = [
        _Client(endpoints, k if leader_index is None else leader_index, shared)
        for k in range(clients)
    ]
    latencies = [array.array("d") for _ in range(clients)]
    errors = [0] * clients
    last_error = [""]
    base, extra = divmod(workload.puts, clients)
    shares = [base + (1 if k < extra else 0) for k in range(clients)]

    async def client(k: int) -> None:
        c = pool[k]
        record = latencies[k].append
        perf_counter = time.perf_counter
        i = k
        for _ in range(shares[k]):
            request = payloads[i % n_payloads]
            i += clients
            start = perf_counter()
            while True:
                attempt = perf_counter()
                try:
                    await c.put(request, timeout=timeout)
                    break
                except grpc.aio.AioRpcError as exc:
                    errors[k] += 1
                    last_error[0] = _error_text(exc)
                    c.next_endpoint()
                    if perf_counter() - attempt < FAST_FAIL_PAUSE_S:
                        await asyncio.sleep(FAST_FAIL_PAUSE_S)
            record(perf_counter() - start)

    try:
        await _connect(pool, payloads[0], timeout, connect_within)
        capped = False
        server_before = _processes_cpu_seconds(server_pids) if server_pids else None
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(workload.max_seconds):
                await asyncio.gather(*(client(k) for k in range(clients)))
        except TimeoutError:
            capped = True
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_before
        server_after = _processes_cpu_seconds(server_pids) if server_pids else None
    finally:
        await asyncio.gather(*(c.close() for c in pool), return_exceptions=True)
        if shared is not None:
            await _close_channels(shared)

    samples = sorted(x for lat in latencies for x in lat)
    return LoadResult(
        shape=shape,
        clients=clients,
        puts=len(samples),
        errors=sum(errors),
        seconds=elapsed,
        throughput=len(samples) / elapsed if elapsed > 0 else 0.0,
        p50_ms=_percentile(samples, 50) * 1e3,
        p99_ms=_percentile(samples, 99) * 1e3,
        max_ms=(samples[-1] if samples else 0.0) * 1e3,
        client_cpu_s=cpu,
        capped=capped,
        target="leader" if leader_index is not None else "round-robin",
        last_error=last_error[0],
        server_cpu_s=(
            server_after - server_before
            if server_after is not None and server_before is not None
            else None
        ),
    )


class _FailoverClock:
    """What the failover clients share: the kill time and the first acknowledgement after it."""

    def __init__(self) -> None:
        self.kill_at = math.inf
        self.first_ack = math.inf
        self.acks = 0
        self.errors_after_kill = 0
        self.done = asyncio.Event()


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
    pool = [_Client(cluster.endpoints, k) for k in range(clients)]
    clock = _FailoverClock()
    n_payloads = len(payloads)
    acks_before = 0

    async def client(k: int) -> None:
        c = pool[k]
        perf_counter = time.perf_counter
        deadline = attempt_timeout * (0.5 + (k + 0.5) / clients)
        i = k
        while not clock.done.is_set():
            request = payloads[i % n_payloads]
            i += clients
            sent = perf_counter()
            try:
                await c.put(request, timeout=deadline)
            except grpc.aio.AioRpcError:
                if sent >= clock.kill_at:
                    clock.errors_after_kill += 1
                c.next_endpoint()
                if perf_counter() - sent < FAST_FAIL_PAUSE_S:
                    await asyncio.sleep(FAST_FAIL_PAUSE_S)
                continue
            acked = perf_counter()
            clock.acks += 1
            if sent >= clock.kill_at and acked < clock.first_ack:
                clock.first_ack = acked
                clock.done.set()

    try:
        await _connect(pool, payloads[0], attempt_timeout * 4, ready_timeout)
        tasks = [asyncio.create_task(client(k)) for k in range(clients)]
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

    seconds = clock.first_ack - clock.kill_at if clock.first_ack < math.inf else None
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
        seconds=seconds,
        acks_before_kill=acks_before,
        errors_after_kill=clock.errors_after_kill,
        attempt_timeout=attempt_timeout,
    )


async def find_leader_index(endpoints: Sequence[str], within: float = 10.0) -> int:
    """The index in ``endpoints`` of the member that says it is the leader (via Status)."""
    deadline = time.monotonic() + within
    channels = [grpc.aio.insecure_channel(ep, options=_CHANNEL_OPTIONS) for ep in endpoints]
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


# -- whole runs --------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _describe_load(r: LoadResult) -> str:
    capped = " (capped by --max-seconds)" if r.capped else ""
    errors = f", {r.errors} failed attempts (last: {r.last_error})" if r.errors else ""
    servers = ""
    if r.server_cpu_s is not None:
        per_put = r.server_cpu_us_per_put or 0.0
        servers = f", servers {r.server_cpu_s / r.seconds:.0%} ({per_put:.0f} us/put)"
    return (
        f"{r.clients:>3} clients ({r.shape:>10}): {r.throughput:8.0f} puts/s"
        f"  p50 {r.p50_ms:6.2f} ms"
        f"  p99 {r.p99_ms:7.2f} ms  CPU: client {r.client_cpu_s / r.seconds:.0%}"
        f"{servers}{errors}{capped}"
    )


async def bench_cluster(
    cluster: ProcessCluster, system: str, label: str, opts: BenchOptions, *, loads: bool = True
) -> SystemResult:
    """Start ``cluster``, run the loads (if ``loads``) and the failovers, and close it."""
    result = SystemResult(
        system=system,
        label=label,
        heartbeat_ms=cluster.heartbeat_ms,
        election_ms=cluster.election_ms,
    )
    payloads = opts.workload.payloads()
    with cluster:
        _say(f"[{system}] starting {cluster.size} members in {cluster.base_dir}")
        cluster.start()
        leader = cluster.wait_ready(timeout=opts.ready_timeout)
        _say(f"[{system}] ready, leader {leader}")
        endpoints = cluster.endpoints
        if loads:
            for shape, clients in _shape_runs(opts):
                leader_index = None
                if opts.to_leader:
                    leader_index = list(cluster.members).index(cluster.leader(opts.ready_timeout))
                r = await run_load(
                    endpoints,
                    clients,
                    opts.workload,
                    payloads=payloads,
                    leader_index=leader_index,
                    connect_within=opts.ready_timeout,
                    server_pids=list(cluster.pids.values()),
                    shape=shape,
                )
                result.loads.append(r)
                _say(f"[{system}] {_describe_load(r)}")
        for i in range(opts.failover_runs):
            f = await run_failover(
                cluster,
                opts.failover_clients,
                payloads,
                warmup_s=opts.failover_warmup_s,
                cap_s=opts.failover_cap_s,
                attempt_timeout=opts.failover_attempt_timeout,
                ready_timeout=opts.ready_timeout,
            )
            result.failovers.append(f)
            took = f"{f.seconds:.3f} s" if f.seconds is not None else f"> {opts.failover_cap_s} s"
            _say(
                f"[{system}] failover {i + 1}/{opts.failover_runs}: killed {f.killed}, new leader"
                f" {f.new_leader or '?'}, next write acknowledged after {took}"
            )
    return result


def _shape_runs(opts: BenchOptions) -> list[tuple[str, int]]:
    """(shape, clients) of every load run; with one client both shapes are the same run."""
    return [
        (shape, c)
        for shape in opts.shapes
        for c in opts.clients
        if shape == "per-client" or c > 1 or "per-client" not in opts.shapes
    ]


async def _guarded(
    system: str,
    label: str,
    make: Callable[[], ProcessCluster],
    opts: BenchOptions,
    *,
    loads: bool = True,
) -> SystemResult:
    """bench_cluster, with a failure recorded in the result instead of ending the whole run."""
    cluster = None
    try:
        cluster = make()
        return await bench_cluster(cluster, system, label, opts, loads=loads)
    except (ClusterError, BenchError, OSError) as exc:
        _say(f"[{system}] FAILED: {exc}")
        hb = cluster.heartbeat_ms if cluster else 0
        el = cluster.election_ms if cluster else 0
        return SystemResult(system, label, hb, el, error=_summary(exc))


def _summary(exc: BaseException) -> str:
    """One line for the table: the message's first line, plus a dead member's last log line."""
    text = str(exc) or type(exc).__name__
    line = text.splitlines()[0].rstrip(":;")
    if isinstance(exc, MemberExitedError):
        last = [x for x in exc.log_tail.splitlines() if x.strip()]
        if last:
            line += f": {last[-1].strip()}"
    return line


# -- reporting ---------------------------------------------------------------------------------


def _etcd_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "etcd"
    first = out.splitlines()[0] if out else ""
    return "etcd " + first.split(":", 1)[1].strip() if ":" in first else "etcd"


def _filesystem(path: Path) -> str:
    best, fstype = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
    return fstype


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(workdir: Path | None, uvloop_used: bool) -> dict[str, Any]:
    """The facts a reader needs to judge the figures: machine, load, versions, disk."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "uvloop": uvloop_used,
        "filesystem": _filesystem(workdir) if workdir else "",
    }


def _num(x: float) -> str:
    return f"{x:,.0f}"


def _ms(x: float) -> str:
    return f"{x:.2f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}x"


def _failover_cell(values: Sequence[float | None], cap: float) -> str:
    if not values:
        return "-"
    shown = [v if v is not None else math.inf for v in values]
    med = statistics.median(shown)
    text = f"> {cap:g}" if math.isinf(med) else f"{med:.2f}"
    if len(shown) > 1:
        lo, hi = min(shown), max(shown)
        hi_text = f"> {cap:g}" if math.isinf(hi) else f"{hi:.2f}"
        text += f" ({lo:.2f}-{hi_text}, n={len(shown)})"
    return text


def _median(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return statistics.median(v for v in values if v is not None)


def _yes(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "**no**")


def render_compare(
    ours: SystemResult | None,
    etcd: SystemResult | None,
    etcd_same: SystemResult | None,
    opts: BenchOptions,
    env: dict[str, Any],
) -> str:
    """The README table: our figures, etcd's, the ratio and the issue's target per row."""
    head_ours = f"k8semu ({ours.heartbeat_ms}/{ours.election_ms} ms)" if ours else "k8semu"
    head_etcd = f"{etcd.label} ({etcd.heartbeat_ms}/{etcd.election_ms} ms)" if etcd else "etcd"
    lines = [
        f"| store, 3 replicas | {head_ours} | {head_etcd} | k8semu/etcd | target | met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]

    def load_of(s: SystemResult | None, c: int) -> LoadResult | None:
        return s.load(c) if s else None

    for c in opts.clients:
        a, b = load_of(ours, c), load_of(etcd, c)
        ra = a.throughput if a else None
        rb = b.throughput if b else None
        target, met = "", None
        if c == TARGET_THROUGHPUT_CLIENTS:
            target = f">= {TARGET_THROUGHPUT_RATIO}x"
            met = None if ra is None or rb is None else ra >= TARGET_THROUGHPUT_RATIO * rb
        verdict = _yes(met) if target else ""
        lines.append(
            f"| puts/s, {c} client{'s' if c > 1 else ''} | {_num(ra) if ra else '-'} |"
            f" {_num(rb) if rb else '-'} | {_ratio(ra, rb)} | {target} | {verdict} |"
        )
    if 1 in opts.clients:
        a, b = load_of(ours, 1), load_of(etcd, 1)
        pa, pb = (a.p50_ms if a else None), (b.p50_ms if b else None)
        met = None if pa is None or pb is None else pa <= TARGET_P50_RATIO * pb
        lines.append(
            f"| p50 latency ms, 1 client | {_ms(pa) if pa is not None else '-'} |"
            f" {_ms(pb) if pb is not None else '-'} | {_ratio(pa, pb)} |"
            f" <= {TARGET_P50_RATIO:g}x | {_yes(met)} |"
        )
    for c in opts.clients:
        a, b = load_of(ours, c), load_of(etcd, c)
        pa, pb = (a.p99_ms if a else None), (b.p99_ms if b else None)
        lines.append(
            f"| p99 latency ms, {c} client{'s' if c > 1 else ''} |"
            f" {_ms(pa) if pa is not None else '-'} | {_ms(pb) if pb is not None else '-'} |"
            f" {_ratio(pa, pb)} | | |"
        )
    if "shared" in opts.shapes:
        for c in opts.clients:
            if c == 1:
                continue
            a2 = ours.load(c, "shared") if ours else None
            b2 = etcd.load(c, "shared") if etcd else None
            ra2 = a2.throughput if a2 else None
            rb2 = b2.throughput if b2 else None
            lines.append(
                f"| puts/s, {c} clients on one shared channel | {_num(ra2) if ra2 else '-'} |"
                f" {_num(rb2) if rb2 else '-'} | {_ratio(ra2, rb2)} | | |"
            )
    top = max(opts.clients)
    for shape in opts.shapes:
        a3 = ours.load(top, shape) if ours else None
        b3 = etcd.load(top, shape) if etcd else None
        ua = a3.server_cpu_us_per_put if a3 else None
        ub = b3.server_cpu_us_per_put if b3 else None
        if ua is not None or ub is not None:
            how = "a channel per client" if shape == "per-client" else "one shared channel"
            lines.append(
                f"| server CPU us per put (3 members), {top} clients, {how} |"
                f" {_num(ua) if ua is not None else '-'} | {_num(ub) if ub is not None else '-'} |"
                f" {_ratio(ua, ub)} | | |"
            )
    cap = opts.failover_cap_s
    if opts.failover_runs:
        fa = ours.failover_seconds() if ours else []
        fb = etcd.failover_seconds() if etcd else []
        ma, mb = _median(fa), _median(fb)
        met = None if not fa else (ma is not None and ma <= TARGET_FAILOVER_S)
        lines.append(
            f"| failover s: leader SIGKILL -> next write acked | {_failover_cell(fa, cap)} |"
            f" {_failover_cell(fb, cap)} | {_ratio(ma, mb)} | <= {TARGET_FAILOVER_S:g} s"
            f" (etcd: {ISSUE_ETCD_FAILOVER_S:g} s in the issue) | {_yes(met)} |"
        )
        if etcd_same is not None:
            fs = etcd_same.failover_seconds()
            ms = _median(fs)
            lines.append(
                f"| failover s, etcd at k8semu's timings ({etcd_same.heartbeat_ms}/"
                f"{etcd_same.election_ms} ms) | {_failover_cell(fa, cap)} |"
                f" {_failover_cell(fs, cap) if not etcd_same.error else 'failed'} |"
                f" {_ratio(ma, ms)} | | |"
            )
    lines.append("")
    lines.extend(_notes(opts, env, [s for s in (ours, etcd, etcd_same) if s is not None]))
    return "\n".join(lines)


def render_single(result: SystemResult, opts: BenchOptions, env: dict[str, Any]) -> str:
    """A table for one system (``--only`` or ``--endpoints``)."""
    timing = f" ({result.heartbeat_ms}/{result.election_ms} ms)" if result.heartbeat_ms else ""
    lines = [
        f"| {result.label}{timing} | puts/s | p50 ms | p99 ms | max ms | failed attempts |"
        " client CPU us/put | server CPU us/put |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result.loads:
        server = r.server_cpu_us_per_put
        lines.append(
            f"| {r.clients} client{'s' if r.clients > 1 else ''}, {r.shape}"
            f"{' (capped)' if r.capped else ''}"
            f" | {_num(r.throughput)} | {_ms(r.p50_ms)} | {_ms(r.p99_ms)} | {_ms(r.max_ms)} |"
            f" {r.errors} | {_num(r.client_cpu_s / r.puts * 1e6) if r.puts else '-'} |"
            f" {_num(server) if server is not None else '-'} |"
        )
    lines.append("")
    if result.failovers:
        lines.append(
            f"Failover (leader SIGKILL -> next write acknowledged), {result.label}{timing}:"
            f" {_failover_cell(result.failover_seconds(), opts.failover_cap_s)} s"
            f" (target for k8semu: <= {TARGET_FAILOVER_S:g} s)."
        )
        lines.append("")
    lines.extend(_notes(opts, env, [result]))
    return "\n".join(lines)


def render_same_timings(result: SystemResult, opts: BenchOptions) -> str:
    return (
        f"Failover of {result.label} at {result.heartbeat_ms}/{result.election_ms} ms"
        f" (k8semu's timings): {_failover_cell(result.failover_seconds(), opts.failover_cap_s)} s."
    )


_SHAPE_TEXT = {
    "per-client": "one channel (connection) per client",
    "shared": "one channel per member shared by all clients",
}


def _notes(opts: BenchOptions, env: dict[str, Any], results: Sequence[SystemResult]) -> list[str]:
    w = opts.workload
    load1, load5, _ = env["load_average"]
    spread = "all to the leader" if opts.to_leader else "round-robin over the members"
    where = (
        "against the given endpoints"
        if env.get("endpoints")
        else "3 members per cluster on 127.0.0.1, one cluster at a time"
    )
    lines = [
        f"Setup: {w.puts:,} puts of {w.value_size} B values over"
        f" {min(w.key_space, w.puts):,} keys per client count; one Python grpc.aio client"
        f" process ({'uvloop' if env['uvloop'] else 'asyncio'}, grpcio {env['grpcio']});"
        f" client shapes: {', '.join(_SHAPE_TEXT[x] for x in opts.shapes)}; {spread}; {where};"
        f" {env['cpus']} CPUs ({env['cpu_model']}), {env['filesystem'] or 'unknown'} disk,"
        f" load average {load1:.2f}/{load5:.2f} before the run, {env['date']}.",
    ]
    if opts.failover_runs:
        lines.append(
            f"Failover: {opts.failover_clients} clients writing; the leader is SIGKILLed after"
            f" {opts.failover_warmup_s:g} s of load; the figure is the time to the first"
            " acknowledged put sent after the kill (median, min-max over the runs). Attempts"
            f" time out after {opts.failover_attempt_timeout / 2:g}-"
            f"{opts.failover_attempt_timeout * 1.5:g} s (spread over the clients so retries do"
            " not march in step) and retry at once on the next member. Timings are"
            " heartbeat/election timeout."
        )
    for s in results:
        if s.error:
            lines.append(f"{s.label} ({s.system}) failed: {s.error}")
        errs = sum(r.errors for r in s.loads)
        if errs:
            lines.append(f"{s.label}: {errs} failed put attempts during the loads (retried).")
        if any(r.capped for r in s.loads):
            lines.append(f"{s.label}: some loads stopped at --max-seconds={w.max_seconds:g}.")
    return lines


# -- command line ------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _client_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"client counts must be >= 1: {text}")
    return values


def _shape_list(text: str) -> tuple[str, ...]:
    shapes = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in shapes if x not in SHAPES]
    if bad or not shapes:
        raise argparse.ArgumentTypeError(f"shapes must be from {', '.join(SHAPES)}: {text!r}")
    return shapes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu bench store",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=(
            "Measure put throughput, latency and leader-failover time of an etcd v3 store. By"
            " default (--compare) start a 3-replica k8semu store and a 3-member etcd here, one"
            " after the other, run the same workload on both and print a Markdown table."
        ),
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--endpoints",
        help="host:port,... of a running etcd v3 cluster: run the loads only (no failover)",
    )
    mode.add_argument("--compare", action="store_true", help="k8semu vs etcd (the default)")
    mode.add_argument("--only", choices=("etcd", "k8semu"), help="start and measure one side")
    mode.add_argument(
        "--sustained",
        action="store_true",
        help="paced writes at fixed rates instead (see --sustained --help)",
    )
    p.add_argument("--puts", type=_positive_int, default=10_000, help="puts per load run")
    p.add_argument(
        "--clients", type=_client_list, default="1,16,64", help="comma-separated client counts"
    )
    p.add_argument(
        "--shapes",
        type=_shape_list,
        default="per-client,shared",
        help="client shapes: per-client (a channel each) and/or shared (one channel for all)",
    )
    p.add_argument("--value-size", type=_non_negative_int, default=256, help="bytes per value")
    p.add_argument("--key-space", type=_positive_int, default=10_000, help="distinct keys")
    p.add_argument("--to-leader", action="store_true", help="send every client to the leader")
    p.add_argument(
        "--attempt-timeout", type=_positive_float, default=5.0, help="deadline of one put (s)"
    )
    p.add_argument(
        "--max-seconds", type=_positive_float, default=120.0, help="wall-clock cap per load run"
    )
    p.add_argument(
        "--failover-clients", type=_positive_int, default=16, help="clients writing at the kill"
    )
    p.add_argument(
        "--failover-runs", type=_non_negative_int, default=5, help="leader kills per cluster"
    )
    p.add_argument(
        "--failover-warmup", type=_positive_float, default=1.0, help="load before the kill (s)"
    )
    p.add_argument(
        "--failover-cap", type=_positive_float, default=30.0, help="give up after (seconds)"
    )
    p.add_argument(
        "--failover-attempt-timeout",
        type=_positive_float,
        default=0.25,
        help="mean deadline of one put during failover (s), spread 0.5-1.5x over the clients;"
        " it frees clients stuck on a dead leader",
    )
    p.add_argument(
        "--heartbeat-ms", type=_positive_int, default=K8SEMU_HEARTBEAT_MS, help="k8semu's"
    )
    p.add_argument("--election-ms", type=_positive_int, default=K8SEMU_ELECTION_MS, help="k8semu's")
    p.add_argument(
        "--etcd-heartbeat-ms",
        type=_positive_int,
        default=ETCD_DEFAULT_HEARTBEAT_MS,
        help="etcd's (its default)",
    )
    p.add_argument(
        "--etcd-election-ms",
        type=_positive_int,
        default=ETCD_DEFAULT_ELECTION_MS,
        help="etcd's (its default)",
    )
    p.add_argument(
        "--no-etcd-same-timings",
        action="store_true",
        help="skip the extra etcd failover run at k8semu's timings",
    )
    p.add_argument("--etcd-binary", default=DEFAULT_ETCD_BINARY, help="the etcd to compare with")
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep each run's cluster data and logs in a new dir under this one; without it a"
        " temp dir is used and removed on success",
    )
    p.add_argument(
        "--ready-timeout",
        type=_positive_float,
        default=60.0,
        help="how long a cluster may take to agree on a leader (s)",
    )
    p.add_argument("--json", type=Path, help="also write the raw figures to this file")
    p.add_argument("--no-uvloop", action="store_true", help="use the plain asyncio loop")
    p.add_argument(
        "--allow-remote", action="store_true", help="allow --endpoints outside 127.0.0.0/8"
    )
    return p


def _check_endpoints(text: str, allow_remote: bool) -> list[str]:
    endpoints = [e.strip().removeprefix("http://") for e in text.split(",") if e.strip()]
    if not endpoints:
        raise BenchError("--endpoints: empty list")
    for ep in endpoints:
        host, sep, port = ep.rpartition(":")
        if not sep or not port.isdigit():
            raise BenchError(f"--endpoints: {ep!r} is not host:port")
        if allow_remote:
            continue
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise BenchError(f"--endpoints: {ep} is not on loopback; pass --allow-remote to use it")
    return endpoints


def _options(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(
        workload=Workload(
            puts=args.puts,
            value_size=args.value_size,
            key_space=args.key_space,
            attempt_timeout=args.attempt_timeout,
            max_seconds=args.max_seconds,
        ),
        clients=args.clients,
        shapes=args.shapes,
        to_leader=args.to_leader,
        failover_clients=args.failover_clients,
        failover_runs=args.failover_runs,
        failover_warmup_s=args.failover_warmup,
        failover_cap_s=args.failover_cap,
        failover_attempt_timeout=args.failover_attempt_timeout,
        ready_timeout=args.ready_timeout,
    )


async def _endpoints_run(args: argparse.Namespace, opts: BenchOptions) -> SystemResult:
    endpoints = _check_endpoints(args.endpoints, args.allow_remote)
    leader_index = await find_leader_index(endpoints) if opts.to_leader else None
    result = SystemResult("endpoints", ",".join(endpoints), 0, 0)
    payloads = opts.workload.payloads()
    for shape, clients in _shape_runs(opts):
        r = await run_load(
            endpoints,
            clients,
            opts.workload,
            payloads=payloads,
            leader_index=leader_index,
            connect_within=opts.ready_timeout,
            shape=shape,
        )
        result.loads.append(r)
        _say(_describe_load(r))
    return result


async def _cluster_runs(
    args: argparse.Namespace, opts: BenchOptions, workdir: Path
) -> dict[str, SystemResult]:
    sides = [args.only] if args.only else ["k8semu", "etcd"]
    results: dict[str, SystemResult] = {}
    if "k8semu" in sides:
        results["k8semu"] = await _guarded(
            "k8semu",
            "k8semu store",
            lambda: K8semuStoreCluster(
                workdir / "k8semu", 3, heartbeat_ms=args.heartbeat_ms, election_ms=args.election_ms
            ),
            opts,
        )
    if "etcd" in sides:
        label = _etcd_version(args.etcd_binary)
        results["etcd"] = await _guarded(
            "etcd",
            label,
            lambda: EtcdCluster(
                workdir / "etcd",
                3,
                heartbeat_ms=args.etcd_heartbeat_ms,
                election_ms=args.etcd_election_ms,
                binary=args.etcd_binary,
            ),
            opts,
        )
        same = (args.etcd_heartbeat_ms, args.etcd_election_ms) == (
            args.heartbeat_ms,
            args.election_ms,
        )
        if opts.failover_runs and not args.no_etcd_same_timings and not same:
            results["etcd_same_timings"] = await _guarded(
                "etcd_same_timings",
                label,
                lambda: EtcdCluster(
                    workdir / "etcd-same-timings",
                    3,
                    heartbeat_ms=args.heartbeat_ms,
                    election_ms=args.election_ms,
                    binary=args.etcd_binary,
                ),
                opts,
                loads=False,
            )
    return results


def _run_loop(coro: Coroutine[Any, Any, Any], use_uvloop: bool) -> tuple[Any, bool]:
    """Run ``coro`` on uvloop when asked and installed, else on asyncio's loop."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro), True
    return asyncio.run(coro), False


def main(argv: Sequence[str] | None = None) -> int:
    """``k8semu bench store``: returns the exit status (1 when a cluster or a run failed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--sustained" in argv:
        from k8semu.bench import sustained

        return sustained.main([a for a in argv if a != "--sustained"])
    args = build_parser().parse_args(argv)
    opts = _options(args)
    if args.endpoints:
        opts = dataclasses.replace(opts, failover_runs=0)
        try:
            result, uv = _run_loop(_endpoints_run(args, opts), not args.no_uvloop)
        except BenchError as exc:
            _say(f"error: {exc}")
            return 1
        env = environment(None, uv)
        env["endpoints"] = result.label
        print(render_single(result, opts, env))
        _write_json(args.json, env, opts, {"endpoints": result})
        return 0

    own_dir = args.workdir is None
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    # A fresh directory per run even under --workdir: the harness refuses stale member data.
    workdir = Path(tempfile.mkdtemp(prefix="k8semu-bench-", dir=args.workdir))
    env = environment(workdir, not args.no_uvloop)
    failed = True
    try:
        results, uv = _run_loop(_cluster_runs(args, opts, workdir), not args.no_uvloop)
        failed = any(r.error for r in results.values())
        env["uvloop"] = uv
        if args.only:
            print(render_single(results[args.only], opts, env))
            if "etcd_same_timings" in results:
                print()
                print(render_same_timings(results["etcd_same_timings"], opts))
        else:
            ours, etcd = results.get("k8semu"), results.get("etcd")
            print(render_compare(ours, etcd, results.get("etcd_same_timings"), opts, env))
        _write_json(args.json, env, opts, results)
    finally:
        if own_dir and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            _say(f"cluster data and logs are in {workdir}")
    return 1 if failed else 0


def _write_json(
    path: Path | None, env: dict[str, Any], opts: BenchOptions, results: dict[str, SystemResult]
) -> None:
    if path is None:
        return
    doc = {
        "environment": env,
        "options": dataclasses.asdict(opts),
        "results": {name: dataclasses.asdict(r) for name, r in results.items()},
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    _say(f"raw figures written to {path}")
