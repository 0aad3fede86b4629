"""Inter-pod affinity and anti-affinity (kube-scheduler's InterPodAffinity plugin), as a
PreFilter computed once per pod, a Filter of O(terms) per node and a Score.

PreFilter (`prefilter_anti_affinity`) walks the bound pods once and reduces them to topology
domains, (label key, value) pairs:

- `own`: domains holding a pod that one of the incoming pod's required anti-affinity terms
  matches: refused ("node(s) didn't match pod anti-affinity rules");
- `existing`: domains of running pods whose own required anti-affinity terms match the
  incoming pod (the symmetric check): refused ("node(s) didn't satisfy existing pods
  anti-affinity rules");
- `affinity`: for the incoming pod's required affinity terms, the domains of each term's key
  holding a pod that matches *every* term; a node must be in one for each term ("node(s)
  didn't match pod affinity rules"), or, when no pod anywhere matches and the pod matches
  its own terms (the first replica of a group that wants to be together), merely have each
  term's topology label.

The incoming pod's terms need every bound pod (one pass, O(pods)); the reverse direction
only the nodes running pods with terms of their own (the cache keeps that list). A node
without a term's topology label is in no domain of that key.

Score (`score_raw`, then `normalize_min_max`): for each domain, + the weight of the incoming
pod's preferred affinity terms each matching pod there counts for, - the preferred
anti-affinity ones; + existing pods' preferred affinity terms (and, with weight 1,
required affinity terms) that match the incoming pod, - their preferred anti-affinity
terms; a node scores the sum over its domains, mapped onto 0..100 between the lowest and
highest feasible node.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from k8semu.scheduler.framework import AffinityTerm, NodeInfo, PodInfo
from k8semu.scheduler.topology import TopologyIndex, one_label

REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
REASON_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
REASON_AFFINITY = "node(s) didn't match pod affinity rules"
# An existing pod's required affinity term matching the incoming pod counts this much in the
# score (kube-scheduler's hardPodAffinityWeight default).
HARD_POD_AFFINITY_WEIGHT = 1

Pair = tuple[str, str]
# A score part read per node: (topology key, weight, pods per domain value).
Lookup = tuple[str, int, Mapping[str, int]]


@dataclass(frozen=True, slots=True)
class AntiAffinityState:
    """The PreFilter's result for one pod (see the module's docstring). `affinity_keys`: the
    topology keys of its required affinity terms; `affinity_self`: no pod matches them all
    yet and the pod matches them itself."""

    own: frozenset[Pair] = frozenset()
    existing: frozenset[Pair] = frozenset()
    affinity_keys: tuple[str, ...] = ()
    affinity: frozenset[Pair] = frozenset()
    affinity_self: bool = False

    @property
    def empty(self) -> bool:
        return not self.own and not self.existing and not self.affinity_keys


NO_ANTI_AFFINITY = AntiAffinityState()


def _matches_all(terms: Sequence[AffinityTerm], pod: PodInfo) -> bool:
    return all(t.matches_pod(pod.namespace, pod.labels) for t in terms)


def _own_domains(pod: PodInfo, nodes: Mapping[str, NodeInfo]) -> tuple[set[Pair], set[Pair]]:
    """(anti-affinity domains, affinity domains) from one pass over every bound pod."""
    own: set[Pair] = set()
    together: set[Pair] = set()
    anti, affinity = pod.anti_affinity, pod.affinity
    for info in nodes.values():
        if not info.pods:
            continue
        labels = info.labels
        for other in info.pods.values():
            if other.key == pod.key:
                continue
            for term in anti:
                value = labels.get(term.topology_key)
                if value is not None and term.matches_pod(other.namespace, other.labels):
                    own.add((term.topology_key, value))
            if affinity and _matches_all(affinity, other):
                for term in affinity:
                    value = labels.get(term.topology_key)
                    if value is not None:
                        together.add((term.topology_key, value))
    return own, together


def prefilter_anti_affinity(
    pod: PodInfo,
    nodes: Mapping[str, NodeInfo],
    nodes_with_affinity: Iterable[str] = (),
    topology: TopologyIndex | None = None,
) -> AntiAffinityState:
    """The domains `pod` must avoid or join. `nodes_with_affinity`: the nodes running pods
    that have inter-pod terms of their own (the reverse direction looks only there);
    `topology`: the cache's term tables (for a pod on no node), which answer that direction
    per distinct term instead of per pod."""
    own: set[Pair] = set()
    together: set[Pair] = set()
    if pod.anti_affinity or pod.affinity:
        own, together = _own_domains(pod, nodes)
    existing: set[Pair] = set()
    if topology is not None:
        for term, domains in topology.terms("anti_affinity").items():
            if term.matches_pod(pod.namespace, pod.labels):
                existing.update((term.topology_key, value) for value in domains)
        nodes_with_affinity = ()
    for name in nodes_with_affinity:
        holder = nodes.get(name)
        if holder is None:
            continue
        for other in holder.pods.values():
            if other.key == pod.key:
                continue
            for term in other.anti_affinity:
                value = holder.labels.get(term.topology_key)
                if value is not None and term.matches_pod(pod.namespace, pod.labels):
                    existing.add((term.topology_key, value))
    keys = tuple(t.topology_key for t in pod.affinity)
    if not own and not existing and not keys:
        return NO_ANTI_AFFINITY
    return AntiAffinityState(
        frozenset(own),
        frozenset(existing),
        keys,
        frozenset(together),
        bool(keys) and not together and _matches_all(pod.affinity, pod),
    )


def filter_anti_affinity(pod: PodInfo, node: NodeInfo, state: AntiAffinityState) -> str | None:
    """The Filter: required affinity, then anti-affinity, then existing pods' anti-affinity."""
    if state.empty:
        return None
    labels = node.labels
    for key in state.affinity_keys:
        value = labels.get(key)
        if value is None or (not state.affinity_self and (key, value) not in state.affinity):
            return REASON_AFFINITY
    for key, value in state.own:
        if labels.get(key) == value:
            return REASON_ANTI_AFFINITY
    for key, value in state.existing:
        if labels.get(key) == value:
            return REASON_EXISTING_ANTI_AFFINITY
    return None


