"""The Deployment controller's loop (Kubernetes' deployment_controller.go): informers and
their event handlers (which only enqueue), ReplicaSet adoption and release, and `reconcile`,
which picks the step: status only (being deleted), sync (paused or a scaling event), or a
rollout by strategy (k8semu.controllers.deployment.rolling / .recreate)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import cast

from k8semu.api.errors import SelectorError
from k8semu.api.selectors import LabelSelector
from k8semu.client import NAMESPACE_INDEX, Conflict, NotFound
from k8semu.client.events import WARNING
from k8semu.controllers import _pods
from k8semu.controllers.context import ControllerContext, KeyedController
from k8semu.controllers.deployment.progress import check_paused_condition
from k8semu.controllers.deployment.recreate import rollout_recreate
from k8semu.controllers.deployment.rolling import rollout_rolling
from k8semu.controllers.deployment.sync import is_scaling_event, sync, sync_status_only
from k8semu.controllers.deployment.syncer import Syncer
from k8semu.controllers.deployment.util import (
    API_VERSION,
    KIND,
    fenceposts,
)
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apps_pb2, core_pb2

log = get_logger(__name__)


class DeploymentController(KeyedController):
    """One instance per process; `run()` after the context's informers are started."""

    name = "deployment"

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx, clock=clock)
        self.d_informer = self.informer(apps_pb2.Deployment)
        self.rs_informer = self.informer(apps_pb2.ReplicaSet, owned=True)
        self.pod_informer = self.informer(core_pb2.Pod, owned=True)
        self.watch(self.d_informer, self._enqueue, deleted=self._d_deleted)
        self.rs_informer.add_event_handler(
            on_add=self._rs_changed,
            on_update=self._rs_updated,
            on_delete=self._rs_deleted,
        )
        self.pod_informer.add_event_handler(on_delete=self._pod_deleted)
        self.syncer = Syncer(
            client=self.client,
            recorder=self.recorder,
            clock=clock,
            pods=self.pod_informer.cache,
            queue=self.queue,
        )

    def _d_deleted(self, d: apps_pb2.Deployment) -> None:
        self.syncer.forget(d.metadata.uid)
        self._enqueue(d)

    def _rs_deleted(self, rs: apps_pb2.ReplicaSet) -> None:
        self.syncer.forget(rs.metadata.uid)
        self._rs_changed(rs)

    def _owner_key(self, rs: apps_pb2.ReplicaSet) -> str | None:
        return _pods.controller_key(rs, KIND, self.d_informer.cache.get_by_name)

    def _rs_changed(self, rs: apps_pb2.ReplicaSet) -> None:
        key = self._owner_key(rs)
        if key is not None:
            self.queue.add(key)
            return
        if _pods.controller_ref(rs) is None:  # an orphan: who may adopt it
            in_namespace = self.d_informer.cache.by_index(NAMESPACE_INDEX, rs.metadata.namespace)
            for d in _pods.selecting(in_namespace, rs.metadata.labels):
                self._enqueue(d)

    def _rs_updated(self, old: apps_pb2.ReplicaSet, new: apps_pb2.ReplicaSet) -> None:
        old_key = self._owner_key(old)
        if old_key is not None and old_key != self._owner_key(new):
            self.queue.add(old_key)
        self._rs_changed(new)

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        # Recreate waits for old pods to be gone: their deletion is worth a look.
        ref = _pods.controller_ref(pod)
        if ref is None or ref.kind != "ReplicaSet":
            return
        rs = self.rs_informer.cache.get_by_name(ref.name, pod.metadata.namespace)
        if rs is not None:
            key = self._owner_key(rs)
            if key is not None:
                d = self.d_informer.cache.get(key)
                if d is not None and d.spec.strategy.type == "Recreate":
                    self.queue.add(key)

    async def reconcile(self, key: str) -> None:
        cached = self.d_informer.cache.get(key)
        if cached is None:
            return
        if self.syncer.stale(cached):
            return  # our own write is on its way: its event brings the key back
        d = _pods.copy_of(cached)
        if _pods.selects_nothing(d.spec.selector):
            self.recorder.event(
                d, WARNING, "SelectingAll", "This deployment is selecting all pods. A non-empty "
                "selector is required.",
            )  # fmt: skip
            if d.status.observed_generation < d.metadata.generation:
                d.status.observed_generation = d.metadata.generation
                await self.syncer.write_status(d)
            return
        try:
            selector = _pods.selector_of(d.spec.selector)
            fenceposts(d)
        except (SelectorError, ValueError) as exc:
            log.warning("deployment ignored", deployment=key, error=str(exc))
            self.recorder.event(d, WARNING, "InvalidSpec", str(exc))
            return
        rs_list = await self._claim_replica_sets(d, selector)
        if any(self.syncer.stale(rs) for rs in rs_list):
            return
        if d.metadata.HasField("deletion_timestamp"):
            await sync_status_only(self.syncer, d, rs_list)
            return
        d = await check_paused_condition(self.syncer, d)
        if d.spec.paused:
            await sync(self.syncer, d, rs_list)
            return
        if await is_scaling_event(d, rs_list):
            await sync(self.syncer, d, rs_list)
            return
        if d.spec.strategy.type == "Recreate":
            await rollout_recreate(self.syncer, d, rs_list)
        else:
            await rollout_rolling(self.syncer, d, rs_list)

    async def _claim_replica_sets(
        self, d: apps_pb2.Deployment, selector: LabelSelector
    ) -> list[apps_pb2.ReplicaSet]:
        """Copies of the ReplicaSets `d` controls, after adopting matching orphans and
        releasing owned ones that no longer match."""
        uid = d.metadata.uid
        out: list[apps_pb2.ReplicaSet] = []
        deleting = d.metadata.HasField("deletion_timestamp")
        for cached in self.rs_informer.cache.by_index(NAMESPACE_INDEX, d.metadata.namespace):
            ref = _pods.controller_ref(cached)
            matches = selector.matches(cached.metadata.labels)
            rs = _pods.copy_of(cached)
            if ref is not None:
                if ref.uid != uid:
                    continue
                if matches:
                    out.append(rs)
                elif not deleting and not rs.metadata.HasField("deletion_timestamp"):
                    keep = [r for r in rs.metadata.owner_references if r.uid != uid]
                    del rs.metadata.owner_references[:]
                    rs.metadata.owner_references.extend(keep)
                    with contextlib.suppress(NotFound, Conflict):
                        self.syncer.remember(await self.client.update(rs))
                continue
            if not matches or deleting or rs.metadata.HasField("deletion_timestamp"):
                continue
            rs.metadata.owner_references.append(
                _pods.new_controller_ref(d, api_version=API_VERSION, kind=KIND)
            )
            try:
                adopted = cast(apps_pb2.ReplicaSet, await self.client.update(rs))
            except (NotFound, Conflict):
                continue
            self.syncer.remember(adopted)
            out.append(adopted)
        return out
