"""Store benchmark: put throughput, put latency and leader-failover time over the etcd v3 API.

This module owns the comparison run behind ``k8semu bench store``, its report and its command
line. The load generator (``_etcdload``) is a Python grpc.aio client that works against any
etcd v3 endpoint list, so one workload drives a ``k8semu store`` cluster and a real etcd alike.
``--compare`` (the default) starts a 3-replica cluster of each on this machine, one after the
other so they never compete for the CPUs, runs the same workload on both and prints a Markdown
table for the README.

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
import dataclasses
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8semu.bench._common import (
    BenchError,
    argument_parser,
    check_endpoints,
    environment,
    error_summary,
    non_negative_int,
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
    ETCD_DEFAULT_ELECTION_MS,
    ETCD_DEFAULT_HEARTBEAT_MS,
    K8SEMU_ELECTION_MS,
    K8SEMU_HEARTBEAT_MS,
    SHAPES,
    FailoverResult,
    LoadResult,
    Workload,
    etcd_version,
    find_leader_index,
    run_failover,
    run_load,
)
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.processes import (
    DEFAULT_ETCD_BINARY,
    EtcdCluster,
    K8semuStoreCluster,
    ProcessCluster,
)

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

# The issue's targets, printed next to the figures.
TARGET_THROUGHPUT_RATIO = 0.5  # ours / etcd at TARGET_THROUGHPUT_CLIENTS clients, at least
TARGET_THROUGHPUT_CLIENTS = 64
TARGET_P50_RATIO = 2.0  # ours / etcd at 1 client, at most
TARGET_FAILOVER_S = 1.0  # ours, at most
ISSUE_ETCD_FAILOVER_S = 1.8


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """Everything a run needs besides the cluster: the workload and the failover settings."""

    workload: Workload = field(default_factory=Workload)
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


# -- whole runs --------------------------------------------------------------------------------


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


def _shape_runs(opts: BenchOptions) -> list[tuple[str, int]]:
    """(shape, clients) of every load run; with one client both shapes are the same run."""
    return [
        (shape, c)
        for shape in opts.shapes
        for c in opts.clients
        if shape == "per-client" or c > 1 or "per-client" not in opts.shapes
    ]


async def _cluster_loads(
    cluster: ProcessCluster, opts: BenchOptions, payloads: Sequence[bytes], result: SystemResult
) -> None:
    """Every load run of ``opts`` against the running ``cluster``, into ``result``."""
    for shape, clients in _shape_runs(opts):
        leader_index = None
        if opts.to_leader:
            leader_index = list(cluster.members).index(cluster.leader(opts.ready_timeout))
        r = await run_load(
            cluster.endpoints,
            clients,
            opts.workload,
            payloads=payloads,
            leader_index=leader_index,
            connect_within=opts.ready_timeout,
            server_pids=list(cluster.pids.values()),
            shape=shape,
        )
        result.loads.append(r)
        say(f"[{result.system}] {_describe_load(r)}")


async def _cluster_failovers(
    cluster: ProcessCluster, opts: BenchOptions, payloads: Sequence[bytes], result: SystemResult
) -> None:
    """``opts.failover_runs`` leader kills under load, into ``result``."""
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
        say(
            f"[{result.system}] failover {i + 1}/{opts.failover_runs}: killed {f.killed}, new"
            f" leader {f.new_leader or '?'}, next write acknowledged after {took}"
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
        say(f"[{system}] starting {cluster.size} members in {cluster.base_dir}")
        cluster.start()
        leader = cluster.wait_ready(timeout=opts.ready_timeout)
        say(f"[{system}] ready, leader {leader}")
        if loads:
            await _cluster_loads(cluster, opts, payloads, result)
        await _cluster_failovers(cluster, opts, payloads, result)
    return result


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
        say(f"[{system}] FAILED: {exc}")
        hb = cluster.heartbeat_ms if cluster else 0
        el = cluster.election_ms if cluster else 0
        return SystemResult(system, label, hb, el, error=error_summary(exc))


# -- reporting ---------------------------------------------------------------------------------


def _num(x: float) -> str:
    return f"{x:,.0f}"


def _ms(x: float) -> str:
    return f"{x:.2f}"


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


def _plural(c: int) -> str:
    return f"{c} client{'s' if c > 1 else ''}"


class _Compare:
    """The rows of the README table, one method per kind of row: our figures, etcd's, the
    ratio and the issue's target."""

    def __init__(
        self,
        ours: SystemResult | None,
        etcd: SystemResult | None,
        etcd_same: SystemResult | None,
        opts: BenchOptions,
    ) -> None:
        self.ours, self.etcd, self.etcd_same, self.opts = ours, etcd, etcd_same, opts

    def loads(self, c: int, shape: str = "per-client") -> tuple[LoadResult | None, ...]:
        return tuple(s.load(c, shape) if s else None for s in (self.ours, self.etcd))

    def header(self) -> list[str]:
        ours, etcd = self.ours, self.etcd
        head_ours = f"k8semu ({ours.heartbeat_ms}/{ours.election_ms} ms)" if ours else "k8semu"
        head_etcd = f"{etcd.label} ({etcd.heartbeat_ms}/{etcd.election_ms} ms)" if etcd else "etcd"
        return [
            f"| store, 3 replicas | {head_ours} | {head_etcd} | k8semu/etcd | target | met |",
            "| --- | ---: | ---: | ---: | --- | --- |",
        ]

    def throughput(self) -> list[str]:
        lines = []
        for c in self.opts.clients:
            a, b = self.loads(c)
            ra = a.throughput if a else None
            rb = b.throughput if b else None
            target, met = "", None
            if c == TARGET_THROUGHPUT_CLIENTS:
                target = f">= {TARGET_THROUGHPUT_RATIO}x"
                met = None if ra is None or rb is None else ra >= TARGET_THROUGHPUT_RATIO * rb
            verdict = yes(met) if target else ""
            lines.append(
                f"| puts/s, {_plural(c)} | {_num(ra) if ra else '-'} |"
                f" {_num(rb) if rb else '-'} | {ratio(ra, rb)} | {target} | {verdict} |"
            )
        return lines

    def latency(self) -> list[str]:
        lines = []
        if 1 in self.opts.clients:
            a, b = self.loads(1)
            pa, pb = (a.p50_ms if a else None), (b.p50_ms if b else None)
            met = None if pa is None or pb is None else pa <= TARGET_P50_RATIO * pb
            lines.append(
                f"| p50 latency ms, 1 client | {_ms(pa) if pa is not None else '-'} |"
                f" {_ms(pb) if pb is not None else '-'} | {ratio(pa, pb)} |"
                f" <= {TARGET_P50_RATIO:g}x | {yes(met)} |"
            )
        for c in self.opts.clients:
            a, b = self.loads(c)
            pa, pb = (a.p99_ms if a else None), (b.p99_ms if b else None)
            lines.append(
                f"| p99 latency ms, {_plural(c)} |"
                f" {_ms(pa) if pa is not None else '-'} | {_ms(pb) if pb is not None else '-'} |"
                f" {ratio(pa, pb)} | | |"
            )
        return lines

    def shared(self) -> list[str]:
        if "shared" not in self.opts.shapes:
            return []
        lines = []
        for c in self.opts.clients:
            if c == 1:
                continue
            a, b = self.loads(c, "shared")
            ra = a.throughput if a else None
            rb = b.throughput if b else None
            lines.append(
                f"| puts/s, {c} clients on one shared channel | {_num(ra) if ra else '-'} |"
                f" {_num(rb) if rb else '-'} | {ratio(ra, rb)} | | |"
            )
        return lines

    def server_cpu(self) -> list[str]:
        lines = []
        top = max(self.opts.clients)
        for shape in self.opts.shapes:
            a, b = self.loads(top, shape)
            ua = a.server_cpu_us_per_put if a else None
            ub = b.server_cpu_us_per_put if b else None
            if ua is not None or ub is not None:
                how = "a channel per client" if shape == "per-client" else "one shared channel"
                lines.append(
                    f"| server CPU us per put (3 members), {top} clients, {how} |"
                    f" {_num(ua) if ua is not None else '-'} |"
                    f" {_num(ub) if ub is not None else '-'} | {ratio(ua, ub)} | | |"
                )
        return lines

    def failover(self) -> list[str]:
        if not self.opts.failover_runs:
            return []
        cap = self.opts.failover_cap_s
        fa = self.ours.failover_seconds() if self.ours else []
        fb = self.etcd.failover_seconds() if self.etcd else []
        ma, mb = _median(fa), _median(fb)
        met = None if not fa else (ma is not None and ma <= TARGET_FAILOVER_S)
        lines = [
            f"| failover s: leader SIGKILL -> next write acked | {_failover_cell(fa, cap)} |"
            f" {_failover_cell(fb, cap)} | {ratio(ma, mb)} | <= {TARGET_FAILOVER_S:g} s"
            f" (etcd: {ISSUE_ETCD_FAILOVER_S:g} s in the issue) | {yes(met)} |"
        ]
        same = self.etcd_same
        if same is not None:
            fs = same.failover_seconds()
            lines.append(
                f"| failover s, etcd at k8semu's timings ({same.heartbeat_ms}/"
                f"{same.election_ms} ms) | {_failover_cell(fa, cap)} |"
                f" {_failover_cell(fs, cap) if not same.error else 'failed'} |"
                f" {ratio(ma, _median(fs))} | | |"
            )
        return lines