# ---- score -----------------------------------------------------------------------------------


def _add_incoming(
    pod: PodInfo,
    nodes: Mapping[str, NodeInfo],
    weights: dict[Pair, int],
    lookups: list[Lookup],
    topology: TopologyIndex | None,
) -> None:
    """The incoming pod's preferred terms, over every bound pod (a term of one label, with
    `topology`, as a lookup in its table instead)."""
    signed = [(t, t.weight) for t in pod.preferred_affinity]
    signed += [(t, -t.weight) for t in pod.preferred_anti_affinity]
    if topology is not None:
        rest = []
        for term, weight in signed:
            label = one_label(term)
            if label is None:
                rest.append((term, weight))
            else:
                table = topology.domains(term.topology_key, label)
                lookups.append((term.topology_key, weight, table.pods))
        signed = rest
    for info in nodes.values():
        if not info.pods:
            continue
        for term, weight in signed:
            value = info.labels.get(term.topology_key)
            if value is None:
                continue
            hits = _hits(term, info, pod)
            if hits:
                weights[(term.topology_key, value)] += weight * hits


def _hits(term: AffinityTerm, node: NodeInfo, pod: PodInfo) -> int:
    """Pods on `node` (other than `pod`) that `term` matches; one lookup for a term of one
    label in one namespace (terminating pods are left out there, as they soon leave)."""
    sel = term.selector
    if (len(sel.labels) == 1 and not sel.expressions and not sel.match_nothing
            and not term.any_namespace and len(term.namespaces) == 1):  # fmt: skip
        ((key, value),) = sel.labels
        (ns,) = term.namespaces
        return node.label_counts.get((ns, key, value), 0) - (
            pod.key in node.pods and term.matches_pod(pod.namespace, pod.labels)
        )
    return sum(
        1
        for o in node.pods.values()
        if o.key != pod.key and term.matches_pod(o.namespace, o.labels)
    )


