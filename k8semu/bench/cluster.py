"""A clusterloader2-like density run on a whole cluster: ``k8semu bench cluster``.

This module owns ``k8semu bench cluster``. It starts a cluster with ``k8semu up`` (by default
3 store replicas, an API server, a scheduler, a controller manager and ``--nodes`` hollow
nodes in one simulated kubelet process, all on free ports: ``k8semu.bench._clusterrun``; or
the ``--config`` given), then from one Python client process:

1. creates ``--namespaces`` namespaces, then in each ``--deployments`` Deployments of
   ``--replicas`` pods and one Service per Deployment, at ``--rate`` objects/s on an absolute
   schedule (the namespaces first, so no object waits for its namespace);
2. waits until a watch saw every pod Running, listing Deployments and getting one every
   ``--poll-interval`` seconds meanwhile (the progress line shows the counts);
3. reports:

API call latency
    client-side, send to reply, of every call it makes (``TimedClient``), per verb and
    resource: p50/p90/p99 against Kubernetes' API call latency SLOs (mutating and get
    p99 <= 1 s; list p99 <= 5 s namespace-scoped, 30 s cluster-scoped).
pod startup
    creation -> Running seen by a watch, with the phases (``k8semu.bench.podstartup``); the
    ReplicaSet controller creates the pods, so "created" is creationTimestamp, placed within
    its (whole) second (``_clusterrun.refine_stamps``). SLO: p99 <= 5 s.
scheduler throughput
    pods bound / (last bind seen - first pod created), and the most binds seen in one second.
watch delay
    per object written: from the write's reply to a watcher of the same resource (its own
    connection) seeing the ADDED event; negative when the event beat the reply.
resource use
    CPU seconds and peak RSS of every component process in state.json (and the hollow
    kubelet), sampled from /proc over the run.

Output: a Markdown table on stdout, ``--json FILE``, ``--plot FILE.png`` (CDFs; needs the
``bench`` extra, matplotlib). Bounded by counts and ``--timeout``; traffic stays on 127/8.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from google.protobuf.message import Message

from k8semu import log as logging_setup
from k8semu.api import kinds
from k8semu.bench import podstartup
from k8semu.bench._clusterrun import (
    BenchCluster,
    ClusterLayout,
    LeaderWatch,
    ResourceSampler,
    TimedClient,
    control_plane_steady,
    leader_logs,
    most_within,
    refine_stamps,
)
from k8semu.bench._common import (
    BenchError,
    Progress,
    Summary,
    argument_parser,
    cancel,
    environment,
    options_from_args,
    positive_float,
    positive_int,
    pyplot,
    require_matplotlib,
    save_figure,
    say,
    summarize,
    write_json,
)
from k8semu.client import Client, ClientError, EventType
from k8semu.cluster.errors import ClusterError
from k8semu.pb.api.v1 import apps_pb2, core_pb2, meta_pb2

__all__ = [
    "Check",
    "ClusterBenchOptions",
    "ClusterBenchResult",
    "main",
    "plot",
    "render",
    "run",
    "verdict",
]

# Kubernetes' SLOs (p99, seconds).
SLO_MUTATING_S = 1.0
SLO_GET_S = 1.0
SLO_LIST_NAMESPACE_S = 5.0
SLO_LIST_CLUSTER_S = 30.0
SLO_STARTUP_S = 5.0
MUTATING = ("create", "update", "patch", "delete")
WATCHED = (core_pb2.Namespace, apps_pb2.Deployment, core_pb2.Service)


@dataclass(frozen=True, kw_only=True)
class ClusterBenchOptions:
    """The workload: ``namespaces * deployments * replicas`` pods."""

    namespaces: int = 10
    deployments: int = 5
    replicas: int = 10
    rate: float = 20.0  # objects created per second
    nodes: int = 100  # hollow nodes of the default topology
    writers: int = 16
    poll_interval: float = 1.0
    timeout: float = 300.0  # for every pod to run
    ready_timeout: float = 600.0
    progress: bool = True

    @property
    def objects(self) -> int:
        return self.namespaces * (1 + 2 * self.deployments)

    @property
    def pods(self) -> int:
        return self.namespaces * self.deployments * self.replicas


@dataclass
class LatencyRow:
    """Milliseconds, over ``count`` samples."""

    name: str
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    slo: str = ""
    passed: bool | None = None
    errors: int = 0

    @classmethod
    def of(cls, name: str, s: Summary, *, slo: str = "", passed: bool | None = None) -> LatencyRow:
        """The row of a summary of seconds."""
        return cls(
            name=name,
            count=s.count,
            p50_ms=s.p50 * 1e3,
            p90_ms=s.p90 * 1e3,
            p99_ms=s.p99 * 1e3,
            max_ms=s.max * 1e3,
            slo=slo,
            passed=passed,
        )


@dataclass
class Check:
    """One line of the verdict: ``k8semu bench cluster`` exits 1 when one fails."""

    name: str
    passed: bool
    detail: str


@dataclass
class ClusterBenchResult:
    options: ClusterBenchOptions
    config: str = ""
    cluster_up_s: float = 0.0
    create_seconds: float = 0.0
    max_slip_s: float = 0.0
    wait_seconds: float = 0.0
    pods_created: int = 0
    pods_bound: int = 0
    pods_running: int = 0
    api: list[LatencyRow] = field(default_factory=list)
    startup: list[LatencyRow] = field(default_factory=list)
    watch: list[LatencyRow] = field(default_factory=list)
    binds_per_s: float = 0.0
    peak_binds_per_s: int = 0
    components: list[dict[str, Any]] = field(default_factory=list)
    sampled_seconds: float = 0.0
    client_cpu_s: float = 0.0  # this process (client, watchers, tracker) over the workload
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    store_leader_changes: int = 0  # over the workload (LeaderWatch)
    store_term_bumps: int = 0
    lease_changes: dict[str, int | None] = field(default_factory=dict)
    became_leader: dict[str, int] = field(default_factory=dict)  # led again, by its log
    checks: list[Check] = field(default_factory=list)
    timed_out: bool = False
    error: str = ""
    # Raw samples for the plot (seconds); left out of the JSON.
    samples: dict[str, list[float]] = field(default_factory=dict, repr=False)
    rss_timeline: dict[str, list[tuple[float, float]]] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return not self.error and not self.timed_out and all(c.passed for c in self.checks)


# -- the workload ------------------------------------------------------------------------------


def _namespace(name: str) -> core_pb2.Namespace:
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = name
    return ns


def _deployment(name: str, namespace: str, replicas: int) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace = name, namespace
    d.metadata.labels["app"] = name
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = name
    t = d.spec.template
    t.metadata.labels.update({"app": name, "bench": "cluster"})
    c = t.spec.containers.add(name="main", image="busybox")
    c.command.extend(["sleep", "3600"])  # real on a process-runtime node, free on a hollow one
    c.resources.requests.update({"cpu": "10m", "memory": "16Mi"})
    t.spec.termination_grace_period_seconds = 0
    return d


def _service(name: str, namespace: str) -> core_pb2.Service:
    s = core_pb2.Service(api_version="v1", kind="Service")
    s.metadata.name, s.metadata.namespace = name, namespace
    s.spec.selector["app"] = name
    s.spec.ports.add(
        name="http", protocol="TCP", port=80, target_port=meta_pb2.IntOrString(int_val=8080)
    )
    return s


class _Watchers:
    """One watch per kind in WATCHED, each on its own connection; ADDED times per object."""

    def __init__(self, api_servers: Sequence[str]) -> None:
        self.clients = [Client(list(api_servers)) for _ in WATCHED]
        self.seen: dict[tuple[str, str, str], float] = {}  # (plural, namespace, name) -> time
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for client, kind in zip(self.clients, WATCHED, strict=True):
            listed: Any = await client.list(kind, limit=1)
            self.tasks.append(
                asyncio.get_running_loop().create_task(
                    self._watch(client, kind, listed.resource_version)
                )
            )

    async def _watch(self, client: Client, kind: type[Message], rv: str) -> None:
        plural = kinds.for_message(kind).plural
        while True:
            try:
                async for ev in client.watch(kind, resource_version=rv):
                    now = time.perf_counter()
                    m = getattr(ev.object, "metadata")  # noqa: B009 - WATCHED kinds have one
                    rv = m.resource_version or rv
                    if ev.type == EventType.ADDED:
                        self.seen.setdefault((plural, m.namespace, m.name), now)
            except ClientError:
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        await cancel(*self.tasks)
        for c in self.clients:
            await c.close()


def _objects(namespaces: Sequence[str], prefix: str, opts: ClusterBenchOptions) -> list[Message]:
    """A Deployment and its Service, ``opts.deployments`` of each per namespace."""
    objects: list[Message] = []
    for ns in namespaces:
        for j in range(opts.deployments):
            name = f"{prefix}-d{j}"
            objects.append(_deployment(name, ns, opts.replicas))
            objects.append(_service(name, ns))
    return objects


class _PacedCreates:
    """Creates on one absolute schedule from ``opts.writers`` tasks: the k-th object of all
    is due at start + k / rate. ``acked`` holds each answered create's reply time, by
    (plural, namespace, name)."""

    def __init__(self, client: TimedClient, opts: ClusterBenchOptions) -> None:
        self.client = client
        self.opts = opts
        self.acked: dict[tuple[str, str, str], float] = {}
        self.sent = 0
        self.done = 0
        self.slip = 0.0
        self.start = time.perf_counter() + 0.01

    async def create(self, items: Sequence[Message], offset: int) -> None:
        """Create ``items``; item k is due at start + (offset + k) / rate."""
        nxt = iter(range(len(items)))
        perf = time.perf_counter

        async def writer() -> None:
            for k in nxt:
                due = self.start + (offset + k) / self.opts.rate
                delay = due - perf()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.slip = max(self.slip, perf() - due)
                obj = items[k]
                self.sent += 1
                m = getattr(obj, "metadata")  # noqa: B009 - every kind here has one
                key = (kinds.for_message(obj).plural, m.namespace, m.name)
                with contextlib.suppress(ClientError):
                    await self.client.create(obj)
                    self.acked[key] = perf()
                self.done += 1

        await asyncio.gather(*(writer() for _ in range(self.opts.writers)))


async def _wait_running(
    client: TimedClient,
    tracker: podstartup.PodStartupTracker,
    namespaces: Sequence[str],
    prefix: str,
    opts: ClusterBenchOptions,
    result: ClusterBenchResult,
) -> None:
    """Wait for every pod to run (or ``opts.timeout``), reading as a user's tooling would
    meanwhile: a namespace's Deployments, one Deployment, every Deployment."""
    perf = time.perf_counter
    t1 = perf()
    deadline = t1 + opts.timeout
    while tracker.count("running") < opts.pods:
        if perf() > deadline:
            result.timed_out = True
            break
        with contextlib.suppress(ClientError):
            await client.list(apps_pb2.Deployment, namespace=namespaces[0])
            await client.get(apps_pb2.Deployment, f"{prefix}-d0", namespace=namespaces[-1])
            await client.list(apps_pb2.Deployment)
        await asyncio.sleep(opts.poll_interval)
    result.wait_seconds = perf() - t1


