"""Sustained-load store benchmark: a fixed write rate for a fixed time, k8semu next to etcd.

``k8semu bench store --sustained`` starts a 3-replica k8semu store and a 3-member etcd on this
machine, one after the other (never competing for the CPUs), and drives each with the same
paced load: for every ``RATE:CLIENTS`` pair, CLIENTS clients (each its own gRPC channel, so its
own TCP connection, round-robin over the members) together send RATE puts per second for
``--duration`` seconds. Each client sends on a fixed schedule; latency is counted from the
scheduled send time, so a stalled store shows as latency rather than as a quietly lower rate;
the time from the actual send is reported too, so that a store slower than the asked rate
(clients falling further behind schedule) can be told from slow single requests.
A request is never retried: a failure is reported with its error text.

Per backend and rate it reports: achieved rate, failed requests by error text, leader changes
(Status of every member polled throughout), p50/p99/max latency and the server processes' CPU
(from /proc/PID/stat): cores used and microseconds per write. For k8semu it also reports the
longest gap between leader messages seen by a follower and the longest Raft-loop turn (the
replicas' ``raft timing`` log lines), the measure of whether background work held consensus up.

It must not run unbounded: every run stops at ``--duration`` plus one attempt timeout.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from k8semu.bench._common import (
    BenchError,
    Stopwatch,
    argument_parser,
    environment,
    error_summary,
    non_negative_int,
    percentile,
    positive_float,
    positive_int,
    ratio,
    run_dir,
    run_loop,
    say,
    write_json,
    yes,
)
from k8semu.bench._etcdload import (
    CHANNEL_OPTIONS,
    K8SEMU_ELECTION_MS,
    K8SEMU_HEARTBEAT_MS,
    PutClient,
    Workload,
    connect,
    error_text,
    etcd_version,
)
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.processes import DEFAULT_ETCD_BINARY, EtcdCluster, K8semuStoreCluster
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

__all__ = ["RateResult", "main", "run_sustained"]

# The targets for our store, printed next to the figures.
TARGET_RATE_FRACTION = 0.9
TARGET_MAX_S = 0.5
STATUS_POLL_S = 0.1
DEFAULT_RATES = "1000:200,2000:400"


@dataclass
class RateResult:
    """One paced run. Latencies in milliseconds."""

    rate: int
    clients: int
    seconds: float
    sent: int
    ok: int
    achieved: float
    failures: dict[str, int]
    leader_changes: int
    term_before: int
    term_after: int
    leaders: list[str]
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_s: float | None
    client_cpu_s: float
    load_average: tuple[float, float, float]
    max_leader_gap_ms: float | None = None
    max_loop_turn_ms: float | None = None
    # The same latencies counted from when each put was actually sent: the store's own time.
    # What the due-time latency has beyond this is how far behind schedule the clients were
    # (a backend slower than the asked rate shows there, however short each request).
    request_p50_ms: float = 0.0
    request_max_ms: float = 0.0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def server_cores(self) -> float | None:
        return None if self.server_cpu_s is None else self.server_cpu_s / self.seconds

    @property
    def server_us_per_write(self) -> float | None:
        if self.server_cpu_s is None or not self.ok:
            return None
        return self.server_cpu_s / self.ok * 1e6


@dataclass
class Backend:
    system: str
    label: str
    runs: list[RateResult] = field(default_factory=list)
    error: str = ""


class _LeaderWatch:
    """Polls Status of every member; counts changes of (leader, term) as the members see it."""

    def __init__(self, endpoints: Sequence[str]) -> None:
        self._channels = [
            grpc.aio.insecure_channel(ep, options=CHANNEL_OPTIONS) for ep in endpoints
        ]
        self.seen: list[tuple[int, int]] = []  # distinct (leader id, term) in order
        self._stop = asyncio.Event()

    async def snapshot(self) -> tuple[int, int] | None:
        """The (leader, term) the highest-term answering member reports."""
        best: tuple[int, int] | None = None
        for channel in self._channels:
            try:
                st = await rpc_pb2_grpc.MaintenanceStub(channel).Status(
                    rpc_pb2.StatusRequest(), timeout=1.0
                )
            except grpc.aio.AioRpcError:
                continue
            if st.leader and (best is None or st.raftTerm > best[1]):
                best = (st.leader, st.raftTerm)
        return best

    async def run(self) -> None:
        while not self._stop.is_set():
            now = await self.snapshot()
            if now is not None and (not self.seen or self.seen[-1] != now):
                self.seen.append(now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), STATUS_POLL_S)

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


class _PacedPuts:
    """The clients of one paced run and what they recorded: latency from each put's due time
    (so a stall shows as latency), the puts sent, the failures by error text."""

    def __init__(
        self, pool: Sequence[PutClient], rate: int, duration: float, payloads: Sequence[bytes]
    ) -> None:
        self.pool = pool
        self.duration = duration
        self.payloads = payloads
        self.interval = len(pool) / rate
        self.per_client = max(1, round(duration / self.interval))
        self.latencies = [array.array("d") for _ in pool]
        self.request_times = [array.array("d") for _ in pool]
        self.failures: Counter[str] = Counter()
        self.sent = 0

    async def client(self, k: int, t0: float, attempt_timeout: float) -> None:
        """Client k sends put n at t0 + (k / clients + n) * interval, at once when behind,
        and stops at t0 + duration."""
        c = self.pool[k]
        clients, interval = len(self.pool), self.interval
        payloads, n_payloads = self.payloads, len(self.payloads)
        record = self.latencies[k].append
        record_request = self.request_times[k].append
        perf_counter = time.perf_counter
        i = k
        end = t0 + self.duration
        for n in range(self.per_client):
            due = t0 + (k / clients + n) * interval
            if due > perf_counter():
                # uvloop's timers have millisecond resolution and may wake up to a millisecond
                # early: a put is never sent before its due time.
                while (wait := due - perf_counter()) > 0:  # noqa: ASYNC110 (a deadline, not an event)
                    await asyncio.sleep(wait)
            elif perf_counter() >= end:
                break  # too far behind: what was not sent by the end counts as not achieved
            request = payloads[i % n_payloads]
            i += clients
            self.sent += 1
            sent = perf_counter()
            try:
                await c.put(request, timeout=attempt_timeout)
            except grpc.aio.AioRpcError as exc:
                self.failures[error_text(exc)] += 1
                continue
            done = perf_counter()
            record(done - due)
            record_request(done - sent)

    def samples(self) -> list[float]:
        """Every acknowledged put's latency in seconds, sorted."""
        return sorted(x for lat in self.latencies for x in lat)

    def request_samples(self) -> list[float]:
        """Every acknowledged put's time from its send, in seconds, sorted."""
        return sorted(x for lat in self.request_times for x in lat)


