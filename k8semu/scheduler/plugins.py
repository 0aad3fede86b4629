"""Filter and score plugins: pure functions of a `PodInfo` and a `NodeInfo` (framework.py).

A filter returns None when the node can take the pod, or the reason it cannot, worded as
kube-scheduler words it ("Insufficient cpu", "node(s) had untolerated taint {key: value}"), so
`fit_error_message` can print Kubernetes' "0/3 nodes are available: ..." line. A score returns
a raw number for one node; `normalize_*` map raw numbers over the feasible nodes onto 0..100
(MAX_SCORE) where a plugin needs the whole set, as Kubernetes' NormalizeScore does.

Nothing here does I/O, reads a clock or keeps state between calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from k8semu.api.taints import tolerated, untolerated_taint
from k8semu.pb.api.v1 import core_pb2
from k8semu.scheduler.framework import (
    DOES_NOT_EXIST,
    EXISTS,
    GT,
    IN,
    LT,
    NOT_IN,
    NodeInfo,
    NodeRequirement,
    NodeTerm,
    PodInfo,
)
from k8semu.scheduler.interpod import (
    NO_ANTI_AFFINITY,
    REASON_AFFINITY,
    REASON_ANTI_AFFINITY,
    REASON_EXISTING_ANTI_AFFINITY,
    AntiAffinityState,
    filter_anti_affinity,
    prefilter_anti_affinity,
)
from k8semu.scheduler.spread import NO_SPREAD, SpreadState, filter_spread

__all__ = [
    "NO_ANTI_AFFINITY",
    "NO_SPREAD",
    "REASON_AFFINITY",
    "REASON_ANTI_AFFINITY",
    "REASON_EXISTING_ANTI_AFFINITY",
    "AntiAffinityState",
    "SpreadState",
    "filter_anti_affinity",
    "prefilter_anti_affinity",
]

MAX_SCORE = 100

# Kubernetes' reason strings (the FailedScheduling message counts nodes per reason).
REASON_NOT_READY = "node(s) were not ready"
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_CPU = "Insufficient cpu"
REASON_MEMORY = "Insufficient memory"
REASON_PODS = "Too many pods"
REASON_NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_PORTS = "node(s) didn't have free ports for the requested pod ports"

# Score weights, as kube-scheduler's default profile weighs these plugins.
WEIGHT_LEAST_ALLOCATED = 1
WEIGHT_BALANCED = 1
WEIGHT_NODE_AFFINITY = 2
WEIGHT_TAINT = 3
WEIGHT_INTER_POD_AFFINITY = 2
WEIGHT_TOPOLOGY_SPREAD = 2

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE = 5
DEFAULT_PERCENTAGE_BASE = 50
PERCENTAGE_NODES_DIVISOR = 125


def num_feasible_nodes_to_find(num_all_nodes: int, percentage: int = 0) -> int:
    """How many feasible nodes to look for before scoring (kube-scheduler's adaptive rule):
    every node below 100; else `percentage`% (0: max(5, 50 - nodes/125)%), at least 100."""
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND or percentage >= 100:
        return num_all_nodes
    adaptive = percentage
    if adaptive <= 0:
        adaptive = max(
            MIN_FEASIBLE_NODES_PERCENTAGE,
            DEFAULT_PERCENTAGE_BASE - num_all_nodes // PERCENTAGE_NODES_DIVISOR,
        )
    return max(MIN_FEASIBLE_NODES_TO_FIND, num_all_nodes * adaptive // 100)


# ---- filters ---------------------------------------------------------------------------------


def filter_node_ready(pod: PodInfo, node: NodeInfo) -> str | None:
    """The node's Ready condition is True."""
    return None if node.ready else REASON_NOT_READY


def filter_node_unschedulable(pod: PodInfo, node: NodeInfo) -> str | None:
    """spec.unschedulable (kubectl cordon) keeps new pods off, unless they tolerate the
    node.kubernetes.io/unschedulable:NoSchedule taint as Kubernetes allows."""
    if not node.unschedulable:
        return None
    probe = core_pb2.Taint(key="node.kubernetes.io/unschedulable", effect="NoSchedule")
    if tolerated(probe, pod.tolerations):
        return None
    return REASON_UNSCHEDULABLE


def insufficient_resources(pod: PodInfo, node: NodeInfo) -> list[str]:
    """Every resource the node lacks for the pod (allocatable minus what its pods request)."""
    reasons = []
    if node.pod_count + 1 > node.alloc_pods:
        reasons.append(REASON_PODS)
    if pod.milli_cpu and node.requested_cpu + pod.milli_cpu > node.alloc_cpu:
        reasons.append(REASON_CPU)
    if pod.memory and node.requested_memory + pod.memory > node.alloc_memory:
        reasons.append(REASON_MEMORY)
    return reasons


def _requirement_matches(req: NodeRequirement, value: str | None) -> bool:
    op = req.operator
    if op == IN:
        return value is not None and value in req.values
    if op == NOT_IN:
        return value is None or value not in req.values
    if op == EXISTS:
        return value is not None
    if op == DOES_NOT_EXIST:
        return value is None
    if value is None:
        return False
    try:
        have = int(value)
    except ValueError:
        return False
    if op == GT:
        return have > req.number
    if op == LT:
        return have < req.number
    return False


def term_matches(term: NodeTerm, node: NodeInfo) -> bool:
    """A nodeSelectorTerm: all its requirements hold (an empty term matches nothing).
    matchFields supports `metadata.name`, as Kubernetes does."""
    if not term.expressions and not term.fields:
        return False
    labels = node.labels
    for req in term.expressions:
        if not _requirement_matches(req, labels.get(req.key)):
            return False
    for req in term.fields:
        value = node.name if req.key == "metadata.name" else None
        if not _requirement_matches(req, value):
            return False
    return True


def filter_node_affinity(pod: PodInfo, node: NodeInfo) -> str | None:
    """spec.nodeSelector (every label equal) and required node affinity (any term matches)."""
    labels = node.labels
    for key, value in pod.node_selector:
        if labels.get(key) != value:
            return REASON_NODE_AFFINITY
    terms = pod.required_terms
    if terms is not None and not any(term_matches(t, node) for t in terms):
        return REASON_NODE_AFFINITY
    return None


def filter_taints(pod: PodInfo, node: NodeInfo) -> str | None:
    """NoSchedule and NoExecute taints must all be tolerated."""
    if not node.schedule_taints:
        return None
    taint = untolerated_taint(node.schedule_taints, pod.tolerations)
    if taint is None:
        return None
    return f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}"


