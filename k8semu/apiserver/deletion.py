"""What a delete request does to a stored object: delete it now, mark it, or nothing.

Kubernetes' deletion rules (its generic registry's BeforeDelete and finalizer handling):

- Graceful deletion (pods only): grace = the request's gracePeriodSeconds, else the pod's
  spec.terminationGracePeriodSeconds, else 30; 0 for a pod not bound to a node or already
  Succeeded/Failed. A grace > 0 marks the pod (deletionTimestamp = now + grace,
  deletionGracePeriodSeconds = grace); the kubelet finishes it with a grace-0 delete.
- propagationPolicy: Background (default) adds nothing (the garbage collector deletes the
  dependents later); Orphan adds the `orphan` finalizer and Foreground `foregroundDeletion`,
  which the garbage collector (controller manager, issue 4) processes and then removes.
- An object with finalizers is only marked (deletionTimestamp = now + grace); the update that
  removes its last finalizer deletes it once its deletionGracePeriodSeconds is 0
  (`deleted_by_update`).
- A Namespace is always marked first (status.phase Terminating); the API server then deletes
  its contents and the namespace itself.
- Deleting an object already being deleted changes nothing, except that a shorter grace
  period moves deletionTimestamp earlier, and grace 0 without finalizers deletes it now.

Pure: no I/O; the clock is the `now` argument.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf.message import Message

from k8semu.api import timestamps
from k8semu.api.kinds import Kind
from k8semu.apiserver.errors import Invalid
from k8semu.apiserver.objects import meta

PROPAGATION_POLICIES = ("Background", "Foreground", "Orphan")
ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"
DEFAULT_POD_GRACE_SECONDS = 30
_TERMINAL_POD_PHASES = ("Succeeded", "Failed")


class Action(enum.Enum):
    DELETE = "delete"  # remove the key now
    MARK = "mark"  # write `Plan.obj` (deletionTimestamp set)
    UNCHANGED = "unchanged"  # already being deleted: return it as it is


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    obj: Message  # MARK: the object to write; otherwise the stored object


def check_options(grace_period_seconds: int | None, propagation_policy: str) -> str:
    """The effective propagation policy; INVALID_ARGUMENT for bad delete options."""
    if grace_period_seconds is not None and grace_period_seconds < 0:
        raise Invalid(f"gracePeriodSeconds: Invalid value: {grace_period_seconds}: must be >= 0")
    policy = propagation_policy or "Background"
    if policy not in PROPAGATION_POLICIES:
        raise Invalid(
            f"propagationPolicy: Unsupported value: {propagation_policy!r}: supported values:"
            f" {', '.join(repr(p) for p in PROPAGATION_POLICIES)}"
        )
    return policy


def _grace(kind: Kind, obj: Message, requested: int | None) -> int:
    if kind.kind != "Pod":
        return 0  # only pods delete gracefully; a requested grace is ignored, as Kubernetes does
    pod = cast(Any, obj)
    if not pod.spec.node_name or pod.status.phase in _TERMINAL_POD_PHASES:
        return 0  # no kubelet will ever finish it
    if requested is not None:
        return requested
    if pod.spec.HasField("termination_grace_period_seconds"):
        return int(pod.spec.termination_grace_period_seconds)
    return DEFAULT_POD_GRACE_SECONDS


def _copy(obj: Message) -> Message:
    new = type(obj)()
    new.CopyFrom(obj)
    return new


def plan(
    kind: Kind,
    stored: Message,
    *,
    grace_period_seconds: int | None,
    propagation_policy: str,
    now: float,
) -> Plan:
    """Decide what deleting `stored` does (options already checked by `check_options`)."""
    m = meta(stored)
    if m.HasField("deletion_timestamp"):
        return _again(stored, grace_period_seconds, now)
    new = _copy(stored)
    nm = meta(new)
    if propagation_policy == "Orphan":
        _set_finalizer(nm.finalizers, ORPHAN_FINALIZER, FOREGROUND_FINALIZER)
    elif propagation_policy == "Foreground":
        _set_finalizer(nm.finalizers, FOREGROUND_FINALIZER, ORPHAN_FINALIZER)
    grace = _grace(kind, stored, grace_period_seconds)
    if grace == 0 and not nm.finalizers and kind.kind != "Namespace":
        return Plan(Action.DELETE, stored)
    nm.deletion_timestamp.CopyFrom(timestamps.time_at(now + grace))
    nm.deletion_grace_period_seconds = grace
    if nm.generation > 0:
        nm.generation += 1
    if kind.kind == "Namespace":
        cast(Any, new).status.phase = "Terminating"
    return Plan(Action.MARK, new)


def _again(stored: Message, requested: int | None, now: float) -> Plan:
    """A delete of an object already being deleted."""
    m = meta(stored)
    current = m.deletion_grace_period_seconds
    if current > 0 and requested is not None and requested < current:
        new = _copy(stored)
        nm = meta(new)
        # Only a shorter grace period counts: the deadline moves earlier by the difference.
        when = timestamps.to_seconds(m.deletion_timestamp) - (current - requested)
        nm.deletion_timestamp.CopyFrom(timestamps.time_at(min(when, now + requested)))
        nm.deletion_grace_period_seconds = requested
        if requested == 0 and not nm.finalizers:
            return Plan(Action.DELETE, stored)
        return Plan(Action.MARK, new)
    if current == 0 and not m.finalizers:
        # A mark whose delete never happened (a crash between the two): finish it.
        return Plan(Action.DELETE, stored)
    return Plan(Action.UNCHANGED, stored)


def _set_finalizer(finalizers: Any, add: str, remove: str) -> None:
    if remove in finalizers:
        finalizers.remove(remove)
    if add not in finalizers:
        finalizers.append(add)


def deleted_by_update(obj: Message) -> bool:
    """Whether writing `obj` must delete it instead: being deleted, no finalizer left, and no
    grace period pending (a pod in its grace period waits for the kubelet's grace-0 delete)."""
    m = meta(obj)
    return (
        m.HasField("deletion_timestamp")
        and not m.finalizers
        and m.deletion_grace_period_seconds == 0
    )
