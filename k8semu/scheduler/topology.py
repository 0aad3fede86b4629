"""Pods per topology domain, kept incrementally by the scheduler's cache: what kube-scheduler's
PreFilter and PreScore steps of PodTopologySpread and InterPodAffinity compute per pod, here
computed once and then updated as pods are assumed, bound and removed, so a constrained pod
costs a lookup per domain rather than a pass over every node and every pod.

Two kinds of tables, each built on first use (one pass over the nodes) and then kept:

- **label tables**, per (topology key, (namespace, label key, value)): the nodes in each
  domain (value of the topology key) and the pods not being deleted that carry the label
  there. They answer a spread constraint or affinity term that selects by one label in one
  namespace (the common shape).
- **term tables**, per inter-pod term of the bound pods (kind, term): the pods holding that
  term in each domain of its topology key. Pods of one controller share their terms, so an
  incoming pod checks each distinct term once, not each pod.

Only nodes with a Node object count. A node whose labels change (or that comes or goes)
empties the tables; the next use builds them again. Pure bookkeeping: no I/O, no clock.
The caller must not use a table for a pod that is itself on a node (the tables cannot leave
it out); `TopologyIndex` users check `placed` first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from k8semu.scheduler.framework import AffinityTerm, NodeInfo, PodInfo

Label = tuple[str, str, str]  # (namespace, key, value), NodeInfo.label_counts' key
# The inter-pod term lists a pod has, by kind (PodInfo attribute names).
TERM_KINDS = ("anti_affinity", "affinity", "preferred_affinity", "preferred_anti_affinity")
# Tables beyond this many are dropped and rebuilt on demand (bounded memory whatever the
# variety of selectors).
MAX_TABLES = 512


@dataclass(slots=True)
class DomainCounts:
    """Per domain value: `nodes` in it, `pods` counted there."""

    nodes: Counter[str] = field(default_factory=Counter)
    pods: Counter[str] = field(default_factory=Counter)


def one_label(term: AffinityTerm) -> Label | None:
    """The label table that answers `term`, when it selects by one label in one namespace."""
    sel = term.selector
    if (len(sel.labels) != 1 or sel.expressions or sel.match_nothing or term.any_namespace
            or len(term.namespaces) != 1):  # fmt: skip
        return None
    ((key, value),) = sel.labels
    (ns,) = term.namespaces
    return (ns, key, value)


class TopologyIndex:
    """See the module docstring. `nodes` is the cache's own map, read on (re)builds; `where`
    the cache's pod key -> node name."""

    def __init__(self, nodes: Mapping[str, NodeInfo], where: Callable[[str], str | None]) -> None:
        self._nodes = nodes
        self._where = where
        self._labels: dict[tuple[str, Label], DomainCounts] = {}
        self._terms: dict[str, dict[AffinityTerm, Counter[str]]] | None = None

    def placed(self, pod: PodInfo) -> bool:
        """Whether `pod` is on a node in the cache (then the tables would count it)."""
        return self._where(pod.key) is not None

    # ---- reads -------------------------------------------------------------------------

    def domains(self, topology_key: str, label: Label) -> DomainCounts:
        """The label table of (`topology_key`, `label`), built now if needed."""
        table = self._labels.get((topology_key, label))
        if table is not None:
            return table
        if len(self._labels) >= MAX_TABLES:
            self._labels.clear()
        table = self._labels[(topology_key, label)] = DomainCounts()
        for info in self._nodes.values():
            value = info.labels.get(topology_key)
            if value is None or info.node is None:
                continue
            table.nodes[value] += 1
            n = info.label_counts.get(label, 0)
            if n:
                table.pods[value] += n
        return table

    def terms(self, kind: str) -> Mapping[AffinityTerm, Counter[str]]:
        """The bound pods' terms of `kind` (a TERM_KINDS name): per distinct term, the pods
        holding it per domain of its topology key."""
        if self._terms is None:
            self._terms = {k: {} for k in TERM_KINDS}
            for info in self._nodes.values():
                for pod in info.pods.values():
                    self._count_terms(info, pod, 1)
        return self._terms[kind]

    # ---- updates (the cache calls these) -----------------------------------------------

    def pod_added(self, info: NodeInfo, pod: PodInfo) -> None:
        self._count(info, pod, 1)

    def pod_removed(self, info: NodeInfo, pod: PodInfo) -> None:
        self._count(info, pod, -1)

    def nodes_changed(self) -> None:
        """A node's labels (or its existence) changed: every table is stale."""
        self._labels.clear()
        self._terms = None

    def _count(self, info: NodeInfo, pod: PodInfo, delta: int) -> None:
        if info.node is None:
            return
        if self._labels and not pod.terminating:
            ns, labels = pod.namespace, pod.labels
            for (topology_key, (lns, key, value)), table in self._labels.items():
                if lns == ns and labels.get(key) == value:
                    where = info.labels.get(topology_key)
                    if where is not None:
                        _bump(table.pods, where, delta)
        if self._terms is not None and pod.has_affinity_terms:
            self._count_terms(info, pod, delta)

    def _count_terms(self, info: NodeInfo, pod: PodInfo, delta: int) -> None:
        if info.node is None or self._terms is None:
            return
        for kind in TERM_KINDS:
            table = self._terms[kind]
            for term in getattr(pod, kind):
                where = info.labels.get(term.topology_key)
                if where is None:
                    continue
                counts = table.get(term)
                if counts is None:
                    counts = table[term] = Counter()
                _bump(counts, where, delta)
                if not counts:
                    del table[term]


def _bump(counts: Counter[str], key: str, delta: int) -> None:
    n = counts.get(key, 0) + delta
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)
