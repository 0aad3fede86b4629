"""The HA drill: ``k8semu bench ha``.

This module owns ``k8semu bench ha``. It starts a cluster shaped like
``cluster_configs/ha.yaml`` - 3 store replicas, 2 API servers, 2 schedulers, 2 controller
managers, 3 worker nodes with the process runtime - on free ports and node IPs of its own
(``k8semu.bench._clusterrun``; or the ``--config`` given), deploys the sample app
(examples/echo.yaml: 3 echo pods behind NodePort 30080), and then, while

- API clients (``--api-workers``, ``k8semu.client`` over both API servers) read (get a
  Namespace, list ConfigMaps) and write (create a named ConfigMap, delete an older one), each
  request retried once when it fails (a create that finds its object already there, or a
  delete that finds it gone, counts as done: the first try was applied);
- a Service probe (``k8semu.chaos.probe``) GETs the NodePort on a node IP, a new connection per
  request, retried once;
- a monitor samples the store (``Maintenance.Status`` of every replica) and the kube-system
  Leases every ``MONITOR_INTERVAL_S``;

it runs ``k8semu restart --rolling`` (``k8semu.cluster.rolling``: every control-plane process
one at a time, each healthy again before the next), keeps the load on for ``--settle``
seconds, and reports: failed API requests and failed Service requests (after the one retry;
targets: zero), and the longest unavailability per kind of component - the longest time with
no agreed store leader, with API requests failing at their first try, with the Service
answering nothing at a first try, and with a scheduler or controller-manager Lease held by no
live process (the time until the next leader acted). Bounded by ``--timeout``; traffic stays
on 127/8. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from k8semu import examples
from k8semu.bench._clusterrun import BenchCluster, ClusterLayout, bench_config
from k8semu.bench._common import BenchError, argument_parser, cancel, say
from k8semu.chaos.probe import ProbeResult, probe_loop
from k8semu.client import NO_RETRIES, AlreadyExists, Client, ClientError, NotFound
from k8semu.cluster.probes import Probes, agreed_leader
from k8semu.cluster.processes import free_loopback_ports
from k8semu.cluster.rolling import Restarted, restart_components, rolling_order, select
from k8semu.cluster.state import ClusterState, read_state
from k8semu.pb.api.v1 import apps_pb2, core_pb2, meta_pb2

__all__ = ["main", "unavailable_spans"]

MONITOR_INTERVAL_S = 0.05
NAMESPACE = "ha-drill"
NODE_PORT = 30080
LEASES = ("kube-scheduler", "kube-controller-manager")
# Second octets for this run's pod, service and load-balancer ranges (127.X.0.0/16): away from
# node IPs (127.0.x), the defaults (127.244, 127.96, 127.100) and _clusterrun's (127.248-251,
# 127.97, 127.101).
PRIVATE_SECOND_OCTETS = (160, 240)


@dataclass
class Samples:
    """(monotonic time, ok) per observation of one kind; ``unavailable()`` is its longest
    stretch from a failing observation to the next good one."""

    points: list[tuple[float, bool]] = field(default_factory=list)

    def add(self, at: float, ok: bool) -> None:
        self.points.append((at, ok))


def unavailable_spans(points: Sequence[tuple[float, bool]]) -> list[tuple[float, float]]:
    """Stretches (start, end) from the first failing observation of a run of failures to the
    next good observation (or the last observation, when none came)."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for at, ok in sorted(points):
        if not ok and start is None:
            start = at
        elif ok and start is not None:
            spans.append((start, at))
            start = None
    if start is not None and points:
        spans.append((start, max(p[0] for p in points)))
    return spans


def _longest(points: Sequence[tuple[float, bool]]) -> float:
    return max((end - start for start, end in unavailable_spans(points)), default=0.0)


def ha_config() -> dict[str, Any]:
    """cluster_configs/ha.yaml's shape on free ports and node IPs of its own."""
    layout = ClusterLayout(name="ha-drill", store_replicas=3, real_nodes=3)
    doc = bench_config(layout)
    extra = iter(free_loopback_ports(3))
    for section, name in (
        ("apiServer", "apiserver"),
        ("scheduler", "scheduler"),
        ("controllerManager", "controller-manager"),
    ):
        doc[section]["instances"].append({"name": f"{name}-2", "port": next(extra)})
    doc["launcher"]["stopGracePeriod"] = "10s"
    # Address ranges of this run's own: other benchmarks on this machine use _clusterrun's
    # fixed ranges, and two clusters with the same pod CIDR hand out the same pod IPs.
    rng = random.Random()
    pods, services, lbs = rng.sample(range(*PRIVATE_SECOND_OCTETS), 3)
    doc["network"].update(
        clusterCIDR=f"127.{pods}.0.0/16",
        serviceCIDR=f"127.{services}.0.0/16",
        loadBalancerPool=f"127.{lbs}.0.0/24",
    )
    return doc