async def run_workload(
    api_servers: Sequence[str],
    opts: ClusterBenchOptions,
    result: ClusterBenchResult,
) -> None:
    """Create the objects, wait for the pods, fill ``result`` (not the resource use)."""
    prefix = f"bench-{secrets.token_hex(3)}"
    watchers = _Watchers(api_servers)
    progress = Progress(enabled=opts.progress)
    async with Client(list(api_servers)) as raw, Client(list(api_servers)) as tracker_client:
        client = TimedClient(raw)
        tracker = podstartup.PodStartupTracker(tracker_client, prefix=f"{prefix}-")
        await tracker.start()
        await watchers.start()
        namespaces = [f"{prefix}-n{i}" for i in range(opts.namespaces)]
        objects = _objects(namespaces, prefix, opts)
        creates = _PacedCreates(client, opts)

        def status() -> str:
            return (
                f"objects {creates.done}/{opts.objects}  pods bound"
                f" {tracker.count('bound')}  running {tracker.count('running')}/{opts.pods}"
            )

        try:
            async with progress.every_half_second(status):
                t0 = time.perf_counter()
                await creates.create([_namespace(ns) for ns in namespaces], 0)
                await creates.create(objects, len(namespaces))
                result.create_seconds = time.perf_counter() - t0
                result.max_slip_s = creates.slip
                await _wait_running(client, tracker, namespaces, prefix, opts, result)
                # Let the watchers catch up with the last writes before reading them.
                for _ in range(50):
                    if all(k in watchers.seen for k in creates.acked):
                        break
                    await asyncio.sleep(0.1)
        finally:
            await watchers.stop()
            await tracker.stop()
    _fill(result, client, list(tracker.pods.values()), creates.acked, watchers.seen)


