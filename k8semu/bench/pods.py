"""Pod startup latency and scheduler throughput on whole clusters: ``k8semu bench pods``.

This module owns ``k8semu bench pods``. Each scenario starts its own cluster with ``k8semu up``
(``k8semu.bench._clusterrun``: free ports, node IPs and address ranges of its own, 3 store
replicas, an API server, a scheduler and a controller manager), creates bare pods in a fresh
namespace from one Python client, and watches them start (``k8semu.bench.podstartup``):

a
    ``--a-pods`` (1,000) pods over ``--a-nodes`` (100) hollow nodes (one ``k8semu kubelet
    --runtime simulated --count N`` process), created at ``--a-rate`` (100) pods/s on an
    absolute schedule (pod i is due at start + i / rate). Target: startup p99 <= 1 s.
b
    ``--b-pods`` (1,000) pods over ``--b-nodes`` (1,000) hollow nodes, created as fast as
    ``--writers`` concurrent tasks can; scheduler throughput = pods bound / (last bind seen -
    first create sent). Targets: >= 300 pods/s; the hollow kubelet's peak RSS < 300 MB.
c
    ``--c-pods`` (50) pods of real processes (``busybox`` running ``sleep``) on ``--c-nodes``
    (3) nodes with the process runtime, at ``--c-rate`` (10) pods/s. Target: p99 <= 2 s.
sts, job
    pods made by controllers: a StatefulSet of ``--sts-replicas`` (100, OrderedReady; time
    to all ready) and a Job of ``--job-completions`` (1,000) at ``--job-parallelism`` (50)
    on ``--job-nodes`` (3) process-runtime nodes (completions/s); ``k8semu.bench._workloads``.

Pod startup is Kubernetes' SLI: from the pod's creation to a watcher seeing it Running. Here
"created" is the client's wall-clock time when it sent the create (creationTimestamp only has
whole seconds, which would add 0-1 s); "observed" is when the tracker's watch saw Running.
The breakdown created -> scheduled -> bound -> started -> observed uses the scheduler's
PodScheduled and the kubelet's startTime stamps, which, as in Kubernetes, have whole seconds;
each is placed in the middle of what is known (``_clusterrun.refine_stamps``: within its second
and between the phases seen around it), so the phases around them are estimates. The columns
"create -> bind seen" and "bind seen -> Running seen" are the same split from the client's
clock alone, exact to the ms.

Why not ``k8semu.bench.scheduler.run_scheduler_throughput`` for (b): it creates Node objects
without kubelets and pods owned by a ReplicaSet that does not exist, so on a cluster with a
controller manager the garbage collector deletes its pods and the node lifecycle controller
taints its nodes; here the cluster's own scheduler binds pods onto 1,000 hollow nodes that run
them. Its figure (no kubelets, a scheduler of its own) stays ``python -m k8semu.bench.scheduler``.

Every run is bounded by counts and ``--timeout``; all traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8semu.bench import podstartup
from k8semu.bench._clusterrun import (
    BenchCluster,
    ClusterLayout,
    ResourceSampler,
    most_within,
    refine_stamps,
)
from k8semu.bench._common import (
    BenchError,
    Progress,
    Summary,
    argument_parser,
    environment,
    options_from_args,
    positive_float,
    positive_int,
    rss_bytes,
    say,
    summarize,
    write_json,
)
from k8semu.bench._workloads import WORKLOADS, Run, WorkloadResult, run_job, run_sts
from k8semu.bench._workloads import table as workload_table
from k8semu.client import Client, ClientError
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.state import ComponentRecord
from k8semu.pb.api.v1 import core_pb2

__all__ = ["PodsBenchOptions", "PodsBenchResult", "ScenarioResult", "main", "render", "run"]

SCENARIOS = ("a", "b", "c", *WORKLOADS)
TARGET_A_P99_S = 1.0
TARGET_B_PODS_PER_S = 300.0
TARGET_B_RSS_MB = 300.0
TARGET_C_P99_S = 2.0
# Kubernetes reference points, printed alongside.
SLO_STARTUP_P99_S = 5.0  # pod startup SLO (stateless pods, image pulls excluded)
K8S_SCHEDULER_FLOOR_PODS_PER_S = 270.0  # kube-scheduler's CI floor, 5,000 nodes
KWOK_PODS_PER_S = 20.0  # KWOK's documented pod throughput, roughly
BREAKDOWN = (
    "startup",
    "created->scheduled",
    "scheduled->bound",
    "bound->started",
    "started->observed",
)


@dataclass(frozen=True, kw_only=True)
class PodsBenchOptions:
    """Sizes of the three scenarios, and the bounds of each run."""

    scenarios: tuple[str, ...] = SCENARIOS
    a_pods: int = 1000
    a_nodes: int = 100
    a_rate: float = 100.0
    b_pods: int = 1000
    b_nodes: int = 1000
    c_pods: int = 50
    c_nodes: int = 3
    c_rate: float = 10.0
    c_image: str = "busybox"
    sts_replicas: int = 100
    sts_nodes: int = 20
    job_completions: int = 1000
    job_parallelism: int = 50
    job_nodes: int = 3  # the default cluster's node count
    writers: int = 64
    store_replicas: int = 3
    timeout: float = 300.0  # for the pods to run, per scenario
    ready_timeout: float = 600.0  # for the cluster to come up
    progress: bool = True


@dataclass
class ScenarioResult:
    """One scenario; latencies in seconds, throughput in pods/s."""

    scenario: str
    title: str
    nodes: int
    runtime: str
    pods: int
    rate: float | None  # pods/s asked for; None: as fast as the writers go
    created: int = 0
    bound: int = 0
    running: int = 0
    create_errors: int = 0
    last_error: str = ""
    create_seconds: float = 0.0
    create_per_s: float = 0.0
    max_slip_s: float = 0.0
    create_latency: dict[str, float] = field(default_factory=dict)  # seconds, send -> reply
    pods_per_s: float = 0.0  # pods bound / (last bind seen - first create sent)
    # (b) only: the scheduler is SIGSTOPped while the pods are created and SIGCONTed after, so
    # this is its own rate on a backlog (pods bound / (last bind seen - SIGCONT)), apart from
    # how fast one client can create pods.
    backlog_pods_per_s: float | None = None
    peak_binds_per_s: int = 0  # the most binds seen within one second
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)
    client_split: dict[str, dict[str, float]] = field(default_factory=dict)
    kubelet_rss_mb: float | None = None
    kubelet_peak_rss_mb: float | None = None
    cluster_up_s: float = 0.0
    components: list[dict[str, Any]] = field(default_factory=list)
    client_cpu_s: float = 0.0  # this process (the client and its watch) over the workload
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    timed_out: bool = False
    error: str = ""

    @property
    def p99(self) -> float:
        return self.breakdown.get("startup", {}).get("p99", 0.0)


@dataclass
class PodsBenchResult:
    options: PodsBenchOptions
    scenarios: list[ScenarioResult] = field(default_factory=list)
    workloads: list[WorkloadResult] = field(default_factory=list)  # sts, job


def _summary(s: Summary) -> dict[str, float]:
    return {"count": s.count, "p50": s.p50, "p90": s.p90, "p99": s.p99, "max": s.max}


def _pod(name: str, namespace: str, image: str, real: bool) -> core_pb2.Pod:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name, pod.metadata.namespace = name, namespace
    pod.metadata.labels.update({"app": "bench-pods"})
    c = pod.spec.containers.add(name="main", image=image)
    if real:
        c.command.extend(["sleep", "3600"])
    c.resources.requests.update({"cpu": "10m", "memory": "16Mi"})
    pod.spec.termination_grace_period_seconds = 0
    return pod


@dataclass
class _PodCreates:
    """Creates the pods from concurrent writers, pod i due at start + i / rate when the
    scenario has a rate (else at once); stamps each pod's creation in the tracker with the
    client's clock (creationTimestamp has whole seconds)."""

    client: Client
    tracker: podstartup.PodStartupTracker
    pods: Sequence[core_pb2.Pod]
    result: ScenarioResult
    next: int = 0
    errors: int = 0
    slip: float = 0.0
    latencies: list[float] = field(default_factory=list)
    start: float = field(default_factory=lambda: time.perf_counter() + 0.01)

    async def writer(self) -> None:
        perf, rate = time.perf_counter, self.result.rate
        while True:
            i = self.next
            if i >= len(self.pods):
                return
            self.next = i + 1
            if rate:
                due = self.start + i / rate
                delay = due - perf()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.slip = max(self.slip, perf() - due)
            name = self.pods[i].metadata.name
            self.tracker.pods[name] = podstartup.PodTimes(created=time.time())
            sent = perf()
            try:
                await self.client.create(self.pods[i])
                self.latencies.append(perf() - sent)
            except ClientError as exc:
                self.tracker.pods.pop(name, None)
                self.errors += 1
                self.result.last_error = str(exc)