def _leaders(
    before: tuple[int, int] | None, seen: Sequence[tuple[int, int]], after: tuple[int, int] | None
) -> list[tuple[int, int]]:
    """The distinct (leader, term) pairs in order, with the snapshots taken around the run."""
    out = list(seen)
    if before is not None and (not out or out[0] != before):
        out.insert(0, before)
    if after is not None and (not out or out[-1] != after):
        out.append(after)
    return out


async def run_sustained(
    endpoints: Sequence[str],
    rate: int,
    clients: int,
    duration: float,
    *,
    payloads: Sequence[bytes],
    attempt_timeout: float = 5.0,
    server_pids: Sequence[int] = (),
) -> RateResult:
    """``clients`` clients send ``rate`` puts/s in total for ``duration`` s, each on a fixed
    schedule (client k sends at t0 + (k / clients + i) * clients / rate). A client that is
    behind sends at once; at ``duration`` it stops, so a run lasts at most ``duration`` plus
    one attempt timeout. The achieved rate is acknowledged puts over the elapsed time."""
    if rate < 1 or clients < 1 or duration <= 0:
        raise ValueError("rate, clients and duration must be positive")
    pool = [PutClient(endpoints, k) for k in range(clients)]
    puts = _PacedPuts(pool, rate, duration, payloads)
    watch = _LeaderWatch(endpoints)
    stopwatch = Stopwatch(server_pids)
    try:
        await connect(pool, payloads[0], attempt_timeout, 60.0)
        before = await watch.snapshot()
        watcher = asyncio.create_task(watch.run())
        t0 = stopwatch.start(delay=0.05)
        await asyncio.gather(*(puts.client(k, t0, attempt_timeout) for k in range(clients)))
        stopwatch.stop()
        watch.stop()
        await watcher
        after = await watch.snapshot()
    finally:
        watch.stop()
        await watch.close()
        await asyncio.gather(*(c.close() for c in pool), return_exceptions=True)

    samples = puts.samples()
    requests = puts.request_samples()
    seen = _leaders(before, watch.seen, after)
    elapsed = stopwatch.seconds
    return RateResult(
        rate=rate,
        clients=clients,
        seconds=elapsed,
        sent=puts.sent,
        ok=len(samples),
        achieved=len(samples) / elapsed if elapsed > 0 else 0.0,
        failures=dict(puts.failures.most_common()),
        leader_changes=max(0, len(seen) - 1),
        term_before=before[1] if before else 0,
        term_after=after[1] if after else 0,
        leaders=[f"{leader:x}@{term}" for leader, term in seen],
        p50_ms=percentile(samples, 50) * 1e3,
        p99_ms=percentile(samples, 99) * 1e3,
        max_ms=(samples[-1] if samples else 0.0) * 1e3,
        server_cpu_s=stopwatch.server_cpu_s,
        client_cpu_s=stopwatch.client_cpu_s,
        load_average=os.getloadavg(),
        request_p50_ms=percentile(requests, 50) * 1e3,
        request_max_ms=(requests[-1] if requests else 0.0) * 1e3,
    )