def _fill(
    result: ClusterBenchResult,
    client: TimedClient,
    times: list[podstartup.PodTimes],
    acked: dict[tuple[str, str, str], float],
    seen: dict[tuple[str, str, str], float],
) -> None:
    """The figures of a finished workload, into ``result``."""
    result.pods_created = len(times)
    result.pods_bound = sum(1 for t in times if t.bound)
    result.pods_running = sum(1 for t in times if t.running)
    refine_stamps(times, created_exact=False)
    _fill_api(result, client)
    _fill_startup(result, times)
    _fill_watch(result, acked, seen)
    _fill_binds(result, times)


def _row(
    name: str, values: Sequence[float], slo: str = "", limit: float | None = None
) -> LatencyRow:
    s = summarize(values)
    passed = None if limit is None else bool(s.count) and s.p99 <= limit
    return LatencyRow.of(name, s, slo=slo, passed=passed)


def _api_slo(key: str) -> tuple[str, float]:
    verb = key.split(" ")[0]
    if verb in MUTATING:
        return f"mutating p99 <= {SLO_MUTATING_S:g} s", SLO_MUTATING_S
    if verb == "get":
        return f"get p99 <= {SLO_GET_S:g} s", SLO_GET_S
    if key.endswith("(cluster)"):
        return f"cluster list p99 <= {SLO_LIST_CLUSTER_S:g} s", SLO_LIST_CLUSTER_S
    return f"namespace list p99 <= {SLO_LIST_NAMESPACE_S:g} s", SLO_LIST_NAMESPACE_S