class Monitor:
    """Samples the store leader and the Lease holders from a thread of its own (blocking gRPC),
    so the asyncio load never waits for it."""

    def __init__(self, state: ClusterState) -> None:
        self.state_dir = Path(state.state_dir)
        self.members = [(n, a) for n, a in state.store_members]
        self.api = list(state.api_servers)
        self.store = Samples()
        self.leases: dict[str, Samples] = {name: Samples() for name in LEASES}
        self.leader_changes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        probes = Probes()
        last_leader: str | None = None
        try:
            while not self._stop.wait(MONITOR_INTERVAL_S):
                now = time.monotonic()
                leader = agreed_leader(probes.store_statuses(self.members, 0.3), len(self.members))
                self.store.add(now, leader is not None)
                if leader is not None and last_leader is not None and leader != last_leader:
                    self.leader_changes += 1
                last_leader = leader or last_leader
                try:
                    holders = probes.leases(self.api, 0.3)
                except Exception:  # grpc.RpcError: no API server answers; counted there
                    continue
                pids = _live_pids(self.state_dir)
                for name, samples in self.leases.items():
                    holder = holders.get(name, "")
                    samples.add(now, any(f"_{pid}_" in f"{holder}_" for pid in pids))
        finally:
            probes.close()


def _live_pids(state_dir: Path) -> set[int]:
    try:
        state = read_state(state_dir)
    except Exception:
        return set()
    return {c.pid for c in state.components if c.pid and c.alive()}


@dataclass
class ApiLoad:
    total: int = 0
    failed: int = 0
    first_try: list[tuple[float, bool]] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)
    failed_after_retry_at: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _api_worker(
    client: Client, worker: int, until: float, out: ApiLoad, retry_delay: float
) -> None:
    n = 0
    while time.monotonic() < until:
        n += 1
        name = f"w{worker}-{n}"
        op = n % 4

        async def once(op: int = op, name: str = name, n: int = n) -> None:
            if op == 0:
                await client.get(core_pb2.Namespace, NAMESPACE)
            elif op == 1:
                await client.list(core_pb2.ConfigMap, namespace=NAMESPACE)
            elif op == 2:
                cm = core_pb2.ConfigMap(
                    metadata=meta_pb2.ObjectMeta(name=name, namespace=NAMESPACE),
                    data={"n": str(n)},
                )
                with contextlib.suppress(AlreadyExists):  # the first try was applied
                    await client.create(cm, namespace=NAMESPACE)
            else:
                old = f"w{worker}-{n - 5}"
                with contextlib.suppress(NotFound):  # never made, or the first try deleted it
                    await client.delete(core_pb2.ConfigMap, old, namespace=NAMESPACE)

        began = time.monotonic()
        out.total += 1
        try:
            await once()
            out.first_try.append((began, True))
        except ClientError as first:
            out.first_try.append((began, False))
            out.failed_at.append(began)
            await asyncio.sleep(retry_delay)
            try:
                await once()
            except ClientError as second:
                out.failed += 1
                out.failed_after_retry_at.append(began)
                out.errors.append(f"{time.strftime('%H:%M:%S')} {first!s:.120} / {second!s:.200}")
        await asyncio.sleep(0.02)


async def _wait_app(client: Client, node_ip: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ClientError):
            dep = await client.get(apps_pb2.Deployment, "echo", namespace="default")
            if dep.status.ready_replicas >= dep.spec.replicas > 0:
                probe = await probe_loop(node_ip, NODE_PORT, duration=0.5, rate=10)
                if probe.total and probe.ok == probe.total:
                    return
        if time.monotonic() > deadline:
            raise BenchError(f"the sample app was not ready and reachable within {timeout:g}s")
        await asyncio.sleep(0.5)


