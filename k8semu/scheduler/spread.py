"""topologySpreadConstraints (kube-scheduler's PodTopologySpread plugin): a PreFilter that
counts, once per pod, the matching pods in each topology domain; a Filter of O(constraints)
per node for `DoNotSchedule`; a Score for `ScheduleAnyway` and for the system default
constraints of a controller's pods.

Counting, as Kubernetes counts: pods in the incoming pod's namespace that match the
constraint's labelSelector (with matchLabelKeys' values added) and are not being deleted,
on *eligible* nodes: nodes that match the pod's nodeSelector and required node affinity
(nodeAffinityPolicy Honor, the default; Ignore counts every node), whose taints the pod
tolerates when nodeTaintsPolicy is Honor (default Ignore), and that have every topology key
of the pod's constraints. The system defaults (hostname maxSkew 3, zone maxSkew 5) count the
pods of the same controller, and a node without the zone label is merely outside that one.

Filter: a node without the topology key is refused ("... (missing required label)"); else
`pods in its domain + 1 (if the pod matches its own selector) - the least pods in any
eligible domain` must not exceed maxSkew. With fewer eligible domains than minDomains the
least is taken as 0, so new domains (zones, nodes) get pods first.

Score: for each node, the sum over soft constraints of `pods in its domain * log(domains +
2) + maxSkew - 1`, then `100 * (max + min - s) / max` over the feasible nodes (fewest
matching pods best); a node missing an explicit constraint's key scores 0. The hostname
domains are the feasible nodes themselves, as in kube-scheduler.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from k8semu.scheduler.framework import HOSTNAME_LABEL, NodeInfo, PodInfo, SpreadConstraint
from k8semu.scheduler.topology import TopologyIndex

REASON_SPREAD = "node(s) didn't match pod topology spread constraints"
REASON_SPREAD_LABEL = (
    "node(s) didn't match pod topology spread constraints (missing required label)"
)

NodeCheck = Callable[[PodInfo, NodeInfo], bool]


@dataclass(frozen=True, slots=True)
class HardCount:
    """One DoNotSchedule constraint's PreFilter result."""

    constraint: SpreadConstraint
    counts: Mapping[str, int]  # domain value -> matching pods
    least: int  # the smallest count over eligible domains (0 below minDomains)
    self_match: int


@dataclass(frozen=True, slots=True)
class SpreadState:
    """The DoNotSchedule constraints' counts, and for each its topology key with the domain
    values a node may be in (`gates`; a value no eligible node has counts 0 and passes when
    `self_match - least <= maxSkew`, the third member)."""

    constraints: tuple[HardCount, ...] = ()
    gates: tuple[tuple[str, frozenset[str], bool], ...] = ()

    def passes(self, labels: Mapping[str, str]) -> bool:
        """filter_spread(...) is None, for a node with these labels (the hot path's test)."""
        for key, allowed, zero_ok in self.gates:
            value = labels.get(key)
            if value is None:
                return False
            if value not in allowed and not (zero_ok and value not in self.constraints[0].counts):
                return False
        return True


NO_SPREAD = SpreadState()


def _one_label(c: SpreadConstraint, pod: PodInfo) -> tuple[str, str, str] | None:
    """(namespace, key, value) when `c` selects by exactly one label (label_counts' key)."""
    sel = c.selector
    if c.owner_uid or len(sel.labels) != 1 or sel.expressions or sel.match_nothing:
        return None
    key, value = sel.labels[0]
    return (pod.namespace, key, value)


def count_on(c: SpreadConstraint, pod: PodInfo, node: NodeInfo) -> int:
    """Pods on `node` that constraint `c` of `pod` counts."""
    if c.owner_uid:
        return node.owner_counts.get(c.owner_uid, 0)
    label = _one_label(c, pod)
    if label is not None:
        n = node.label_counts.get(label, 0)
        own = node.pods.get(pod.key)
        if n and own is not None and not own.terminating and c.selector.matches(own.labels):
            n -= 1
        return n
    ns, sel = pod.namespace, c.selector
    return sum(
        1
        for o in node.pods.values()
        if o.namespace == ns and not o.terminating and o.key != pod.key and sel.matches(o.labels)
    )


def _eligible(
    pod: PodInfo,
    c: SpreadConstraint,
    node: NodeInfo,
    keys: Sequence[str],
    checks: tuple[NodeCheck, NodeCheck],
) -> bool:
    if node.node is None:
        return False
    labels = node.labels
    if c.system_default:
        if c.topology_key not in labels:
            return False
    elif any(k not in labels for k in keys):
        return False
    node_affinity, taints = checks
    if c.honor_node_affinity and pod.needs_node_match and not node_affinity(pod, node):
        return False
    return not (c.honor_taints and node.schedule_taints and not taints(pod, node))


def domain_counts(
    pod: PodInfo,
    c: SpreadConstraint,
    nodes: Mapping[str, NodeInfo],
    order: Sequence[str],
    checks: tuple[NodeCheck, NodeCheck],
    topology: TopologyIndex | None = None,
) -> Counter[str]:
    """Matching pods per domain of `c`, over the eligible nodes (every eligible domain is a
    key, with 0 when it holds none). `topology`: the cache's tables, for a pod on no node."""
    keys = [k.topology_key for k in pod.spread if k.hard == c.hard]
    counts: Counter[str] = Counter()
    topology_key = c.topology_key
    plain = not pod.needs_node_match or not c.honor_node_affinity
    label = _one_label(c, pod)
    if label is not None and plain and len(keys) == 1 and not c.honor_taints:
        if topology is not None:  # the common shape, kept by the cache: one lookup per domain
            table = topology.domains(topology_key, label)
            return Counter({value: table.pods.get(value, 0) for value in table.nodes})
        # The common shape, one lookup per node (the pod being scheduled is on no node).
        for name in order:
            node = nodes[name]
            value = node.labels.get(topology_key)
            if value is not None and node.node is not None:
                counts[value] += node.label_counts.get(label, 0)
        return counts
    for name in order:
        node = nodes[name]
        value = node.labels.get(topology_key)
        if value is None:
            continue
        simple = plain and node.node is not None and len(keys) == 1 and not c.honor_taints
        if not simple and not _eligible(pod, c, node, keys, checks):
            continue
        counts[value] += count_on(c, pod, node)
    return counts


