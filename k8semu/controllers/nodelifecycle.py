"""Node lifecycle: notice nodes whose kubelet went silent, taint them, evict their pods.

Kubernetes' node lifecycle controller, in two loops over one set of informers (Nodes, the
node Leases in `kube-node-lease`, Pods indexed by node):

- **Node health** (key: the node name; every node is re-queued every `node_monitor_period`).
  A node is healthy while its Lease's renewTime or its Ready condition's lastHeartbeatTime
  keeps changing. Like Kubernetes, the controller does not compare those timestamps with its
  own clock (hosts' clocks may disagree): it remembers, on its own clock, when it last saw
  either change. When that is longer ago than `node_monitor_grace_period`, Ready,
  MemoryPressure, DiskPressure and PIDPressure become Unknown ("Kubelet stopped posting node
  status.", or "...never posted..." for a node that never had them), the node gets an event
  NodeNotReady and its pods' Ready condition becomes False (MarkPodsNotReady), so endpoints
  drop them. Then the taints follow the Ready condition: Unknown ->
  `node.kubernetes.io/unreachable` NoExecute + NoSchedule, False -> `node.kubernetes.io/
  not-ready` NoExecute + NoSchedule, True -> neither; no Ready condition yet -> unchanged.
- **Taint-based eviction** (key: "namespace/name" of a pod on a node with NoExecute taints).
  A pod is deleted once every NoExecute taint on its node has been there (taint timeAdded)
  longer than the pod tolerates it: the smallest tolerationSeconds of its tolerations matching
  the taint; a matching toleration without tolerationSeconds tolerates it forever. With no
  matching toleration, the not-ready/unreachable taints give `pod_eviction_timeout` (what
  Kubernetes' DefaultTolerationSeconds admission adds to every pod, 300 s there) and any other
  NoExecute taint evicts at once (Kubernetes' taint manager). The delete carries the pod's uid
  as a precondition and an event TaintManagerEviction. When every node is not Ready at once
  (Kubernetes' full disruption, here without zones) nothing is evicted: that is more likely
  the control plane's own network than every machine dying together.

Owns the node conditions it sets to Unknown, the four taints above and those evictions; it
never creates nodes, never touches a Ready kubelet's conditions and never deletes nodes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from k8semu.api import taints, timestamps
from k8semu.client import (
    NODE_NAME_INDEX,
    Client,
    Informer,
    NotFound,
    index_by_node_name,
    object_key,
)
from k8semu.client.controller import run_workers
from k8semu.client.events import NORMAL, EventRecorder
from k8semu.client.workqueue import WorkQueue
from k8semu.controllers._evict import delete_pod
from k8semu.controllers._pods import copy_of, ready_condition
from k8semu.controllers.context import ControllerContext, ControllerManagerConfig
from k8semu.log import get_logger
from k8semu.pb.api.v1 import coordination_pb2, core_pb2

log = get_logger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
NO_EXECUTE = taints.NO_EXECUTE
NO_SCHEDULE = taints.NO_SCHEDULE
MANAGED_TAINTS = frozenset(
    (key, effect)
    for key in (TAINT_NOT_READY, TAINT_UNREACHABLE)
    for effect in (NO_EXECUTE, NO_SCHEDULE)
)
# The conditions a silent kubelet can no longer vouch for (Kubernetes' list).
MONITORED_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
STOPPED_POSTING = "Kubelet stopped posting node status."
NEVER_POSTED = "Kubelet never posted node status."

Clock = Callable[[], float]
"""Wall-clock seconds since the epoch (time.time); tests inject a fake one."""


@dataclass(slots=True)
class _Health:
    probe: tuple[int, int]  # (lease renewTime ns, Ready lastHeartbeatTime ns) as last seen
    observed_at: float  # our clock when `probe` was first seen


def node_condition(node: core_pb2.Node, type_: str) -> core_pb2.NodeCondition | None:
    for cond in node.status.conditions:
        if cond.type == type_:
            return cond
    return None


def node_ready_status(node: core_pb2.Node) -> str:
    """ "True", "False", "Unknown", or "" when the node has no Ready condition; any other
    value a kubelet might write counts as Unknown."""
    cond = node_condition(node, "Ready")
    if cond is None:
        return ""
    return cond.status if cond.status in ("True", "False") else "Unknown"


def toleration_seconds(
    tolerations: Iterable[core_pb2.Toleration], taint: core_pb2.Taint, default: float
) -> float:
    """How long a pod with `tolerations` may stay on a node with `taint` (NoExecute):
    math.inf = forever. `default` applies to the not-ready/unreachable taints when nothing
    matches (DefaultTolerationSeconds); other taints without a match evict at once."""
    matching = taints.matching_tolerations(tolerations, taint)
    if not matching and taint.key in (TAINT_NOT_READY, TAINT_UNREACHABLE):
        return default
    return taints.toleration_seconds(matching)


class NodeLifecycleController:
    """See the module docstring. `clock` is wall time (taint timeAdded, condition times and
    the health bookkeeping all use it), injectable for tests."""

    name = "nodelifecycle"

    def __init__(self, ctx: ControllerContext, *, clock: Clock = time.time) -> None:
        self._client: Client = ctx.client
        self._recorder: EventRecorder = ctx.recorder
        self._config: ControllerManagerConfig = ctx.config
        self._clock = clock
        self.nodes: Informer[core_pb2.Node] = ctx.informers.informer(core_pb2.Node)
        self.leases: Informer[coordination_pb2.Lease] = ctx.informers.informer(
            coordination_pb2.Lease, namespace=NODE_LEASE_NAMESPACE
        )
        self.pods: Informer[core_pb2.Pod] = ctx.informers.informer(
            core_pb2.Pod, indexers={NODE_NAME_INDEX: index_by_node_name}
        )
        self.queue: WorkQueue[str] = WorkQueue(name="nodelifecycle")
        self.evictions: WorkQueue[str] = WorkQueue(name="taint-eviction")
        self._health: dict[str, _Health] = {}
        self._last_ready: dict[str, str] = {}
        # Taints without timeAdded (set by hand): when we first saw them.
        self._taint_seen: dict[tuple[str, str, str, str], float] = {}
        self._disrupted = False

        self.nodes.add_event_handler(
            on_add=lambda n: self.queue.add(object_key(n)),
            on_update=lambda _o, n: self.queue.add(object_key(n)),
            on_delete=lambda n: self.queue.add(object_key(n)),
        )
        self.leases.add_event_handler(
            on_add=lambda le: self.queue.add(le.metadata.name),
            on_update=lambda _o, le: self.queue.add(le.metadata.name),
        )
        self.pods.add_event_handler(
            on_add=self._pod_changed,
            on_update=lambda _o, p: self._pod_changed(p),
        )

    # ---- event handlers (enqueue only) -------------------------------------------------------

    def _pod_changed(self, pod: core_pb2.Pod) -> None:
        node = self.nodes.cache.get(pod.spec.node_name) if pod.spec.node_name else None
        if node is not None and any(t.effect == NO_EXECUTE for t in node.spec.taints):
            self.evictions.add(object_key(pod))

    # ---- life cycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        for informer in (self.nodes, self.leases, self.pods):
            await informer.wait_synced()
        workers = self._config.workers
        log.info("controller started", controller=self.name, workers=workers)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(run_workers(self.queue, self.reconcile, workers, name=self.name))
            tg.create_task(
                run_workers(self.evictions, self.reconcile_eviction, workers, name="taint-eviction")
            )
            tg.create_task(self._monitor())

    async def _monitor(self) -> None:
        """Every node_monitor_period, every node is checked, changed or not."""
        while True:
            for node in self.nodes.cache.list():
                self.queue.add(object_key(node))
            await asyncio.sleep(self._config.node_monitor_period)

    # ---- node health --------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        """Check one node's health, set its conditions and taints, mark its pods."""
        node = self.nodes.cache.get(key)
        if node is None:
            self._forget(key)
            return
        now = self._clock()
        before = self._last_ready.get(key, node_ready_status(node))
        if self._stale(node, now):
            node = await self._mark_unknown(node, now)
        after = node_ready_status(node)
        self._last_ready[key] = after
        if before == "True" and after != "True":
            self._recorder.event(
                node, NORMAL, "NodeNotReady", f"Node {key} status is now: NodeNotReady"
            )
        elif before != "True" and after == "True" and before:
            self._recorder.event(node, NORMAL, "NodeReady", f"Node {key} status is now: NodeReady")
        node = await self._sync_taints(node, now)
        if after == "Unknown":
            await self._mark_pods_not_ready(node, now)
        self._prune_taint_seen(node)
        if any(t.effect == NO_EXECUTE for t in node.spec.taints):
            for pod in self.pods.cache.by_index(NODE_NAME_INDEX, key):
                self.evictions.add(object_key(pod))

    def _forget(self, name: str) -> None:
        self._health.pop(name, None)
        self._last_ready.pop(name, None)
        for k in [k for k in self._taint_seen if k[0] == name]:
            del self._taint_seen[k]

    def _stale(self, node: core_pb2.Node, now: float) -> bool:
        """Whether neither the Lease nor the Ready heartbeat changed for the grace period."""
        name = node.metadata.name
        lease = self.leases.cache.get_by_name(name, NODE_LEASE_NAMESPACE)
        renew = lease.spec.renew_time.ToNanoseconds() if lease is not None else 0
        ready = node_condition(node, "Ready")
        heartbeat = ready.last_heartbeat_time.ToNanoseconds() if ready is not None else 0
        probe = (renew, heartbeat)
        health = self._health.get(name)
        if health is None or health.probe != probe:
            health = _Health(probe, now)
            self._health[name] = health
        return now - health.observed_at > self._config.node_monitor_grace_period

    async def _mark_unknown(self, node: core_pb2.Node, now: float) -> core_pb2.Node:
        new = copy_of(node)
        changed = False
        for type_ in MONITORED_CONDITIONS:
            cond = node_condition(new, type_)
            if cond is None:
                cond = new.status.conditions.add(
                    type=type_,
                    status="Unknown",
                    reason="NodeStatusNeverUpdated",
                    message=NEVER_POSTED,
                )
                cond.last_heartbeat_time.CopyFrom(node.metadata.creation_timestamp)
                cond.last_transition_time.CopyFrom(timestamps.time_at(now))
                changed = True
            elif cond.status != "Unknown":
                cond.status = "Unknown"
                cond.reason = "NodeStatusUnknown"
                cond.message = STOPPED_POSTING
                cond.last_transition_time.CopyFrom(timestamps.time_at(now))
                changed = True
        if not changed:
            return node
        log.info("node stopped posting status", node=node.metadata.name)
        return cast(core_pb2.Node, await self._client.update_status(new))

    async def _sync_taints(self, node: core_pb2.Node, now: float) -> core_pb2.Node:
        status = node_ready_status(node)
        if not status:
            return node  # the kubelet has not said anything yet; the grace period will
        wanted_key = {"True": None, "False": TAINT_NOT_READY}.get(status, TAINT_UNREACHABLE)
        wanted = {(wanted_key, e) for e in (NO_EXECUTE, NO_SCHEDULE)} if wanted_key else set()
        kept = [
            t
            for t in node.spec.taints
            if (t.key, t.effect) not in MANAGED_TAINTS or (t.key, t.effect) in wanted
        ]
        have = {(t.key, t.effect) for t in kept}
        missing = sorted(wanted - have, key=lambda ke: ke[1])  # NoExecute first
        if not missing and len(kept) == len(node.spec.taints):
            return node
        new = copy_of(node)
        del new.spec.taints[:]
        new.spec.taints.extend(kept)
        for key, effect in missing:
            taint = new.spec.taints.add(key=key, effect=effect)
            # Microseconds, not metav1.Time's seconds: see k8semu/api/timestamps.py.
            taint.time_added.CopyFrom(timestamps.micro_time_at(now))
        log.info(
            "node taints updated",
            node=node.metadata.name,
            taints=[f"{t.key}:{t.effect}" for t in new.spec.taints],
        )
        return cast(core_pb2.Node, await self._client.update(new))

    async def _mark_pods_not_ready(self, node: core_pb2.Node, now: float) -> None:
        """MarkPodsNotReady: Ready=False on every pod of a node nobody hears from."""
        failed: Exception | None = None
        for pod in self.pods.cache.by_index(NODE_NAME_INDEX, node.metadata.name):
            ready = ready_condition(pod)
            if ready is None or ready.status == "False":
                continue
            new = copy_of(pod)
            for cond in new.status.conditions:
                if cond.type == "Ready":
                    cond.status = "False"
                    cond.last_transition_time.CopyFrom(timestamps.time_at(now))
            try:
                await self._client.update_status(new)
            except NotFound:
                continue
            except Exception as exc:  # the others still get marked; the node is retried
                failed = exc
            else:
                self._recorder.event(pod, "Warning", "NodeNotReady", "Node is not ready")
        if failed is not None:
            raise failed

    def _prune_taint_seen(self, node: core_pb2.Node) -> None:
        name = node.metadata.name
        present = {(name, t.key, t.value, t.effect) for t in node.spec.taints}
        for k in [k for k in self._taint_seen if k[0] == name and k not in present]:
            del self._taint_seen[k]

    # ---- taint-based eviction -----------------------------------------------------------------

    def eviction_deadline(self, pod: core_pb2.Pod, node: core_pb2.Node) -> float | None:
        """When `pod` must leave `node` (our clock), or None when no NoExecute taint asks it
        to; math.inf when it tolerates them forever."""
        deadline: float | None = None
        now = self._clock()
        for taint in node.spec.taints:
            if taint.effect != NO_EXECUTE:
                continue
            if taint.HasField("time_added"):
                added = timestamps.to_seconds(taint.time_added)
            else:
                seen = (node.metadata.name, taint.key, taint.value, taint.effect)
                added = self._taint_seen.setdefault(seen, now)
            when = added + toleration_seconds(
                pod.spec.tolerations, taint, self._config.pod_eviction_timeout
            )
            deadline = when if deadline is None else min(deadline, when)
        return deadline

    def full_disruption(self) -> bool:
        """Every node is not Ready (and there is at least one)."""
        nodes = self.nodes.cache.list()
        return bool(nodes) and all(node_ready_status(n) != "True" for n in nodes)

    async def reconcile_eviction(self, key: str) -> None:
        """Delete the pod at `key` if its node's NoExecute taints say its time is up."""
        pod = self.pods.cache.get(key)
        if pod is None or pod.metadata.HasField("deletion_timestamp") or not pod.spec.node_name:
            return
        node = self.nodes.cache.get(pod.spec.node_name)
        if node is None:
            return
        deadline = self.eviction_deadline(pod, node)
        if deadline is None or deadline == math.inf:
            return
        now = self._clock()
        if deadline > now:
            self.evictions.add_after(key, deadline - now)
            return
        if self.full_disruption():
            if not self._disrupted:
                log.warning(
                    "every node is not ready: taint-based evictions paused",
                    nodes=len(self.nodes.cache),
                )
            self._disrupted = True
            self.evictions.add_after(key, self._config.node_monitor_period)
            return
        if self._disrupted:
            log.info("a node is ready again: taint-based evictions resume")
            self._disrupted = False
        log.info("evicting pod", pod=key, node=node.metadata.name)
        if not await delete_pod(self._client, pod):
            return  # gone already, or another pod by that name now: not ours to evict
        self._recorder.event(pod, NORMAL, "TaintManagerEviction", f"Marking for deletion Pod {key}")
