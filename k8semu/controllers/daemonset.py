"""The DaemonSet controller (apps/v1): one pod per eligible node, as Kubernetes' daemon
controller.

Per key, level-triggered; `plan` is the pure decision from the DaemonSet, the Nodes and the
pods it controls:

- **Eligible nodes**: the template's nodeSelector and required node affinity match the node,
  and its NoSchedule/NoExecute taints are tolerated, counting the tolerations every daemon
  pod gets (not-ready and unreachable NoExecute, disk/memory/pid-pressure and unschedulable
  NoSchedule: a daemon runs on a cordoned or troubled node). A pod already running stays
  while only NoExecute taints are tolerated (a NoSchedule taint added later does not evict
  it). The scheduler's own filter functions decide (`k8semu/scheduler/plugins.py`).
- **Pods**: a node that should run the daemon and has no pod gets one, created with a
  required node affinity to exactly that node (`matchFields metadata.name`), so the
  scheduler binds it there, as Kubernetes does since 1.12; Failed pods are deleted (and made
  again); duplicates beyond one per node are deleted (the oldest stays); pods on nodes that
  should not run the daemon, or that are gone, are deleted.
- **History**: a ControllerRevision per distinct template, `<daemonset>-<hash>`, the newest
  for the current template, trimmed to revisionHistoryLimit (never one a live pod runs);
  `rollout history/undo` read them (k8semu/controllers/history.py).
- **Updates**: pods carry `controller-revision-hash` (the template's hash). RollingUpdate
  replaces pods of an older template node by node: with maxSurge 0, an unavailable old pod is
  deleted at once and an available one only while fewer than maxUnavailable nodes are
  without an available daemon pod (its replacement is created on the next pass); with
  maxSurge > 0, a new pod starts beside the old one on up to maxSurge nodes and the old one
  goes once the new one is available. OnDelete never replaces a running pod.
- **Status**: desiredNumberScheduled, currentNumberScheduled, numberMisscheduled,
  numberReady, updatedNumberScheduled, numberAvailable (ready for minReadySeconds),
  numberUnavailable, observedGeneration.

- **Adoption**: a live orphan pod the selector matches (left by `kubectl delete ds
  --cascade=orphan`) is adopted by a DaemonSet made again, as Kubernetes' ClaimPods does;
  the plan then keeps it where the daemon should run, replaces it by the rolling update when
  its template is older, and deletes it where the daemon should not run.

Not done: orphan adoption of revisions (a new revision is made beside the orphaned one),
failed-pod back-off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from k8semu.client import NAMESPACE_INDEX, object_key
from k8semu.controllers import _pods, history
from k8semu.controllers._podcontrol import PodOwnerController
from k8semu.controllers.context import ControllerContext
from k8semu.controllers.deployment.util import scaled_value, template_hash
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from k8semu.scheduler.framework import NodeInfo, PodSpecError, pod_info
from k8semu.scheduler.plugins import filter_node_affinity, filter_taints

log = get_logger(__name__)

API_VERSION = "apps/v1"
KIND = "DaemonSet"
REVISION_HASH = history.REVISION_HASH
# (key, effect) of the tolerations Kubernetes adds to every daemon pod.
DAEMON_TOLERATIONS = (
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
)


def revision_hash(ds: apps_pb2.DaemonSet) -> str:
    return template_hash(ds.spec.template, ds.status.collision_count)


def daemon_pod(ds: apps_pb2.DaemonSet, node_name: str, hash_: str) -> core_pb2.Pod:
    """The pod for `node_name`: the template, the revision hash, the daemon tolerations and
    a required affinity to that node alone."""
    pod = _pods.pod_from_template(ds.spec.template, ds, api_version=API_VERSION, kind=KIND)
    pod.metadata.labels[REVISION_HASH] = hash_
    have = {(t.key, t.effect) for t in pod.spec.tolerations if t.operator == "Exists"}
    for key, effect in DAEMON_TOLERATIONS:
        if (key, effect) not in have:
            pod.spec.tolerations.add(key=key, operator="Exists", effect=effect)
    required = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    del required.node_selector_terms[:]
    term = required.node_selector_terms.add()
    term.match_fields.add(key="metadata.name", operator="In", values=[node_name])
    return pod


def placement(ds: apps_pb2.DaemonSet, node: core_pb2.Node) -> tuple[bool, bool]:
    """(should run, may keep running) the daemon on `node` (NodeShouldRunDaemonPod)."""
    probe = daemon_pod(ds, node.metadata.name, "")
    probe.spec.ClearField("affinity")
    if ds.spec.template.spec.HasField("affinity"):
        probe.spec.affinity.CopyFrom(ds.spec.template.spec.affinity)
    try:
        pod = pod_info(probe)
    except PodSpecError as exc:
        log.warning(
            "daemon set template cannot be evaluated", daemonset=object_key(ds), error=str(exc)
        )
        return False, False
    info = NodeInfo(node.metadata.name, node)
    if filter_node_affinity(pod, info) is not None:
        return False, False
    keep = NodeInfo(node.metadata.name, _only_no_execute(node))
    return filter_taints(pod, info) is None, filter_taints(pod, keep) is None


def _only_no_execute(node: core_pb2.Node) -> core_pb2.Node:
    copy = _pods.copy_of(node)
    keep = [t for t in copy.spec.taints if t.effect == "NoExecute"]
    del copy.spec.taints[:]
    copy.spec.taints.extend(keep)
    return copy


def target_node(pod: core_pb2.Pod) -> str:
    """The node a daemon pod is for: where it is bound, else the node its affinity names."""
    if pod.spec.node_name:
        return pod.spec.node_name
    required = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    for term in required.node_selector_terms:
        for req in term.match_fields:
            if req.key == "metadata.name" and req.operator == "In" and len(req.values) == 1:
                return str(req.values[0])
    return ""


@dataclass(slots=True)
class Plan:
    creates: list[str] = field(default_factory=list)  # node names
    deletes: list[core_pb2.Pod] = field(default_factory=list)
    status: apps_pb2.DaemonSetStatus = field(default_factory=apps_pb2.DaemonSetStatus)
    recheck_after: float | None = None


@dataclass(slots=True)
class _Node:
    name: str
    run: bool = False
    keep: bool = False
    new: list[core_pb2.Pod] = field(default_factory=list)
    old: list[core_pb2.Pod] = field(default_factory=list)


def plan(
    ds: apps_pb2.DaemonSet,
    nodes: Iterable[core_pb2.Node],
    pods: Iterable[core_pb2.Pod],
    now: float,
) -> Plan:
    hash_ = revision_hash(ds)
    min_ready = ds.spec.min_ready_seconds
    p = Plan()
    table: dict[str, _Node] = {}
    for node in nodes:
        run, keep = placement(ds, node)
        table[node.metadata.name] = _Node(node.metadata.name, run, keep)
    for pod in pods:
        if _pods.is_pod_terminating(pod):
            continue
        n = table.get(target_node(pod))
        if n is None:  # its node is gone
            p.deletes.append(pod)
        elif pod.status.phase == "Failed":
            p.deletes.append(pod)  # made again on the next pass
        else:
            (n.new if pod.metadata.labels.get(REVISION_HASH) == hash_ else n.old).append(pod)

    def available(pod: core_pb2.Pod) -> bool:
        return _pods.is_pod_available(pod, min_ready, now)

    for n in table.values():
        if not n.keep:
            p.deletes.extend([*n.new, *n.old])
            n.new, n.old = [], []
            continue
        n.new = _keep_oldest(n.new, p.deletes)
        if not n.new:  # beside a new pod, old ones are the rolling update's to remove
            n.old = _keep_oldest(n.old, p.deletes)
        if n.run and not n.new and not n.old:
            p.creates.append(n.name)
    _roll(ds, table, p, available)
    _status(ds, table, p, available, min_ready, now)
    return p


def _keep_oldest(pods: list[core_pb2.Pod], deletes: list[core_pb2.Pod]) -> list[core_pb2.Pod]:
    """One pod per node: the oldest stays, the others join `deletes`."""
    ordered = sorted(pods, key=lambda q: q.metadata.creation_timestamp.ToNanoseconds())
    deletes.extend(ordered[1:])
    return ordered[:1]


def _roll(
    ds: apps_pb2.DaemonSet,
    table: dict[str, _Node],
    p: Plan,
    available: Callable[[core_pb2.Pod], bool],
) -> None:
    strategy = ds.spec.update_strategy
    if strategy.type != "RollingUpdate":
        return
    desired = sum(1 for n in table.values() if n.run)
    where = "spec.updateStrategy.rollingUpdate"
    rolling = strategy.rolling_update
    surge = scaled_value(rolling.max_surge, desired, round_up=True, field=f"{where}.maxSurge")
    max_unavailable = scaled_value(
        rolling.max_unavailable, desired, round_up=True, field=f"{where}.maxUnavailable"
    )
    if surge == 0 and max_unavailable == 0:
        max_unavailable = 1
    replacing = [n for n in table.values() if n.keep and n.old and n.new]
    for n in replacing:
        if any(available(q) for q in n.new):
            p.deletes.extend(n.old)  # the new pod is up: the old one goes
    waiting = [n for n in table.values() if n.keep and n.old and not n.new]
    if surge > 0:
        surging = sum(1 for n in replacing if not any(available(q) for q in n.new))
        for n in waiting[: max(surge - surging, 0)]:
            p.creates.append(n.name)  # beside the old pod, which goes once this one is up
        return
    unavailable = sum(
        1 for n in table.values() if n.run and not any(available(q) for q in [*n.new, *n.old])
    )
    for n in waiting:
        if not any(available(q) for q in n.old):
            p.deletes.extend(n.old)  # not serving anyway: replace it without using the budget
        elif unavailable < max_unavailable:
            p.deletes.extend(n.old)
            unavailable += 1


def _status(
    ds: apps_pb2.DaemonSet,
    table: dict[str, _Node],
    p: Plan,
    available: Callable[[core_pb2.Pod], bool],
    min_ready: int,
    now: float,
) -> None:
    st = p.status
    st.CopyFrom(ds.status)
    gone = {id(q) for q in p.deletes}
    st.desired_number_scheduled = sum(1 for n in table.values() if n.run)
    st.current_number_scheduled = st.number_misscheduled = 0
    st.number_ready = st.number_available = st.updated_number_scheduled = 0
    waits: list[float] = []
    for n in table.values():
        alive = [q for q in [*n.new, *n.old] if id(q) not in gone]
        if not alive:
            continue
        if not n.run:
            st.number_misscheduled += 1
            continue
        st.current_number_scheduled += 1
        st.number_ready += any(_pods.is_pod_ready(q) for q in alive)
        st.number_available += any(available(q) for q in alive)
        st.updated_number_scheduled += any(id(q) not in gone for q in n.new)
        waits.extend(
            w for q in alive if (w := _pods.available_in(q, min_ready, now)) is not None and w > 0
        )
    st.number_unavailable = st.desired_number_scheduled - st.number_available
    st.observed_generation = ds.metadata.generation
    p.recheck_after = min(waits) + 0.05 if waits else None


class DaemonSetController(PodOwnerController):
    """One instance per process; `run()` after the context's informers are started."""

    name = "daemonset"

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx, clock=clock)
        self.ds_informer = self.informer(apps_pb2.DaemonSet)
        self.node_informer = ctx.informers.informer(core_pb2.Node)
        self.pod_informer = self.informer(core_pb2.Pod, owned=True)
        self.watch(self.ds_informer, self._enqueue, deleted=self._ds_deleted)
        self.watch(self.node_informer, self._node_changed, deleted=self._node_changed)
        self.history = history.RevisionHistory(
            ctx, KIND, self.queue, self.ds_informer.cache.get_by_name
        )
        self.pod_informer.add_event_handler(
            on_add=lambda pod: self._pod_changed(pod, created=True),
            on_update=lambda old, new: self._pod_changed(new),
            on_delete=lambda pod: self._pod_changed(pod, deleted=True),
        )

    def _ds_deleted(self, ds: apps_pb2.DaemonSet) -> None:
        self.expectations.forget(object_key(ds))

    def _node_changed(self, node: core_pb2.Node) -> None:
        for ds in self.ds_informer.cache.list():
            self._enqueue(ds)

    def _pod_changed(
        self, pod: core_pb2.Pod, *, created: bool = False, deleted: bool = False
    ) -> None:
        key = _pods.controller_key(pod, KIND, self.ds_informer.cache.get_by_name)
        if key is None:
            sets = self.ds_informer.cache.by_index(NAMESPACE_INDEX, pod.metadata.namespace)
            for ds in _pods.orphan_adopters(pod, sets):
                self.queue.add(object_key(ds))
            return
        if created:
            self.expectations.creation_observed(key)
        if deleted or _pods.is_pod_terminating(pod):
            self.expectations.deletion_observed(key, object_key(pod))
        self.queue.add(key)

    async def reconcile(self, key: str) -> None:
        ds = self.ds_informer.cache.get(key)
        if ds is None or ds.metadata.HasField("deletion_timestamp"):
            self.expectations.forget(key)
            return
        namespace_pods = self.pod_informer.cache.by_index(NAMESPACE_INDEX, ds.metadata.namespace)
        if await self.pods.adopt_orphans(ds, namespace_pods, api_version=API_VERSION, kind=KIND):
            return  # the adopted pods' update events bring the key back, with them owned
        pods = self.controlled(self.pod_informer, ds)
        if not await self._sync_history(ds, pods):
            return
        p = plan(ds, self.node_informer.cache.list(), pods, self.clock())
        error: BaseException | None = None
        if self.expectations.satisfied(key):
            error = await self.pods.apply(
                ds,
                self.expectations,
                p.deletes,
                [daemon_pod(ds, n, revision_hash(ds)) for n in p.creates],
            )
        await self.write_status(ds, p.status)
        if p.recheck_after is not None:
            self.queue.add_after(key, p.recheck_after)
        if error is not None:
            raise error

    async def _sync_history(self, ds: apps_pb2.DaemonSet, pods: list[core_pb2.Pod]) -> bool:
        """The revisions up to date (False: a hash collision, see RevisionHistory.sync)."""
        name = ds.metadata.name
        in_use = {
            history.revision_name(name, h)
            for pod in pods
            if (h := pod.metadata.labels.get(REVISION_HASH))
        }
        return await self.history.sync(ds, revision_hash(ds), in_use)
