"""The StatefulSet controller (apps/v1): pods with a stable identity and stable storage, as
Kubernetes' statefulset controller.

Per key, level-triggered; `plan` is the pure decision from the StatefulSet, the pods it
controls and the claims of its namespace:

- **Identity**: the pod of ordinal i is `<name>-i`, with hostname `<name>-i` and subdomain
  spec.serviceName (so the headless Service's DNS name `<name>-i.<service>.<ns>.svc...`
  answers), and the labels `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/
  pod-index` and `controller-revision-hash`.
- **Storage**: for each volumeClaimTemplate, the claim `<template>-<name>-i` is created
  before the pod and mounted as the pod volume of the template's name. It is not deleted
  with the pod, so a replacement mounts the same data. persistentVolumeClaimRetentionPolicy:
  whenDeleted Delete makes the StatefulSet the claims' owner (the garbage collector removes
  them with it); whenScaled Delete deletes the claims of ordinals beyond spec.replicas once
  their pod is gone.
- **OrderedReady** (default): ordinals 0..N-1 are created one at a time, each waiting for the
  one before to be Running and Ready (and available for minReadySeconds); a failed pod is
  deleted and made again before anything else happens; scale-down removes the highest
  ordinal first, one at a time, and only while every remaining pod is healthy. **Parallel**
  creates and deletes without waiting.
- **History**: a ControllerRevision per distinct template, `<name>-<hash>`, trimmed to
  revisionHistoryLimit (never the current or update revision, nor one a pod runs)
  (k8semu/controllers/history.py).
- **Updates**: `updateRevision` is the revision of the template (`<name>-<hash>`, also the
  pods' `controller-revision-hash`, as Kubernetes labels them). RollingUpdate replaces pods
  from the highest ordinal down to spec.updateStrategy.rollingUpdate.partition, one at a
  time, each only once every pod is healthy; a pod below the partition that is made again
  gets the current revision's template (from its ControllerRevision); OnDelete replaces a
  pod only when someone deletes it.
- **Status**: replicas, readyReplicas, availableReplicas, currentReplicas, updatedReplicas,
  currentRevision (becomes updateRevision once every pod has it), updateRevision,
  observedGeneration.

- **Adoption**: an orphan pod the selector matches, named `<name>-N`, is adopted (a set
  made again after `kubectl delete sts --cascade=orphan` takes its pods back).

Not done: orphan adoption of revisions, spec.ordinals, maxUnavailable.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from k8semu.client import (
    NAMESPACE_INDEX,
    AlreadyExists,
    NotFound,
    object_key,
)
from k8semu.client.events import NORMAL, WARNING
from k8semu.controllers import _pods, history
from k8semu.controllers._podcontrol import PodControl
from k8semu.controllers.context import ControllerContext, KeyedController
from k8semu.controllers.deployment.util import template_hash
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apps_pb2, core_pb2

log = get_logger(__name__)

API_VERSION = "apps/v1"
KIND = "StatefulSet"
REVISION_HASH = history.REVISION_HASH
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def revision_hash(sts: apps_pb2.StatefulSet) -> str:
    return template_hash(sts.spec.template, sts.status.collision_count)


def update_revision(sts: apps_pb2.StatefulSet) -> str:
    """The name of the revision of the StatefulSet's template (its pods' label)."""
    return history.revision_name(sts.metadata.name, revision_hash(sts))


def ordinal_of(sts: apps_pb2.StatefulSet, pod: core_pb2.Pod) -> int | None:
    """i for a pod named `<sts>-i`; None for any other name."""
    prefix = f"{sts.metadata.name}-"
    name = pod.metadata.name
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    if not rest.isdigit() or (rest != "0" and rest.startswith("0")):
        return None
    return int(rest)


def claim_name(template: core_pb2.PersistentVolumeClaim, sts_name: str, ordinal: int) -> str:
    return f"{template.metadata.name}-{sts_name}-{ordinal}"


def claims_for(sts: apps_pb2.StatefulSet, ordinal: int) -> list[core_pb2.PersistentVolumeClaim]:
    """The claims ordinal `ordinal` mounts, as they are created."""
    out = []
    for tmpl in sts.spec.volume_claim_templates:
        claim = core_pb2.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
        claim.metadata.name = claim_name(tmpl, sts.metadata.name, ordinal)
        claim.metadata.namespace = sts.metadata.namespace
        claim.metadata.labels.update(tmpl.metadata.labels)
        claim.metadata.labels.update(sts.spec.selector.match_labels)
        claim.metadata.annotations.update(tmpl.metadata.annotations)
        claim.spec.CopyFrom(tmpl.spec)
        if sts.spec.persistent_volume_claim_retention_policy.when_deleted == "Delete":
            claim.metadata.owner_references.append(
                _pods.new_controller_ref(sts, api_version=API_VERSION, kind=KIND)
            )
            claim.metadata.owner_references[0].controller = False
        out.append(claim)
    return out


def stateful_pod(sts: apps_pb2.StatefulSet, ordinal: int, revision: str) -> core_pb2.Pod:
    """The pod of `ordinal`: its name, DNS identity, labels and claim volumes."""
    pod = _pods.pod_from_template(sts.spec.template, sts, api_version=API_VERSION, kind=KIND)
    name = f"{sts.metadata.name}-{ordinal}"
    pod.metadata.ClearField("generate_name")
    pod.metadata.name = name
    pod.metadata.labels[REVISION_HASH] = revision
    pod.metadata.labels[POD_NAME_LABEL] = name
    pod.metadata.labels[POD_INDEX_LABEL] = str(ordinal)
    pod.spec.hostname = name
    pod.spec.subdomain = sts.spec.service_name
    for tmpl in sts.spec.volume_claim_templates:
        kept = [v for v in pod.spec.volumes if v.name != tmpl.metadata.name]
        del pod.spec.volumes[:]
        pod.spec.volumes.extend(kept)
        volume = pod.spec.volumes.add(name=tmpl.metadata.name)
        volume.persistent_volume_claim.claim_name = claim_name(tmpl, sts.metadata.name, ordinal)
    return pod


def versioned_pod(
    sts: apps_pb2.StatefulSet, ordinal: int, current: tuple[str, core_pb2.PodTemplateSpec] | None
) -> core_pb2.Pod:
    """Kubernetes' newVersionedStatefulSetPod: below a RollingUpdate's partition the pod of
    the current revision (`current`: its name and template, when known), else the update
    revision's."""
    strategy = sts.spec.update_strategy
    if (
        current is not None
        and strategy.type == "RollingUpdate"
        and ordinal < strategy.rolling_update.partition
    ):
        old = _pods.copy_of(sts)
        old.spec.template.CopyFrom(current[1])
        return stateful_pod(old, ordinal, current[0])
    return stateful_pod(sts, ordinal, update_revision(sts))


