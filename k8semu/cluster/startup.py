"""How each stage of a launch proves healthy, and the waits for it.

A store replica is up when it answers ``Maintenance.Status``, and the store when a quorum
agrees on a leader (every local replica among them); an external etcd when it names a leader;
every other component when its gRPC health service says SERVING; a launch's nodes when the API
lists them Ready. A host with no API server of its own waits for one elsewhere before it
starts schedulers or nodes. Each wait polls against the launch's deadline
(``launcher.readyTimeout``), prints a line as each component turns healthy, fails at once with
the log tail of a component that exits while starting, and ends with WaitCancelledError when
the launch is told to stop.

It starts and stops nothing: the launcher (``k8semu.cluster.launcher``) does, stage by stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from k8semu.cluster.config import format_duration
from k8semu.cluster.errors import LaunchError, WaitCancelledError
from k8semu.cluster.plan import ComponentPlan, Plan
from k8semu.cluster.probes import SERVING, Probes, agreed_leader
from k8semu.cluster.supervisor import LeaderWatch, StopWaiter, Supervised, how_exited, log_tail
from k8semu.pb.etcd import rpc_pb2

__all__ = ["Planned", "Readiness", "wait_or_cancel"]

POLL_S = 0.05
NODE_POLL_S = 0.2
RPC_TIMEOUT_S = 0.5
LOG_TAIL_LINES = 20


def wait_or_cancel(stop: StopWaiter, seconds: float) -> None:
    """Wait ``seconds``, or WaitCancelledError as soon as ``stop`` is set: start-up is
    cancelled."""
    if stop.wait(seconds):
        raise WaitCancelledError("start-up cancelled")


@dataclass(eq=False, kw_only=True)
class Planned(Supervised):
    """A component of the plan and its current process (None while down)."""

    plan: ComponentPlan


@dataclass(kw_only=True)
class Readiness:
    """The waits of one launch of ``plan``: its components' health through ``probes``,
    progress lines through ``say``, cancelled by ``stop``. ``t0`` (monotonic) is when the
    launch began, for the elapsed times it prints; the store leader it finds is recorded in
    ``leader_watch``; ``logs_dir`` is where the launch's logs are, for its messages."""

    plan: Plan
    probes: Probes
    say: Callable[[str], None]
    stop: StopWaiter
    leader_watch: LeaderWatch
    logs_dir: Path
    t0: float = field(default_factory=time.monotonic)

    def check_exited(self, members: list[Planned]) -> None:
        """LaunchError, with its log's tail, for a component of ``members`` that has exited."""
        for r in members:
            if r.proc is not None and r.proc.poll() is not None:
                rc = r.proc.returncode
                r.wanted = False
                raise LaunchError(
                    f"{r.name} (pid {r.proc.pid}) {how_exited(rc)} while starting; last lines of"
                    f" {r.plan.log_path}:\n{log_tail(r.plan.log_path, LOG_TAIL_LINES)}"
                )

    def _healthy(self, r: Planned, what: str = "healthy") -> None:
        self.say(
            f"  {r.name:<24} {what:<8} pid {r.record.pid:<7} {r.plan.address:<21} {self.elapsed()}"
        )

    def elapsed(self) -> str:
        """Seconds since the launch began, as the progress lines show them."""
        return f"{time.monotonic() - self.t0:.1f}s"

    def _within(self) -> str:
        return (
            f"within {format_duration(self.plan.launcher.ready_timeout_ms)} (launcher.readyTimeout)"
        )

    def _waiting(self) -> None:
        wait_or_cancel(self.stop, POLL_S)

    def _timeout(self, what: str, pending: list[Planned], answers: dict[str, str]) -> LaunchError:
        lines = [f"{what} {self._within()}:"]
        for r in pending:
            lines.append(f"  {r.name} pid {r.record.pid} {r.plan.address}: {answers.get(r.name)}")
            lines.append(f"  --- last lines of {r.plan.log_path}:")
            lines.append(log_tail(r.plan.log_path, 8))
        return LaunchError("\n".join(lines))

    def store(self, members: list[Planned], deadline: float) -> None:
        """Wait until every replica of ``members`` answers Status, then for the leader."""
        pending = list(members)
        answers: dict[str, str] = {}
        while pending:
            self.check_exited(members)
            statuses = self.probes.store_statuses(
                [(r.name, r.plan.address) for r in pending], RPC_TIMEOUT_S
            )
            for r in list(pending):
                st = statuses[r.name]
                if isinstance(st, rpc_pb2.StatusResponse):
                    pending.remove(r)
                    self._healthy(r, "answers")
                else:
                    answers[r.name] = st
            if not pending:
                break
            if time.monotonic() >= deadline:
                raise self._timeout("the store replicas did not answer", pending, answers)
            self._waiting()
        self.store_leader(deadline, members)

    def store_leader(self, deadline: float, members: list[Planned] | None = None) -> None:
        """Wait until a quorum of the whole store (other hosts' members too) agrees on a
        leader that every local replica of ``members`` names."""
        members = members or []
        plan = self.plan
        local = {r.name.removeprefix("store-") for r in members}
        last: dict[str, rpc_pb2.StatusResponse | str] = {}
        if len(local) < len(plan.store_members):
            self.say(
                f"  waiting for the store's other members on other hosts"
                f" ({', '.join(n for n, _ in plan.store_members if n not in local)})"
            )
        while True:
            self.check_exited(members)
            last = self.probes.store_statuses(plan.store_members, RPC_TIMEOUT_S)
            leader = agreed_leader(last, len(plan.store_members), everyone=sorted(local))
            if leader is not None:
                self.leader_watch.leader = leader
                self.say(f"  store leader: {leader:<16} {'':<30} {self.elapsed()}")
                return
            if time.monotonic() >= deadline:
                answers = {
                    f"store-{n}": (
                        f"leader={s.leader:x} member_id={s.header.member_id:x}"
                        if isinstance(s, rpc_pb2.StatusResponse)
                        else s
                    )
                    for n, s in last.items()
                }
                raise self._timeout("the store elected no leader", members, answers)
            self._waiting()

    def external_store(self, deadline: float) -> None:
        """Wait until the external etcd (``store.endpoints``) names a leader."""
        endpoints = self.plan.store_external
        while True:
            statuses = self.probes.store_statuses([(e, e) for e in endpoints], RPC_TIMEOUT_S)
            leaders = {s.leader for s in statuses.values() if isinstance(s, rpc_pb2.StatusResponse)}
            leaders.discard(0)
            if leaders:
                self.say(f"  external etcd at {', '.join(endpoints)} has a leader")
                return
            if time.monotonic() >= deadline:
                raise LaunchError(
                    f"the external etcd (store.endpoints: {', '.join(endpoints)}) has no leader"
                    f" or does not answer: {statuses}"
                )
            self._waiting()

    def remote_api(self, deadline: float) -> bool:
        """On a host with no API server of its own, wait for one elsewhere to serve."""
        servers = self.plan.api_servers
        self.say(f"  waiting for an API server on another host ({', '.join(servers)})")
        health: dict[str, str] = {}
        while True:
            health = self.probes.health(servers, RPC_TIMEOUT_S)
            serving = [a for a, h in health.items() if h == SERVING]
            if serving:
                self.say(f"  API server {serving[0]:<19} serving{'':<22} {self.elapsed()}")
                return True
            if time.monotonic() >= deadline:
                raise LaunchError(f"no API server answers {self._within()}: {health}")
            self._waiting()

    def components(self, members: list[Planned], deadline: float) -> None:
        """Wait until every component of ``members`` that serves gRPC health says SERVING."""
        pending = [r for r in members if r.plan.health_check]
        for r in members:
            if not r.plan.health_check:
                self._healthy(r, "started")
        answers: dict[str, str] = {}
        while pending:
            self.check_exited(members)
            health = self.probes.health([r.plan.address for r in pending], RPC_TIMEOUT_S)
            for r in list(pending):
                answers[r.name] = health[r.plan.address]
                if health[r.plan.address] == SERVING:
                    pending.remove(r)
                    self._healthy(r)
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise self._timeout("not every component turned healthy", pending, answers)
            self._waiting()

    def nodes_ready(self, members: list[Planned], deadline: float) -> None:
        """Wait until the API lists every Node of this launch's kubelets as Ready."""
        groups = {r.name: r.plan.node_names for r in members if r.plan.node_names}
        if not groups:
            return
        pending = dict(groups)
        last = "no answer yet"
        while pending:
            self.check_exited(members)
            try:
                ready = self.probes.nodes_ready(self.plan.api_servers, RPC_TIMEOUT_S * 2)
            except Exception as exc:
                last = str(exc)
                ready = {}
            for kubelet, names in list(pending.items()):
                if all(ready.get(n) for n in names):
                    del pending[kubelet]
                    label = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
                    count = "" if len(names) == 1 else f" ({len(names)} nodes)"
                    self.say(f"  node {label:<19} Ready{count:<22} {'':<8} {self.elapsed()}")
            if not pending:
                return
            if time.monotonic() >= deadline:
                missing = [n for names in pending.values() for n in names if not ready.get(n)]
                shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
                raise LaunchError(
                    f"nodes not Ready {self._within()}: {shown}"
                    f" ({last if not ready else 'not Ready'}); see the kubelet logs in"
                    f" {self.logs_dir}"
                )
            wait_or_cancel(self.stop, NODE_POLL_S)