def _node_affinity_ok(pod: PodInfo, node: NodeInfo) -> bool:
    return filter_node_affinity(pod, node) is None


def _taints_ok(pod: PodInfo, node: NodeInfo) -> bool:
    return filter_taints(pod, node) is None


# What the spread plugin asks of a node to count it (nodeAffinityPolicy, nodeTaintsPolicy).
NODE_CHECKS = (_node_affinity_ok, _taints_ok)


def filter_host_ports(pod: PodInfo, node: NodeInfo) -> str | None:
    """No wanted (hostIP, protocol, hostPort) may clash with one in use: the same protocol and
    port on the same IP, or where either side is 0.0.0.0 (every IP)."""
    if not pod.host_ports or not node.ports:
        return None
    for ip, protocol, port in pod.host_ports:
        for used_ip, used_protocol, used_port in node.ports:
            if used_port != port or used_protocol != protocol:
                continue
            if ip == used_ip or ip == "0.0.0.0" or used_ip == "0.0.0.0":
                return REASON_PORTS
    return None


def run_filters(
    pod: PodInfo, node: NodeInfo, anti: AntiAffinityState, spread: SpreadState = NO_SPREAD
) -> list[str]:
    """The reasons `node` cannot take `pod` (empty: it fits). Stops at the first failing
    plugin, as kube-scheduler does; the resource plugin reports every resource it lacks.
    `anti` and `spread` are the PreFilter states of the inter-pod and spread plugins."""
    if not node.ready:
        return [REASON_NOT_READY]
    if node.unschedulable and (reason := filter_node_unschedulable(pod, node)):
        return [reason]
    if pod.needs_node_match and (reason := filter_node_affinity(pod, node)):
        return [reason]
    if node.schedule_taints and (reason := filter_taints(pod, node)):
        return [reason]
    if (
        node.pod_count + 1 > node.alloc_pods
        or node.requested_cpu + pod.milli_cpu > node.alloc_cpu
        or node.requested_memory + pod.memory > node.alloc_memory
    ) and (reasons := insufficient_resources(pod, node)):
        return reasons
    if pod.host_ports and (reason := filter_host_ports(pod, node)):
        return [reason]
    if not anti.empty and (reason := filter_anti_affinity(pod, node, anti)):
        return [reason]
    if spread.constraints and (reason := filter_spread(node, spread)):
        return [reason]
    return []


