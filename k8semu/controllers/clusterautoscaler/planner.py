"""The cluster autoscaler's decisions, pure: pending pods and pool templates -> a scale-up plan;
node utilization over time -> the node to remove. The controller (controller.py) feeds them
the informers' caches and a clock and carries the result out.

Both ask the scheduler's own filters (k8semu.scheduler.plugins.run_filters, on its NodeInfo):
a pod "fits" a pool when it would pass kube-scheduler's filters on a new, empty node of that
pool (its template), so a pod whose node selector or taints no pool matches never makes a
node start, and a pod that fits nowhere for lack of resources does.

Scale-up, as cluster-autoscaler does it (simplified): a pod the scheduler marked Unschedulable
that fits a Ready node now is left to the scheduler (it will retry); else it is packed onto a
node already asked for and not Ready yet (an "upcoming" node), else onto a new node of the first
pool (config order: a priority expander) whose template takes it and that is below maxNodes.

Scale-down: a Ready node of a pool whose pods request less than ``scaleDownUtilization`` of
its allocatable cpu or memory (the larger of the two fractions, as cluster-autoscaler), whose
pods are all owned by a ReplicaSet and would fit on the other Ready nodes, is unneeded; once
unneeded for ``scaleDownUnneededTime`` it is removed, one node per pass, never below minNodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from k8semu.api.selectors import LabelSelector
from k8semu.controllers.clusterautoscaler.pools import NodePool, slot_index
from k8semu.pb.api.v1 import core_pb2
from k8semu.scheduler.cache import occupies_node
from k8semu.scheduler.framework import NodeInfo, PodInfo, PodSpecError, pod_info
from k8semu.scheduler.plugins import (
    NO_ANTI_AFFINITY,
    AntiAffinityState,
    prefilter_anti_affinity,
    run_filters,
)

__all__ = [
    "MAX_NODE_GROUP_SIZE_REACHED",
    "Budget",
    "ScaleDown",
    "ScaleUp",
    "node_infos",
    "plan_scale_down",
    "plan_scale_up",
    "unschedulable",
]

MAX_NODE_GROUP_SIZE_REACHED = "max node group size reached"
MOVABLE_OWNERS = ("ReplicaSet",)
#: Pods that belong to their node: never a reason to add a node, never evicted, never in the
#: way of removing one (they go with it), as cluster-autoscaler treats DaemonSet pods.
NODE_BOUND_OWNERS = ("DaemonSet",)


def owner_kind(pod: core_pb2.Pod) -> str:
    """The kind of the pod's controller ("" when it has none)."""
    owner = next((r for r in pod.metadata.owner_references if r.controller), None)
    return owner.kind if owner is not None else ""


@dataclass(frozen=True, slots=True)
class Budget:
    """A PodDisruptionBudget as scale-down needs it: the pods it covers and how many of them
    may go now (``status.disruptionsAllowed``, the disruption controller's)."""

    name: str
    namespace: str
    selector: LabelSelector
    allowed: int

    def covers(self, pod: core_pb2.Pod) -> bool:
        return pod.metadata.namespace == self.namespace and self.selector.matches(
            pod.metadata.labels
        )


def unschedulable(pod: core_pb2.Pod) -> bool:
    """Unbound, not being deleted, not a DaemonSet's (it wants one node only), and marked by
    the scheduler: PodScheduled False, reason Unschedulable."""
    if pod.spec.node_name or pod.metadata.HasField("deletion_timestamp"):
        return False
    if owner_kind(pod) in NODE_BOUND_OWNERS:
        return False
    if pod.status.phase not in ("", "Pending"):
        return False
    return any(
        c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        for c in pod.status.conditions
    )


def node_infos(nodes: Iterable[core_pb2.Node], pods: Iterable[core_pb2.Pod]) -> dict[str, NodeInfo]:
    """name -> NodeInfo with the pods bound there (those still occupying it)."""
    infos = {n.metadata.name: NodeInfo(n.metadata.name, n) for n in nodes}
    for pod in pods:
        info = infos.get(pod.spec.node_name)
        if info is not None and occupies_node(pod):
            try:
                info.add_pod(pod_info(pod))
            except PodSpecError:
                continue  # the scheduler could not place it either
    return infos


