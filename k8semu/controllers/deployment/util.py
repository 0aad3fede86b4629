"""Pure helpers of the Deployment controller (Kubernetes' deploymentutil): names, the
template hash, maxSurge/maxUnavailable, and the Progressing/Available conditions. No I/O."""

from __future__ import annotations

import math

from k8semu.api import timestamps
from k8semu.controllers import _pods
from k8semu.pb.api.v1 import apps_pb2, core_pb2, meta_pb2

API_VERSION = "apps/v1"
KIND = "Deployment"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"

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


def replicas_of(obj: apps_pb2.Deployment | apps_pb2.ReplicaSet) -> int:
    return obj.spec.replicas if obj.spec.HasField("replicas") else 1


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


def by_creation(rs: apps_pb2.ReplicaSet) -> tuple[float, str]:
    return (float(rs.metadata.creation_timestamp.ToNanoseconds()), rs.metadata.name)


def int_annotation(rs: apps_pb2.ReplicaSet, name: str) -> int | None:
    try:
        return int(rs.metadata.annotations[name])
    except (KeyError, ValueError):
        return None
