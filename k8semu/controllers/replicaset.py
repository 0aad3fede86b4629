"""The ReplicaSet controller: keeps `spec.replicas` pods matching a ReplicaSet's selector,
owned by it, and reports what it sees in its status.

Per key (namespace/name), level-triggered:

1. claim pods: own the active pods in the namespace that match the selector (adopt orphans by
   adding a controller reference; release owned pods whose labels no longer match);
2. when the expectations of earlier writes are met (the informer has seen every pod this
   controller created or deleted), create or delete pods to reach `spec.replicas`: creates
   go in slow-start batches 1, 2, 4, ... (a failing batch stops the rest), deletes pick pods
   in Kubernetes' order (`_pods.deletion_rank`); terminating pods do not count;
3. write status (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas after
   minReadySeconds, observedGeneration) when it changed, and come back when a ready pod
   will have been ready for minReadySeconds.

Owns the pods it creates and the ReplicaSet's status; never writes a ReplicaSet's spec.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from k8semu.api.errors import SelectorError
from k8semu.api.selectors import LabelSelector
from k8semu.client import (
    NAMESPACE_INDEX,
    ClientError,
    Conflict,
    NotFound,
    object_key,
)
from k8semu.controllers import _pods
from k8semu.controllers._podcontrol import PodOwnerController, slow_start_batch
from k8semu.controllers.context import ControllerContext
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apps_pb2, core_pb2

log = get_logger(__name__)

API_VERSION = "apps/v1"
KIND = "ReplicaSet"
DEFAULT_BURST_REPLICAS = 500  # Kubernetes' burstReplicas: creates/deletes per reconcile


class ReplicaSetController(PodOwnerController):
    """One instance per process; `run()` after the context's informers are started."""

    name = "replicaset"

    def __init__(
        self,
        ctx: ControllerContext,
        *,
        burst_replicas: int = DEFAULT_BURST_REPLICAS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(ctx, clock=clock)
        self.burst_replicas = burst_replicas
        self.rs_informer = self.informer(apps_pb2.ReplicaSet)
        self.pod_informer = self.informer(core_pb2.Pod, owned=True)
        self.rs_informer.add_event_handler(
            on_add=self._enqueue,
            on_update=self._rs_updated,
            on_delete=self._owner_deleted,
        )
        self.pod_informer.add_event_handler(
            on_add=self._pod_added,
            on_update=self._pod_updated,
            on_delete=self._pod_deleted,
        )

    # ---- event handlers: only enqueue ------------------------------------------------------

    def _rs_updated(self, old: apps_pb2.ReplicaSet, new: apps_pb2.ReplicaSet) -> None:
        self._enqueue(new)

    def _owner_key(self, pod: core_pb2.Pod) -> str | None:
        """The key of the ReplicaSet (in the cache) that controls `pod`, if any."""
        return _pods.controller_key(pod, KIND, self.rs_informer.cache.get_by_name)

    def _matching_sets(self, pod: core_pb2.Pod) -> list[apps_pb2.ReplicaSet]:
        """ReplicaSets in the pod's namespace whose selector matches it (for orphans)."""
        in_namespace = self.rs_informer.cache.by_index(NAMESPACE_INDEX, pod.metadata.namespace)
        return _pods.selecting(in_namespace, pod.metadata.labels)

    def _pod_added(self, pod: core_pb2.Pod) -> None:
        if _pods.is_pod_terminating(pod):
            # Seen already terminating (e.g. after a relist): a deletion we may expect.
            self._pod_deleted(pod)
            return
        if _pods.controller_ref(pod) is not None:
            key = self._owner_key(pod)
            if key is not None:
                self.expectations.creation_observed(key)
                self.queue.add(key)
            return
        for rs in self._matching_sets(pod):
            self._enqueue(rs)

    def _pod_updated(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        if old.metadata.resource_version == new.metadata.resource_version:
            # A resync: level-triggered controllers re-check the owner anyway.
            key = self._owner_key(new)
            if key is not None:
                self.queue.add(key)
            return
        key = self._owner_key(new)
        if key is not None and _pods.is_pod_terminating(new) and not _pods.is_pod_terminating(old):
            self.expectations.deletion_observed(key, object_key(new))
        old_key = self._owner_key(old)
        if old_key is not None and old_key != key:
            self.queue.add(old_key)
        if key is not None:
            self.queue.add(key)
            if _pods.is_pod_ready(old) != _pods.is_pod_ready(new):
                rs = self.rs_informer.cache.get(key)
                if rs is not None and rs.spec.min_ready_seconds > 0:
                    # Check again when it will have been ready for minReadySeconds.
                    self.queue.add_after(key, float(rs.spec.min_ready_seconds) + 0.05)
            return
        if _pods.controller_ref(new) is None:
            for rs in self._matching_sets(new):
                self._enqueue(rs)

    # ---- running -------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        rs = self.rs_informer.cache.get(key)
        if rs is None:
            self.expectations.forget(key)
            return
        if _pods.selects_nothing(rs.spec.selector):
            log.warning("replica set with an empty selector ignored", replicaset=key)
            return
        try:
            selector = _pods.selector_of(rs.spec.selector)
        except SelectorError as exc:
            log.warning("replica set with a bad selector ignored", replicaset=key, error=str(exc))
            return
        needs_sync = self.expectations.satisfied(key)
        pods = await self._claim_pods(rs, selector)
        active = [p for p in pods if _pods.is_pod_active(p)]
        error: BaseException | None = None
        deleted: set[str] = set()
        if needs_sync and not rs.metadata.HasField("deletion_timestamp"):
            try:
                deleted = await self._manage_replicas(rs, active)
            except ClientError as exc:
                error = exc
        counted = [p for p in active if object_key(p) not in deleted]
        await self._update_status(rs, counted)
        if error is not None:
            raise error

    # ---- claiming pods -------------------------------------------------------------------------

    async def _claim_pods(
        self, rs: apps_pb2.ReplicaSet, selector: LabelSelector
    ) -> list[core_pb2.Pod]:
        """The pods this ReplicaSet controls after adopting matching orphans and releasing
        owned pods that no longer match (Kubernetes' PodControllerRefManager)."""
        uid = rs.metadata.uid
        claimed: list[core_pb2.Pod] = []
        deleting = rs.metadata.HasField("deletion_timestamp")
        for pod in self.pod_informer.cache.by_index(NAMESPACE_INDEX, rs.metadata.namespace):
            ref = _pods.controller_ref(pod)
            matches = selector.matches(pod.metadata.labels)
            if ref is not None:
                if ref.uid != uid:
                    continue  # another controller's
                if matches:
                    claimed.append(pod)
                elif not _pods.is_pod_terminating(pod) and not deleting:
                    await self._release(rs, pod)
                continue
            if not matches or _pods.is_pod_terminating(pod) or deleting:
                continue
            adopted = await self._adopt(rs, pod)
            if adopted is not None:
                claimed.append(adopted)
        return claimed

    async def _adopt(self, rs: apps_pb2.ReplicaSet, pod: core_pb2.Pod) -> core_pb2.Pod | None:
        new = _pods.adopted(pod, rs, api_version=API_VERSION, kind=KIND)
        try:
            updated = cast(core_pb2.Pod, await self.client.update(new))
        except (NotFound, Conflict):
            return None  # gone or changed: the next event brings it back
        log.info("adopted pod", replicaset=object_key(rs), pod=pod.metadata.name)
        return updated

    async def _release(self, rs: apps_pb2.ReplicaSet, pod: core_pb2.Pod) -> None:
        new = _pods.copy_of(pod)
        keep = [r for r in new.metadata.owner_references if r.uid != rs.metadata.uid]
        del new.metadata.owner_references[:]
        new.metadata.owner_references.extend(keep)
        try:
            await self.client.update(new)
        except (NotFound, Conflict):
            return
        log.info("released pod", replicaset=object_key(rs), pod=pod.metadata.name)

    # ---- creating and deleting -----------------------------------------------------------------

    async def _manage_replicas(
        self, rs: apps_pb2.ReplicaSet, active: list[core_pb2.Pod]
    ) -> set[str]:
        """Create or delete pods towards spec.replicas; returns the keys of deleted pods."""
        key = object_key(rs)
        want = rs.spec.replicas if rs.spec.HasField("replicas") else 1
        diff = len(active) - want
        if diff < 0:
            count = min(-diff, self.burst_replicas)
            self.expectations.expect_creations(key, count)
            created, error = await slow_start_batch(count, 1, lambda: self._create_pod(rs))
            skipped = count - created
            for _ in range(skipped):
                # Not created: do not wait to see them.
                self.expectations.creation_observed(key)
            if error is not None:
                raise error
            return set()
        if diff > 0:
            victims = _pods.pods_to_delete(active, min(diff, self.burst_replicas))
            keys = [object_key(p) for p in victims]
            self.expectations.expect_deletions(key, keys)
            results = await asyncio.gather(
                *(self.pods.delete(rs, p) for p in victims), return_exceptions=True
            )
            deleted: set[str] = set()
            first: BaseException | None = None
            for pod_key, result in zip(keys, results, strict=True):
                if isinstance(result, BaseException):
                    self.expectations.deletion_observed(key, pod_key)
                    first = first or result
                else:
                    deleted.add(pod_key)
            if first is not None:
                raise first
            return deleted
        return set()

    async def _create_pod(self, rs: apps_pb2.ReplicaSet) -> None:
        pod = _pods.pod_from_template(rs.spec.template, rs, api_version=API_VERSION, kind=KIND)
        await self.pods.create(rs, pod)

    # ---- status ------------------------------------------------------------------------------

    async def _update_status(self, rs: apps_pb2.ReplicaSet, pods: list[core_pb2.Pod]) -> None:
        now = self.clock()
        min_ready = rs.spec.min_ready_seconds
        template_labels = dict(rs.spec.template.metadata.labels)
        status = apps_pb2.ReplicaSetStatus()
        status.CopyFrom(rs.status)
        status.replicas = len(pods)
        status.fully_labeled_replicas = sum(
            1
            for p in pods
            if all(p.metadata.labels.get(k) == v for k, v in template_labels.items())
        )
        status.ready_replicas = sum(1 for p in pods if _pods.is_pod_ready(p))
        status.available_replicas = sum(
            1 for p in pods if _pods.is_pod_available(p, min_ready, now)
        )
        status.observed_generation = rs.metadata.generation
        if min_ready > 0:
            waits = [
                w
                for p in pods
                if (w := _pods.available_in(p, min_ready, now)) is not None and w > 0
            ]
            if waits:
                self.queue.add_after(object_key(rs), min(waits) + 0.05)
        if status == rs.status and rs.status.HasField("replicas"):
            return
        new = _pods.copy_of(rs)
        new.status.CopyFrom(status)
        try:
            await self.client.update_status(new)
        except Conflict:
            # Someone changed the spec meanwhile: the update event brings us back.
            fresh = cast(
                apps_pb2.ReplicaSet,
                await self.client.get(
                    apps_pb2.ReplicaSet, rs.metadata.name, namespace=rs.metadata.namespace
                ),
            )
            fresh.status.CopyFrom(status)
            fresh.status.observed_generation = min(
                status.observed_generation, fresh.metadata.generation
            )
            await self.client.update_status(fresh)