async def run_workload(
    api_servers: Sequence[str],
    result: ScenarioResult,
    opts: PodsBenchOptions,
    *,
    image: str,
    real: bool,
    hold: Sequence[ComponentRecord] = (),
) -> None:
    """Create ``result.pods`` pods (paced at ``result.rate`` when set) in a new namespace and
    wait until a watch saw them all Running, or ``opts.timeout``; fills ``result``. The
    processes in ``hold`` (the scheduler) are stopped while the pods are created."""
    run_id = secrets.token_hex(3)
    namespace = f"bench-pods-{run_id}"
    n = result.pods
    names = [f"p-{run_id}-{i:05d}" for i in range(n)]
    # The watch has a connection of its own, as a separate watcher would.
    async with Client(list(api_servers)) as client, Client(list(api_servers)) as watching:
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = namespace
        await client.create(ns)
        tracker = podstartup.PodStartupTracker(watching, namespace=namespace)
        await tracker.start()
        progress = Progress(enabled=opts.progress)
        try:
            creates = _PodCreates(
                client, tracker, [_pod(name, namespace, image, real) for name in names], result
            )

            def status() -> str:
                return (
                    f"[{result.scenario}] created {creates.next - creates.errors}/{n}"
                    f"  bound {tracker.count('bound')}  running {tracker.count('running')}"
                )

            async with progress.every_half_second(status):
                t0 = time.perf_counter()
                held = _signal(hold, signal.SIGSTOP)
                try:
                    await asyncio.gather(*(creates.writer() for _ in range(opts.writers)))
                finally:
                    _signal(held, signal.SIGCONT)
                released = time.time()
                result.create_seconds = time.perf_counter() - t0
                result.created = n - creates.errors
                result.create_errors = creates.errors
                result.max_slip_s = creates.slip
                result.create_per_s = result.created / max(1e-9, result.create_seconds)
                result.create_latency = _summary(summarize(creates.latencies))
                ok = await tracker.wait_for("running", result.created, opts.timeout)
                result.timed_out = not ok
        finally:
            await tracker.stop()
        times = [tracker.pods[name] for name in names if name in tracker.pods]
        _fill_times(result, times, released if held else None)