def _fill_api(result: ClusterBenchResult, client: TimedClient) -> None:
    for key in sorted(set(client.latencies) | set(client.errors)):
        values = client.latencies.get(key, [])
        slo, limit = _api_slo(key)
        row = _row(key, values, slo, limit)
        row.errors = client.errors.get(key, 0)
        if row.errors:
            row.passed = False
        result.api.append(row)
        result.samples[f"API {key}"] = values


def _fill_startup(result: ClusterBenchResult, times: Sequence[podstartup.PodTimes]) -> None:
    for phase, s in podstartup.breakdown(times).items():
        if phase == "startup":
            row = LatencyRow.of(
                "pod startup (created -> Running seen)",
                s,
                slo=f"p99 <= {SLO_STARTUP_S:g} s",
                passed=s.count == result.options.pods and s.p99 <= SLO_STARTUP_S,
            )
        else:
            row = LatencyRow.of(phase, s)
        result.startup.append(row)
    done = [t for t in times if t.running]
    result.samples["pod startup"] = [t.running - t.created for t in done]


def _fill_watch(
    result: ClusterBenchResult,
    acked: dict[tuple[str, str, str], float],
    seen: dict[tuple[str, str, str], float],
) -> None:
    for kind in WATCHED:
        plural = kinds.for_message(kind).plural
        delays = [seen[k] - t for k, t in acked.items() if k[0] == plural and k in seen]
        missed = sum(1 for k in acked if k[0] == plural and k not in seen)
        row = _row(f"watch {plural}: reply -> ADDED seen", delays)
        row.errors = missed
        result.watch.append(row)
        result.samples[f"watch {plural}"] = delays


