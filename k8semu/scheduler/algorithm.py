"""One scheduling decision (kube-scheduler's schedulePod): find feasible nodes, starting where
the last search stopped and stopping after `num_feasible_nodes_to_find` of them, score those,
and pick the best (ties broken at random).

Pure apart from the injected `random.Random`: it reads a snapshot of the cache's NodeInfos
and returns a `Decision`; it writes nothing (assuming the pod is the caller's job).
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from k8semu.scheduler import interpod, plugins
from k8semu.scheduler.framework import NodeInfo, PodInfo, clone_node
from k8semu.scheduler.spread import (
    NO_SPREAD,
    REASON_SPREAD,
    REASON_SPREAD_LABEL,
    SpreadState,
    prefilter_spread,
    score_spread,
)
from k8semu.scheduler.topology import TopologyIndex


@dataclass(frozen=True, slots=True)
class Decision:
    """`node` is the chosen node's name, or "" when none fits; then `reasons` counts, per
    reason, the nodes that failed for it, and `message` is Kubernetes' FitError text.
    `next_start` is where the next search should begin; `evaluated` how many nodes were
    filtered and `feasible` how many of those fit."""

    node: str
    num_nodes: int
    evaluated: int
    feasible: int
    next_start: int
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def message(self) -> str:
        return plugins.fit_error_message(self.num_nodes, self.reasons)


def schedule(
    pod: PodInfo,
    nodes: Mapping[str, NodeInfo],
    order: Sequence[str],
    *,
    start: int = 0,
    percentage: int = 0,
    nodes_with_affinity: Sequence[str] = (),
    nominated: Mapping[str, Sequence[PodInfo]] | None = None,
    label_keys: Mapping[str, int] | None = None,
    rng: random.Random | None = None,
    topology: TopologyIndex | None = None,
) -> Decision:
    """Choose a node for `pod` among `order` (names of `nodes` that have a Node object);
    `nodes_with_affinity`: the nodes running pods with inter-pod terms (the cache's list);
    `nominated`: pods waiting for room preemption makes on a node, which a pod of lower or
    equal priority must leave to them (counted there as if bound); `label_keys`: how many
    nodes have each label key (the cache's count), which spares the spread score a scan;
    `topology`: the cache's per-domain tables of `nodes` (the PreFilter's counts without a
    pass over every node and pod; not used for a pod the cache has on a node)."""
    num = len(order)
    if num == 0:
        return Decision("", 0, 0, 0, 0)
    if topology is not None and topology.placed(pod):
        topology = None
    want = plugins.num_feasible_nodes_to_find(num, percentage)
    anti = plugins.prefilter_anti_affinity(pod, nodes, nodes_with_affinity, topology)
    spread = (
        prefilter_spread(pod, nodes, order, plugins.NODE_CHECKS, topology)
        if pod.spread
        else NO_SPREAD
    )
    start %= num
    feasible, reasons, evaluated = _find_feasible(
        pod, nodes, itertools.chain(order[start:], order[:start]), want, anti, spread, nominated
    )
    next_start = (start + evaluated) % num
    if not feasible:
        return Decision("", num, evaluated, 0, next_start, reasons)
    if len(feasible) == 1:
        return Decision(feasible[0].name, num, evaluated, 1, next_start)
    scores = score(pod, feasible, nodes, order, nodes_with_affinity, label_keys, topology)
    best = max(scores)
    winners = [i for i, s in enumerate(scores) if s == best]
    pick = winners[0] if len(winners) == 1 else (rng or random).choice(winners)
    return Decision(feasible[pick].name, num, evaluated, len(feasible), next_start)


def _find_feasible(
    pod: PodInfo,
    nodes: Mapping[str, NodeInfo],
    names: Iterable[str],
    want: int,
    anti: interpod.AntiAffinityState,
    spread: SpreadState,
    nominated: Mapping[str, Sequence[PodInfo]] | None,
) -> tuple[list[NodeInfo], Counter[str], int]:
    """Filter `names` in order until `want` fit: (those nodes, the reasons of the others,
    how many were looked at)."""
    feasible: list[NodeInfo] = []
    reasons: Counter[str] = Counter()
    run_filters = plugins.run_filters
    # The common case - a pod with no selector, affinity or host port on a node that is
    # Ready, schedulable and untainted - needs only the resource check: done inline (the
    # same test as plugins.run_filters, without a call per node; tests compare the two).
    simple = not pod.needs_node_match and not pod.host_ports and anti.empty
    # A single DoNotSchedule constraint is tested inline too (its allowed domains:
    # SpreadState.passes, unrolled), and the only reason it can give counted at the end.
    gated = bool(spread.gates)
    simple = simple and (gated or not spread.constraints)
    gate_key, allowed, zero_ok = spread.gates[0] if gated else ("", frozenset[str](), False)
    known = spread.constraints[0].counts if gated else {}
    refused = unlabelled = 0
    cpu, mem = pod.milli_cpu, pod.memory
    evaluated = 0
    for name in names:
        info = nodes[name]
        if nominated and name in nominated:
            info = _with_nominated(pod, info, nominated[name])
        evaluated += 1
        if (
            simple
            and info.plain
            and info.pod_count < info.alloc_pods
            and info.requested_cpu + cpu <= info.alloc_cpu
            and info.requested_memory + mem <= info.alloc_memory
        ):
            if gated:
                value = info.labels.get(gate_key)
                if value is None:
                    unlabelled += 1
                    continue
                if value not in allowed and not (zero_ok and value not in known):
                    refused += 1
                    continue
        else:
            failed = run_filters(pod, info, anti, spread)
            if failed:
                for reason in failed:
                    reasons[reason] += 1
                continue
        feasible.append(info)
        if len(feasible) >= want:
            break
    if refused:
        reasons[REASON_SPREAD] += refused
    if unlabelled:
        reasons[REASON_SPREAD_LABEL] += unlabelled
    return feasible, reasons, evaluated


def _with_nominated(pod: PodInfo, node: NodeInfo, waiting: Sequence[PodInfo]) -> NodeInfo:
    """`node` with the pods nominated to it that `pod` must not take the room of."""
    ahead = [w for w in waiting if w.key != pod.key and w.priority >= pod.priority]
    return clone_node(node, add=ahead) if ahead else node


def _add(totals: list[float], weight: int, scores: Sequence[float]) -> list[float]:
    return [t + weight * s for t, s in zip(totals, scores, strict=True)]


def score(
    pod: PodInfo,
    feasible: Sequence[NodeInfo],
    nodes: Mapping[str, NodeInfo] | None = None,
    order: Sequence[str] = (),
    nodes_with_affinity: Sequence[str] = (),
    label_keys: Mapping[str, int] | None = None,
    topology: TopologyIndex | None = None,
) -> list[float]:
    """The weighted sum of every score plugin for each feasible node (`nodes`, `order`: the
    whole cluster, for the plugins that count pods beyond the feasible nodes; `topology`:
    their per-domain tables)."""
    totals = plugins.score_resources(pod, feasible)
    everything = nodes if nodes is not None else {n.name: n for n in feasible}
    names = order or [n.name for n in feasible]
    spread = score_spread(
        pod, feasible, everything, names, plugins.NODE_CHECKS, label_keys, topology
    )
    if spread is not None:
        totals = _add(totals, plugins.WEIGHT_TOPOLOGY_SPREAD, spread)
    if pod.preferred_affinity or pod.preferred_anti_affinity or nodes_with_affinity:
        weights, lookups = interpod.score_weights(pod, everything, nodes_with_affinity, topology)
        if weights or lookups:
            grouped = interpod.by_key(weights)
            raw = [interpod.score_raw(n, grouped) for n in feasible]
            for key, weight, counts in lookups:  # a pass per lookup: no call per node
                get = counts.get  # NUL is in no label value: a node without the key gets 0
                raw = [
                    r + weight * get(n.labels.get(key, "\0"), 0)
                    for r, n in zip(raw, feasible, strict=True)
                ]
            normalized = interpod.normalize_min_max(raw)
            totals = _add(totals, plugins.WEIGHT_INTER_POD_AFFINITY, normalized)
    if pod.preferred_terms:
        raw = [plugins.score_node_affinity(pod, n) for n in feasible]
        aff = plugins.normalize_max(raw)
        totals = [t + plugins.WEIGHT_NODE_AFFINITY * s for t, s in zip(totals, aff, strict=True)]
    if any([n.prefer_taints for n in feasible]):
        raw_t = [plugins.score_taint_count(pod, n) for n in feasible]
        taint = plugins.normalize_max(raw_t, reverse=True)
        totals = [t + plugins.WEIGHT_TAINT * s for t, s in zip(totals, taint, strict=True)]
    else:
        totals = [t + plugins.WEIGHT_TAINT * plugins.MAX_SCORE for t in totals]
    return totals