def _fill_times(
    result: ScenarioResult, times: list[podstartup.PodTimes], released: float | None
) -> None:
    """Binds, throughput and the startup breakdown of the pods seen, into ``result``;
    ``released``: when a held scheduler was let go (scenario b)."""
    result.bound = sum(1 for t in times if t.bound)
    result.running = sum(1 for t in times if t.running)
    first_sent = min((t.created for t in times), default=0.0)
    last_bind = max((t.bound for t in times if t.bound), default=first_sent)
    result.pods_per_s = result.bound / max(1e-9, last_bind - first_sent)
    if released is not None:
        result.backlog_pods_per_s = result.bound / max(1e-9, last_bind - released)
    result.peak_binds_per_s = most_within([t.bound for t in times if t.bound], 1.0)
    refine_stamps(times, created_exact=True)
    result.breakdown = {k: _summary(v) for k, v in podstartup.breakdown(times).items()}
    done = [t for t in times if t.running and t.bound]
    result.client_split = {
        "create->bind seen": _summary(summarize([t.bound - t.created for t in done])),
        "bind seen->Running seen": _summary(summarize([t.running - t.bound for t in done])),
    }


def _signal(records: Sequence[ComponentRecord], sig: signal.Signals) -> list[ComponentRecord]:
    """Send `sig` to each recorded process that is still the one recorded; those signalled."""
    done = []
    for r in records:
        if r.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.pid, sig)
                done.append(r)
    return done


