"""Restarting a running cluster's components one at a time (``k8semu restart [--rolling]``).

Each restart is carried out by the cluster's supervisor (the foreground ``k8semu up`` or the
detached ``k8semu supervise``), which owns the processes: this module drops a request file
(``supervisor.restart_request_path``), the supervisor sends SIGTERM (a graceful stop: a store
leader hands over leadership, an API server drains), SIGKILL after ``launcher.stopGracePeriod``,
and starts the component again at once. This module then waits until the new process is
healthy before it moves on:

- a store replica: it answers ``Maintenance.Status``, every replica agrees on a leader, and it
  has applied every entry the leader had when it came back (``raftAppliedIndex`` >= the
  leader's ``raftIndex`` then): caught up;
- any other component: its gRPC health says SERVING (a hollow pool's kubelet: its process runs).

Order (``rolling_order``): store replicas (followers first, the leader last, so there is one
election), API servers, schedulers, controller managers (standbys first, the Lease holder
last), then - when asked - kubelets and proxies. Without a supervisor nothing is restarted.
It must not signal any process itself.
"""

from __future__ import annotations

import fnmatch
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from k8semu.cluster import certs
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.plan import STORE
from k8semu.cluster.probes import SERVING, Probes, agreed_leader
from k8semu.cluster.state import ClusterState, ComponentRecord, read_state
from k8semu.cluster.supervisor import CONTROL_DIR, restart_request_path
from k8semu.pb.etcd import rpc_pb2

__all__ = ["Restarted", "restart_components", "rolling_order", "select"]

POLL_S = 0.05
RPC_TIMEOUT_S = 0.5
CONTROL_PLANE = ("store", "etcd", "apiserver", "scheduler", "controller-manager")
NODE_KINDS = ("kubelet", "proxy")
_KIND_ORDER = {k: i for i, k in enumerate((*CONTROL_PLANE, *NODE_KINDS))}


@dataclass(frozen=True, slots=True)
class Restarted:
    """One component restarted: its old and new pid, seconds from the request until the new
    process was healthy, and how it was stopped (the exit code, negative for a signal)."""

    name: str
    kind: str
    old_pid: int
    new_pid: int
    seconds: float
    exit_code: int | None
    #: When the request was made and when the component was (and stayed) healthy, monotonic.
    began: float = 0.0
    ended: float = 0.0


def select(state: ClusterState, selectors: Sequence[str], *, nodes: bool) -> list[ComponentRecord]:
    """The components named by ``selectors`` (a name, a kind, or a shell pattern such as
    ``apiserver-*``); every control-plane component (and with ``nodes`` every kubelet and
    proxy) when there are none, but not the slots of a node pool that are scaled down
    (``stopped``). ClusterError for a selector that matches nothing."""
    comps = state.components
    if not selectors:
        kinds = CONTROL_PLANE + (NODE_KINDS if nodes else ())
        return [c for c in comps if c.kind in kinds and not (c.pool and c.state == "stopped")]
    out: list[ComponentRecord] = []
    for sel in selectors:
        found = [c for c in comps if c.name == sel or c.kind == sel or fnmatch.fnmatch(c.name, sel)]
        if not found:
            names = ", ".join(c.name for c in comps)
            raise ClusterError(f"{sel!r} matches no component (components: {names})")
        out += [c for c in found if c not in out]
    return out


def rolling_order(
    chosen: Sequence[ComponentRecord], *, store_leader: str | None, lease_holders: Sequence[str]
) -> list[ComponentRecord]:
    """Restart order: by kind (store, API servers, schedulers, controller managers, kubelets,
    proxies); within a kind, leaders last (the store leader ``store_leader``; a scheduler or
    controller manager whose pid appears in one of ``lease_holders``)."""

    def leads(c: ComponentRecord) -> bool:
        if c.stage == STORE:
            return store_leader is not None and c.name == f"store-{store_leader}"
        return any(f"_{c.pid}_" in f"{h}_" for h in lease_holders)

    return sorted(chosen, key=lambda c: (_KIND_ORDER.get(c.kind, 99), leads(c), c.name))


def restart_components(
    state_dir: Path,
    names: Sequence[str],
    *,
    timeout: float,
    say: Callable[[str], None],
    probes: Probes | None = None,
    reorder: bool = True,
    min_ready: float = 0.0,
) -> list[Restarted]:
    """Restart ``names`` one at a time, each only once the one before is healthy again (and
    stayed healthy ``min_ready`` seconds, like a Deployment's minReadySeconds: clients that
    backed off from the restarted process need a moment to find it again).

    With ``reorder`` the store leader is looked up again before each store replica, so a
    leadership change during the run still leaves the leader last. Raises ClusterError when
    the cluster has no live supervisor, or a component is not healthy within ``timeout``
    seconds of its request (naming it and what it answered)."""
    own = probes is None
    probes = probes or certs.state_probes(read_state(state_dir))
    done: list[Restarted] = []
    try:
        todo = list(names)
        while todo:
            state = read_state(state_dir)
            _check_supervised(state)
            if reorder:
                todo = _reordered(state, todo, probes)
            name = todo.pop(0)
            record = state.component(name)
            if record is None:
                raise ClusterError(f"no component {name!r} in {state_dir}")
            say(f"restarting {name} (pid {record.pid or '-'})")
            done.append(_restart_one(state_dir, record, timeout, probes, min_ready))
            r = done[-1]
            say(f"  {name}: healthy again after {r.seconds:.2f}s, pid {r.new_pid}")
    finally:
        if own:
            probes.close()
    return done