def _fits(pod: PodInfo, node: NodeInfo, anti: AntiAffinityState = NO_ANTI_AFFINITY) -> list[str]:
    return run_filters(pod, node, anti)


class _Simulation:
    """The registered nodes and those a scale-up plan adds, with the pods placed on them, and
    which hold pods with required anti-affinity (the scheduler's PreFilter needs them)."""

    def __init__(self, infos: Mapping[str, NodeInfo]) -> None:
        self.nodes = dict(infos)
        self.anti_nodes = {
            n for n, i in infos.items() if any(p.anti_affinity for p in i.pods.values())
        }

    def anti(self, pod: PodInfo) -> AntiAffinityState:
        return prefilter_anti_affinity(pod, self.nodes, self.anti_nodes)

    def place(self, pod: PodInfo, node: NodeInfo) -> None:
        node.add_pod(pod)
        self.nodes[node.name] = node
        if pod.anti_affinity:
            self.anti_nodes.add(node.name)


@dataclass(slots=True)
class ScaleUp:
    """``new``: pool -> slots to start; ``triggered``: pod key -> its pool (a TriggeredScaleUp);
    ``not_triggered``: pod key -> why no pool helps (a NotTriggerScaleUp); ``waiting``: pods
    that fit a Ready node or a node already coming."""

    new: dict[str, list[str]] = field(default_factory=dict)
    triggered: dict[str, str] = field(default_factory=dict)
    not_triggered: dict[str, str] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)


def plan_scale_up(
    pending: Sequence[PodInfo],
    infos: Mapping[str, NodeInfo],
    pools: Sequence[NodePool],
    targets: Mapping[str, Sequence[str]],
) -> ScaleUp:
    """Which slots to start for ``pending`` (unschedulable pods, oldest first), given the
    registered nodes ``infos`` and each pool's ``targets`` (slots that should run)."""
    plan = ScaleUp()
    ready = [i for i in infos.values() if i.ready]
    sim = _Simulation(infos)
    upcoming: list[NodeInfo] = []
    fresh: dict[str, str] = {}  # node this plan starts -> its pool
    used: dict[str, set[str]] = {}
    for pool in pools:
        wanted = targets.get(pool.name, ())
        used[pool.name] = set(wanted) | {n for n in infos if slot_index(pool, n) is not None}
        for name in wanted:
            info = infos.get(name)
            if info is None or not info.ready:
                upcoming.append(NodeInfo(name, pool.template(name)))
    for pod in pending:
        anti = sim.anti(pod)
        if any(not _fits(pod, node, anti) for node in ready):
            plan.waiting.add(pod.key)
            continue
        spot = next((node for node in upcoming if not _fits(pod, node, anti)), None)
        if spot is not None:
            sim.place(pod, spot)
            if spot.name in fresh:  # on a node this plan starts: it triggered it too
                plan.triggered[pod.key] = fresh[spot.name]
            else:
                plan.waiting.add(pod.key)
            continue
        why: Counter[str] = Counter()
        for pool in pools:
            template = f"{pool.name}-template"  # a hostname no node has
            reasons = _fits(pod, NodeInfo(template, pool.template(template)), anti)
            if reasons:
                why[reasons[0]] += 1
                continue
            free = [s for s in pool.slots if s not in used[pool.name]]
            if not free:
                why[MAX_NODE_GROUP_SIZE_REACHED] += 1
                continue
            node = NodeInfo(free[0], pool.template(free[0]))
            sim.place(pod, node)
            upcoming.append(node)
            used[pool.name].add(free[0])
            fresh[free[0]] = pool.name
            plan.new.setdefault(pool.name, []).append(free[0])
            plan.triggered[pod.key] = pool.name
            break
        else:
            parts = ", ".join(f"{n} {reason}" for reason, n in sorted(why.items()))
            plan.not_triggered[pod.key] = parts or "no node groups"
    return plan