def _fill_binds(result: ClusterBenchResult, times: Sequence[podstartup.PodTimes]) -> None:
    bound = sorted(t.bound for t in times if t.bound)
    if not bound:
        return
    first = min(t.created for t in times if t.created)
    result.binds_per_s = len(bound) / max(1e-9, bound[-1] - first)
    result.peak_binds_per_s = most_within(bound, 1.0)


async def _measured(c: BenchCluster, opts: ClusterBenchOptions, result: ClusterBenchResult) -> None:
    """The workload on the started cluster ``c``, with its processes' CPU and RSS sampled and
    its leader changes counted meanwhile."""
    assert c.state is not None
    members = [(m[0], m[1]) for m in c.state.store_members]
    components = c.components
    cpu0 = time.process_time()
    result.load_before = os.getloadavg()
    async with (
        LeaderWatch(members, c.api_servers, log_paths=leader_logs(components)) as leaders,
        ResourceSampler(components) as sampler,
    ):
        await run_workload(c.api_servers, opts, result)
    result.client_cpu_s = time.process_time() - cpu0
    result.load_after = os.getloadavg()
    result.components = [u.to_json() for u in sampler.usage]
    result.rss_timeline = {u.name: u.rss_timeline for u in sampler.usage}
    result.sampled_seconds = sampler.seconds
    result.store_leader_changes = leaders.store_leader_changes
    result.store_term_bumps = leaders.store_term_bumps
    result.lease_changes = leaders.lease_changes
    result.became_leader = dict(leaders.became_leader)


def run(
    opts: ClusterBenchOptions,
    *,
    config: Path | None = None,
    workdir: Path | None = None,
    keep: bool = False,
) -> ClusterBenchResult:
    """Start the cluster (``config``, else the default bench topology), run, stop it."""
    result = ClusterBenchResult(options=opts)
    layout = None
    if config is None:
        layout = ClusterLayout(
            name="bench-cluster",
            store_replicas=3,
            hollow_nodes=opts.nodes,
            ready_timeout_s=opts.ready_timeout,
        )
        result.config = (
            f"generated: 3 store replicas, 1 API server, 1 scheduler, 1 controller manager,"
            f" {opts.nodes} hollow nodes (one kubelet process)"
        )
    else:
        result.config = str(config)
    try:
        with BenchCluster(layout, config=config, workdir=workdir, keep=keep, say=say) as c:
            c.start()
            result.cluster_up_s = c.up_seconds
            asyncio.run(_measured(c, opts, result))
            result.checks = verdict(result)
            if result.timed_out:
                c.failed = True  # keep the logs
    except (BenchError, ClusterError, ClientError, OSError) as exc:
        result.error = str(exc)
        say(f"failed: {exc}")
    return result


