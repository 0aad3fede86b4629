"""The scheduler's cache: one `NodeInfo` per node with the totals of the pods bound to it,
plus the pods this scheduler has *assumed* onto a node and is still binding (kube-scheduler's
assume cache), so that decisions taken while binds are in flight never overcommit a node.

Fed by the informers' event handlers (nodes; pods with spec.nodeName) and by the scheduling
loop (`assume`, `forget`). It keeps the totals incrementally: adding, updating or removing a
pod costs O(that pod). Pure bookkeeping: no I/O, no clock.

Life of an assumed pod: `assume(pod, node)` -> the bind succeeds and the informer reports the
pod with spec.nodeName (`add_pod`/`update_pod`, which confirm it) - or the bind fails and the
loop calls `forget(key)`. A pod deleted meanwhile is removed either way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2
from k8semu.scheduler.framework import NodeInfo, PodInfo, PodSpecError, pod_info, pod_key
from k8semu.scheduler.topology import TopologyIndex

log = get_logger(__name__)

_TERMINAL_PHASES = ("Succeeded", "Failed")


def occupies_node(pod: core_pb2.Pod) -> bool:
    """A pod counts against its node while bound and not finished."""
    return bool(pod.spec.node_name) and pod.status.phase not in _TERMINAL_PHASES


class SchedulerCache:
    """Invariants: every pod key is on at most one node (`_pod_node`); `order` lists the names
    of nodes with a Node object, in arrival order; `assumed` holds the keys assumed and not yet
    confirmed by the informer nor forgotten; `affinity_nodes` are the nodes running at
    least one pod with inter-pod (anti-)affinity terms."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.order: list[str] = []
        self.assumed: set[str] = set()
        self._pod_node: dict[str, str] = {}
        self._anti: dict[str, int] = {}  # node -> pods with inter-pod terms
        # How many nodes have each label key (a constraint on a key no node has is moot).
        self.label_keys: Counter[str] = Counter()
        self.priorities: Counter[int] = Counter()  # spec.priority of the pods on nodes
        # Each namespace's labels (the affinity terms' namespaceSelector), kept by the owner.
        self.namespace_labels: dict[str, dict[str, str]] = {}
        # Pods per topology domain, kept as pods come and go (the constrained pods' PreFilter).
        self.topology = TopologyIndex(self.nodes, self._pod_node.get)

    # ---- nodes ---------------------------------------------------------------------------

    def add_node(self, node: core_pb2.Node) -> None:
        name = node.metadata.name
        info = self.nodes.get(name)
        if info is None:
            info = self.nodes[name] = NodeInfo(name)
        had_node = info.node is not None
        if had_node:
            self.label_keys.subtract(info.labels.keys())
        old_labels = info.labels
        info.set_node(node)
        if not had_node or info.labels != old_labels:  # not a mere status update
            self.topology.nodes_changed()
        self.label_keys.update(info.labels.keys())
        for problem in info.problems:
            log.warning("node counted as having none of a resource", problem=problem)
        if not had_node:
            self.order.append(name)

    update_node = add_node

    def remove_node(self, name: str) -> None:
        """The Node is gone; its pods stay accounted until they are removed themselves."""
        info = self.nodes.get(name)
        if info is None or info.node is None:
            return
        self.order.remove(name)
        self.label_keys.subtract(info.labels.keys())
        self.topology.nodes_changed()
        if info.pods:
            info.node = None
        else:
            del self.nodes[name]

    def node_count(self) -> int:
        return len(self.order)

    @property
    def affinity_nodes(self) -> list[str]:
        return list(self._anti)

    # ---- pods (from the informer) ----------------------------------------------------------

    def add_pod(self, pod: core_pb2.Pod) -> None:
        """A bound pod seen by the informer (confirms an assumed one)."""
        key = pod_key(pod)
        self.assumed.discard(key)
        if not occupies_node(pod):
            self._remove(key)
            return
        try:
            info = pod_info(pod, self.namespace_labels)
        except PodSpecError as exc:
            # The API server accepted it, so keep counting it, with what can be read.
            log.warning("bound pod has unreadable requests; counted as empty", error=str(exc))
            info = PodInfo(key=key, name=pod.metadata.name, namespace=pod.metadata.namespace)
        self._place(info, pod.spec.node_name)

    update_pod = add_pod

    def remove_pod(self, pod: core_pb2.Pod) -> None:
        key = pod_key(pod)
        self.assumed.discard(key)
        self._remove(key)

    # ---- the scheduling loop's ------------------------------------------------------------

    def assume(self, pod: PodInfo, node_name: str) -> None:
        """Count `pod` on `node_name` now, before the bind is confirmed."""
        self._place(pod, node_name)
        self.assumed.add(pod.key)

    def forget(self, key: str) -> None:
        """Undo `assume` (the bind failed); a pod the informer confirmed meanwhile stays."""
        if key in self.assumed:
            self.assumed.discard(key)
            self._remove(key)

    def forget_all_assumed(self) -> None:
        for key in list(self.assumed):
            self.forget(key)

    def is_assumed(self, key: str) -> bool:
        return key in self.assumed

    def has_lower_priority(self, priority: int) -> bool:
        """Whether any pod on a node has a priority below `priority` (preemption's quick
        test: without one there is nothing to preempt)."""
        return any(p < priority for p in self.priorities)

    def node_of(self, key: str) -> str | None:
        return self._pod_node.get(key)

    def pods(self) -> Iterator[tuple[str, PodInfo]]:
        for info in self.nodes.values():
            for pod in info.pods.values():
                yield info.name, pod

    # ---- internals -------------------------------------------------------------------------

    def _place(self, pod: PodInfo, node_name: str) -> None:
        self._remove(pod.key)
        info = self.nodes.get(node_name)
        if info is None:
            info = self.nodes[node_name] = NodeInfo(node_name)
        info.add_pod(pod)
        self.topology.pod_added(info, pod)
        self._pod_node[pod.key] = node_name
        self.priorities[pod.priority] += 1
        if pod.has_affinity_terms:
            self._anti[node_name] = self._anti.get(node_name, 0) + 1

    def _remove(self, key: str) -> None:
        node_name = self._pod_node.pop(key, None)
        if node_name is None:
            return
        info = self.nodes.get(node_name)
        if info is None:
            return
        pod = info.remove_pod(key)
        if pod is not None:
            self.topology.pod_removed(info, pod)
            self.priorities[pod.priority] -= 1
            if self.priorities[pod.priority] <= 0:
                del self.priorities[pod.priority]
        if pod is not None and pod.has_affinity_terms:
            left = self._anti.get(node_name, 0) - 1
            if left > 0:
                self._anti[node_name] = left
            else:
                self._anti.pop(node_name, None)
        if info.node is None and not info.pods:
            del self.nodes[node_name]