def _scenario(name: str, opts: PodsBenchOptions) -> tuple[ScenarioResult, ClusterLayout, bool]:
    """The result skeleton, the cluster layout and whether pods are real processes."""
    if name == "a":
        r = ScenarioResult(
            scenario="a",
            title=f"{opts.a_pods:,} pods at {opts.a_rate:g}/s on {opts.a_nodes:,} hollow nodes",
            nodes=opts.a_nodes,
            runtime="simulated",
            pods=opts.a_pods,
            rate=opts.a_rate,
        )
        return r, _layout(opts, hollow=opts.a_nodes), False
    if name == "b":
        r = ScenarioResult(
            scenario="b",
            title=f"{opts.b_pods:,} pods at once on {opts.b_nodes:,} hollow nodes",
            nodes=opts.b_nodes,
            runtime="simulated",
            pods=opts.b_pods,
            rate=None,
        )
        return r, _layout(opts, hollow=opts.b_nodes), False
    r = ScenarioResult(
        scenario="c",
        title=f"{opts.c_pods:,} real pods ({opts.c_image} sleep) at {opts.c_rate:g}/s on"
        f" {opts.c_nodes} process-runtime nodes",
        nodes=opts.c_nodes,
        runtime="process",
        pods=opts.c_pods,
        rate=opts.c_rate,
    )
    return r, _layout(opts, real=opts.c_nodes), True


def _layout(opts: PodsBenchOptions, *, hollow: int = 0, real: int = 0) -> ClusterLayout:
    return ClusterLayout(
        name="bench-pods",
        store_replicas=opts.store_replicas,
        hollow_nodes=hollow,
        real_nodes=real,
        runtime="process",
        proxies=False,  # bare pods, no Services: a proxy per node would only add load
        ready_timeout_s=opts.ready_timeout,
    )


def run_scenario(
    name: str,
    opts: PodsBenchOptions,
    *,
    workdir: Path | None = None,
    keep: bool = False,
) -> ScenarioResult:
    """Start the scenario's cluster, run its workload, stop the cluster."""
    result, layout, real = _scenario(name, opts)
    say(f"scenario {name}: {result.title}")
    try:
        with BenchCluster(layout, workdir=workdir, keep=keep, say=say) as cluster:
            cluster.start()
            result.cluster_up_s = cluster.up_seconds
            components = cluster.components

            async def measured() -> None:
                cpu0 = time.process_time()
                async with ResourceSampler(components) as sampler:
                    hold = [c for c in components if c.kind == "scheduler"] if name == "b" else []
                    await run_workload(
                        cluster.api_servers, result, opts, image=opts.c_image, real=real,
                        hold=hold,
                    )  # fmt: skip
                result.client_cpu_s = time.process_time() - cpu0
                result.load_after = os.getloadavg()
                result.components = [u.to_json() for u in sampler.usage]
                hollow = [u for u in sampler.usage if u.kind == "kubelet" and u.nodes > 1]
                if hollow:
                    now = rss_bytes(hollow[0].pid)
                    result.kubelet_rss_mb = None if now is None else now / 2**20
                    result.kubelet_peak_rss_mb = hollow[0].peak_rss_mb

            asyncio.run(measured())
            if result.timed_out:
                cluster.failed = True  # keep the logs
    except (BenchError, ClusterError, ClientError, OSError) as exc:
        result.error = str(exc)
        say(f"scenario {name} failed: {exc}")
    say(_describe(result))
    return result