def verdict(result: ClusterBenchResult) -> list[Check]:
    """Kubernetes' SLOs and issue 10's scale targets: every pod Running; mutating API calls
    p99 <= 1 s; pod startup p99 <= 5 s; no store leader change (nor Raft term rise) and no
    scheduler or controller-manager Lease changing hands during the workload."""
    o = result.options
    mutating = [r for r in result.api if r.name.split(" ")[0] in MUTATING]
    worst = max(mutating, key=lambda r: r.p99_ms, default=None)
    startup = next((r for r in result.startup if r.name.startswith("pod startup")), None)
    steady, leaders = control_plane_steady(result.lease_changes, result.became_leader)
    peak = max(result.components, key=lambda u: u["peak_rss_mb"], default=None)
    return [
        Check(
            "every pod Running",
            result.pods_running == o.pods,
            f"{result.pods_running:,} of {o.pods:,}",
        ),
        Check(
            f"mutating API calls p99 <= {SLO_MUTATING_S:g} s",
            bool(mutating) and all(r.passed for r in mutating),
            f"worst {worst.name} p99 {worst.p99_ms:,.0f} ms, {sum(r.errors for r in mutating)}"
            " errors"
            if worst
            else "no calls",
        ),
        Check(
            f"pod startup p99 <= {SLO_STARTUP_S:g} s",
            bool(startup and startup.passed),
            f"p99 {startup.p99_ms:,.0f} ms over {startup.count:,} pods" if startup else "none",
        ),
        Check(
            "no store leader change",
            result.store_leader_changes == 0 and result.store_term_bumps == 0,
            f"{result.store_leader_changes} leader changes, Raft term +{result.store_term_bumps}",
        ),
        Check("no scheduler or controller-manager leader change", steady, leaders),
        Check(
            "peak RSS reported for every component",
            bool(result.components) and all(u["samples"] > 0 for u in result.components),
            f"largest {peak['name']} {peak['peak_rss_mb']:,.0f} MB" if peak else "none",
        ),
    ]


# -- output ------------------------------------------------------------------------------------


def _pass(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "FAIL")


# A column after the percentiles: heading, alignment, the cell of a row.
_Column: TypeAlias = tuple[str, str, Callable[[LatencyRow], object]]