async def drill(state: ClusterState, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    """Load the cluster, restart its control plane one process at a time, and report."""
    state_dir = Path(state.state_dir)
    node_ip = args.node_ip or _first_node_ip(state)
    async with Client(state.api_servers, retries=NO_RETRIES) as client:
        with contextlib.suppress(AlreadyExists):
            await client.create(core_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name=NAMESPACE)))
        await _wait_app(client, node_ip, args.ready_timeout)
        say(f"sample app ready at http://{node_ip}:{NODE_PORT}/")
        chosen = select(state, [], nodes=args.nodes)
        names = [c.name for c in rolling_order(chosen, store_leader=None, lease_holders=[])]
        monitor = Monitor(state)
        monitor.start()
        api = ApiLoad()
        service = ProbeResult()
        until = time.monotonic() + args.timeout
        t0 = time.monotonic()
        workers = [
            asyncio.create_task(_api_worker(client, i, until, api, args.retry_delay))
            for i in range(args.api_workers)
        ]
        prober = asyncio.create_task(
            probe_loop(
                node_ip, NODE_PORT, duration=args.timeout, rate=args.probe_rate, result=service
            )
        )
        await asyncio.sleep(args.settle)
        say(f"rolling restart of {len(names)} processes: {', '.join(names)}")
        began = time.monotonic()
        try:
            restarted = await asyncio.to_thread(
                restart_components,
                state_dir,
                names,
                timeout=120.0,
                say=say,
                min_ready=args.min_ready,
            )
        finally:
            rolled = time.monotonic() - began
            await asyncio.sleep(args.settle)
            await cancel(*workers, prober)
            monitor.stop()
        end = time.monotonic()
    return _report(
        args,
        duration_s=end - t0,
        rolled_s=rolled,
        restarted=restarted,
        api=api,
        service=service,
        monitor=monitor,
    )


def _report(
    args: argparse.Namespace,
    *,
    duration_s: float,
    rolled_s: float,
    restarted: Sequence[Restarted],
    api: ApiLoad,
    service: ProbeResult,
    monitor: Monitor,
) -> dict[str, Any]:
    """The drill's figures: per restarted process what failed while it restarted, the
    requests that failed overall, the longest unavailability per kind of component."""
    first_api = api.first_try
    probe_points = [(s[0], s[2]) for s in service.samples]
    return {
        "command": " ".join(["k8semu", "bench", "ha", *sys.argv[3:]]),
        "min_ready_s": args.min_ready,
        "retry_delay_s": args.retry_delay,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "duration_s": round(duration_s, 1),
        "rolling_restart_s": round(rolled_s, 1),
        "restarted": [
            {
                "name": r.name,
                "seconds": round(r.seconds, 2),
                "old_pid": r.old_pid,
                "new_pid": r.new_pid,
                "api_failed_first_try": _within(api.failed_at, r.began, r.ended),
                "api_failed_after_retry": _within(api.failed_after_retry_at, r.began, r.ended),
                "service_failed_first_try": _within(
                    [s[0] for s in service.samples if not s[2]], r.began, r.ended
                ),
            }
            for r in restarted
        ],
        "api": {
            "requests": api.total,
            "failed_after_retry": api.failed,
            "failed_first_try": sum(1 for _, ok in first_api if not ok),
            "errors": api.errors[:10],
        },
        "service": {
            "requests": service.total,
            "failed_after_retry": service.total - service.ok,
            "failed_first_try": sum(1 for _, ok in probe_points if not ok),
        },
        "longest_unavailable_s": {
            "store (no agreed leader)": round(_longest(monitor.store.points), 3),
            "API (first tries failing)": round(_longest(first_api), 3),
            "Service (first tries failing)": round(_longest(probe_points), 3),
            "scheduler (no live Lease holder)": round(
                _longest(monitor.leases["kube-scheduler"].points), 3
            ),
            "controller manager (no live Lease holder)": round(
                _longest(monitor.leases["kube-controller-manager"].points), 3
            ),
        },
        "store_leader_changes": monitor.leader_changes,
    }


def _within(times: Sequence[float], began: float, ended: float) -> int:
    return sum(1 for t in times if began <= t < ended)


def _first_node_ip(state: ClusterState) -> str:
    for c in state.components:
        if c.kind == "proxy":
            return c.address.rpartition(":")[0]
    raise BenchError("the cluster has no proxy: nothing serves the NodePort")