@dataclass(slots=True)
class Plan:
    creates: list[int] = field(default_factory=list)  # ordinals
    deletes: list[core_pb2.Pod] = field(default_factory=list)
    claims: list[core_pb2.PersistentVolumeClaim] = field(default_factory=list)  # to create
    claim_deletes: list[str] = field(default_factory=list)  # names (whenScaled Delete)
    status: apps_pb2.StatefulSetStatus = field(default_factory=apps_pb2.StatefulSetStatus)
    recheck_after: float | None = None


@dataclass(frozen=True, slots=True)
class _View:
    """What `plan`'s steps read: the StatefulSet, its pods by ordinal, the health test."""

    sts: apps_pb2.StatefulSet
    by_ordinal: dict[int, core_pb2.Pod]
    healthy: Callable[[core_pb2.Pod], bool]
    ordered: bool  # OrderedReady


def plan(
    sts: apps_pb2.StatefulSet,
    pods: Iterable[core_pb2.Pod],
    claims: Iterable[str],
    now: float,
) -> Plan:
    """What one reconcile does (see the module docstring); `claims` are the names of the
    claims that exist in the StatefulSet's namespace."""
    p = Plan()
    update = update_revision(sts)
    replicas = sts.spec.replicas
    by_ordinal: dict[int, core_pb2.Pod] = {}
    for pod in pods:
        ordinal = ordinal_of(sts, pod)
        if ordinal is not None:
            by_ordinal[ordinal] = pod
    min_ready = sts.spec.min_ready_seconds

    def healthy(pod: core_pb2.Pod) -> bool:
        return (
            pod.status.phase == "Running"
            and not _pods.is_pod_terminating(pod)
            and _pods.is_pod_available(pod, min_ready, now)
        )

    ordered = sts.spec.pod_management_policy != "Parallel"
    v = _View(sts, by_ordinal, healthy, ordered)
    _make_and_repair(v, p)
    have = set(claims)
    for ordinal in p.creates:
        p.claims.extend(c for c in claims_for(sts, ordinal) if c.metadata.name not in have)
    if not ordered or not (p.creates or p.deletes):
        _condemn(v, p)
    if not p.creates and not p.deletes:
        _roll(v, p, update)
    if sts.spec.persistent_volume_claim_retention_policy.when_scaled == "Delete":
        for tmpl in sts.spec.volume_claim_templates:
            for name in sorted(have):
                ordinal = _claim_ordinal(name, tmpl, sts.metadata.name)
                if ordinal is not None and ordinal >= replicas and ordinal not in by_ordinal:
                    p.claim_deletes.append(name)
    _status(v, p, update, now)
    return p