# The existing pods' terms that score: (kind, sign; 0 for a required term's fixed weight).
_SCORED_KINDS = (("affinity", 0), ("preferred_affinity", 1), ("preferred_anti_affinity", -1))


def _term_weight(term: AffinityTerm, sign: int) -> int:
    return HARD_POD_AFFINITY_WEIGHT if sign == 0 else sign * term.weight


def _add_existing(
    pod: PodInfo, nodes: Mapping[str, NodeInfo], holders: Iterable[str], weights: dict[Pair, int]
) -> None:
    """Existing pods' terms that match the incoming pod."""
    ns, labels = pod.namespace, pod.labels
    for name in holders:
        holder = nodes.get(name)
        if holder is None:
            continue
        where = holder.labels
        for other in holder.pods.values():
            if other.key == pod.key:
                continue
            for terms, sign in ((other.affinity, 0), (other.preferred_affinity, 1),
                                (other.preferred_anti_affinity, -1)):  # fmt: skip
                for term in terms:
                    value = where.get(term.topology_key)
                    if value is not None and term.matches_pod(ns, labels):
                        weights[(term.topology_key, value)] += _term_weight(term, sign)


def _existing_lookups(pod: PodInfo, topology: TopologyIndex, lookups: list[Lookup]) -> None:
    """_add_existing from the term tables: each distinct term checked once."""
    ns, labels = pod.namespace, pod.labels
    for kind, sign in _SCORED_KINDS:
        for term, domains in topology.terms(kind).items():
            if term.matches_pod(ns, labels):
                lookups.append((term.topology_key, _term_weight(term, sign), domains))


def score_weights(
    pod: PodInfo,
    nodes: Mapping[str, NodeInfo],
    nodes_with_affinity: Iterable[str],
    topology: TopologyIndex | None = None,
) -> tuple[dict[Pair, int], list[Lookup]]:
    """The PreScore: weight per topology domain, and the parts `topology` answers per node
    instead (both empty: the plugin scores nothing)."""
    weights: dict[Pair, int] = defaultdict(int)
    lookups: list[Lookup] = []
    if pod.preferred_affinity or pod.preferred_anti_affinity:
        _add_incoming(pod, nodes, weights, lookups, topology)
    if topology is not None:
        _existing_lookups(pod, topology, lookups)
    else:
        _add_existing(pod, nodes, nodes_with_affinity, weights)
    return {pair: w for pair, w in weights.items() if w}, lookups


def by_key(weights: Mapping[Pair, int]) -> dict[str, dict[str, int]]:
    """The weights grouped by topology key, so a node's score costs a lookup per key."""
    grouped: dict[str, dict[str, int]] = defaultdict(dict)
    for (key, value), w in weights.items():
        grouped[key][value] = w
    return grouped


def score_raw(node: NodeInfo, grouped: Mapping[str, Mapping[str, int]]) -> int:
    """A node's raw score: the weights of the domains it is in (`grouped`: by_key's; the
    caller adds its lookups' weight times the pods counted in the node's domain)."""
    labels = node.labels
    total = 0
    for key, values in grouped.items():
        value = labels.get(key)
        if value is not None:
            total += values.get(value, 0)
    return total


def normalize_min_max(raw: Sequence[float]) -> list[float]:
    """100 * (s - min) / (max - min); all 0 when every node scores the same."""
    if not raw:
        return []
    low, high = min(raw), max(raw)
    if high == low:
        return [0.0] * len(raw)
    return [100.0 * (r - low) / (high - low) for r in raw]