def _apply(cluster: BenchCluster, manifest: Path) -> None:
    assert cluster.state is not None
    argv = [sys.executable, "-m", "k8semu", "apply", "-f", str(manifest),
            "--kubeconfig", cluster.state.kubeconfig]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=cluster.env, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"apply {manifest}: {done.stderr.strip()[-500:]}")


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"HA drill: rolling restart of {len(r['restarted'])} processes in"
        f" {r['rolling_restart_s']}s (load average {' '.join(r['loadavg'])})",
        "",
        "| process | back healthy after (s) | API failed first try / after retry |"
        " Service failed first try |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {x['name']} | {x['seconds']} | {x['api_failed_first_try']} /"
            f" {x['api_failed_after_retry']} | {x['service_failed_first_try']} |"
            for x in r["restarted"]
        ),
        "",
        "| requests | total | failed first try | failed after one retry (target 0) |",
        "| --- | ---: | ---: | ---: |",
        f"| API (k8semu.client) | {r['api']['requests']} | {r['api']['failed_first_try']} |"
        f" {r['api']['failed_after_retry']} |",
        f"| Service (NodePort) | {r['service']['requests']} |"
        f" {r['service']['failed_first_try']} | {r['service']['failed_after_retry']} |",
        "",
        "| longest unavailability | seconds |",
        "| --- | ---: |",
        *(f"| {k} | {v} |" for k, v in r["longest_unavailable_s"].items()),
        f"| store leader changes | {r['store_leader_changes']} |",
    ]
    if r["api"]["errors"]:
        lines += ["", "API errors (first / retry):", *r["api"]["errors"]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argument_parser(
        "k8semu bench ha",
        (
            "HA drill: a rolling restart of every control-plane process under API and"
            " Service load; reports failed requests and the longest unavailability per component."
        ),
    )
    p.add_argument("--config", type=Path, help="cluster config (default: ha.yaml's shape on"
                   " free ports)")  # fmt: skip
    p.add_argument("--manifest", type=Path, default=examples.ECHO, help="the sample app")
    p.add_argument("--node-ip", help="where to probe the NodePort (default: the first node's)")
    p.add_argument("--nodes", action="store_true", help="restart the kubelets and proxies too")
    p.add_argument("--api-workers", type=int, default=2, help="concurrent API clients")
    p.add_argument("--probe-rate", type=float, default=20.0, help="Service requests/s")
    p.add_argument(
        "--min-ready",
        type=float,
        default=2.0,
        help="each restarted process healthy this long before the next (s)",
    )
    p.add_argument(
        "--retry-delay",
        type=float,
        default=0.5,
        help="wait this long before a failed request's one retry (s)",
    )
    p.add_argument("--settle", type=float, default=3.0, help="load before and after (s)")
    p.add_argument("--timeout", type=float, default=600.0, help="bound on the load (s)")
    p.add_argument("--ready-timeout", type=float, default=120.0, help="for the sample app (s)")
    p.add_argument("--workdir", type=Path, help="put the cluster dir under this dir")
    p.add_argument("--keep", action="store_true", help="keep the cluster's logs and data")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if (
        args.api_workers < 1 or args.probe_rate <= 0 or args.timeout <= 0
        or min(args.settle, args.min_ready, args.retry_delay) < 0
    ):  # fmt: skip
        print("k8semu bench ha: --api-workers, --probe-rate and --timeout must be positive;"
              " --settle, --min-ready and --retry-delay >= 0", file=sys.stderr)  # fmt: skip
        return 2
    if not args.manifest.is_file():
        print(f"k8semu bench ha: --manifest {args.manifest}: no such file", file=sys.stderr)
        return 2

    if args.config is None:
        workdir = args.workdir or Path(os.environ.get("TMPDIR", "/tmp"))
        workdir.mkdir(parents=True, exist_ok=True)
        config = Path(workdir) / f"ha-drill-{os.getpid()}.yaml"
        config.write_text(yaml.safe_dump(ha_config(), sort_keys=False))
    else:
        config = args.config
    try:
        with BenchCluster(config=config, workdir=args.workdir, keep=args.keep, say=say) as c:
            c.start()
            _apply(c, args.manifest)
            assert c.state is not None
            report = asyncio.run(drill(c.state, args, say))
    except BenchError as exc:
        print(f"k8semu bench ha: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.config is None:
            with contextlib.suppress(OSError):
                config.unlink()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    missed = report["api"]["failed_after_retry"] or report["service"]["failed_after_retry"]
    return 1 if missed else 0