def raft_timing(logs: Sequence[Path], since: float) -> tuple[float | None, float | None]:
    """The largest ``max_leader_gap_ms`` / ``max_loop_turn_ms`` in the replicas' JSON logs
    from ``since`` (a time.time()) on; None when no line was found."""
    gap: float | None = None
    turn: float | None = None
    for path in logs:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if '"raft timing"' not in line:
                continue
            try:
                rec = json.loads(line)
                stamp = _epoch(rec.get("timestamp", ""))
            except (ValueError, TypeError):
                continue
            if stamp < since:
                continue
            g, t = rec.get("max_leader_gap_ms"), rec.get("max_loop_turn_ms")
            if isinstance(g, int | float) and rec.get("role") == "FOLLOWER":
                gap = g if gap is None else max(gap, g)
            if isinstance(t, int | float):
                turn = t if turn is None else max(turn, t)
    return gap, turn


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- whole runs --------------------------------------------------------------------------------


async def _bench_backend(
    system: str,
    label: str,
    cluster: K8semuStoreCluster | EtcdCluster,
    rates: Sequence[tuple[int, int]],
    args: argparse.Namespace,
    payloads: Sequence[bytes],
) -> Backend:
    result = Backend(system, label)
    with cluster:
        say(f"[{system}] starting {cluster.size} members in {cluster.base_dir}")
        cluster.start()
        leader = cluster.wait_ready(timeout=args.ready_timeout)
        say(f"[{system}] ready, leader {leader}")
        for rate, clients in rates:
            # The report window of the replicas' timing lines is 10 s: a window that began
            # before the run is counted too, which can only over-report.
            since = time.time() - 10.5
            r = await run_sustained(
                cluster.endpoints,
                rate,
                clients,
                args.duration,
                payloads=payloads,
                attempt_timeout=args.attempt_timeout,
                server_pids=list(cluster.pids.values()),
            )
            if system == "k8semu":
                # The timing lines of the last window come out up to 10 s after the run.
                await asyncio.sleep(min(10.5, args.duration + 0.5))
                logs = [m.log_path for m in cluster.members.values()]
                r.max_leader_gap_ms, r.max_loop_turn_ms = raft_timing(logs, since)
            result.runs.append(r)
            say(f"[{system}] {_describe(r)}")
    return result


def _describe(r: RateResult) -> str:
    cores = f"{r.server_cores:.2f}" if r.server_cores is not None else "?"
    fails = f", {r.failed} failed ({'; '.join(r.failures)})" if r.failures else ""
    return (
        f"{r.rate}/s from {r.clients} clients: {r.achieved:.0f}/s achieved, p50 {r.p50_ms:.1f}"
        f" p99 {r.p99_ms:.1f} max {r.max_ms:.1f} ms (from the send: p50 {r.request_p50_ms:.1f}"
        f" max {r.request_max_ms:.1f} ms), {r.leader_changes} leader changes,"
        f" servers {cores} cores{fails}"
    )