def _latency_table(
    first: Sequence[str], rows: Sequence[LatencyRow], fmt: str, last: Sequence[_Column]
) -> list[str]:
    """One row per LatencyRow: its name and count (the ``first`` two headings), the
    percentiles in ``fmt``, then the ``last`` columns."""
    heads = [*first, "p50 ms", "p90 ms", "p99 ms", "max ms", *(h for h, _, _ in last)]
    aligns = ["---", *["---:"] * 5, *(a for _, a, _ in last)]
    lines = ["| " + " | ".join(heads) + " |", "| " + " | ".join(aligns) + " |"]
    for r in rows:
        figures = (format(v, fmt) for v in (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms))
        cells = [r.name, f"{r.count:,}", *figures, *(str(cell(r)) for _, _, cell in last)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


_SLO: tuple[_Column, ...] = (
    ("Kubernetes SLO", "---", lambda r: r.slo),
    ("PASS/FAIL", "---", lambda r: _pass(r.passed)),
)
_ERRORS: _Column = ("errors", "---:", lambda r: r.errors)
_NOT_SEEN: _Column = ("not seen", "---:", lambda r: r.errors)


def _api_table(rows: Sequence[LatencyRow]) -> list[str]:
    return _latency_table(("API call (client-side)", "calls"), rows, ",.1f", (_ERRORS, *_SLO))


def _startup_table(rows: Sequence[LatencyRow]) -> list[str]:
    return ["", *_latency_table(("pod startup and its phases", "pods"), rows, ",.0f", _SLO)]


def _watch_table(rows: Sequence[LatencyRow]) -> list[str]:
    return ["", *_latency_table(("watch delay", "objects"), rows, ",.1f", (_NOT_SEEN,))]


def _process_table(result: ClusterBenchResult) -> list[str]:
    """CPU and peak RSS per component process, and this process (the client)."""
    span = max(1e-9, result.sampled_seconds)
    return [
        "",
        f"| process (over {result.sampled_seconds:,.0f} s) | kind | CPU s | CPU % | peak RSS MB |",
        "| --- | --- | ---: | ---: | ---: |",
        *(
            f"| {u['name']} | {u['kind']} | {u['cpu_s']:,.1f} | {u['cpu_s'] / span:.0%} |"
            f" {u['peak_rss_mb']:,.0f} |"
            for u in result.components
        ),
        f"| benchmark client (this process) | client | {result.client_cpu_s:,.1f} |"
        f" {result.client_cpu_s / span:.0%} | |",
    ]


def render(result: ClusterBenchResult, env: dict[str, Any]) -> str:
    """Markdown tables: API calls, pod startup, watch delay, throughput, resource use."""
    o = result.options
    lines = [
        *_api_table(result.api),
        *_startup_table(result.startup),
        *_watch_table(result.watch),
        "",
        f"Scheduler: {result.pods_bound:,} of {o.pods:,} pods bound, {result.binds_per_s:,.1f}"
        f" binds/s from the first pod created to the last bind seen, at most"
        f" {result.peak_binds_per_s} binds in one second; {result.pods_running:,} Running.",
        *_process_table(result),
    ]
    load1, load5, _ = env["load_average"]
    lines += [
        "",
        f"Setup: {result.config}; {o.namespaces} namespaces x {o.deployments} Deployments x"
        f" {o.replicas} replicas = {o.pods:,} pods, plus a Service per Deployment;"
        f" {o.objects} objects created at {o.rate:g}/s in {result.create_seconds:.1f} s by"
        f" {o.writers} tasks of one Python client process; all pods Running"
        f" {result.wait_seconds:.1f} s after the last create. Pod startup from"
        " creationTimestamp (whole seconds, placed within its second) to a watcher seeing"
        " Running. Watch delay: from the create's reply to a watcher (own connection) seeing"
        " ADDED; negative when the event came first."
        f" {env['cpus']} CPUs ({env['cpu_model']}), load average {load1:.2f}/{load5:.2f}"
        f" before the run, {result.load_after[0]:.2f} after; {env['date']}.",
    ]
    if result.checks:
        lines += ["", "| check | result | detail |", "| --- | --- | --- |"]
        lines += [
            f"| {c.name} | {'PASS' if c.passed else 'FAIL'} | {c.detail} |" for c in result.checks
        ]
    if result.max_slip_s > 0.5:
        lines.append(
            f"The client fell behind its create schedule by up to {result.max_slip_s:.1f} s."
        )
    if result.timed_out:
        lines.append(f"Not every pod was Running within {o.timeout:g} s.")
    if result.error:
        lines.append(f"failed: {result.error}")
    lines.append(f"Verdict: {'PASS' if result.passed else 'FAIL'}")
    return "\n".join(lines)


# The CDF panels: (title, sample key prefix, log scale, SLO in seconds, its label).
_CDF_PANELS = (
    ("API calls (client-side)", "API ", True, SLO_MUTATING_S, "mutating SLO 1 s"),
    ("pod startup", "pod startup", True, SLO_STARTUP_S, "startup SLO 5 s"),
    ("watch delay: reply -> ADDED seen", "watch ", False, None, ""),
)


def _cdf_panel(
    ax: Any,
    samples: Mapping[str, list[float]],
    panel: tuple[str, str, bool, float | None, str],
) -> None:
    """One CDF per sample series whose key starts with the panel's prefix."""
    title, prefix, log, slo, slo_text = panel
    for key, values_s in samples.items():
        if not key.startswith(prefix) or not values_s:
            continue
        values = sorted(v * 1e3 for v in values_s)
        if log:
            values = [max(v, 0.01) for v in values]
        n = len(values)
        ax.step(
            [values[0], *values],
            [0.0, *((i + 1) / n for i in range(n))],
            where="post",
            label=f"{key.removeprefix(prefix) or key} (n={n})",
        )
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("milliseconds" + (" (log)" if log else ""))
    ax.set_ylabel("fraction of samples")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if slo is not None:
        ax.axvline(slo * 1e3, color="red", linestyle="--", linewidth=1)
        ax.text(
            slo * 1e3, 0.03, f" {slo_text}", color="red", fontsize=7,
            transform=ax.get_xaxis_transform(),
        )  # fmt: skip
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left")


def _rss_panel(ax: Any, timeline: Mapping[str, list[tuple[float, float]]]) -> None:
    for name, points in timeline.items():
        if points:
            ax.plot([t for t, _ in points], [mb for _, mb in points], label=name)
    ax.set_xlabel("seconds into the workload")
    ax.set_ylabel("RSS MB")
    ax.set_title("RSS per component")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left")


def plot(result: ClusterBenchResult, path: Path) -> None:
    """CDFs, to a PNG: API call latency per verb and resource and pod startup (log-scale
    milliseconds, the SLOs as red lines), and the watch delays (linear: they can be < 0);
    and the RSS of every component over the run."""
    fig, axes = pyplot().subplots(1, 4, figsize=(22, 5.5))
    for ax, panel in zip(axes[:3], _CDF_PANELS, strict=True):
        _cdf_panel(ax, result.samples, panel)
    _rss_panel(axes[3], result.rss_timeline)
    o = result.options
    title = (
        f"k8semu bench cluster: {o.pods:,} pods ({o.namespaces} namespaces x {o.deployments}"
        f" Deployments x {o.replicas} replicas); {result.config}"
    )
    save_figure(fig, path, title=title, fontsize=9, dpi=100)


# -- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    d = ClusterBenchOptions()
    p = argument_parser(
        "k8semu bench cluster",
        (
            "clusterloader2-like density run: namespaces of Deployments and Services on a"
            " cluster started with `k8semu up`; API call latency, pod startup, scheduler"
            " throughput, watch delay and per-process resource use, against Kubernetes' SLOs."
        ),
    )
    p.add_argument(
        "--config",
        type=Path,
        help="cluster config to start (default: a generated one on free ports, hollow nodes)",
    )
    p.add_argument("--nodes", type=positive_int, default=d.nodes, help="hollow nodes")
    p.add_argument(
        "--pods",
        type=positive_int,
        help="total pods: sets --namespaces to PODS / (--deployments x --replicas)",
    )
    p.add_argument("--namespaces", type=positive_int, default=d.namespaces)
    p.add_argument("--deployments", type=positive_int, default=d.deployments, help="per ns")
    p.add_argument("--replicas", type=positive_int, default=d.replicas, help="per Deployment")
    p.add_argument("--rate", type=positive_float, default=d.rate, help="objects created/s")
    p.add_argument("--writers", type=positive_int, default=d.writers, help="concurrent creates")
    p.add_argument("--poll-interval", type=positive_float, default=d.poll_interval)
    p.add_argument("--timeout", type=positive_float, default=d.timeout, help="for pods to run")
    p.add_argument("--ready-timeout", type=positive_float, default=d.ready_timeout)
    p.add_argument("--workdir", type=Path, help="put the cluster dir under this dir")
    p.add_argument("--keep", action="store_true", help="keep the cluster's logs and data")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--plot", type=Path, help="also draw the latency CDFs to this PNG")
    return p


def options_from(args: argparse.Namespace) -> ClusterBenchOptions:
    """The options; ValueError naming the flag when ``--pods`` does not divide."""
    namespaces = args.namespaces
    if args.pods is not None:
        per_ns = args.deployments * args.replicas
        if args.pods % per_ns:
            raise ValueError(
                f"--pods {args.pods} is not a multiple of --deployments x --replicas ({per_ns})"
            )
        namespaces = args.pods // per_ns
    return options_from_args(
        ClusterBenchOptions, args, namespaces=namespaces, progress=not args.no_progress
    )


def to_json(result: ClusterBenchResult, env: dict[str, Any]) -> dict[str, Any]:
    doc = dataclasses.asdict(result)
    doc.pop("samples", None)
    return {"environment": env, "result": doc}


def main(argv: Sequence[str] | None = None) -> int:
    """``k8semu bench cluster``: exit status 1 when the run failed or timed out."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plot is not None and not require_matplotlib():
        return 2
    try:
        opts = options_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    # Only warnings, on stderr: the client's retries are not the report.
    logging_setup.configure("bench", level="warning")
    env = environment(args.workdir, False)
    result = run(opts, config=args.config, workdir=args.workdir, keep=args.keep)
    print(render(result, env))
    write_json(args.json, to_json(result, env), what="figures")
    if args.plot is not None and (result.api or result.startup):
        plot(result, args.plot)
        say(f"plot written to {args.plot}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
