"""Scheduler throughput: N Node objects (created directly, no kubelets), M pods, how fast the
scheduler binds them.

`run_scheduler_throughput(api_endpoints, nodes, pods)` runs against API servers that are
already up (what `k8semu bench pods` calls); `python -m k8semu.bench.scheduler` starts its own
store and API server on loopback first and prints the figures.

Two measures:

stream (default)
    the scheduler is running; M pods are created by `writers` concurrent tasks; throughput is
    M / (last bind seen - first create sent); latency per pod is from its create being sent to
    its bind being seen on a watch of the namespace.
backlog
    the M pods are created first with no scheduler running; then the scheduler starts and
    throughput is M / (last bind seen - the scheduler reporting SERVING, i.e. its caches
    synced); this is the scheduler's own rate, not limited by how fast one client can
    create pods (binds a fast scheduler makes before SERVING is reported count as well).

The scheduler runs as a subprocess (`python -m k8semu scheduler --no-leader-elect`) by
default, or in this process (`scheduler="inprocess"`), or not at all (`"external"`: one is
already running on the cluster). Bounded by `timeout` seconds; traffic stays on the given
endpoints. Nodes and the namespace are deleted afterwards unless `keep` is set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k8semu.bench._common import cancel, processes_cpu_seconds, summarize
from k8semu.client import AlreadyExists, Client, ClientError, NotFound
from k8semu.cluster.component import APIServerProcess, SchedulerProcess
from k8semu.cluster.errors import ComponentStartError
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.api.v1 import core_pb2
from k8semu.scheduler import Scheduler, SchedulerConfig, algorithm, plugins
from k8semu.scheduler.cache import SchedulerCache
from k8semu.scheduler.framework import pod_info

__all__ = ["main", "measure_decisions", "run_scheduler_throughput"]

DEFAULT_NODES = 1000
DEFAULT_PODS = 1000
DEFAULT_WRITERS = 32
DEFAULT_TIMEOUT = 300.0
TARGET_PODS_PER_S = 300.0
_HEALTH_TIMEOUT = 60.0


ZONES = 10  # the constrained run's nodes are spread over this many zones
ZONE_LABEL = "topology.kubernetes.io/zone"


def _node(name: str, zone: str = "") -> core_pb2.Node:
    n = core_pb2.Node(api_version="v1", kind="Node")
    n.metadata.name = name
    n.metadata.labels.update({"kubernetes.io/hostname": name, "k8semu.io/bench": "scheduler"})
    if zone:
        n.metadata.labels[ZONE_LABEL] = zone
    for field in (n.status.allocatable, n.status.capacity):
        field.update({"cpu": "32", "memory": "128Gi", "pods": "110"})
    n.status.conditions.add(type="Ready", status="True", reason="KubeletReady")
    return n


def _constrain(p: core_pb2.Pod) -> core_pb2.Pod:
    """The constrained run's rules: spread over zones (DoNotSchedule, maxSkew 1) and over
    hosts (ScheduleAnyway), and a preferred anti-affinity to its siblings per host."""
    for key, when in ((ZONE_LABEL, "DoNotSchedule"), ("kubernetes.io/hostname", "ScheduleAnyway")):
        c = p.spec.topology_spread_constraints.add(max_skew=1, topology_key=key)
        c.when_unsatisfiable = when
        c.label_selector.match_labels["app"] = "bench"
    anti = p.spec.affinity.pod_anti_affinity
    w = anti.preferred_during_scheduling_ignored_during_execution.add(weight=100)
    w.pod_affinity_term.label_selector.match_labels["app"] = "bench"
    w.pod_affinity_term.topology_key = "kubernetes.io/hostname"
    return p


def _pod(name: str, namespace: str, owner_uid: str, constrained: bool = False) -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name = name
    p.metadata.namespace = namespace
    p.metadata.labels["app"] = "bench"
    p.metadata.owner_references.add(
        api_version="apps/v1", kind="ReplicaSet", name="bench", uid=owner_uid, controller=True
    )
    c = p.spec.containers.add(name="app", image="pause")
    c.resources.requests.update({"cpu": "100m", "memory": "128Mi"})
    return _constrain(p) if constrained else p


async def _bounded(concurrency: int, jobs: Sequence[Any]) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(job: Any) -> None:
        async with sem:
            await job()

    async with asyncio.TaskGroup() as tg:
        for job in jobs:
            tg.create_task(one(job))


class _SchedulerProcess(SchedulerProcess):
    """`python -m k8semu scheduler`, started at once, optionally sampled by py-spy (`profile`:
    its output)."""

    serving_timeout = _HEALTH_TIMEOUT

    def __init__(
        self, endpoints: Sequence[str], log_path: Path, profile: Path | None = None
    ) -> None:
        super().__init__(endpoints, log_path, ["--no-leader-elect", "--log-level", "warning"])
        self.spy: subprocess.Popen[bytes] | None = None
        if profile is not None:
            py_spy = Path(sys.executable).with_name("py-spy")
            with log_path.open("ab") as log:
                self.spy = subprocess.Popen(
                    [
                        str(py_spy), "record", "--nonblocking", "--format", "raw",
                        "--rate", "250", "--output", str(profile),
                        "--pid", str(self.pid),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip

    async def serving(self) -> None:
        """`wait_serving` off the event loop (the bench's watch keeps running meanwhile);
        RuntimeError if the scheduler exits or is not serving within _HEALTH_TIMEOUT."""
        try:
            await asyncio.to_thread(self.wait_serving)
        except ComponentStartError as exc:  # its message carries the whole log
            if exc.exited:
                raise RuntimeError(f"scheduler exited: {self.output()[-2000:]}") from exc
            raise RuntimeError(f"scheduler not serving within {_HEALTH_TIMEOUT} s") from exc

    def close(self) -> None:
        if self.spy is not None and self.spy.poll() is None:
            self.spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.spy.wait(30)
            except subprocess.TimeoutExpired:
                self.spy.kill()
                self.spy.wait()
        super().close()


class _BindWatch:
    """A watch of one namespace's pods from now on: when each was first seen bound;
    ``all_bound`` is set once ``pods`` of them were."""

    def __init__(self, client: Client, namespace: str, pods: int) -> None:
        self.client = client
        self.namespace = namespace
        self.pods = pods
        self.bound_at: dict[str, float] = {}
        self.all_bound = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        listed = await self.client.list(core_pb2.Pod, namespace=self.namespace, limit=1)
        self._ready.set()
        async for event in self.client.watch(
            core_pb2.Pod, namespace=self.namespace, resource_version=listed.resource_version
        ):
            p = event.object
            if p.spec.node_name and p.metadata.name not in self.bound_at:
                self.bound_at[p.metadata.name] = time.monotonic()
                if len(self.bound_at) >= self.pods:
                    self.all_bound.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def ready(self) -> None:
        await self._ready.wait()

    async def stop(self) -> None:
        await cancel(self._task)


@dataclass
class _Measured:
    """The scheduler under test: a process of its own ("process", its CPU measured), one in
    this process ("inprocess") or the cluster's own ("external": nothing to start)."""

    mode: str
    endpoints: Sequence[str]
    client: Client
    logs: Path
    profile: Path | None
    process: _SchedulerProcess | None = None
    in_process: Scheduler | None = None

    async def start(self) -> None:
        if self.mode == "process":
            self.process = _SchedulerProcess(
                self.endpoints, self.logs / "scheduler.log", self.profile
            )
            await self.process.serving()
        elif self.mode == "inprocess":
            config = SchedulerConfig(leader_elect=False, listen_address="")
            self.in_process = Scheduler(self.client, config)
            await self.in_process.start()

    def cpu(self) -> float | None:
        """The scheduler process's CPU seconds so far; None when it is not ours to read."""
        if self.process is None:
            return None
        return processes_cpu_seconds([self.process.pid])

    async def stop(self) -> None:
        if self.in_process is not None:
            await self.in_process.stop(1.0)
        if self.process is not None:
            self.process.close()


def _zone(i: int, constrained: bool) -> str:
    return f"zone-{i % ZONES}" if constrained else ""


async def _create_nodes(
    client: Client, names: Sequence[str], writers: int, constrained: bool = False
) -> float:
    """Create the Nodes (``writers`` at once; in zones when `constrained`); the seconds it
    took."""
    started = time.monotonic()

    async def create_node(i: int) -> None:
        with contextlib.suppress(AlreadyExists):
            await client.create(_node(names[i], _zone(i, constrained)))

    await _bounded(writers, [lambda i=i: create_node(i) for i in range(len(names))])
    return time.monotonic() - started


async def run_scheduler_throughput(
    api_endpoints: Sequence[str],
    nodes: int = DEFAULT_NODES,
    pods: int = DEFAULT_PODS,
    *,
    scheduler: str = "process",
    backlog: bool = False,
    writers: int = DEFAULT_WRITERS,
    timeout: float = DEFAULT_TIMEOUT,
    keep: bool = False,
    log_dir: Path | None = None,
    profile: Path | None = None,
    constrained: bool = False,
) -> dict[str, Any]:
    """Create `nodes` Nodes and `pods` pods and measure how fast they are bound
    (`constrained`: nodes in zones, pods with spread constraints and anti-affinity).

    Returns a dict: nodes, pods, mode, scheduler, pods_per_s, seconds, latency_ms (p50, p90,
    p99, max), create_per_s (how fast the pods were created), node_create_s, and bound (how
    many were bound before `timeout`). `profile`: sample the scheduler process with py-spy
    (raw collapsed stacks written there)."""
    if scheduler not in ("process", "inprocess", "external"):
        raise ValueError(f"scheduler: must be process, inprocess or external, got {scheduler!r}")
    if nodes < 1 or pods < 1 or writers < 1:
        raise ValueError("nodes, pods and writers must be >= 1")
    run = secrets.token_hex(3)
    namespace = f"bench-sched-{run}"
    node_names = [f"bench-{run}-node-{i:05d}" for i in range(nodes)]
    owner = f"bench-rs-{run}"
    logs = log_dir or Path(tempfile.mkdtemp(prefix="k8semu-bench-sched-"))
    sent: dict[str, float] = {}
    async with Client(list(api_endpoints)) as client:
        ns = core_pb2.Namespace()
        ns.metadata.name = namespace
        await client.create(ns)
        node_create_s = await _create_nodes(client, node_names, writers, constrained)

        async def create_pod(i: int) -> None:
            name = f"p-{i:05d}"
            sent[name] = time.monotonic()
            await client.create(_pod(name, namespace, owner, constrained))

        binds = _BindWatch(client, namespace, pods)
        measured = _Measured(scheduler, api_endpoints, client, logs, profile)
        binds.start()
        try:
            await binds.ready()
            if not backlog:
                await measured.start()
            first = create_started = time.monotonic()
            cpu_first = measured.cpu()
            await _bounded(writers, [lambda i=i: create_pod(i) for i in range(pods)])
            created = time.monotonic()
            if backlog:
                await measured.start()
                first = time.monotonic()  # from the scheduler's caches synced and leading
                cpu_first = measured.cpu()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await binds.all_bound.wait()
            cpu_last = measured.cpu()
        finally:
            await binds.stop()
            await measured.stop()
            if not keep:
                await _cleanup(client, namespace, node_names, writers)
    bound_at = binds.bound_at
    last = max(bound_at.values(), default=first)
    seconds = max(1e-9, last - first)
    lat = summarize([(bound_at[n] - sent[n]) * 1000 for n in bound_at if n in sent])
    return {
        "nodes": nodes,
        "pods": pods,
        "bound": len(bound_at),
        "mode": "backlog" if backlog else "stream",
        "scheduler": scheduler,
        "pods_per_s": len(bound_at) / seconds,
        "seconds": seconds,
        "create_per_s": pods / max(1e-9, created - create_started),
        "node_create_s": node_create_s,
        "latency_ms": {"p50": lat.p50, "p90": lat.p90, "p99": lat.p99, "max": lat.max},
        "scheduler_cpu_ms_per_pod": (
            (cpu_last - cpu_first) * 1000 / max(1, len(bound_at))
            if cpu_first is not None and cpu_last is not None
            else None
        ),
        "target_pods_per_s": TARGET_PODS_PER_S,
        "constrained": constrained,
        "logs": str(logs),
    }


def measure_decisions(
    nodes: int = DEFAULT_NODES, pods: int = DEFAULT_PODS, *, constrained: bool = False
) -> dict[str, Any]:
    """The scheduling decision alone, no I/O: `pods` cycles of algorithm.schedule plus
    assume against `nodes` nodes in a SchedulerCache, as the loop runs them. Returns
    decisions_per_s and cpu_ms_per_decision (process CPU time)."""
    cache = SchedulerCache()
    for i in range(nodes):
        cache.add_node(_node(f"node-{i:05d}", _zone(i, constrained)))
    infos = [pod_info(_pod(f"p-{i:05d}", "bench", "rs", constrained)) for i in range(pods)]
    rng = random.Random(0)
    start = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for info in infos:
        d = algorithm.schedule(
            info,
            cache.nodes,
            cache.order,
            start=start,
            nodes_with_affinity=cache.affinity_nodes,
            label_keys=cache.label_keys,
            rng=rng,
            topology=cache.topology,
        )
        start = d.next_start
        cache.assume(info, d.node)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "nodes": nodes,
        "pods": pods,
        "decisions_per_s": pods / max(1e-9, wall),
        "cpu_ms_per_decision": cpu * 1000 / pods,
        "nodes_scored": plugins.num_feasible_nodes_to_find(nodes),
    }