@dataclass(slots=True)
class ScaleDown:
    """``unneeded``: node -> since when (the caller keeps it for the next pass); ``remove``:
    (pool, node) to remove now, or None; ``blocked``: node -> why it is not unneeded."""

    unneeded: dict[str, float] = field(default_factory=dict)
    remove: tuple[str, str] | None = None
    blocked: dict[str, str] = field(default_factory=dict)


def utilization(info: NodeInfo) -> float:
    """The larger of the requested fractions of allocatable cpu and memory."""
    cpu = info.requested_cpu / info.alloc_cpu if info.alloc_cpu else 0.0
    memory = info.requested_memory / info.alloc_memory if info.alloc_memory else 0.0
    return max(cpu, memory)


def _unmovable(pods: Sequence[core_pb2.Pod], budgets: Sequence[Budget]) -> str | None:
    """Why a node holding ``pods`` (its DaemonSet pods left out) cannot be drained; None
    when every pod has a ReplicaSet that starts it again elsewhere and no
    PodDisruptionBudget would be broken by evicting them all."""
    for pod in pods:
        if owner_kind(pod) not in MOVABLE_OWNERS:
            return f"pod {pod.metadata.namespace}/{pod.metadata.name} is not replicated"
    for budget in budgets:
        covered = sum(1 for pod in pods if budget.covers(pod))
        if covered > budget.allowed:
            return (
                f"PodDisruptionBudget {budget.namespace}/{budget.name} allows"
                f" {budget.allowed} disruptions, {covered} of its pods are here"
            )
    return None


def movable_pods(pods: Iterable[core_pb2.Pod]) -> list[core_pb2.Pod]:
    """The pods a drain must move: those occupying the node, but not its DaemonSet's."""
    return [p for p in pods if occupies_node(p) and owner_kind(p) not in NODE_BOUND_OWNERS]


def _fit_elsewhere(pods: Sequence[PodInfo], others: Sequence[NodeInfo]) -> bool:
    """Whether every pod fits one of ``others`` (packed in turn, as the scheduler would)."""
    placed: list[tuple[NodeInfo, PodInfo]] = []
    try:
        for pod in pods:
            node = next((n for n in others if not _fits(pod, n)), None)
            if node is None:
                return False
            node.add_pod(pod)
            placed.append((node, pod))
        return True
    finally:
        for node, pod in placed:
            node.remove_pod(pod.key)


def plan_scale_down(
    infos: Mapping[str, NodeInfo],
    pods_by_node: Mapping[str, Sequence[core_pb2.Pod]],
    pools: Sequence[NodePool],
    targets: Mapping[str, Sequence[str]],
    unneeded_since: Mapping[str, float],
    now: float,
    budgets: Sequence[Budget] = (),
) -> ScaleDown:
    """Which pool nodes are unneeded (since when), and the one to remove now if any."""
    out = ScaleDown()
    others = [i for i in infos.values() if i.ready and not i.unschedulable]
    due: list[tuple[float, str, str]] = []
    for pool in pools:
        wanted = targets.get(pool.name, ())
        for name in wanted:
            info = infos.get(name)
            if info is None or not info.ready:
                continue
            level = utilization(info)
            if level >= pool.scale_down_utilization:
                out.blocked[name] = f"utilization {level:.2f} >= {pool.scale_down_utilization}"
                continue
            pods = movable_pods(pods_by_node.get(name, ()))
            keys = {f"{p.metadata.namespace}/{p.metadata.name}" for p in pods}
            why = _unmovable(pods, budgets)
            if why is None and not _fit_elsewhere(
                [p for k, p in info.pods.items() if k in keys],
                [o for o in others if o.name != name],
            ):
                why = "its pods fit on no other node"
            if why is not None:
                out.blocked[name] = why
                continue
            since = out.unneeded[name] = unneeded_since.get(name, now)
            if now - since >= pool.scale_down_unneeded_time and len(wanted) > pool.min_nodes:
                due.append((since, pool.name, name))
    if due:
        _, pool_name, name = min(due)
        out.remove = (pool_name, name)
    return out