def _claim_ordinal(name: str, tmpl: core_pb2.PersistentVolumeClaim, sts_name: str) -> int | None:
    prefix = f"{tmpl.metadata.name}-{sts_name}-"
    rest = name[len(prefix) :] if name.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


def _make_and_repair(v: _View, p: Plan) -> None:
    """Ordinals 0..replicas-1: create the missing, delete the finished (to be made again);
    OrderedReady stops at the first ordinal that is not healthy yet."""
    sts, by_ordinal, healthy, ordered = v.sts, v.by_ordinal, v.healthy, v.ordered
    for ordinal in range(sts.spec.replicas):
        pod = by_ordinal.get(ordinal)
        if pod is None:
            p.creates.append(ordinal)
        elif pod.status.phase in ("Failed", "Succeeded") and not _pods.is_pod_terminating(pod):
            p.deletes.append(pod)
        elif healthy(pod) or not ordered:
            continue
        if ordered:
            return


def _condemn(v: _View, p: Plan) -> None:
    """Ordinals >= replicas go, highest first; OrderedReady one at a time, each after the
    one before is gone, and only while every pod is healthy."""
    sts, by_ordinal, healthy, ordered = v.sts, v.by_ordinal, v.healthy, v.ordered
    condemned = sorted((o for o in by_ordinal if o >= sts.spec.replicas), reverse=True)
    if not condemned:
        return
    if ordered and any(not healthy(q) for o, q in by_ordinal.items() if o < condemned[0]):
        return  # a pod that is not healthy (or a terminating condemned one) blocks
    for ordinal in condemned:
        pod = by_ordinal[ordinal]
        if not _pods.is_pod_terminating(pod):
            p.deletes.append(pod)
        if ordered:
            return


def _roll(v: _View, p: Plan, update: str) -> None:
    """RollingUpdate: the highest ordinal >= partition still on an older revision is deleted
    (its replacement comes from the new template), once every pod is healthy."""
    sts, by_ordinal, healthy = v.sts, v.by_ordinal, v.healthy
    strategy = sts.spec.update_strategy
    if strategy.type != "RollingUpdate":
        return
    pods = [by_ordinal.get(o) for o in range(sts.spec.replicas)]
    if any(q is None or not healthy(q) for q in pods):
        return
    for ordinal in range(sts.spec.replicas - 1, strategy.rolling_update.partition - 1, -1):
        pod = by_ordinal[ordinal]
        if pod.metadata.labels.get(REVISION_HASH) != update:
            p.deletes.append(pod)
            return


def _status(v: _View, p: Plan, update: str, now: float) -> None:
    sts, by_ordinal, healthy = v.sts, v.by_ordinal, v.healthy
    st = p.status
    st.CopyFrom(sts.status)
    current = sts.status.current_revision or update
    live = [q for q in by_ordinal.values() if q.status.phase not in ("Failed", "Succeeded")]
    st.replicas = len(live)
    st.ready_replicas = sum(
        1 for q in live if _pods.is_pod_ready(q) and not _pods.is_pod_terminating(q)
    )
    st.available_replicas = sum(1 for q in live if healthy(q))
    st.updated_replicas = sum(1 for q in live if q.metadata.labels.get(REVISION_HASH) == update)
    st.current_replicas = sum(1 for q in live if q.metadata.labels.get(REVISION_HASH) == current)
    st.update_revision = update
    st.current_revision = current
    if st.updated_replicas == st.replicas == sts.spec.replicas and not p.deletes:
        st.current_revision = update
        st.current_replicas = st.updated_replicas
    st.observed_generation = sts.metadata.generation
    waits = [
        w
        for q in live
        if (w := _pods.available_in(q, sts.spec.min_ready_seconds, now)) is not None and w > 0
    ]
    p.recheck_after = min(waits) + 0.05 if waits else None