def render_compare(
    ours: SystemResult | None,
    etcd: SystemResult | None,
    etcd_same: SystemResult | None,
    opts: BenchOptions,
    env: dict[str, Any],
) -> str:
    """The README table: our figures, etcd's, the ratio and the issue's target per row."""
    t = _Compare(ours, etcd, etcd_same, opts)
    lines = [
        *t.header(),
        *t.throughput(),
        *t.latency(),
        *t.shared(),
        *t.server_cpu(),
        *t.failover(),
        "",
    ]
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
            f"| {_plural(r.clients)}, {r.shape}"
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
    p = argument_parser(
        "k8semu bench store",
        (
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
    p.add_argument("--puts", type=positive_int, default=10_000, help="puts per load run")
    p.add_argument(
        "--clients", type=_client_list, default="1,16,64", help="comma-separated client counts"
    )
    p.add_argument(
        "--shapes",
        type=_shape_list,
        default="per-client,shared",
        help="client shapes: per-client (a channel each) and/or shared (one channel for all)",
    )
    p.add_argument("--value-size", type=non_negative_int, default=256, help="bytes per value")
    p.add_argument("--key-space", type=positive_int, default=10_000, help="distinct keys")
    p.add_argument("--to-leader", action="store_true", help="send every client to the leader")
    p.add_argument(
        "--attempt-timeout", type=positive_float, default=5.0, help="deadline of one put (s)"
    )
    p.add_argument(
        "--max-seconds", type=positive_float, default=120.0, help="wall-clock cap per load run"
    )
    p.add_argument(
        "--failover-clients", type=positive_int, default=16, help="clients writing at the kill"
    )
    p.add_argument(
        "--failover-runs", type=non_negative_int, default=5, help="leader kills per cluster"
    )
    p.add_argument(
        "--failover-warmup", type=positive_float, default=1.0, help="load before the kill (s)"
    )
    p.add_argument(
        "--failover-cap", type=positive_float, default=30.0, help="give up after (seconds)"
    )
    p.add_argument(
        "--failover-attempt-timeout",
        type=positive_float,
        default=0.25,
        help="mean deadline of one put during failover (s), spread 0.5-1.5x over the clients;"
        " it frees clients stuck on a dead leader",
    )
    p.add_argument(
        "--heartbeat-ms", type=positive_int, default=K8SEMU_HEARTBEAT_MS, help="k8semu's"
    )
    p.add_argument("--election-ms", type=positive_int, default=K8SEMU_ELECTION_MS, help="k8semu's")
    p.add_argument(
        "--etcd-heartbeat-ms",
        type=positive_int,
        default=ETCD_DEFAULT_HEARTBEAT_MS,
        help="etcd's (its default)",
    )
    p.add_argument(
        "--etcd-election-ms",
        type=positive_int,
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
        type=positive_float,
        default=60.0,
        help="how long a cluster may take to agree on a leader (s)",
    )
    p.add_argument("--json", type=Path, help="also write the raw figures to this file")
    p.add_argument("--no-uvloop", action="store_true", help="use the plain asyncio loop")
    p.add_argument(
        "--allow-remote", action="store_true", help="allow --endpoints outside 127.0.0.0/8"
    )
    return p


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
    endpoints = check_endpoints(args.endpoints, args.allow_remote)
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
        say(_describe_load(r))
    return result


async def _cluster_runs(
    args: argparse.Namespace, opts: BenchOptions, workdir: Path
) -> dict[str, SystemResult]:
    sides = [args.only] if args.only else ["k8semu", "etcd"]
    results: dict[str, SystemResult] = {}

    def etcd(name: str, heartbeat_ms: int, election_ms: int) -> Callable[[], ProcessCluster]:
        return lambda: EtcdCluster(
            workdir / name,
            3,
            heartbeat_ms=heartbeat_ms,
            election_ms=election_ms,
            binary=args.etcd_binary,
        )

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
        label = etcd_version(args.etcd_binary)
        ours = (args.heartbeat_ms, args.election_ms)
        theirs = (args.etcd_heartbeat_ms, args.etcd_election_ms)
        results["etcd"] = await _guarded("etcd", label, etcd("etcd", *theirs), opts)
        if opts.failover_runs and not args.no_etcd_same_timings and theirs != ours:
            results["etcd_same_timings"] = await _guarded(
                "etcd_same_timings", label, etcd("etcd-same-timings", *ours), opts, loads=False
            )
    return results


def _json_doc(
    env: dict[str, Any], opts: BenchOptions, results: dict[str, SystemResult]
) -> dict[str, Any]:
    return {
        "environment": env,
        "options": dataclasses.asdict(opts),
        "results": {name: dataclasses.asdict(r) for name, r in results.items()},
    }


def _main_endpoints(args: argparse.Namespace, opts: BenchOptions) -> int:
    """The loads against the running cluster at ``--endpoints`` (no failover)."""
    opts = dataclasses.replace(opts, failover_runs=0)
    try:
        result, uv = run_loop(_endpoints_run(args, opts), not args.no_uvloop)
    except BenchError as exc:
        say(f"error: {exc}")
        return 1
    env = environment(None, uv)
    env["endpoints"] = result.label
    print(render_single(result, opts, env))
    write_json(args.json, _json_doc(env, opts, {"endpoints": result}))
    return 0


def _main_clusters(args: argparse.Namespace, opts: BenchOptions) -> int:
    """Start k8semu's store and etcd (or ``--only`` one), measure them, print the table."""
    with run_dir(args.workdir, "k8semu-bench-") as rundir:
        workdir = rundir.path
        env = environment(workdir, not args.no_uvloop)
        results, uv = run_loop(_cluster_runs(args, opts, workdir), not args.no_uvloop)
        rundir.failed = any(r.error for r in results.values())
        env["uvloop"] = uv
        if args.only:
            print(render_single(results[args.only], opts, env))
            if "etcd_same_timings" in results:
                print()
                print(render_same_timings(results["etcd_same_timings"], opts))
        else:
            ours, etcd = results.get("k8semu"), results.get("etcd")
            print(render_compare(ours, etcd, results.get("etcd_same_timings"), opts, env))
        write_json(args.json, _json_doc(env, opts, results))
    return 1 if rundir.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``k8semu bench store``: returns the exit status (1 when a cluster or a run failed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--sustained" in argv:
        from k8semu.bench import sustained

        return sustained.main([a for a in argv if a != "--sustained"])
    args = build_parser().parse_args(argv)
    opts = _options(args)
    if args.endpoints:
        return _main_endpoints(args, opts)
    return _main_clusters(args, opts)