async def _cleanup(client: Client, namespace: str, node_names: Sequence[str], writers: int) -> None:
    async def delete_node(name: str) -> None:
        with contextlib.suppress(NotFound, ClientError):
            await client.delete(core_pb2.Node, name)

    with contextlib.suppress(ClientError):
        await client.delete(core_pb2.Namespace, namespace)
    await _bounded(writers, [lambda n=n: delete_node(n) for n in node_names])


# ---- `python -m k8semu.bench.scheduler` -------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m k8semu.bench.scheduler",
        description="Scheduler throughput: N nodes, M pods, pods bound per second.",
    )
    p.add_argument("--nodes", type=int, default=DEFAULT_NODES)
    p.add_argument("--pods", type=int, default=DEFAULT_PODS)
    p.add_argument("--server", help="API servers HOST:PORT[,...] (default: start a store + one)")
    p.add_argument("--replicas", type=int, default=3, help="store replicas when starting one")
    p.add_argument("--scheduler", choices=["process", "inprocess", "external"], default="process")
    p.add_argument("--backlog", action="store_true", help="create every pod first, then schedule")
    p.add_argument("--writers", type=int, default=DEFAULT_WRITERS)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    p.add_argument("--profile", type=Path, help="py-spy the scheduler process into this file")
    p.add_argument(
        "--constraints",
        choices=["none", "with", "both"],
        default="none",
        help="pods with zone/host spread constraints and anti-affinity; both: each, side by side",
    )
    return p


