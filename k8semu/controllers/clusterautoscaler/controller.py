"""The cluster autoscaler (a cluster-autoscaler-lite in the controller manager): every scan
interval, start nodes of a pool for pods that stay unschedulable for lack of resources, and
remove pool nodes that stayed underused (planner.py decides; this module carries it out).

What it owns, through the API only:

- ``kube-system/cluster-autoscaler-status`` (targets.py): the slots of each pool that should
  run (``nodeGroups``, which the supervisor of each host acts on) and a readable ``status``;
- on a node being removed: ``spec.unschedulable`` and the taint
  ``ToBeDeletedByClusterAutoscaler:NoSchedule`` (cordon), then its ReplicaSet pods are deleted
  (their ReplicaSets start them elsewhere); once none is left the slot leaves ``nodeGroups``
  and its supervisor stops the kubelet; the Node object is deleted once it is no longer Ready
  (the cloud node lifecycle controller's part in Kubernetes);
- Events: TriggeredScaleUp / NotTriggerScaleUp on pods, ScaleDown on nodes and pods, with the
  real cluster-autoscaler's reasons and wording.

State is per leadership term and rebuilt from the ConfigMap (or the pools' initial sizes when
there is none), so a new leader carries on with what the last one asked for. Nothing a node,
a pod or the ConfigMap holds crashes the loop: a failed pass is logged and the next one
starts over from the caches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

from k8semu.api.errors import SelectorError
from k8semu.client import AlreadyExists, Conflict, NotFound, Preconditions
from k8semu.client.events import NORMAL
from k8semu.controllers._evict import delete_pod
from k8semu.controllers._pods import copy_of, is_pod_active, selector_of
from k8semu.controllers.clusterautoscaler import targets as tg
from k8semu.controllers.clusterautoscaler.planner import (
    Budget,
    ScaleUp,
    movable_pods,
    node_infos,
    plan_scale_down,
    plan_scale_up,
    unschedulable,
)
from k8semu.controllers.clusterautoscaler.pools import NodePool, slot_index
from k8semu.controllers.clusterautoscaler.status import status_text
from k8semu.controllers.context import ControllerContext
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2, meta_pb2, policy_pb2
from k8semu.scheduler.framework import NodeInfo, PodInfo, PodSpecError, node_ready, pod_info

log = get_logger(__name__)

TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"
#: A drain that takes longer than this gives up on the pods left (cluster-autoscaler's
#: --max-graceful-termination-sec is 10 min; pods here stop within their grace period).
DRAIN_TIMEOUT = 120.0
#: A slot asked for that has not registered Ready within this is given up (it leaves the
#: targets, so it is stopped; a pod still pending asks again). cluster-autoscaler's
#: --max-node-provision-time is 15 min; a kubelet here starts in seconds.
MAX_NODE_PROVISION_TIME = 120.0


class ClusterAutoscaler:
    """One instance per leadership term; ``run()`` scans until cancelled."""

    name = "clusterautoscaler"

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], float] = time.time) -> None:
        self.pools: tuple[NodePool, ...] = ctx.config.node_pools
        self.scan_interval = ctx.config.scan_interval
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.clock = clock
        #: pool -> slots that should run, in slot order.
        self.targets: dict[str, list[str]] = {}
        self.unneeded: dict[str, float] = {}
        #: node -> (pool, when its drain started).
        self.draining: dict[str, tuple[str, float]] = {}
        #: slot asked for -> when; until it is first seen Ready.
        self.requested: dict[str, float] = {}
        self._told: dict[str, str] = {}  # pod uid -> the last NotTriggerScaleUp message
        self._written: tuple[str, str] | None = None
        if self.pools:
            self.pods = ctx.informers.informer(core_pb2.Pod)
            self.nodes = ctx.informers.informer(core_pb2.Node)
            self.pdbs = ctx.informers.informer(policy_pb2.PodDisruptionBudget)

    async def reconcile(self, key: str) -> None:
        """Everything is one pass over the caches (``scan``): keys are not used."""
        await self.scan()

    async def run(self) -> None:
        if not self.pools:
            log.info("cluster autoscaler: no autoscaled node pools; idle")
            await asyncio.Event().wait()
        await self.ctx.informers.wait_synced()
        await self.load_targets()
        log.info(
            "cluster autoscaler started",
            pools=[p.name for p in self.pools],
            scan_interval=self.scan_interval,
            targets=self.targets,
        )
        while True:
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cluster autoscaler pass failed; trying again next scan")
            await asyncio.sleep(self.scan_interval)

    # ---- targets -------------------------------------------------------------------------------

    async def load_targets(self) -> None:
        """What the ConfigMap asks for (a former leader's decisions), else each pool's initial
        slots; then kept within minNodes..maxNodes."""
        asked: dict[str, frozenset[str]] = {}
        try:
            cm = await self.client.get(core_pb2.ConfigMap, tg.STATUS_NAME, namespace=tg.NAMESPACE)
            asked = tg.decode(cm.data.get(tg.NODE_GROUPS_KEY, ""))
        except NotFound:
            pass
        for pool in self.pools:
            names = asked.get(pool.name)
            if names is None:
                self.targets[pool.name] = [pool.slot(i) for i in range(pool.initial_nodes)]
            else:
                self.targets[pool.name] = _in_slot_order(pool, names)
        self._bound_targets()
        now = self.clock()
        for slots in self.targets.values():
            self.requested.update((n, now) for n in slots)

    def _bound_targets(self) -> None:
        for pool in self.pools:
            wanted = self.targets.setdefault(pool.name, [])
            del wanted[pool.max_nodes :]
            for slot in pool.slots:
                if len(wanted) >= pool.min_nodes:
                    break
                if slot not in wanted and slot not in self.nodes.cache:
                    wanted.append(slot)
                    self.requested[slot] = self.clock()
            self.targets[pool.name] = _in_slot_order(pool, wanted)

    # ---- one pass ------------------------------------------------------------------------------

    async def scan(self) -> None:
        now = self.clock()
        pods = self.pods.cache.list()
        nodes = self.nodes.cache.list()
        infos = node_infos(nodes, pods)
        self._bound_targets()
        self._provisioned(infos, now)
        up = plan_scale_up(self._pending(pods), infos, self.pools, self.targets)
        self._scale_up(up, pods, now)
        by_node: dict[str, list[core_pb2.Pod]] = {}
        for pod in pods:
            by_node.setdefault(pod.spec.node_name, []).append(pod)
        self._drained(by_node, now)
        down = plan_scale_down(
            infos,
            by_node,
            self.pools,
            {p: [n for n in names if n not in self.draining] for p, names in self.targets.items()},
            self.unneeded,
            now,
            self._budgets(),
        )
        self.unneeded = down.unneeded
        settled = not up.new and not up.triggered and not self.draining and not self.requested
        if down.remove is not None and settled:
            pool, node = down.remove
            await self._start_drain(pool, node, by_node.get(node, []), now)
        await self._delete_gone(nodes)
        await self._write_status(infos, up, now)

    def _budgets(self) -> list[Budget]:
        out = []
        for pdb in self.pdbs.cache.list():
            try:
                selector = selector_of(pdb.spec.selector)
            except SelectorError:
                continue  # the API server refuses such budgets; nothing to honour
            meta = pdb.metadata
            allowed = pdb.status.disruptions_allowed
            out.append(Budget(meta.name, meta.namespace, selector, allowed))
        return out

    def _pending(self, pods: Sequence[core_pb2.Pod]) -> list[PodInfo]:
        out = []
        for pod in sorted(pods, key=lambda p: p.metadata.creation_timestamp.ToNanoseconds()):
            if unschedulable(pod):
                try:
                    out.append(pod_info(pod))
                except PodSpecError:
                    continue
        return out

    def _provisioned(self, infos: Mapping[str, NodeInfo], now: float) -> None:
        """Forget the requests whose node is Ready now (or that left the targets); give up
        on those not Ready within MAX_NODE_PROVISION_TIME."""
        wanted = {n: pool for pool, names in self.targets.items() for n in names}
        for name, since in list(self.requested.items()):
            info = infos.get(name)
            if name not in wanted or (info is not None and info.ready):
                del self.requested[name]
            elif now - since >= MAX_NODE_PROVISION_TIME:
                del self.requested[name]
                self.targets[wanted[name]].remove(name)
                log.warning(
                    "node not Ready in time; given up", node=name, seconds=MAX_NODE_PROVISION_TIME
                )

    def _scale_up(self, up: ScaleUp, pods: Sequence[core_pb2.Pod], now: float) -> None:
        by_key = {f"{p.metadata.namespace}/{p.metadata.name}": p for p in pods}
        sizes = {pool: len(names) for pool, names in self.targets.items()}
        for pool_name, names in up.new.items():
            pool = next(p for p in self.pools if p.name == pool_name)
            self.targets[pool_name] = _in_slot_order(pool, [*self.targets[pool_name], *names])
            self.requested.update((n, now) for n in names)
            log.info(
                "scale-up",
                pool=pool_name,
                size=f"{sizes[pool_name]}->{len(self.targets[pool_name])}",
                nodes=names,
            )
        for key, pool_name in up.triggered.items():
            pool = next(p for p in self.pools if p.name == pool_name)
            message = (
                f"pod triggered scale-up: [{{{pool_name} {sizes[pool_name]}->"
                f"{len(self.targets[pool_name])} (max: {pool.max_nodes})}}]"
            )
            self.recorder.event(by_key[key], NORMAL, "TriggeredScaleUp", message)
        for key, why in up.not_triggered.items():
            pod = by_key[key]
            message = f"pod didn't trigger scale-up: {why}"
            if self._told.get(pod.metadata.uid) != message:
                self._told[pod.metadata.uid] = message
                self.recorder.event(pod, NORMAL, "NotTriggerScaleUp", message)
        if len(self._told) > 10_000:  # bounded: forget what was said about old pods
            self._told.clear()

    # ---- scale-down ----------------------------------------------------------------------------

    async def _start_drain(
        self, pool: str, name: str, pods: Sequence[core_pb2.Pod], now: float
    ) -> None:
        """Cordon ``name`` (unschedulable, and cluster-autoscaler's NoSchedule taint), then
        delete its pods: their ReplicaSets start them again on the other nodes."""
        node = self.nodes.cache.get(name)
        if node is None:
            return
        new = copy_of(node)
        new.spec.unschedulable = True
        if not any(t.key == TO_BE_DELETED_TAINT for t in new.spec.taints):
            new.spec.taints.add(key=TO_BE_DELETED_TAINT, value=str(int(now)), effect="NoSchedule")
        try:
            await self.client.update(new)
        except (Conflict, NotFound):
            return  # changed meanwhile: the next pass decides again
        log.info("scale-down: draining node", pool=pool, node=name, pods=len(pods))
        self.draining[name] = (pool, now)
        self.unneeded.pop(name, None)
        self.recorder.event(
            node, NORMAL, "ScaleDown", "marked the node as toBeDeleted/unschedulable"
        )
        for pod in movable_pods(pods):
            if is_pod_active(pod) and await delete_pod(self.client, pod):
                self.recorder.event(pod, NORMAL, "ScaleDown", "deleting pod for node scale down")

    def _drained(self, by_node: dict[str, list[core_pb2.Pod]], now: float) -> None:
        """A draining node whose pods are gone (or that drained too long) leaves its pool's
        targets: its supervisor stops it."""
        for name, (pool_name, since) in list(self.draining.items()):
            left = movable_pods(by_node.get(name, ()))  # its DaemonSet's pods go with it
            if left and now - since < DRAIN_TIMEOUT:
                continue
            del self.draining[name]
            wanted = self.targets.get(pool_name, [])
            if name in wanted:
                wanted.remove(name)
            log.info("scale-down: node removed from its pool", pool=pool_name, node=name)
            node = self.nodes.cache.get(name)
            if node is not None:
                self.recorder.event(
                    node, NORMAL, "ScaleDown", f"node removed by cluster autoscaler ({pool_name})"
                )

    async def _delete_gone(self, nodes: Sequence[core_pb2.Node]) -> None:
        """Delete the Node of a pool slot that should not run and is no longer Ready (its
        kubelet was stopped)."""
        for node in nodes:
            name = node.metadata.name
            for pool in self.pools:
                if slot_index(pool, name) is None or name in self.targets.get(pool.name, ()):
                    continue
                if name in self.draining or node_ready(node):
                    continue
                try:
                    await self.client.delete(
                        core_pb2.Node, name, preconditions=Preconditions(uid=node.metadata.uid)
                    )
                except (NotFound, Conflict):
                    continue
                log.info("deleted the Node of a removed pool slot", node=name)

    # ---- status --------------------------------------------------------------------------------

    async def _write_status(self, infos: Mapping[str, NodeInfo], up: ScaleUp, now: float) -> None:
        groups = tg.encode(
            {p.name: (p.min_nodes, p.max_nodes, self.targets[p.name]) for p in self.pools}
        )
        body = status_text(
            self.pools,
            self.targets,
            {n: info.ready for n, info in infos.items()},
            up,
            self.unneeded,
            self.draining,
        )
        if self._written == (groups, body):
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(now))
        data = {
            tg.STATUS_KEY: f"Cluster-autoscaler status at {stamp}:\n{body}",
            tg.NODE_GROUPS_KEY: groups,
        }
        cm = core_pb2.ConfigMap(
            metadata=meta_pb2.ObjectMeta(name=tg.STATUS_NAME, namespace=tg.NAMESPACE),
            data=data,
        )
        try:
            current = await self.client.get(
                core_pb2.ConfigMap, tg.STATUS_NAME, namespace=tg.NAMESPACE
            )
        except NotFound:
            try:
                await self.client.create(cm)
            except AlreadyExists:
                return  # written meanwhile: next pass
        else:
            new = copy_of(current)
            new.data.clear()
            new.data.update(data)
            try:
                await self.client.update(new)
            except (Conflict, NotFound):
                return
        self._written = (groups, body)


def _in_slot_order(pool: NodePool, names: object) -> list[str]:
    """The valid slots of ``pool`` among ``names``, each once, in slot order, at most
    maxNodes (anything else in a ConfigMap is ignored)."""
    assert isinstance(names, list | set | frozenset | tuple)
    valid = {n for n in names if isinstance(n, str) and slot_index(pool, n) is not None}
    return sorted(valid, key=lambda n: slot_index(pool, n) or 0)[: pool.max_nodes]