def _cell(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _row(
    name: str,
    va: float | None,
    vb: float | None,
    fmt: str,
    target: str = "",
    met: bool | None = None,
) -> str:
    return (
        f"| {name} | {_cell(va, fmt)} | {_cell(vb, fmt)} | {ratio(va, vb)} |"
        f" {target} | {yes(met) if target else ''} |"
    )


def _pick(b: Backend | None, rate: int, clients: int) -> RateResult | None:
    if b is None:
        return None
    return next((r for r in b.runs if (r.rate, r.clients) == (rate, clients)), None)


def _table(a: RateResult | None, b: RateResult | None, rate: int) -> list[str]:
    def get(r: RateResult | None, attr: str) -> float | None:
        return None if r is None else getattr(r, attr)

    def met(ok: bool) -> bool | None:
        return None if a is None else ok

    ach = get(a, "achieved") or 0.0
    max_ms = get(a, "max_ms") or 0.0
    lines = [
        "| | k8semu store | etcd | k8semu/etcd | target (k8semu) | met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        _row(
            "achieved writes/s", get(a, "achieved"), get(b, "achieved"), "{:,.0f}",
            f">= {TARGET_RATE_FRACTION:.0%} of {rate:,}", met(ach >= TARGET_RATE_FRACTION * rate),
        ),
        _row(
            "failed requests", get(a, "failed"), get(b, "failed"), "{:,.0f}",
            "0", met(get(a, "failed") == 0),
        ),
        _row(
            "leader changes", get(a, "leader_changes"), get(b, "leader_changes"), "{:,.0f}",
            "0", met(get(a, "leader_changes") == 0),
        ),
        _row("p50 latency ms", get(a, "p50_ms"), get(b, "p50_ms"), "{:.1f}"),
        _row("p99 latency ms", get(a, "p99_ms"), get(b, "p99_ms"), "{:.1f}"),
        _row(
            "max latency ms", get(a, "max_ms"), get(b, "max_ms"), "{:.1f}",
            f"<= {TARGET_MAX_S * 1e3:g}", met(max_ms <= TARGET_MAX_S * 1e3),
        ),
        _row("p50 ms from the send (no schedule lag)", get(a, "request_p50_ms"),
             get(b, "request_p50_ms"), "{:.1f}"),
        _row("max ms from the send", get(a, "request_max_ms"), get(b, "request_max_ms"),
             "{:.1f}"),
        _row("server CPU, cores (3 members)", get(a, "server_cores"), get(b, "server_cores"),
             "{:.2f}"),
        _row("server CPU us per write", get(a, "server_us_per_write"),
             get(b, "server_us_per_write"), "{:,.0f}"),
    ]  # fmt: skip
    if a is not None:
        lines.append(
            "| longest gap between leader messages on a follower, ms |"
            f" {_cell(a.max_leader_gap_ms, '{:.0f}')} | - | | | |"
        )
        lines.append(
            f"| longest Raft loop turn, ms | {_cell(a.max_loop_turn_ms, '{:.0f}')} | - | | | |"
        )
    return lines


def render(backends: dict[str, Backend], rates: Sequence[tuple[int, int]], duration: float) -> str:
    """Markdown: one table per rate, k8semu and etcd side by side with ratios and targets."""
    lines: list[str] = []
    for rate, clients in rates:
        a = _pick(backends.get("k8semu"), rate, clients)
        b = _pick(backends.get("etcd"), rate, clients)
        lines += [f"Sustained {rate:,} writes/s from {clients} clients for {duration:g} s:", ""]
        lines += _table(a, b, rate)
        lines.append("")
        for name, r in (("k8semu", a), ("etcd", b)):
            if r is None:
                continue
            l1, l5, _ = r.load_average
            lines.append(
                f"{name}: terms {r.term_before} -> {r.term_after}, leaders {' '.join(r.leaders)};"
                f" load average {l1:.2f}/{l5:.2f} after the run"
            )
            for text, count in r.failures.items():
                lines.append(f"{name}: {count} x `{text}`")
        lines.append("")
    for backend in backends.values():
        if backend.error:
            lines.append(f"{backend.label} failed: {backend.error}")
    return "\n".join(lines)