def prefilter_spread(
    pod: PodInfo,
    nodes: Mapping[str, NodeInfo],
    order: Sequence[str],
    checks: tuple[NodeCheck, NodeCheck],
    topology: TopologyIndex | None = None,
) -> SpreadState:
    """The DoNotSchedule constraints' counts. `checks`: (node affinity passes, taints
    tolerated), the plugins' own filters; `topology`: as for domain_counts."""
    hard = [c for c in pod.spread if c.hard]
    if not hard:
        return NO_SPREAD
    out = []
    for c in hard:
        counts = domain_counts(pod, c, nodes, order, checks, topology)
        least = min(counts.values(), default=0) if len(counts) >= c.min_domains else 0
        self_match = 1 if c.selector.matches(pod.labels) else 0
        out.append(HardCount(c, counts, least, self_match))
    if len(out) != 1:
        return SpreadState(tuple(out))
    hc = out[0]
    ok = frozenset(
        v for v, n in hc.counts.items() if n + hc.self_match - hc.least <= hc.constraint.max_skew
    )
    zero_ok = hc.self_match - hc.least <= hc.constraint.max_skew
    return SpreadState(tuple(out), ((hc.constraint.topology_key, ok, zero_ok),))


def filter_spread(node: NodeInfo, state: SpreadState) -> str | None:
    labels = node.labels
    for hc in state.constraints:
        value = labels.get(hc.constraint.topology_key)
        if value is None:
            return REASON_SPREAD_LABEL
    for hc in state.constraints:
        value = labels[hc.constraint.topology_key]
        skew = hc.counts.get(value, 0) + hc.self_match - hc.least
        if skew > hc.constraint.max_skew:
            return REASON_SPREAD
    return None


# ---- score -----------------------------------------------------------------------------------


def _hostname_counts(
    c: SpreadConstraint, pod: PodInfo, feasible: Sequence[NodeInfo], on_no_node: bool
) -> list[int]:
    """Per feasible node (each its own hostname domain) the pods `c` counts there
    (`on_no_node`: the caller knows the pod is on none)."""
    if c.owner_uid:
        uid = c.owner_uid
        return [n.owner_counts.get(uid, 0) for n in feasible]
    label = _one_label(c, pod)
    if label is not None and (on_no_node or not any(pod.key in n.pods for n in feasible)):
        return [n.label_counts.get(label, 0) for n in feasible]
    return [count_on(c, pod, n) for n in feasible]


def score_spread(
    pod: PodInfo,
    feasible: Sequence[NodeInfo],
    nodes: Mapping[str, NodeInfo],
    order: Sequence[str],
    checks: tuple[NodeCheck, NodeCheck],
    label_keys: Mapping[str, int] | None = None,
    topology: TopologyIndex | None = None,
) -> list[float] | None:
    """0..100 per feasible node for the ScheduleAnyway (and default) constraints; None when
    the pod has none, or none applies to any node. `label_keys`: how many nodes have each
    label key, when the caller keeps that count."""
    soft = [c for c in pod.spread if not c.hard]
    if not soft:
        return None
    raw: list[float] = [0.0] * len(feasible)
    ignored = [False] * len(feasible)
    applied = False
    for c in soft:
        key, offset = c.topology_key, c.max_skew - 1
        if key == HOSTNAME_LABEL:  # every node has it: the hot path, no per-node lookups
            weight = math.log(len(feasible) + 2)
            counts = _hostname_counts(c, pod, feasible, topology is not None)
            raw = [r + n * weight + offset for r, n in zip(raw, counts, strict=True)]
            applied = True
            continue
        if c.system_default and (
            not label_keys.get(key, 0)
            if label_keys is not None
            else not any(key in n.labels for n in feasible)
        ):
            continue  # no node is in any domain of it (no zones): it changes nothing
        domains = domain_counts(pod, c, nodes, order, checks, topology)
        if not domains:
            if not c.system_default:
                ignored = [True] * len(feasible)
            continue
        weight = math.log(len(domains) + 2)
        for i, node in enumerate(feasible):
            value = node.labels.get(key)
            if value is None:
                ignored[i] = ignored[i] or not c.system_default
                continue
            applied = True
            raw[i] += domains.get(value, 0) * weight + offset
    if not applied:
        return None
    return _normalize(raw, ignored)


def _normalize(raw: Sequence[float], ignored: Sequence[bool]) -> list[float]:
    if not any(ignored):
        high, low = max(raw), min(raw)
        if high == 0:
            return [100.0] * len(raw)
        return [100.0 * (high + low - r) / high for r in raw]
    kept = [r for r, skip in zip(raw, ignored, strict=True) if not skip]
    if not kept:
        return [0.0] * len(raw)
    high, low = max(kept), min(kept)
    out = []
    for r, skip in zip(raw, ignored, strict=True):
        if skip:
            out.append(0.0)
        elif high == 0:
            out.append(100.0)
        else:
            out.append(100.0 * (high + low - r) / high)
    return out