def run(
    opts: PodsBenchOptions, *, workdir: Path | None = None, keep: bool = False
) -> PodsBenchResult:
    """Every scenario of ``opts``, one after the other, each on its own cluster."""
    out = PodsBenchResult(options=opts)
    common = Run(opts.store_replicas, opts.timeout, opts.ready_timeout, workdir)
    for name in opts.scenarios:
        if name == "sts":
            out.workloads.append(run_sts(opts.sts_replicas, opts.sts_nodes, common))
        elif name == "job":
            job = run_job(opts.job_completions, opts.job_parallelism, opts.job_nodes, common)
            out.workloads.append(job)
        else:
            out.scenarios.append(run_scenario(name, opts, workdir=workdir, keep=keep))
    return out


# -- output ------------------------------------------------------------------------------------


def _describe(r: ScenarioResult) -> str:
    if r.error and not r.created:
        return f"scenario {r.scenario}: failed: {r.error}"
    s = r.breakdown.get("startup", {})
    return (
        f"scenario {r.scenario}: {r.running}/{r.pods} Running ({r.bound} bound), startup p50"
        f" {s.get('p50', 0):.3f} s p99 {s.get('p99', 0):.3f} s, {r.pods_per_s:.0f} pods/s"
        f" bound, created at {r.create_per_s:.0f}/s"
        + (f", kubelet RSS {r.kubelet_peak_rss_mb:.0f} MB" if r.kubelet_peak_rss_mb else "")
        + (" (timed out)" if r.timed_out else "")
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f}"


def _target(r: ScenarioResult) -> tuple[str, bool | None]:
    if r.scenario == "a":
        return f"p99 <= {TARGET_A_P99_S:g} s", r.p99 <= TARGET_A_P99_S
    if r.scenario == "c":
        return f"p99 <= {TARGET_C_P99_S:g} s", r.p99 <= TARGET_C_P99_S
    return f">= {TARGET_B_PODS_PER_S:g} pods/s", _b_rate(r) >= TARGET_B_PODS_PER_S


def _b_rate(r: ScenarioResult) -> float:
    """The scheduler's rate: on the backlog when (b) held it, else end to end."""
    return r.backlog_pods_per_s if r.backlog_pods_per_s is not None else r.pods_per_s


def _yes(ok: bool | None, r: ScenarioResult) -> str:
    if r.running < r.pods or r.error:
        return "no (incomplete)"
    return "yes" if ok else "no"