class StatefulSetController(KeyedController):
    """One instance per process; `run()` after the context's informers are started."""

    name = "statefulset"

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx, clock=clock)
        self.pods = PodControl(ctx.client, ctx.recorder)
        self.sts_informer = self.informer(apps_pb2.StatefulSet)
        self.pod_informer = self.informer(core_pb2.Pod, owned=True)
        self.claim_informer = self.informer(core_pb2.PersistentVolumeClaim)
        self.history = history.RevisionHistory(
            ctx, KIND, self.queue, self.sts_informer.cache.get_by_name
        )
        self.watch(self.sts_informer, self._enqueue)
        self.watch(self.pod_informer, self._pod_changed, deleted=self._pod_changed)

    def _pod_changed(self, pod: core_pb2.Pod) -> None:
        key = _pods.controller_key(pod, KIND, self.sts_informer.cache.get_by_name)
        if key is not None:
            self.queue.add(key)
        else:
            # An orphan (its StatefulSet deleted with --cascade=orphan): the sets that may
            # adopt it look again.
            sets = self.sts_informer.cache.by_index(NAMESPACE_INDEX, pod.metadata.namespace)
            for sts in _pods.orphan_adopters(pod, sets):
                self.queue.add(object_key(sts))

    async def reconcile(self, key: str) -> None:
        sts = self.sts_informer.cache.get(key)
        if sts is None or sts.metadata.HasField("deletion_timestamp"):
            return
        if await self._adopt_orphans(sts):
            return  # the adopted pods' update events bring the key back, with them owned
        pods = self.controlled(self.pod_informer, sts)
        in_use = {sts.status.current_revision, sts.status.update_revision} - {""}
        in_use.update(h for pod in pods if (h := pod.metadata.labels.get(REVISION_HASH)))
        if not await self.history.sync(sts, revision_hash(sts), in_use):
            return
        claims = [
            c.metadata.name
            for c in self.claim_informer.cache.by_index(NAMESPACE_INDEX, sts.metadata.namespace)
        ]
        p = plan(sts, pods, claims, self.clock())
        error = await self._apply(sts, p)
        await self.write_status(sts, p.status)
        if p.recheck_after is not None:
            self.queue.add_after(key, p.recheck_after)
        if error is not None:
            raise error

    async def _adopt_orphans(self, sts: apps_pb2.StatefulSet) -> bool:
        """An orphan the selector matches and whose name is one of this set's ordinals
        (`<name>-N`) gets the set as its controller (and the plan then deletes those beyond
        spec.replicas). True when it adopted any."""
        return await self.pods.adopt_orphans(
            sts,
            self.pod_informer.cache.by_index(NAMESPACE_INDEX, sts.metadata.namespace),
            api_version=API_VERSION,
            kind=KIND,
            may_adopt=lambda pod: ordinal_of(sts, pod) is not None,
        )

    async def _apply(self, sts: apps_pb2.StatefulSet, p: Plan) -> BaseException | None:
        """Claims first (a pod never starts without its storage), then the pods; the first
        error, if any."""
        try:
            for claim in p.claims:
                await self._create_claim(sts, claim)
            for name in p.claim_deletes:
                await self._delete_claim(sts, name)
            for pod in p.deletes:
                await self.pods.delete(sts, pod)
            current = self._current(sts)
            for ordinal in p.creates:
                # AlreadyExists: the cache is behind, the pod's add event is on its way.
                with contextlib.suppress(AlreadyExists):
                    await self.pods.create(sts, versioned_pod(sts, ordinal, current))
        except Exception as exc:  # reported by the worker, after the status is written
            return exc
        return None

    def _current(self, sts: apps_pb2.StatefulSet) -> tuple[str, core_pb2.PodTemplateSpec] | None:
        """The current revision's name and template, when it is not the update revision."""
        name = sts.status.current_revision
        if not name or name == update_revision(sts):
            return None
        template = self.history.template(sts, name)
        return None if template is None else (name, template)

    async def _create_claim(
        self, sts: apps_pb2.StatefulSet, claim: core_pb2.PersistentVolumeClaim
    ) -> None:
        pod = f"{sts.metadata.name}-{claim.metadata.name.rsplit('-', 1)[-1]}"
        try:
            await self.client.create(claim)
        except AlreadyExists:
            return
        except Exception as exc:
            self.ctx.recorder.event(
                sts, WARNING, "FailedCreate",
                f"create Claim {claim.metadata.name} for Pod {pod} in StatefulSet"
                f" {sts.metadata.name} failed error: {exc}",
            )  # fmt: skip
            raise
        self.ctx.recorder.event(
            sts, NORMAL, "SuccessfulCreate",
            f"create Claim {claim.metadata.name} Pod {pod} in StatefulSet {sts.metadata.name}"
            " success",
        )  # fmt: skip

    async def _delete_claim(self, sts: apps_pb2.StatefulSet, name: str) -> None:
        try:
            await self.client.delete(
                core_pb2.PersistentVolumeClaim, name, namespace=sts.metadata.namespace
            )
        except NotFound:
            return
        self.ctx.recorder.event(
            sts, NORMAL, "SuccessfulDelete",
            f"delete Claim {name} in StatefulSet {sts.metadata.name} success",
        )  # fmt: skip