def _rates(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        rate, sep, clients = item.strip().partition(":")
        try:
            pair = (int(rate), int(clients) if sep else 1)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not RATE:CLIENTS: {item!r}") from None
        if pair[0] < 1 or pair[1] < 1:
            raise argparse.ArgumentTypeError(f"rate and clients must be >= 1: {item!r}")
        out.append(pair)
    if not out:
        raise argparse.ArgumentTypeError("empty list")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argument_parser(
        "k8semu bench store --sustained",
        (
            "Sustained paced writes against a 3-replica k8semu store and a 3-member etcd, one"
            " after the other: achieved rate, failures, leader changes, latency, server CPU."
        ),
    )
    p.add_argument(
        "--rates", type=_rates, default=DEFAULT_RATES, help="RATE:CLIENTS pairs, comma-separated"
    )
    p.add_argument("--duration", type=positive_float, default=60.0, help="seconds per rate")
    p.add_argument("--only", choices=("etcd", "k8semu"), help="start and measure one side")
    p.add_argument("--value-size", type=non_negative_int, default=256, help="bytes per value")
    p.add_argument("--key-space", type=positive_int, default=10_000, help="distinct keys")
    p.add_argument(
        "--attempt-timeout", type=positive_float, default=5.0,
        help="deadline of one put (s); a put is never retried",
    )  # fmt: skip
    p.add_argument(
        "--snapshot-count", type=positive_int,
        help="k8semu's --snapshot-count (default: the store's own)",
    )  # fmt: skip
    p.add_argument("--heartbeat-ms", type=positive_int, default=K8SEMU_HEARTBEAT_MS)
    p.add_argument("--election-ms", type=positive_int, default=K8SEMU_ELECTION_MS)
    p.add_argument("--etcd-binary", default=DEFAULT_ETCD_BINARY, help="the etcd to compare with")
    p.add_argument("--workdir", type=Path, help="keep cluster data and logs under this dir")
    p.add_argument("--ready-timeout", type=positive_float, default=60.0)
    p.add_argument("--json", type=Path, help="also write the raw figures to this file")
    p.add_argument("--no-uvloop", action="store_true", help="use the plain asyncio loop")
    return p


async def _runs(args: argparse.Namespace, workdir: Path) -> dict[str, Backend]:
    payloads = Workload(
        puts=args.key_space, value_size=args.value_size, key_space=args.key_space
    ).payloads()
    sides = [args.only] if args.only else ["k8semu", "etcd"]
    out: dict[str, Backend] = {}
    for side in sides:
        try:
            if side == "k8semu":
                extra = ["--log-format", "json", "--log-level", "debug"]
                if args.snapshot_count:
                    extra += ["--snapshot-count", str(args.snapshot_count)]
                cluster: K8semuStoreCluster | EtcdCluster = K8semuStoreCluster(
                    workdir / side, 3, heartbeat_ms=args.heartbeat_ms,
                    election_ms=args.election_ms, extra_args=extra,
                )  # fmt: skip
                label = "k8semu store"
            else:
                cluster = EtcdCluster(workdir / side, 3, binary=args.etcd_binary)
                label = etcd_version(args.etcd_binary)
            out[side] = await _bench_backend(side, label, cluster, args.rates, args, payloads)
        except (ClusterError, BenchError, OSError) as exc:
            say(f"[{side}] FAILED: {exc}")
            out[side] = Backend(side, side, error=error_summary(exc))
    return out


def _json_doc(
    args: argparse.Namespace, env: dict[str, Any], results: dict[str, Backend]
) -> dict[str, Any]:
    return {
        "environment": env,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": {
            name: {
                "label": b.label,
                "error": b.error,
                "runs": [
                    dataclasses.asdict(r)
                    | {"server_us_per_write": r.server_us_per_write, "failed": r.failed}
                    for r in b.runs
                ],
            }
            for name, b in results.items()
        },
    }


def _setup_line(args: argparse.Namespace, env: dict[str, Any]) -> str:
    l1, l5, _ = env["load_average"]
    return (
        f"Setup: paced puts of {args.value_size} B values over {args.key_space:,} keys, one"
        f" channel (connection) per client, round-robin over 3 members on 127.0.0.1, one"
        f" cluster at a time; no retries; {env['cpus']} CPUs ({env['cpu_model']}),"
        f" load average {l1:.2f}/{l5:.2f} before the run, {env['date']}."
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with run_dir(args.workdir, "k8semu-sustained-") as rundir:
        env = environment(rundir.path, not args.no_uvloop)
        results, uv = run_loop(_runs(args, rundir.path), not args.no_uvloop)
        env["uvloop"] = uv
        rundir.failed = any(b.error for b in results.values())
        print(render(results, args.rates, args.duration))
        print(_setup_line(args, env))
        write_json(args.json, _json_doc(args, env, results), what=None)
    return 1 if rundir.failed else 0
