"""Preemption (kube-scheduler's DefaultPreemption PostFilter), the pure part: for a pod that
fits nowhere, the node where evicting lower-priority pods makes it fit, and which pods.

1. The pod may preempt: its preemptionPolicy is not Never, and it is not already waiting
   for victims to go on its nominated node (a lower-priority pod there is terminating).
2. Candidates: nodes whose only obstacles can go with pods (resources, host ports, pod
   anti-affinity, spread skew); not a node that is not Ready, cordoned, tainted, outside
   the pod's node affinity or missing a topology label.
3. On each, every pod of lower priority (not already terminating) is removed; if the pod
   then fits, as many as possible are put back (reprieved), highest priority first and
   those whose PodDisruptionBudget allows no disruption before the others, so the
   victims are the fewest and lowest that make room.
4. The node: fewest victims breaking a budget, then the lowest highest-priority victim,
   then the smallest sum of victim priorities, then the fewest victims (kube-scheduler's
   order, without its start-time rule); ties: the first in the cache's order.

Budgets: a victim breaks one when a PodDisruptionBudget of its namespace selects it and
its status allows no more disruptions (counting down over the victims chosen on that node),
as kube-scheduler's best-effort check; a victim is still taken when nothing else works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from k8semu.scheduler import plugins
from k8semu.scheduler.framework import NodeInfo, PodInfo, PodSelector, clone_node
from k8semu.scheduler.interpod import REASON_AFFINITY
from k8semu.scheduler.spread import REASON_SPREAD_LABEL, prefilter_spread

# Reasons no eviction can remove (kube-scheduler's UnschedulableAndUnresolvable).
UNRESOLVABLE = frozenset(
    {
        plugins.REASON_NOT_READY,
        plugins.REASON_UNSCHEDULABLE,
        plugins.REASON_NODE_AFFINITY,
        REASON_AFFINITY,
        REASON_SPREAD_LABEL,
    }
)


@dataclass(slots=True)
class Budget:
    """A PodDisruptionBudget as preemption sees it: whom it covers and how many more of
    them may go now."""

    namespace: str
    selector: PodSelector
    allowed: int
    disrupted: frozenset[str] = frozenset()  # pod names already granted an eviction

    def covers(self, pod: PodInfo) -> bool:
        return (
            pod.namespace == self.namespace
            and pod.name not in self.disrupted
            and self.selector.matches(pod.labels)
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    node: str
    victims: tuple[PodInfo, ...]
    violations: int = 0

    def rank(self) -> tuple[int, int, int, int]:
        """Smaller is better."""
        prios = [v.priority for v in self.victims]
        return (self.violations, max(prios, default=-(2**31)), sum(prios), len(prios))


@dataclass(frozen=True, slots=True)
class Outcome:
    """`candidate` None: preemption cannot help (`why` says so)."""

    candidate: Candidate | None
    why: str = ""
    considered: int = 0
    notes: list[str] = field(default_factory=list)


def may_preempt(pod: PodInfo, nominated_node: str, nodes: Mapping[str, NodeInfo]) -> str:
    """ "" when `pod` may preempt, else why not."""
    if pod.preempt_never:
        return "preemptionPolicy is Never"
    holder = nodes.get(nominated_node) if nominated_node else None
    if holder is not None and any(
        o.terminating and o.priority < pod.priority for o in holder.pods.values()
    ):
        return f"waiting for victims to terminate on {nominated_node}"
    return ""


def _fits(pod: PodInfo, nodes: Mapping[str, NodeInfo], order: Sequence[str], node: NodeInfo,
          affinity_nodes: Sequence[str]) -> bool:  # fmt: skip
    """Whether `pod` fits `node` (standing in for its namesake in `nodes`), PreFilter states
    recomputed with it."""
    view = {**nodes, node.name: node}
    anti = plugins.prefilter_anti_affinity(pod, view, affinity_nodes)
    spread = plugins.NO_SPREAD
    if any(c.hard for c in pod.spread):
        spread = prefilter_spread(pod, view, order, plugins.NODE_CHECKS)
    return not plugins.run_filters(pod, node, anti, spread)


def _victims_on(
    pod: PodInfo,
    node: NodeInfo,
    nodes: Mapping[str, NodeInfo],
    order: Sequence[str],
    affinity_nodes: Sequence[str],
    budgets: Sequence[Budget],
) -> Candidate | None:
    lower = [o for o in node.pods.values() if o.priority < pod.priority and not o.terminating]
    if not lower:
        return None
    gone = {o.key for o in lower}
    if not _fits(pod, nodes, order, clone_node(node, drop=gone), affinity_nodes):
        return None
    allowed = [b.allowed for b in budgets]
    breaking: list[PodInfo] = []
    keeping: list[PodInfo] = []
    for o in sorted(lower, key=lambda p: -p.priority):
        hit = [i for i, b in enumerate(budgets) if b.covers(o)]
        for i in hit:
            allowed[i] -= 1
        (breaking if any(allowed[i] < 0 for i in hit) else keeping).append(o)
    victims: list[PodInfo] = []
    violations = 0
    for group, breaks in ((breaking, True), (keeping, False)):
        for o in group:
            gone.discard(o.key)
            if not _fits(pod, nodes, order, clone_node(node, drop=gone), affinity_nodes):
                gone.add(o.key)
                victims.append(o)
                violations += breaks
    return Candidate(node.name, tuple(victims), violations)


def select(
    pod: PodInfo,
    nodes: Mapping[str, NodeInfo],
    order: Sequence[str],
    *,
    affinity_nodes: Sequence[str] = (),
    budgets: Sequence[Budget] = (),
) -> Outcome:
    """The best node to preempt on for `pod`, with its victims (see the module's docstring;
    call `may_preempt` first)."""
    anti = plugins.prefilter_anti_affinity(pod, nodes, affinity_nodes)
    best: Candidate | None = None
    considered = 0
    for name in order:
        node = nodes[name]
        reasons = plugins.run_filters(pod, node, anti)
        if not reasons or any(r in UNRESOLVABLE or r.startswith("node(s) had untolerated")
                              for r in reasons):  # fmt: skip
            continue
        considered += 1
        cand = _victims_on(pod, node, nodes, order, affinity_nodes, budgets)
        if cand is not None and cand.victims and (best is None or cand.rank() < best.rank()):
            best = cand
    if best is None:
        return Outcome(None, "no node where evicting lower-priority pods would help", considered)
    return Outcome(best, "", considered)
