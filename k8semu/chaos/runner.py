"""One chaos run: start a cluster with `k8semu up` (in the foreground, so its supervisor
restarts what the faults kill), deploy a workload, inject the seeded fault plan while clients
measure, then check the invariants and write the report.

The workload: a Deployment of echo pods behind a ClusterIP Service, probed by new HTTP
connections (k8semu.chaos.probe), and a recorded register workload on the store's etcd API
(k8semu.chaos.workload) whose history must be linearizable afterwards: every acknowledged
write is then accounted for. Faults are signals to pids read from the cluster's state.json,
checked against the process start time recorded there (a reused pid is never signalled), and
partitions: kernel rules between the components' cgroups (k8semu.chaos.netfilter), each
healed when its fault ends, and all of them (the table and the cgroups) removed when the run
ends however it ends (an exception, Ctrl-C, SIGTERM).

It only signals processes of the cluster it started, and stops that cluster at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from k8semu import transport
from k8semu.api import manifest
from k8semu.chaos.events import ChaosEvents
from k8semu.chaos.linearizability import HistoryRecorder, check
from k8semu.chaos.netfilter import Cut, NetfilterError, Partitions
from k8semu.chaos.plan import Fault, PlanSettings, Target, make_plan
from k8semu.chaos.probe import ProbeResult, probe_loop
from k8semu.chaos.workload import Tally, Workload, read_all, run_workload
from k8semu.client import AlreadyExists, Client, ClientError
from k8semu.cluster.certs import STORE_KINDS, PKIPaths
from k8semu.cluster.clientconfig import ENV_VAR as CLI_CONFIG_ENV
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.processes import CGROUP_PARENT_ENV
from k8semu.cluster.state import ClusterState, ComponentRecord, is_same_process, read_state
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apps_pb2, coordination_pb2, core_pb2
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

log = get_logger(__name__)

NAMESPACE = "chaos"
NODE_LEASES = "kube-node-lease"
WORKLOAD_MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata: {name: chaos}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: chaos}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: echo
          image: k8semu/echo
          ports: [{containerPort: 8080, name: http}]
          readinessProbe:
            httpGet: {path: /readyz, port: http}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: chaos}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""

# Which launcher component kinds are fault targets, and their group (replicas of one thing).
_KINDS = {
    "store": "store",
    "apiserver": "apiserver",
    "scheduler": "scheduler",
    "controller-manager": "controller-manager",
    "kubelet": "kubelet",
    "proxy": "proxy",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosOptions:
    config: Path | None
    state_dir: Path
    seed: int = 7
    plan: PlanSettings = field(default_factory=PlanSettings)
    converge_timeout: float = 60.0
    ready_timeout: float = 120.0
    probe_rate: float = 20.0
    store_clients: int = 4
    min_availability: float = 0.0
    keep: bool = False


@dataclass(slots=True)
class FaultRecord:
    fault: dict[str, Any]
    done: bool = False
    pid: int = 0
    note: str = ""
    recovered_after: float | None = None  # seconds from injection until healthy again


@dataclass(slots=True)
class Report:
    seed: int
    duration: float
    faults: list[FaultRecord] = field(default_factory=list)
    store: dict[str, Any] = field(default_factory=dict)
    availability: dict[str, Any] = field(default_factory=dict)
    convergence: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out

    def summary(self) -> str:
        done = [f for f in self.faults if f.done]
        rec = sorted(f.recovered_after for f in done if f.recovered_after is not None)
        lines = [
            f"chaos run: seed {self.seed}, {self.duration:g} s, {len(done)} faults injected"
            f" ({len(self.faults) - len(done)} skipped)",
        ]
        by_kind: dict[str, int] = {}
        for f in done:
            key = f"{f.fault['fault']} {f.fault['kind']}"
            by_kind[key] = by_kind.get(key, 0) + 1
        lines.append("  faults: " + ", ".join(f"{k} x{n}" for k, n in sorted(by_kind.items())))
        if rec:
            lines.append(
                f"  recovery after a fault: p50 {rec[len(rec) // 2]:.2f} s, max {rec[-1]:.2f} s"
            )
        s = self.store
        lines.append(f"  store history: {s.get('verdict', '?')} ({s.get('tally', '')})")
        a = self.availability
        lines.append(
            f"  service availability: {a.get('overall', 0) * 100:.2f}% overall,"
            f" {a.get('majority_faults', 0) * 100:.2f}% during faults that kept a majority,"
            f" {a.get('first_try', 0) * 100:.2f}% on the first try"
            f" ({a.get('requests', 0)} requests)"
        )
        c = self.convergence
        if c.get("seconds_after_last_fault") is not None:
            lines.append(
                f"  deployments ready again {c['seconds_after_last_fault']:.2f} s after the"
                " last fault ended"
            )
        else:
            lines.append(f"  deployments did NOT converge: {c.get('detail', '')}")
        lines.append("  verdict: " + ("OK" if self.ok else "FAILED: " + "; ".join(self.violations)))
        return "\n".join(lines)


class ChaosError(Exception):
    """The run could not be made (cluster did not come up, bad options), or was interrupted."""


def partition_peers(target: Target, targets: list[Target]) -> list[str]:
    """Whom a partition of `target` cuts it from: a store replica from the other replicas, an
    API server from the store, anything else (scheduler, controller manager, kubelet, proxy)
    from the API servers."""
    if target.kind == "store":
        return [t.name for t in targets if t.kind == "store" and t.name != target.name]
    if target.kind == "apiserver":
        return [t.name for t in targets if t.kind == "store"]
    return [t.name for t in targets if t.kind == "apiserver"]


def targets_of(state: ClusterState) -> list[Target]:
    out = []
    for c in state.components:
        if c.kind not in _KINDS:
            continue
        group = c.kind
        if c.kind in ("kubelet", "proxy"):
            group = "node/" + (c.nodes[0] if c.nodes else c.name)
        out.append(Target(c.name, c.kind, group))
    return out


async def _healthy(record: ComponentRecord, state_dir: Path, timeout: float = 1.0) -> bool:
    """Whether `record` answers SERVING; asked with the cluster's credentials when it has
    any (a TLS cluster: the admin's, or the store's health-check client's)."""
    if not record.address:
        return True
    paths = PKIPaths(state_dir)
    tls = paths.store_client() if record.kind in STORE_KINDS else paths.api_client()
    try:
        async with transport.channel(record.address, tls) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
    except (grpc.RpcError, OSError, ValueError):
        return False


class ChaosRun:
    def __init__(self, options: ChaosOptions) -> None:
        self.o = options
        self.up: subprocess.Popen[bytes] | None = None
        self.report = Report(seed=options.seed, duration=options.plan.duration)
        # Made before the cluster starts (its components are started in its cgroups) when the
        # plan may partition; None otherwise.
        self.partitions: Partitions | None = None
        self._targets: list[Target] = []
        self._client: Client | None = None
        self._events: ChaosEvents | None = None

    # ---- the cluster -------------------------------------------------------------------------

    def _start_cluster(self) -> None:
        self.o.state_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "k8semu", "up", "--state-dir", str(self.o.state_dir)]
        if self.o.config is not None:
            argv += ["-f", str(self.o.config)]
        env = dict(os.environ)
        # The cluster's CLI context goes to a config in the state dir, never the user's.
        env[CLI_CONFIG_ENV] = str(self.o.state_dir / "cli-config")
        if self.partitions is not None:
            env[CGROUP_PARENT_ENV] = str(self.partitions.cgroup_parent)
        with (self.o.state_dir / "up.log").open("ab") as out:
            self.up = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def _state(self) -> ClusterState:
        return read_state(self.o.state_dir)

    async def _wait_ready(self) -> ClusterState:
        end = time.monotonic() + self.o.ready_timeout
        while time.monotonic() < end:
            assert self.up is not None
            if self.up.poll() is not None:
                raise ChaosError(
                    f"`k8semu up` exited ({self.up.returncode}); see {self.o.state_dir}/up.log"
                )
            with contextlib.suppress(ClusterError):
                state = self._state()
                if (
                    state.launcher_alive()
                    and state.api_servers
                    and all(c.alive() for c in state.components)
                ):
                    nodes = [n for c in state.components if c.kind == "kubelet" for n in c.nodes]
                    if await self._nodes_ready(state, len(nodes)):
                        return state
            await asyncio.sleep(0.3)
        raise ChaosError(f"the cluster was not ready within {self.o.ready_timeout:g} s")

    async def _nodes_ready(self, state: ClusterState, want: int) -> bool:
        try:
            async with Client(state.api_servers) as client:
                nodes = (await client.list(core_pb2.Node)).items
        except ClientError:
            return False
        ready = sum(
            1
            for n in nodes
            if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
        )
        return ready >= want

    def _stop_cluster(self) -> None:
        if self.up is None or self.up.poll() is not None:
            return
        self.up.send_signal(signal.SIGINT)
        try:
            self.up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.up.kill()
            self.up.wait()

    # ---- the workload --------------------------------------------------------------------------

    async def _deploy(self, client: Client) -> tuple[str, int]:
        for obj in manifest.load_all(WORKLOAD_MANIFEST, source="chaos workload"):
            with contextlib.suppress(AlreadyExists):
                await client.create(obj)
        end = time.monotonic() + self.o.ready_timeout
        while time.monotonic() < end:
            svc = await client.get(core_pb2.Service, "web", namespace=NAMESPACE)
            if await self._deployments_ready(client) and svc.spec.cluster_ip:
                return svc.spec.cluster_ip, svc.spec.ports[0].port
            await asyncio.sleep(0.3)
        raise ChaosError("the chaos workload (Deployment chaos/web) did not become ready")

    async def _deployments_ready(self, client: Client) -> bool:
        deployments = (await client.list(apps_pb2.Deployment, namespace=NAMESPACE)).items
        return bool(deployments) and all(
            d.status.ready_replicas == d.spec.replicas
            and d.status.updated_replicas == d.spec.replicas
            and d.status.replicas == d.spec.replicas
            for d in deployments
        )

    # ---- faults --------------------------------------------------------------------------------

    async def _recorded(self, index: int, fault: Fault, start: float) -> FaultRecord:
        """`_inject`, with the fault and its outcome recorded as Events (chaos/events.py)."""
        rec = await self._inject(fault, start, index)
        if rec.done and self._events is not None:
            self._events.outcome(index, rec.fault, time.time(), rec.recovered_after)
        return rec

    async def _inject(self, fault: Fault, start: float, index: int = 0) -> FaultRecord:
        rec = FaultRecord(fault=fault.to_dict())
        await asyncio.sleep(max(0.0, start + fault.at - time.monotonic()))
        try:
            target = self._state().component(fault.target)
        except ClusterError as exc:
            rec.note = str(exc)
            return rec
        if target is None or not target.alive():
            rec.note = "target not running at that moment (still restarting)"
            return rec
        began = time.monotonic()
        rec.pid, rec.done = target.pid, True
        if self._events is not None:
            self._events.fault(index, {**rec.fault, "nodes": target.nodes}, time.time())
        try:
            if fault.fault == "kill":
                os.kill(target.pid, signal.SIGKILL)
            elif fault.fault == "restart":
                os.kill(target.pid, signal.SIGTERM)
            elif fault.fault == "partition":
                await self._partition(fault)
            elif fault.fault == "pause":
                os.kill(target.pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(fault.duration)
                finally:
                    if is_same_process(target.pid, target.start_time):
                        os.kill(target.pid, signal.SIGCONT)
        except ProcessLookupError:
            rec.note = "exited before the signal"
        except NetfilterError as exc:
            rec.done, rec.note = False, f"partition not made: {exc}"
            self.report.violations.append(f"partition of {fault.target} failed: {exc}")
            return rec
        if fault.fault == "partition":
            # Recovery of a partition counts from the heal: until a store replica follows the
            # majority's leader again, or the component answers its health check.
            healed = time.monotonic()
            if fault.kind == "store":
                rec.recovered_after = await self._store_rejoined(target, healed)
            elif fault.kind == "kubelet" and target.nodes:
                rec.recovered_after = await self._lease_renewed(target.nodes, healed)
            else:
                rec.recovered_after = await self._recovery(fault.target, target, healed)
            way = fault.direction or "both"
            rec.note = "both ways" if way == "both" else f"one way ({way})"
            return rec
        rec.recovered_after = await self._recovery(fault.target, target, began)
        return rec

    async def _partition(self, fault: Fault) -> None:
        """Cut the target from its peers for the fault's duration; heal however this ends."""
        assert self.partitions is not None
        target = next(t for t in self._targets if t.name == fault.target)
        peers = partition_peers(target, self._targets)
        cuts: list[Cut] = self.partitions.partition([target.name], peers, fault.direction or "both")
        try:
            await asyncio.sleep(fault.duration)
        finally:
            for cut in cuts:
                self.partitions.heal(cut)

    async def _lease_renewed(self, nodes: list[str], began: float) -> float | None:
        """Seconds from `began` until every node of a kubelet has renewed its Lease since."""
        assert self._client is not None
        since = time.time() - (time.monotonic() - began)
        end = began + 30.0
        while time.monotonic() < end:
            try:
                leases = [
                    await self._client.get(coordination_pb2.Lease, n, namespace=NODE_LEASES)
                    for n in nodes
                ]
                if all(le.spec.renew_time.ToMicroseconds() / 1e6 >= since for le in leases):
                    return round(time.monotonic() - began, 3)
            except ClientError:
                pass
            await asyncio.sleep(0.2)
        return None

    async def _store_rejoined(self, replica: ComponentRecord, began: float) -> float | None:
        """Seconds from `began` until `replica` names the same leader as a majority does."""
        state = self._state()
        members = [c for c in state.components if c.kind == "store" and c.address]
        end = began + 30.0
        while time.monotonic() < end:
            leaders: dict[str, int] = {}
            for m in members:
                with contextlib.suppress(grpc.RpcError, OSError, ValueError):
                    async with transport.channel(m.address) as channel:
                        status = await rpc_pb2_grpc.MaintenanceStub(channel).Status(
                            rpc_pb2.StatusRequest(), timeout=1.0
                        )
                        leaders[m.name] = status.leader
            mine = leaders.get(replica.name, 0)
            if mine and sum(1 for v in leaders.values() if v == mine) > len(members) // 2:
                return round(time.monotonic() - began, 3)
            await asyncio.sleep(0.1)
        return None

    async def _recovery(self, name: str, before: ComponentRecord, began: float) -> float | None:
        """Seconds until `name` runs (a new process after a kill) and answers health."""
        end = began + 30.0
        while time.monotonic() < end:
            with contextlib.suppress(ClusterError):
                now = self._state().component(name)
                if now is not None and now.alive() and await _healthy(now, self.o.state_dir):
                    return round(time.monotonic() - began, 3)
            await asyncio.sleep(0.1)
        return None

    # ---- the run -------------------------------------------------------------------------------

    async def run(self) -> Report:
        """The whole run. SIGTERM cancels it like Ctrl-C does: partitions are healed and the
        cluster stopped before it returns (a ChaosError then says it was interrupted)."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        terminated = False

        def on_sigterm() -> None:
            nonlocal terminated
            terminated = True
            if task is not None:
                task.cancel()

        previous = signal.getsignal(signal.SIGTERM)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            if "partition" in self.o.plan.faults:
                self.partitions = Partitions([])
                try:
                    self.partitions.open()
                except NetfilterError as exc:
                    raise ChaosError(f"--faults partition: {exc}") from exc
            self._start_cluster()
            return await self._run()
        except asyncio.CancelledError:
            if terminated:
                raise ChaosError("interrupted by SIGTERM; partitions healed") from None
            raise
        finally:
            # SIGTERM stays with the loop until everything is cleaned up: another one now only
            # cancels again, which this synchronous clean-up does not see.
            try:
                if self.partitions is not None:
                    # Heal first, so even a cluster left running (--keep) is whole again.
                    self.partitions.heal_all()
            finally:
                try:
                    if not self.o.keep:
                        self._stop_cluster()
                finally:
                    if self.partitions is not None:
                        self.partitions.close()
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(signal.SIGTERM)
                    if previous is not None:
                        signal.signal(signal.SIGTERM, previous)

    async def _run(self) -> Report:
        state = await self._wait_ready()
        self._targets = targets_of(state)
        if self.partitions is not None:
            self.partitions.add_components([t.name for t in self._targets])
        plan = make_plan(self.o.seed, self._targets, self.o.plan)
        async with Client(state.api_servers) as client:
            self._client = client
            self._events = ChaosEvents(client, f"{self.o.seed}-{int(time.time())}")
            host, port = await self._deploy(client)
            recorder = HistoryRecorder()
            workload = Workload(
                clients=self.o.store_clients,
                keys=16,
                max_seconds=self.o.plan.duration,
                # Enough for the whole run at the ~400 ops/s 4 clients reach here; the cap
                # only bounds the history the checker must search.
                max_ops=max(2_000, int(600 * self.o.plan.duration)),
                key_prefix=b"/chaos/register/",
            )
            probes = ProbeResult()
            start = time.monotonic()
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(
                    run_workload(state.store_endpoints, recorder, workload, seed=self.o.seed)
                )
                prober = tg.create_task(
                    probe_loop(
                        host, port, duration=self.o.plan.duration, rate=self.o.probe_rate,
                        result=probes,
                    )
                )  # fmt: skip
                injections = [
                    tg.create_task(self._recorded(i, f, start)) for i, f in enumerate(plan)
                ]
            del writer, prober
            self.report.faults = [t.result() for t in injections]
            await self._events.flush()
            last_end = max((start + f.at + f.duration for f in plan), default=start)
            await self._converge(client, last_end)
            await self._check_store(state, recorder, workload)
            self._availability(probes, plan, start)
        if self.o.min_availability and (
            self.report.availability["majority_faults"] < self.o.min_availability
        ):
            self.report.violations.append(
                f"availability during majority-keeping faults"
                f" {self.report.availability['majority_faults']:.4f} < {self.o.min_availability}"
            )
        return self.report

    async def _converge(self, client: Client, last_end: float) -> None:
        end = time.monotonic() + self.o.converge_timeout
        detail = ""
        while time.monotonic() < end:
            try:
                if await self._deployments_ready(client):
                    self.report.convergence = {
                        "seconds_after_last_fault": round(max(0.0, time.monotonic() - last_end), 3)
                    }
                    return
            except ClientError as exc:
                detail = str(exc)
            await asyncio.sleep(0.2)
        self.report.convergence = {"seconds_after_last_fault": None, "detail": detail}
        self.report.violations.append(
            f"Deployments not ready within {self.o.converge_timeout:g} s of the last fault"
        )

    async def _check_store(
        self, state: ClusterState, recorder: HistoryRecorder, workload: Workload
    ) -> None:
        try:
            await read_all(
                state.store_endpoints, recorder, workload.key_names(), client=10_000, within=60
            )
        except TimeoutError as exc:
            self.report.violations.append(f"store: final reads failed: {exc}")
        history = recorder.history()
        result = await asyncio.to_thread(check, history, timeout=120.0)
        self.report.store = {
            "ops": len(history),
            "tally": str(Tally.of(history)),
            "verdict": "linearizable" if result.ok else result.detail,
        }
        if not result.ok and not result.timed_out:
            self.report.violations.append(f"store history not linearizable: {result.detail}")
        elif result.timed_out:
            self.report.store["verdict"] = "inconclusive: " + result.detail

    def _availability(self, probes: ProbeResult, plan: list[Fault], start: float) -> None:
        windows = [
            (start + f.at, start + f.at + max(f.duration, 1.0) + 2.0)
            for f in plan
            if f.majority_kept
        ]
        during = [s for s in probes.samples if any(a <= s[0] < b for a, b in windows)]
        self.report.availability = {
            "requests": probes.total,
            "overall": probes.availability(),
            "first_try": (sum(1 for s in probes.samples if s[2]) / probes.total)
            if probes.total
            else 1.0,
            "majority_faults": (sum(1 for s in during if s[1]) / len(during)) if during else 1.0,
            "majority_fault_requests": len(during),
        }


def write_report(report: Report, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