def _report(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    met = "yes" if r["pods_per_s"] >= r["target_pods_per_s"] else "no"
    return (
        ("with constraints, " if r["constrained"] else "")
        + f"{r['mode']}, scheduler {r['scheduler']}: {r['bound']}/{r['pods']} pods on "
        f"{r['nodes']} nodes in {r['seconds']:.2f} s = {r['pods_per_s']:.0f} pods/s "
        f"(target >= {r['target_pods_per_s']:.0f}: {met}); create->bind latency ms p50 "
        f"{lat['p50']:.0f} p90 {lat['p90']:.0f} p99 {lat['p99']:.0f} max {lat['max']:.0f}; "
        f"pods created at {r['create_per_s']:.0f}/s; {r['nodes']} nodes created in "
        f"{r['node_create_s']:.1f} s"
        + (
            f"; scheduler process CPU {r['scheduler_cpu_ms_per_pod']:.2f} ms/pod"
            if r["scheduler_cpu_ms_per_pod"] is not None
            else ""
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    if ns.nodes < 1 or ns.pods < 1 or ns.writers < 1 or ns.replicas < 1:
        print("--nodes, --pods, --writers and --replicas must be >= 1", file=sys.stderr)
        return 2
    from k8semu.cli import _serving

    _serving.install_event_loop()

    variants = {"none": [False], "with": [True], "both": [False, True]}[ns.constraints]

    async def bench(endpoints: Sequence[str], log_dir: Path | None) -> list[dict[str, Any]]:
        return [
            await run_scheduler_throughput(
                endpoints,
                ns.nodes,
                ns.pods,
                scheduler=ns.scheduler,
                backlog=ns.backlog,
                writers=ns.writers,
                timeout=ns.timeout,
                log_dir=log_dir,
                profile=ns.profile,
                constrained=constrained,
            )
            for constrained in variants
        ]

    if ns.server:
        results = asyncio.run(bench(ns.server.split(","), None))
    else:
        with tempfile.TemporaryDirectory(prefix="k8semu-bench-sched-") as tmp:
            base = Path(tmp)
            with K8semuStoreCluster(base / "store", ns.replicas) as store:
                store.start()
                store.wait_ready(timeout=60)
                api = APIServerProcess(
                    store.endpoints, base / "apiserver.log", ["--log-level", "error"]
                )
                try:
                    api.wait_serving()
                    results = asyncio.run(bench([api.address], base))
                finally:
                    api.close()
    _print_results(results, ns.nodes, ns.pods)
    return 0


def _print_results(results: Sequence[dict[str, Any]], nodes: int, pods: int) -> None:
    """Each run's report, the decisions alone, and with both variants a side-by-side line."""
    decided = []
    for r in results:
        print(_report(r))
        d = measure_decisions(nodes, pods, constrained=r["constrained"])
        decided.append(d)
        print(
            f"decisions alone (no I/O, this process): {d['decisions_per_s']:.0f} pods/s on "
            f"{d['nodes']} nodes, {d['cpu_ms_per_decision']:.2f} ms CPU per decision "
            f"({d['nodes_scored']} feasible nodes sought per pod)"
        )
    if len(results) == 2:
        plain, rules = results
        print(
            f"side by side, pods/s without / with constraints: "
            f"{plain['pods_per_s']:.0f} / {rules['pods_per_s']:.0f} bound; "
            f"{decided[0]['decisions_per_s']:.0f} / {decided[1]['decisions_per_s']:.0f} "
            "decisions alone"
        )
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())