def fit_error_message(num_all_nodes: int, reasons: Mapping[str, int]) -> str:
    """Kubernetes' FitError text: "0/3 nodes are available: 1 Insufficient memory, 2
    Insufficient cpu." (one "count reason" per reason, sorted as strings)."""
    parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
    text = f"0/{num_all_nodes} nodes are available"
    return f"{text}: {', '.join(parts)}." if parts else f"{text}."


def count_reasons(per_node: Iterable[Sequence[str]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for reasons in per_node:
        for reason in reasons:
            counts[reason] += 1
    return counts


# ---- scores ----------------------------------------------------------------------------------


def score_least_allocated(pod: PodInfo, node: NodeInfo) -> float:
    """The mean over cpu and memory of free capacity after placing the pod, 0..100
    (NodeResourcesFit's LeastAllocated; requests with Kubernetes' non-zero defaults)."""
    total = 0.0
    for alloc, requested in (
        (node.alloc_cpu, node.nonzero_cpu + pod.nonzero_milli_cpu),
        (node.alloc_memory, node.nonzero_memory + pod.nonzero_memory),
    ):
        if alloc > 0 and requested <= alloc:
            total += (alloc - requested) * MAX_SCORE / alloc
    return total / 2


def score_balanced_allocation(pod: PodInfo, node: NodeInfo) -> float:
    """100 when cpu and memory would be used in equal shares, less as they diverge
    (NodeResourcesBalancedAllocation: 1 - standard deviation of the fractions)."""
    if node.alloc_cpu <= 0 or node.alloc_memory <= 0:
        return 0.0
    cpu = min(1.0, (node.nonzero_cpu + pod.nonzero_milli_cpu) / node.alloc_cpu)
    mem = min(1.0, (node.nonzero_memory + pod.nonzero_memory) / node.alloc_memory)
    return (1.0 - abs(cpu - mem) / 2) * MAX_SCORE


def score_resources(pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[float]:
    """WEIGHT_LEAST_ALLOCATED * score_least_allocated + WEIGHT_BALANCED *
    score_balanced_allocation for each node, in one pass (the scheduler's hot loop; tests
    check it equals the two plugins)."""
    pc, pm = pod.nonzero_milli_cpu, pod.nonzero_memory
    w_least, w_bal = WEIGHT_LEAST_ALLOCATED, WEIGHT_BALANCED
    out = []
    for n in nodes:
        ac, am = n.alloc_cpu, n.alloc_memory
        rc, rm = n.nonzero_cpu + pc, n.nonzero_memory + pm
        least = 0.0
        if ac > 0 and rc <= ac:
            least += (ac - rc) * MAX_SCORE / ac
        if am > 0 and rm <= am:
            least += (am - rm) * MAX_SCORE / am
        if ac <= 0 or am <= 0:
            balanced = 0.0
        else:
            fc = rc / ac if rc < ac else 1.0
            fm = rm / am if rm < am else 1.0
            balanced = (1.0 - abs(fc - fm) / 2) * MAX_SCORE
        out.append(w_least * least / 2 + w_bal * balanced)
    return out


def score_node_affinity(pod: PodInfo, node: NodeInfo) -> int:
    """Raw: sum of the weights of the preferred node affinity terms the node matches."""
    return sum(p.weight for p in pod.preferred_terms if term_matches(p.term, node))


def normalize_max(raw: Sequence[float], *, reverse: bool = False) -> list[float]:
    """Scale onto 0..100 by the maximum (DefaultNormalizeScore); `reverse` flips it so that
    the smallest raw value scores highest."""
    most = max(raw, default=0)
    if most <= 0:
        return [float(MAX_SCORE) if reverse else 0.0] * len(raw)
    if reverse:
        return [MAX_SCORE - MAX_SCORE * r / most for r in raw]
    return [MAX_SCORE * r / most for r in raw]


def score_taint_count(pod: PodInfo, node: NodeInfo) -> int:
    """Raw: PreferNoSchedule taints the pod does not tolerate (tolerations with an effect of
    PreferNoSchedule or none count, as in Kubernetes)."""
    if not node.prefer_taints:
        return 0
    tols = [t for t in pod.tolerations if t.effect in ("", "PreferNoSchedule")]
    return sum(1 for taint in node.prefer_taints if not tolerated(taint, tols))