def _startup_table(rows: Sequence[ScenarioResult]) -> list[str]:
    lines = [
        "| scenario | pods Running | startup p50 ms | p90 ms | p99 ms | max ms | bound pods/s |"
        " target | met | k8s SLO p99 <= 5 s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for r in rows:
        s = r.breakdown["startup"]
        text, ok = _target(r)
        slo = "yes" if r.running == r.pods and s["p99"] <= SLO_STARTUP_P99_S else "no"
        lines.append(
            f"| ({r.scenario}) {r.title} | {r.running:,}/{r.pods:,} | {_ms(s['p50'])} |"
            f" {_ms(s['p90'])} | {_ms(s['p99'])} | {_ms(s['max'])} | {r.pods_per_s:,.0f} |"
            f" {text} | {_yes(ok, r)} | {slo} |"
        )
    return lines


def _phase_table(rows: Sequence[ScenarioResult]) -> list[str]:
    lines = [
        "",
        "| scenario | phase | p50 ms | p90 ms | p99 ms | max ms |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        for phase, s in [*r.breakdown.items(), *r.client_split.items()]:
            if phase == "startup":
                phase = "startup (created -> Running seen)"
            lines.append(
                f"| ({r.scenario}) | {phase} | {_ms(s['p50'])} | {_ms(s['p90'])} |"
                f" {_ms(s['p99'])} | {_ms(s['max'])} |"
            )
    return lines


def _scheduler_table(r: ScenarioResult, writers: int) -> list[str]:
    """Scenario (b): the scheduler's rate against its target and Kubernetes', the kubelet's RSS."""
    rss = f"{r.kubelet_peak_rss_mb:,.0f}" if r.kubelet_peak_rss_mb is not None else "-"
    rss_ok = r.kubelet_peak_rss_mb is not None and r.kubelet_peak_rss_mb < TARGET_B_RSS_MB
    return [
        "",
        "| (b) scheduler and hollow nodes | k8semu | target | met | Kubernetes reference |",
        "| --- | ---: | --- | --- | --- |",
        f"| pods bound per second on a backlog (scheduler held while {r.pods:,} pods were"
        f" created), {r.nodes:,} nodes | {_b_rate(r):,.0f} |"
        f" >= {TARGET_B_PODS_PER_S:g} | {_yes(_b_rate(r) >= TARGET_B_PODS_PER_S, r)} |"
        f" kube-scheduler CI floor {K8S_SCHEDULER_FLOOR_PODS_PER_S:g} pods/s at 5,000"
        f" nodes; KWOK ~{KWOK_PODS_PER_S:g} pods/s |",
        f"| pods bound per second, first create to last bind | {r.pods_per_s:,.0f} | | | |",
        f"| most binds seen within one second | {r.peak_binds_per_s:,} | | | |",
        f"| peak RSS of the {r.nodes:,}-hollow-node kubelet, MB | {rss} |"
        f" < {TARGET_B_RSS_MB:g} | {'yes' if rss_ok else 'no'} | |",
        f"| pods created per second (client, {writers} writers) | {r.create_per_s:,.0f} | | | |",
    ]


def _create_table(rows: Sequence[ScenarioResult]) -> list[str]:
    lines = [
        "",
        "| scenario | pods created/s (asked) | create call p50 ms | p99 ms | schedule slip ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        c = r.create_latency or {"p50": 0.0, "p99": 0.0}
        asked = f"{r.rate:g}" if r.rate else "as fast as possible"
        lines.append(
            f"| ({r.scenario}) | {r.create_per_s:,.0f} ({asked}) | {_ms(c['p50'])} |"
            f" {_ms(c['p99'])} | {_ms(r.max_slip_s)} |"
        )
    return lines


def _notes(r: ScenarioResult) -> list[str]:
    lines = []
    if r.components:
        cpu = ", ".join(f"{c['name']} {c['cpu_s']:.1f}" for c in r.components)
        lines.append(
            f"({r.scenario}): CPU seconds over the workload: {cpu}; client"
            f" {r.client_cpu_s:.1f}. Load average after: {r.load_after[0]:.1f}."
        )
    if r.max_slip_s > 0.2:
        lines.append(
            f"({r.scenario}): the client fell behind its create schedule by up to"
            f" {r.max_slip_s * 1e3:,.0f} ms."
        )
    if r.create_errors:
        lines.append(f"({r.scenario}): {r.create_errors} creates failed: {r.last_error}")
    if r.timed_out:
        lines.append(f"({r.scenario}): not every pod was Running within the timeout.")
    if r.error:
        lines.append(f"({r.scenario}) failed: {r.error}")
    return lines


def render(result: PodsBenchResult, env: dict[str, Any]) -> str:
    """Markdown tables: startup per scenario, the phase breakdown, throughput and memory."""
    rows = [r for r in result.scenarios if r.breakdown]
    lines = [*_startup_table(rows), *_phase_table(rows)] if rows else []
    b = [r for r in result.scenarios if r.scenario == "b"]
    if b:
        lines += _scheduler_table(b[0], result.options.writers)
    lines += _create_table(rows) if rows else []
    lines += workload_table(result.workloads)
    load1, load5, _ = env["load_average"]
    lines += [
        "",
        "Setup: each scenario on its own cluster from `k8semu up` (3 store replicas, 1 API"
        " server, 1 scheduler, 1 controller manager; hollow nodes = one `k8semu kubelet"
        " --runtime simulated --count N` process); bare pods created by one Python client"
        " process; startup from the client's create send to a watcher seeing Running."
        " Server-side stamps (PodScheduled, startTime) have whole seconds: each is placed in the"
        " middle of its second clipped to the phases seen around it, so the middle phases are"
        " estimates; the client-clock split (create -> bind seen -> Running seen) is exact."
        f" {env['cpus']} CPUs ({env['cpu_model']}), load average {load1:.2f}/{load5:.2f}"
        f" before the run, {env['date']}.",
    ]
    for r in result.scenarios:
        lines += _notes(r)
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------


def _scenarios(text: str) -> tuple[str, ...]:
    if text == "all":
        return SCENARIOS
    out = tuple(s.strip() for s in text.split(",") if s.strip())
    if not out or any(s not in SCENARIOS for s in out):
        raise argparse.ArgumentTypeError(
            "a, b, c, sts, job, a comma-separated list of them, or all"
        )
    return out


def build_parser() -> argparse.ArgumentParser:
    d = PodsBenchOptions()
    p = argument_parser(
        "k8semu bench pods",
        (
            "Pod startup latency (p50/p90/p99 and the phases) and scheduler throughput, each"
            " scenario on a cluster of its own started with `k8semu up` on free ports."
        ),
    )
    p.add_argument(
        "--scenario", type=_scenarios, default="all",
        help="a, b, c, sts, job, a list (a,c) or all",
    )  # fmt: skip
    p.add_argument("--a-pods", type=positive_int, default=d.a_pods)
    p.add_argument("--a-nodes", type=positive_int, default=d.a_nodes, help="hollow nodes")
    p.add_argument("--a-rate", type=positive_float, default=d.a_rate, help="pods created/s")
    p.add_argument("--b-pods", type=positive_int, default=d.b_pods)
    p.add_argument("--b-nodes", type=positive_int, default=d.b_nodes, help="hollow nodes")
    p.add_argument("--c-pods", type=positive_int, default=d.c_pods)
    p.add_argument("--c-nodes", type=positive_int, default=d.c_nodes, help="real nodes")
    p.add_argument("--c-rate", type=positive_float, default=d.c_rate, help="pods created/s")
    p.add_argument("--c-image", default=d.c_image, help="busybox (runs sleep) or k8semu/echo")
    p.add_argument("--sts-replicas", type=positive_int, default=d.sts_replicas)
    p.add_argument("--sts-nodes", type=positive_int, default=d.sts_nodes, help="hollow nodes")
    p.add_argument("--job-completions", type=positive_int, default=d.job_completions)
    p.add_argument("--job-parallelism", type=positive_int, default=d.job_parallelism)
    p.add_argument("--job-nodes", type=positive_int, default=d.job_nodes, help="real nodes")
    p.add_argument("--writers", type=positive_int, default=d.writers, help="concurrent creates")
    p.add_argument("--store-replicas", type=positive_int, default=d.store_replicas)
    p.add_argument("--timeout", type=positive_float, default=d.timeout, help="for the pods to run")
    p.add_argument(
        "--ready-timeout", type=positive_float, default=d.ready_timeout, help="cluster up"
    )
    p.add_argument("--workdir", type=Path, help="keep cluster dirs under this dir")
    p.add_argument("--keep", action="store_true", help="keep each cluster's logs and data")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p.add_argument("--json", type=Path, help="also write the raw figures to this file")
    return p


def options_from(args: argparse.Namespace) -> PodsBenchOptions:
    scen = args.scenario if isinstance(args.scenario, tuple) else _scenarios(args.scenario)
    return options_from_args(PodsBenchOptions, args, scenarios=scen, progress=not args.no_progress)


def main(argv: Sequence[str] | None = None) -> int:
    """``k8semu bench pods``: exit status 1 when a scenario failed or timed out."""
    args = build_parser().parse_args(argv)
    opts = options_from(args)
    env = environment(args.workdir, False)
    result = run(opts, workdir=args.workdir, keep=args.keep)
    print(render(result, env))
    write_json(args.json, {"environment": env, "result": dataclasses.asdict(result)})
    failed = any(r.error or r.timed_out for r in result.scenarios) or any(
        r.error or r.timed_out for r in result.workloads
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
