"""The Deployment controller: rolls a Deployment's pod template out through ReplicaSets.

Per key (namespace/name), level-triggered, following Kubernetes' deployment controller:

- The ReplicaSet of the current template is `<deploy>-<hash>`, the hash of the template (and
  `status.collisionCount`), with the label `pod-template-hash=<hash>` added to its selector and
  template; it carries `deployment.kubernetes.io/revision` (the highest revision so far + 1
  when it becomes the new one; the old numbers of a re-used ReplicaSet go to
  `revision-history`), the Deployment's annotations (`kubernetes.io/change-cause` among
  them), and `desired-replicas`/`max-replicas`, which tell a scaling event from a rollout.
  The Deployment gets the same revision annotation.
- RollingUpdate: scale the new ReplicaSet up while the total stays within replicas +
  maxSurge, and old ones down (unhealthy pods first) while the available pods stay at least
  replicas - maxUnavailable (percentages: surge rounds up, unavailable down; both 0 means
  maxUnavailable 1). Recreate: scale every old ReplicaSet to 0, wait until their pods are gone,
  then create/scale the new one.
- Paused: no rollout step; a change of replicas still scales the ReplicaSets proportionally
  (as does a replicas change in the middle of a rollout).
- Old ReplicaSets scaled to zero beyond `revisionHistoryLimit` are deleted, oldest first.
- Status: replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas,
  observedGeneration; conditions Available (MinimumReplicasAvailable/-Unavailable) and
  Progressing (NewReplicaSetCreated, FoundNewReplicaSet, ReplicaSetUpdated,
  NewReplicaSetAvailable, ProgressDeadlineExceeded, DeploymentPaused, DeploymentResumed).

Owns ReplicaSets (spec and annotations) and the Deployment's status and revision annotation;
never writes pods (the ReplicaSet controller does). Rollback is `k8semu rollout undo`, client
side, as kubectl does it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import cast

from k8semu.api import timestamps
from k8semu.api.errors import SelectorError
from k8semu.api.selectors import LabelSelector
from k8semu.client import (
    NAMESPACE_INDEX,
    OWNER_UID_INDEX,
    AlreadyExists,
    Conflict,
    NotFound,
    index_by_namespace,
    index_by_owner_uid,
    object_key,
)
from k8semu.client.controller import run_workers
from k8semu.client.events import NORMAL, WARNING
from k8semu.client.workqueue import WorkQueue
from k8semu.controllers import _pods
from k8semu.controllers.context import ControllerContext
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apps_pb2, core_pb2, meta_pb2

log = get_logger(__name__)

API_VERSION = "apps/v1"
KIND = "Deployment"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
CHANGE_CAUSE = "kubernetes.io/change-cause"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Deployment annotations never copied to its ReplicaSets (Kubernetes' annotationsToSkip).
SKIPPED_ANNOTATIONS = frozenset(
    {LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS}
)

# Condition types and reasons, Kubernetes' names.
AVAILABLE = "Available"
PROGRESSING = "Progressing"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
FAILED_RS_CREATE = "ReplicaSetCreateError"

_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_MAX_INT32 = 2**31 - 1


# ---- pure helpers --------------------------------------------------------------------------


def replicas_of(obj: apps_pb2.Deployment | apps_pb2.ReplicaSet) -> int:
    return obj.spec.replicas if obj.spec.HasField("replicas") else 1


def revision_of(rs: apps_pb2.ReplicaSet | apps_pb2.Deployment) -> int:
    try:
        return int(rs.metadata.annotations.get(REVISION, "0"))
    except ValueError:
        return 0


def template_hash(template: core_pb2.PodTemplateSpec, collision_count: int = 0) -> str:
    """A short, label-safe hash of a pod template (FNV-1a 32 over its deterministic
    serialization and the collision count), spelled in an alphabet without vowels."""
    data = template.SerializeToString(deterministic=True)
    if collision_count:
        data += collision_count.to_bytes(4, "little")
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    out = []
    while True:
        value, digit = divmod(value, len(_SAFE_ALPHABET))
        out.append(_SAFE_ALPHABET[digit])
        if value == 0:
            break
    return "".join(out)


def _without_hash(template: core_pb2.PodTemplateSpec) -> core_pb2.PodTemplateSpec:
    t = _pods.copy_of(template)
    t.metadata.labels.pop(_pods.POD_TEMPLATE_HASH_LABEL, None)
    return t


def equal_ignore_hash(a: core_pb2.PodTemplateSpec, b: core_pb2.PodTemplateSpec) -> bool:
    """Templates equal apart from the pod-template-hash label (Kubernetes' EqualIgnoreHash)."""
    return _without_hash(a) == _without_hash(b)


def scaled_value(value: meta_pb2.IntOrString, total: int, *, round_up: bool, field: str) -> int:
    """An intOrString of `total`: an int as is, "25%" as a share rounded up or down."""
    which = value.WhichOneof("value")
    if which is None:
        return 0
    if which == "int_val":
        if value.int_val < 0:
            raise ValueError(f"{field}: invalid value {value.int_val}: must be >= 0")
        return value.int_val
    text = value.str_val
    if not text.endswith("%") or not text[:-1].isdigit():
        raise ValueError(f'{field}: invalid value "{text}": must be an integer or a percentage')
    share = int(text[:-1]) * total / 100
    return math.ceil(share) if round_up else math.floor(share)


def fenceposts(d: apps_pb2.Deployment) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) in pods; both 0 would deadlock, so unavailable becomes 1."""
    if d.spec.strategy.type == "Recreate":
        return 0, replicas_of(d)
    rolling = d.spec.strategy.rolling_update
    want = replicas_of(d)
    where = "spec.strategy.rollingUpdate"
    surge = (
        scaled_value(rolling.max_surge, want, round_up=True, field=f"{where}.maxSurge")
        if rolling.HasField("max_surge")
        else math.ceil(want * 0.25)
    )
    unavailable = (
        scaled_value(rolling.max_unavailable, want, round_up=False, field=f"{where}.maxUnavailable")
        if rolling.HasField("max_unavailable")
        else math.floor(want * 0.25)
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_unavailable(d: apps_pb2.Deployment) -> int:
    if d.spec.strategy.type != "RollingUpdate" or replicas_of(d) == 0:
        return 0
    return min(fenceposts(d)[1], replicas_of(d))


def has_progress_deadline(d: apps_pb2.Deployment) -> bool:
    return (
        d.spec.HasField("progress_deadline_seconds")
        and d.spec.progress_deadline_seconds != _MAX_INT32
    )


def get_condition(
    status: apps_pb2.DeploymentStatus, type_: str
) -> apps_pb2.DeploymentCondition | None:
    for cond in status.conditions:
        if cond.type == type_:
            return cond
    return None


def new_condition(
    type_: str, status: str, reason: str, message: str, now: float
) -> apps_pb2.DeploymentCondition:
    ts = timestamps.time_at(now)
    return apps_pb2.DeploymentCondition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_update_time=ts,
        last_transition_time=ts,
    )


def set_condition(status: apps_pb2.DeploymentStatus, cond: apps_pb2.DeploymentCondition) -> None:
    """Kubernetes' SetDeploymentCondition: same status and reason: unchanged; same status:
    keep lastTransitionTime."""
    current = get_condition(status, cond.type)
    if current is not None and current.status == cond.status and current.reason == cond.reason:
        return
    if current is not None and current.status == cond.status:
        cond.last_transition_time.CopyFrom(current.last_transition_time)
    remove_condition(status, cond.type)
    status.conditions.append(cond)


def remove_condition(status: apps_pb2.DeploymentStatus, type_: str) -> None:
    keep = [c for c in status.conditions if c.type != type_]
    del status.conditions[:]
    status.conditions.extend(keep)


def deployment_complete(d: apps_pb2.Deployment, status: apps_pb2.DeploymentStatus) -> bool:
    want = replicas_of(d)
    return (
        status.updated_replicas == want
        and status.replicas == want
        and status.available_replicas == want
        and status.observed_generation >= d.metadata.generation
    )


def deployment_progressing(d: apps_pb2.Deployment, status: apps_pb2.DeploymentStatus) -> bool:
    old = d.status
    return (
        status.updated_replicas > old.updated_replicas
        or (status.replicas - status.updated_replicas) < (old.replicas - old.updated_replicas)
        or status.ready_replicas > old.ready_replicas
        or status.available_replicas > old.available_replicas
    )


def deployment_timed_out(
    d: apps_pb2.Deployment, status: apps_pb2.DeploymentStatus, now: float
) -> bool:
    if not has_progress_deadline(d):
        return False
    cond = get_condition(status, PROGRESSING)
    if cond is None or cond.reason == NEW_RS_AVAILABLE:
        return False
    if cond.reason == TIMED_OUT:
        return True
    updated = timestamps.to_seconds(cond.last_update_time)
    return updated + d.spec.progress_deadline_seconds < now


def _by_creation(rs: apps_pb2.ReplicaSet) -> tuple[float, str]:
    return (float(rs.metadata.creation_timestamp.ToNanoseconds()), rs.metadata.name)


def _int_annotation(rs: apps_pb2.ReplicaSet, name: str) -> int | None:
    try:
        return int(rs.metadata.annotations[name])
    except (KeyError, ValueError):
        return None


# ---- the controller ------------------------------------------------------------------------


class DeploymentController:
    """One instance per process; `run()` after the context's informers are started."""

    name = "deployment"

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.clock = clock
        self.queue: WorkQueue[str] = WorkQueue(name=self.name)
        # uid -> resourceVersion this controller wrote: a cached copy older than that is
        # stale, and deciding on it could scale twice.
        self._written: dict[str, int] = {}
        self.d_informer = ctx.informers.informer(
            apps_pb2.Deployment, indexers={NAMESPACE_INDEX: index_by_namespace}
        )
        self.rs_informer = ctx.informers.informer(
            apps_pb2.ReplicaSet,
            indexers={NAMESPACE_INDEX: index_by_namespace, OWNER_UID_INDEX: index_by_owner_uid},
        )
        self.pod_informer = ctx.informers.informer(
            core_pb2.Pod,
            indexers={NAMESPACE_INDEX: index_by_namespace, OWNER_UID_INDEX: index_by_owner_uid},
        )
        self.d_informer.add_event_handler(
            on_add=self._enqueue,
            on_update=lambda old, new: self._enqueue(new),
            on_delete=self._d_deleted,
        )
        self.rs_informer.add_event_handler(
            on_add=self._rs_changed,
            on_update=self._rs_updated,
            on_delete=self._rs_deleted,
        )
        self.pod_informer.add_event_handler(on_delete=self._pod_deleted)

    # ---- event handlers: only enqueue ----------------------------------------------------------

    def _enqueue(self, d: apps_pb2.Deployment) -> None:
        self.queue.add(object_key(d))

    def _d_deleted(self, d: apps_pb2.Deployment) -> None:
        self._written.pop(d.metadata.uid, None)
        self._enqueue(d)

    def _rs_deleted(self, rs: apps_pb2.ReplicaSet) -> None:
        self._written.pop(rs.metadata.uid, None)
        self._rs_changed(rs)

    def _owner_key(self, rs: apps_pb2.ReplicaSet) -> str | None:
        ref = _pods.controller_ref(rs)
        if ref is None or ref.kind != KIND:
            return None
        d = self.d_informer.cache.get_by_name(ref.name, rs.metadata.namespace)
        if d is None or d.metadata.uid != ref.uid:
            return None
        return object_key(d)

    def _rs_changed(self, rs: apps_pb2.ReplicaSet) -> None:
        key = self._owner_key(rs)
        if key is not None:
            self.queue.add(key)
            return
        if _pods.controller_ref(rs) is None:
            for d in self.d_informer.cache.by_index(NAMESPACE_INDEX, rs.metadata.namespace):
                try:
                    if not _pods.selects_nothing(d.spec.selector) and _pods.selector_of(
                        d.spec.selector
                    ).matches(rs.metadata.labels):
                        self._enqueue(d)
                except SelectorError:
                    continue

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

    # ---- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.ctx.informers.wait_synced()
        log.info("controller started", controller=self.name, workers=self.ctx.config.workers)
        await run_workers(self.queue, self.reconcile, self.ctx.config.workers, name=self.name)

    def _stale(self, obj: apps_pb2.Deployment | apps_pb2.ReplicaSet) -> bool:
        written = self._written.get(obj.metadata.uid)
        if written is None:
            return False
        try:
            current = int(obj.metadata.resource_version)
        except ValueError:
            return False
        if current >= written:
            del self._written[obj.metadata.uid]
            return False
        return True

    def _remember(self, obj: apps_pb2.Deployment | apps_pb2.ReplicaSet) -> None:
        with contextlib.suppress(ValueError):
            self._written[obj.metadata.uid] = int(obj.metadata.resource_version)

    async def reconcile(self, key: str) -> None:
        cached = self.d_informer.cache.get(key)
        if cached is None:
            return
        if self._stale(cached):
            return  # our own write is on its way: its event brings the key back
        d = _pods.copy_of(cached)
        if _pods.selects_nothing(d.spec.selector):
            self.recorder.event(
                d, WARNING, "SelectingAll", "This deployment is selecting all pods. A non-empty "
                "selector is required.",
            )  # fmt: skip
            if d.status.observed_generation < d.metadata.generation:
                d.status.observed_generation = d.metadata.generation
                await self._write_status(d)
            return
        try:
            selector = _pods.selector_of(d.spec.selector)
            fenceposts(d)
        except (SelectorError, ValueError) as exc:
            log.warning("deployment ignored", deployment=key, error=str(exc))
            self.recorder.event(d, WARNING, "InvalidSpec", str(exc))
            return
        rs_list = await self._claim_replica_sets(d, selector)
        if any(self._stale(rs) for rs in rs_list):
            return
        if d.metadata.HasField("deletion_timestamp"):
            await self._sync_status_only(d, rs_list)
            return
        d = await self._check_paused_condition(d)
        if d.spec.paused:
            await self._sync(d, rs_list)
            return
        if await self._is_scaling_event(d, rs_list):
            await self._sync(d, rs_list)
            return
        if d.spec.strategy.type == "Recreate":
            await self._rollout_recreate(d, rs_list)
        else:
            await self._rollout_rolling(d, rs_list)

    # ---- ReplicaSets of a Deployment ----------------------------------------------------------

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
                        self._remember(await self.client.update(rs))
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
            self._remember(adopted)
            out.append(adopted)
        return out

    def _find_new(
        self, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]
    ) -> apps_pb2.ReplicaSet | None:
        same = [rs for rs in rs_list if equal_ignore_hash(rs.spec.template, d.spec.template)]
        return min(same, key=_by_creation) if same else None

    async def _get_all(
        self, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet], *, create: bool
    ) -> tuple[apps_pb2.Deployment, apps_pb2.ReplicaSet | None, list[apps_pb2.ReplicaSet]]:
        """(deployment, new ReplicaSet or None, old ReplicaSets); syncs revisions and creates
        the new ReplicaSet when `create`. The deployment returned is the latest written."""
        new_rs = self._find_new(d, rs_list)
        old = [rs for rs in rs_list if rs is not new_rs]
        max_old = max((revision_of(rs) for rs in old), default=0)
        revision = max_old + 1
        if new_rs is not None:
            d = await self._sync_new_rs(d, new_rs, revision)
        elif create:
            d, new_rs = await self._create_new_rs(d, rs_list, old, revision)
        return d, new_rs, old

    def _copy_annotations(self, d: apps_pb2.Deployment, rs: apps_pb2.ReplicaSet) -> bool:
        changed = False
        for k, v in d.metadata.annotations.items():
            if k in SKIPPED_ANNOTATIONS:
                continue
            if rs.metadata.annotations.get(k) != v:
                rs.metadata.annotations[k] = v
                changed = True
        return changed

    def _set_revision(self, rs: apps_pb2.ReplicaSet, revision: int) -> bool:
        current = revision_of(rs)
        if current >= revision:
            return False
        if current > 0:
            history = [h for h in rs.metadata.annotations.get(REVISION_HISTORY, "").split(",") if h]
            history.append(str(current))
            rs.metadata.annotations[REVISION_HISTORY] = ",".join(history)
        rs.metadata.annotations[REVISION] = str(revision)
        return True

    async def _sync_new_rs(
        self, d: apps_pb2.Deployment, new_rs: apps_pb2.ReplicaSet, revision: int
    ) -> apps_pb2.Deployment:
        changed = self._copy_annotations(d, new_rs)
        changed = self._set_revision(new_rs, revision) or changed
        if new_rs.spec.min_ready_seconds != d.spec.min_ready_seconds:
            new_rs.spec.min_ready_seconds = d.spec.min_ready_seconds
            changed = True
        if changed:
            updated = cast(apps_pb2.ReplicaSet, await self.client.update(new_rs))
            self._remember(updated)
            new_rs.CopyFrom(updated)
        d = await self._set_deployment_revision(d, revision_of(new_rs))
        if get_condition(d.status, PROGRESSING) is None and has_progress_deadline(d):
            set_condition(
                d.status,
                new_condition(
                    PROGRESSING,
                    "True",
                    FOUND_NEW_RS,
                    f'Found new replica set "{new_rs.metadata.name}"',
                    self.clock(),
                ),
            )
            d = await self._write_status(d)
        return d

    async def _set_deployment_revision(
        self, d: apps_pb2.Deployment, revision: int
    ) -> apps_pb2.Deployment:
        if d.metadata.annotations.get(REVISION) == str(revision):
            return d
        new = _pods.copy_of(d)
        new.metadata.annotations[REVISION] = str(revision)
        updated = cast(apps_pb2.Deployment, await self.client.update(new))
        self._remember(updated)
        updated.status.CopyFrom(d.status)  # keep conditions set but not yet written
        return updated

    async def _create_new_rs(
        self,
        d: apps_pb2.Deployment,
        rs_list: list[apps_pb2.ReplicaSet],
        old: list[apps_pb2.ReplicaSet],
        revision: int,
    ) -> tuple[apps_pb2.Deployment, apps_pb2.ReplicaSet | None]:
        collisions = d.status.collision_count if d.status.HasField("collision_count") else 0
        h = template_hash(d.spec.template, collisions)
        rs = apps_pb2.ReplicaSet(api_version=API_VERSION, kind="ReplicaSet")
        rs.metadata.name = f"{d.metadata.name}-{h}"
        rs.metadata.namespace = d.metadata.namespace
        rs.metadata.labels.update(d.spec.template.metadata.labels)
        rs.metadata.labels[_pods.POD_TEMPLATE_HASH_LABEL] = h
        rs.metadata.owner_references.append(
            _pods.new_controller_ref(d, api_version=API_VERSION, kind=KIND)
        )
        self._copy_annotations(d, rs)
        rs.metadata.annotations[REVISION] = str(revision)
        rs.spec.selector.CopyFrom(d.spec.selector)
        rs.spec.selector.match_labels[_pods.POD_TEMPLATE_HASH_LABEL] = h
        rs.spec.template.CopyFrom(d.spec.template)
        rs.spec.template.metadata.labels[_pods.POD_TEMPLATE_HASH_LABEL] = h
        rs.spec.min_ready_seconds = d.spec.min_ready_seconds
        replicas = self._new_rs_replicas(d, [*old], None)
        rs.spec.replicas = replicas
        surge, _ = fenceposts(d)
        rs.metadata.annotations[DESIRED_REPLICAS] = str(replicas_of(d))
        rs.metadata.annotations[MAX_REPLICAS] = str(replicas_of(d) + surge)
        try:
            created = cast(apps_pb2.ReplicaSet, await self.client.create(rs))
        except AlreadyExists:
            existing = cast(
                apps_pb2.ReplicaSet,
                await self.client.get(
                    apps_pb2.ReplicaSet, rs.metadata.name, namespace=rs.metadata.namespace
                ),
            )
            ref = _pods.controller_ref(existing)
            if (
                ref is not None
                and ref.uid == d.metadata.uid
                and equal_ignore_hash(existing.spec.template, d.spec.template)
            ):
                # Ours, not yet in the cache: use it.
                return await self._sync_new_rs(d, existing, revision), existing
            # A hash collision: try the next name.
            d.status.collision_count = collisions + 1
            await self._write_status(d)
            raise Conflict(
                f'replicasets "{rs.metadata.name}": name taken by another template; '
                f"collisionCount now {collisions + 1}"
            ) from None
        except Exception as exc:
            if has_progress_deadline(d):
                set_condition(
                    d.status,
                    new_condition(PROGRESSING, "False", FAILED_RS_CREATE, str(exc), self.clock()),
                )
                await self._write_status(d)
            self.recorder.event(d, WARNING, FAILED_RS_CREATE, f"Failed to create new replica set "
                                f'"{rs.metadata.name}": {exc}')  # fmt: skip
            raise
        self._remember(created)
        rs_list.append(created)
        if replicas > 0:
            self._scaled_event(d, created, "up", replicas)
        if has_progress_deadline(d):
            set_condition(
                d.status,
                new_condition(
                    PROGRESSING,
                    "True",
                    NEW_RS_CREATED,
                    f'Created new replica set "{created.metadata.name}"',
                    self.clock(),
                ),
            )
        d = await self._set_deployment_revision(d, revision)
        d = await self._write_status(d)
        return d, created

    # ---- scaling -------------------------------------------------------------------------------

    def _scaled_event(
        self, d: apps_pb2.Deployment, rs: apps_pb2.ReplicaSet, direction: str, to: int
    ) -> None:
        self.recorder.event(
            d, NORMAL, "ScalingReplicaSet", f"Scaled {direction} replica set {rs.metadata.name} "
            f"to {to}",
        )  # fmt: skip

    async def _scale_rs(self, d: apps_pb2.Deployment, rs: apps_pb2.ReplicaSet, to: int) -> bool:
        """Set `rs` (a copy, updated in place) to `to` replicas and the desired/max
        annotations of `d`; True when its size changed."""
        current = replicas_of(rs)
        surge, _ = fenceposts(d)
        desired, max_ = str(replicas_of(d)), str(replicas_of(d) + surge)
        annotations = rs.metadata.annotations
        if (
            current == to
            and annotations.get(DESIRED_REPLICAS) == desired
            and annotations.get(MAX_REPLICAS) == max_
        ):
            return False
        new = _pods.copy_of(rs)
        new.spec.replicas = to
        new.metadata.annotations[DESIRED_REPLICAS] = desired
        new.metadata.annotations[MAX_REPLICAS] = max_
        updated = cast(apps_pb2.ReplicaSet, await self.client.update(new))
        self._remember(updated)
        rs.CopyFrom(updated)
        if current != to:
            self._scaled_event(d, rs, "up" if to > current else "down", to)
            log.info(
                "scaled replica set",
                deployment=object_key(d),
                replicaset=rs.metadata.name,
                replicas=to,
                previous=current,
            )
        return current != to

    def _new_rs_replicas(
        self,
        d: apps_pb2.Deployment,
        all_rss: list[apps_pb2.ReplicaSet],
        new_rs: apps_pb2.ReplicaSet | None,
    ) -> int:
        """What the new ReplicaSet may grow to now (Kubernetes' NewRSNewReplicas)."""
        want = replicas_of(d)
        if d.spec.strategy.type == "Recreate":
            return want
        current_new = replicas_of(new_rs) if new_rs is not None else 0
        surge, _ = fenceposts(d)
        total = sum(replicas_of(rs) for rs in all_rss)
        if new_rs is not None and all(rs is not new_rs for rs in all_rss):
            total += current_new
        max_total = want + surge
        if total >= max_total:
            return current_new
        up = min(max_total - total, max(0, want - current_new))
        return current_new + up

    async def _is_scaling_event(
        self, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]
    ) -> bool:
        want = str(replicas_of(d))
        for rs in rs_list:
            if replicas_of(rs) <= 0:
                continue
            desired = rs.metadata.annotations.get(DESIRED_REPLICAS)
            if desired is not None and desired != want:
                return True
        return False

    async def _scale(
        self,
        d: apps_pb2.Deployment,
        new_rs: apps_pb2.ReplicaSet | None,
        old: list[apps_pb2.ReplicaSet],
    ) -> None:
        """Kubernetes' scale(): bring the ReplicaSets to the Deployment's size, in proportion
        to their sizes when several are active."""
        want = replicas_of(d)
        all_rss = [*([new_rs] if new_rs is not None else []), *old]
        active = [rs for rs in all_rss if replicas_of(rs) > 0]
        if len(active) <= 1:
            target = (
                active[0] if active else (new_rs or (max(old, key=_by_creation) if old else None))
            )
            if target is not None:
                await self._scale_rs(d, target, want)
            return
        if (
            new_rs is not None
            and replicas_of(new_rs) == want
            and new_rs.status.available_replicas == want
        ):
            for rs in old:
                if replicas_of(rs) > 0:
                    await self._scale_rs(d, rs, 0)
            return
        if d.spec.strategy.type != "RollingUpdate":
            return
        surge, _ = fenceposts(d)
        allowed = want + surge if want > 0 else 0
        current = sum(replicas_of(rs) for rs in active)
        to_add = allowed - current
        if to_add > 0:
            ordered = sorted(active, key=lambda rs: (-replicas_of(rs), -_by_creation(rs)[0]))
        else:
            ordered = sorted(active, key=lambda rs: (-replicas_of(rs), _by_creation(rs)[0]))
        sizes: dict[str, int] = {}
        added = 0
        if to_add != 0:
            for rs in ordered:
                proportion = self._proportion(rs, d, to_add, added, surge)
                sizes[rs.metadata.uid] = replicas_of(rs) + proportion
                added += proportion
        for i, rs in enumerate(ordered):
            size = sizes.get(rs.metadata.uid, replicas_of(rs))
            if i == 0 and to_add != 0:
                size += to_add - added  # leftovers to the largest
                size = max(size, 0)
            await self._scale_rs(d, rs, size)

    def _proportion(
        self, rs: apps_pb2.ReplicaSet, d: apps_pb2.Deployment, to_add: int, added: int, surge: int
    ) -> int:
        if to_add == 0:
            return 0
        want = replicas_of(d)
        if want == 0:
            fraction = -replicas_of(rs)
        else:
            deployment_size = want + surge
            annotated = _int_annotation(rs, MAX_REPLICAS)
            if annotated is None or annotated <= 0:
                annotated = d.status.replicas or deployment_size
            new_size = math.floor(replicas_of(rs) * deployment_size / annotated + 0.5)
            fraction = new_size - replicas_of(rs)
        allowed = to_add - added
        return min(allowed, fraction) if to_add > 0 else max(allowed, fraction)

    # ---- strategies ----------------------------------------------------------------------------

    async def _sync(self, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]) -> None:
        """Scaling and paused deployments: resize, no rollout step."""
        d, new_rs, old = await self._get_all(d, rs_list, create=False)
        await self._scale(d, new_rs, old)
        if d.spec.paused:
            await self._cleanup(d, old)
        await self._sync_status(d, new_rs, old, rollout=False)

    async def _sync_status_only(
        self, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]
    ) -> None:
        d, new_rs, old = await self._get_all(d, rs_list, create=False)
        await self._sync_status(d, new_rs, old, rollout=False)

    async def _rollout_rolling(
        self, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]
    ) -> None:
        d, new_rs, old = await self._get_all(d, rs_list, create=True)
        assert new_rs is not None
        all_rss = [new_rs, *old]
        if await self._reconcile_new_rs(d, all_rss, new_rs):
            await self._sync_status(d, new_rs, old)
            return
        if await self._reconcile_old_rss(d, all_rss, old, new_rs):
            await self._sync_status(d, new_rs, old)
            return
        status = self._calculate_status(d, new_rs, old)
        if deployment_complete(d, status):
            await self._cleanup(d, old)
        await self._sync_status(d, new_rs, old)

    async def _reconcile_new_rs(
        self,
        d: apps_pb2.Deployment,
        all_rss: list[apps_pb2.ReplicaSet],
        new_rs: apps_pb2.ReplicaSet,
    ) -> bool:
        want = replicas_of(d)
        current = replicas_of(new_rs)
        if current == want:
            return False
        if current > want:
            return await self._scale_rs(d, new_rs, want)
        return await self._scale_rs(d, new_rs, self._new_rs_replicas(d, all_rss, new_rs))

    async def _reconcile_old_rss(
        self,
        d: apps_pb2.Deployment,
        all_rss: list[apps_pb2.ReplicaSet],
        old: list[apps_pb2.ReplicaSet],
        new_rs: apps_pb2.ReplicaSet,
    ) -> bool:
        if sum(replicas_of(rs) for rs in old) == 0:
            return False
        all_pods = sum(replicas_of(rs) for rs in all_rss)
        min_available = replicas_of(d) - max_unavailable(d)
        new_unavailable = replicas_of(new_rs) - new_rs.status.available_replicas
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        cleaned = await self._cleanup_unhealthy(d, old, max_scaled_down)
        scaled = await self._scale_down_old_for_rolling(d, all_rss, old)
        return cleaned + scaled > 0

    async def _cleanup_unhealthy(
        self, d: apps_pb2.Deployment, old: list[apps_pb2.ReplicaSet], max_cleanup: int
    ) -> int:
        """Scale old ReplicaSets down by their unavailable pods first (oldest first): they
        add nothing to availability."""
        total = 0
        for rs in sorted(old, key=_by_creation):
            if total >= max_cleanup:
                break
            size = replicas_of(rs)
            if size == 0:
                continue
            unhealthy = size - rs.status.available_replicas
            if unhealthy <= 0:
                continue
            down = min(max_cleanup - total, unhealthy)
            await self._scale_rs(d, rs, size - down)
            total += down
        return total

    async def _scale_down_old_for_rolling(
        self,
        d: apps_pb2.Deployment,
        all_rss: list[apps_pb2.ReplicaSet],
        old: list[apps_pb2.ReplicaSet],
    ) -> int:
        min_available = replicas_of(d) - max_unavailable(d)
        available = sum(rs.status.available_replicas for rs in all_rss)
        if available <= min_available:
            return 0
        to_scale = available - min_available
        total = 0
        for rs in sorted(old, key=_by_creation):
            if total >= to_scale:
                break
            size = replicas_of(rs)
            if size == 0:
                continue
            down = min(size, to_scale - total)
            await self._scale_rs(d, rs, size - down)
            total += down
        return total

    async def _rollout_recreate(
        self, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]
    ) -> None:
        d, new_rs, old = await self._get_all(d, rs_list, create=False)
        scaled = False
        for rs in old:
            if replicas_of(rs) > 0:
                scaled = await self._scale_rs(d, rs, 0) or scaled
        if scaled:
            await self._sync_status(d, new_rs, old)
            return
        if self._old_pods_running(old):
            await self._sync_status(d, new_rs, old)
            return
        if new_rs is None:
            d, new_rs, old = await self._get_all(d, rs_list, create=True)
            assert new_rs is not None
        await self._reconcile_new_rs(d, [new_rs, *old], new_rs)
        status = self._calculate_status(d, new_rs, old)
        if deployment_complete(d, status):
            await self._cleanup(d, old)
        await self._sync_status(d, new_rs, old)

    def _old_pods_running(self, old: list[apps_pb2.ReplicaSet]) -> bool:
        for rs in old:
            if rs.status.replicas > 0:
                return True
            for pod in self.pod_informer.cache.by_index(OWNER_UID_INDEX, rs.metadata.uid):
                if pod.status.phase not in ("Succeeded", "Failed"):
                    return True
        return False

    async def _cleanup(self, d: apps_pb2.Deployment, old: list[apps_pb2.ReplicaSet]) -> None:
        """Delete old, empty ReplicaSets beyond revisionHistoryLimit, lowest revision first."""
        if not d.spec.HasField("revision_history_limit"):
            return
        alive = [rs for rs in old if not rs.metadata.HasField("deletion_timestamp")]
        diff = len(alive) - d.spec.revision_history_limit
        if diff <= 0:
            return
        for rs in sorted(alive, key=lambda r: (revision_of(r), _by_creation(r)))[:diff]:
            if (
                rs.status.replicas != 0
                or replicas_of(rs) != 0
                or rs.metadata.generation > rs.status.observed_generation
            ):
                continue
            try:
                await self.client.delete(
                    apps_pb2.ReplicaSet, rs.metadata.name, namespace=rs.metadata.namespace
                )
            except NotFound:
                continue
            log.info(
                "deleted old replica set", deployment=object_key(d), replicaset=rs.metadata.name
            )

    # ---- status -------------------------------------------------------------------------------

    async def _check_paused_condition(self, d: apps_pb2.Deployment) -> apps_pb2.Deployment:
        if not has_progress_deadline(d):
            return d
        cond = get_condition(d.status, PROGRESSING)
        if cond is not None and cond.reason == TIMED_OUT:
            return d
        paused = cond is not None and cond.reason == PAUSED
        now = self.clock()
        if d.spec.paused and not paused:
            set_condition(
                d.status, new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", now)
            )
        elif not d.spec.paused and paused:
            set_condition(
                d.status,
                new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", now),
            )
        else:
            return d
        return await self._write_status(d)

    def _calculate_status(
        self,
        d: apps_pb2.Deployment,
        new_rs: apps_pb2.ReplicaSet | None,
        old: list[apps_pb2.ReplicaSet],
    ) -> apps_pb2.DeploymentStatus:
        all_rss = [*([new_rs] if new_rs is not None else []), *old]
        status = apps_pb2.DeploymentStatus()
        status.CopyFrom(d.status)
        status.observed_generation = d.metadata.generation
        status.replicas = sum(rs.status.replicas for rs in all_rss)
        status.updated_replicas = new_rs.status.replicas if new_rs is not None else 0
        status.ready_replicas = sum(rs.status.ready_replicas for rs in all_rss)
        status.available_replicas = sum(rs.status.available_replicas for rs in all_rss)
        total = sum(replicas_of(rs) for rs in all_rss)
        status.unavailable_replicas = max(0, total - status.available_replicas)
        now = self.clock()
        if status.available_replicas >= replicas_of(d) - max_unavailable(d):
            cond = new_condition(
                AVAILABLE, "True", MIN_AVAILABLE, "Deployment has minimum availability.", now
            )
        else:
            cond = new_condition(
                AVAILABLE,
                "False",
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                now,
            )
        set_condition(status, cond)
        return status

    async def _sync_status(
        self,
        d: apps_pb2.Deployment,
        new_rs: apps_pb2.ReplicaSet | None,
        old: list[apps_pb2.ReplicaSet],
        *,
        rollout: bool = True,
    ) -> None:
        """calculateStatus, then (for a rollout) Kubernetes' syncRolloutStatus conditions."""
        status = self._calculate_status(d, new_rs, old)
        now = self.clock()
        if not has_progress_deadline(d):
            remove_condition(status, PROGRESSING)
        elif rollout and new_rs is not None:
            current = get_condition(status, PROGRESSING)
            name = new_rs.metadata.name
            if deployment_complete(d, status):
                set_condition(
                    status,
                    new_condition(
                        PROGRESSING,
                        "True",
                        NEW_RS_AVAILABLE,
                        f'ReplicaSet "{name}" has successfully progressed.',
                        now,
                    ),
                )
            elif deployment_progressing(d, status):
                cond = new_condition(
                    PROGRESSING, "True", RS_UPDATED, f'ReplicaSet "{name}" is progressing.', now
                )
                if current is not None:
                    if current.status == "True":
                        cond.last_transition_time.CopyFrom(current.last_transition_time)
                    remove_condition(status, PROGRESSING)
                # Same reason, new lastUpdateTime: progress restarts the deadline.
                status.conditions.append(cond)
            elif deployment_timed_out(d, status, now):
                set_condition(
                    status,
                    new_condition(
                        PROGRESSING,
                        "False",
                        TIMED_OUT,
                        f'ReplicaSet "{name}" has timed out progressing.',
                        now,
                    ),
                )
                if current is None or current.reason != TIMED_OUT:
                    self.recorder.event(
                        d, WARNING, TIMED_OUT, f'Deployment "{d.metadata.name}" has timed out '
                        "progressing.",
                    )  # fmt: skip
            self._requeue_stuck(d, status, now)
        if status != d.status:
            d.status.CopyFrom(status)
            await self._write_status(d)

    def _requeue_stuck(
        self, d: apps_pb2.Deployment, status: apps_pb2.DeploymentStatus, now: float
    ) -> None:
        """Come back when the progress deadline would pass, if nothing happens before."""
        cond = get_condition(status, PROGRESSING)
        if cond is None or cond.reason in (NEW_RS_AVAILABLE, TIMED_OUT) or d.spec.paused:
            return
        if deployment_complete(d, status):
            return
        updated = timestamps.to_seconds(cond.last_update_time)
        after = updated + d.spec.progress_deadline_seconds - now
        self.queue.add_after(object_key(d), max(0.0, after) + 0.1)

    async def _write_status(self, d: apps_pb2.Deployment) -> apps_pb2.Deployment:
        updated = cast(apps_pb2.Deployment, await self.client.update_status(d))
        self._remember(updated)
        return updated