def _check_supervised(state: ClusterState) -> None:
    if state.launcher_alive() or state.supervisor_alive():
        return
    if state.mode == "stopped":
        raise ClusterError(f"the cluster in {state.state_dir} is stopped")
    raise ClusterError(
        f"the cluster in {state.state_dir} has no supervisor running (it carries out restarts);"
        f" start it with `k8semu up --detach` or `k8semu supervise --state-dir {state.state_dir}`"
    )


def _reordered(state: ClusterState, todo: list[str], probes: Probes) -> list[str]:
    records = [c for n in todo if (c := state.component(n)) is not None]
    leader = None
    if any(c.stage == STORE for c in records) and state.store_members:
        members = [(n, a) for n, a in state.store_members]
        leader = agreed_leader(probes.store_statuses(members, RPC_TIMEOUT_S), len(members))
    holders: list[str] = []
    if any(c.kind in ("scheduler", "controller-manager") for c in records) and state.api_servers:
        try:
            holders = list(probes.leases(state.api_servers, RPC_TIMEOUT_S).values())
        except Exception:  # grpc.RpcError: no API server answers now; keep the given order
            holders = []
    ordered = [c.name for c in rolling_order(records, store_leader=leader, lease_holders=holders)]
    return ordered + [n for n in todo if n not in ordered]


def _restart_one(
    state_dir: Path, record: ComponentRecord, timeout: float, probes: Probes, min_ready: float
) -> Restarted:
    request = uuid.uuid4().hex[:12]
    path = restart_request_path(state_dir, record.name)
    (state_dir / CONTROL_DIR).mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.{request}")
    tmp.write_text(request + "\n", encoding="utf-8")
    tmp.replace(path)  # the supervisor never reads half a request
    began = time.monotonic()
    deadline = began + timeout
    new: ComponentRecord | None = None
    while new is None:
        state = read_state(state_dir)
        current = state.component(record.name)
        if current is not None and current.restart_request == request:
            if current.alive():
                new = current
                break
            if current.state == "failed":
                raise ClusterError(
                    f"{record.name} crashed again after its restart and is marked failed"
                    f" (last exit code {current.last_exit_code}); see `k8semu status` and"
                    f" {current.log_path}"
                )
        _check_supervised(state)
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"{record.name} was not started again within {timeout:g}s of the request"
                f" (state {current.state if current else '?'}); see the supervisor's log"
            )
        time.sleep(POLL_S)
    probes.forget(new.address)
    last = "no answer yet"
    target: list[int] = []  # the leader's raftIndex when the replica first answered
    healthy_since: float | None = None
    while True:
        ok, last = _healthy(state, new, probes, target)
        now = time.monotonic()
        if not ok:
            healthy_since = None
        elif healthy_since is None:
            healthy_since = now
        if ok and healthy_since is not None and now - healthy_since >= min_ready:
            break
        if not new.alive():
            raise ClusterError(f"{record.name} (pid {new.pid}) exited after its restart ({last})")
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"{record.name} (pid {new.pid}) not healthy within {timeout:g}s of its restart:"
                f" {last}; its log: {new.log_path}"
            )
        time.sleep(POLL_S)
    return Restarted(
        name=record.name,
        kind=record.kind,
        old_pid=record.pid,
        new_pid=new.pid,
        seconds=time.monotonic() - began,
        exit_code=new.last_exit_code,
        began=began,
        ended=time.monotonic(),
    )


def _healthy(
    state: ClusterState, c: ComponentRecord, probes: Probes, target: list[int]
) -> tuple[bool, str]:
    """Whether ``c`` is healthy again (see the module docstring), and what it answered. For a
    store replica, ``target`` remembers the leader's last index when it first agreed on a
    leader: under steady writes the leader's index moves on, and "caught up" means applied
    what was there when it came back, not an index that keeps running away."""
    if c.stage == STORE:
        members = [(n, a) for n, a in state.store_members]
        me = c.name.removeprefix("store-")
        statuses = probes.store_statuses(members, RPC_TIMEOUT_S)
        mine = statuses.get(me)
        if not isinstance(mine, rpc_pb2.StatusResponse):
            return False, f"Status: {mine}"
        leader = agreed_leader(statuses, len(members), everyone=[me])
        if leader is None:
            return False, "no leader that it agrees on"
        at_leader = statuses[leader]
        assert isinstance(at_leader, rpc_pb2.StatusResponse)
        if not target:
            target.append(at_leader.raftIndex)
        if mine.raftAppliedIndex < target[0]:
            return False, f"catching up: applied {mine.raftAppliedIndex} of {target[0]}"
        return True, "caught up"
    if not c.health_check:
        return c.alive(), "running"
    answer = probes.health([c.address], RPC_TIMEOUT_S)[c.address]
    return answer == SERVING, f"health {answer}"
