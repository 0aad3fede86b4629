"""What a delete request does to a stored object: delete it now, mark it, or nothing.

Kubernetes' deletion rules (its generic registry's BeforeDelete and finalizer handling); what
is particular to a kind is its registry row's `Rules` (`registry/`):

- Graceful deletion (`Rules.grace`; pods only, `registry/pods.py`): a grace > 0 marks the
  object (deletionTimestamp = now + grace, deletionGracePeriodSeconds = grace); the kubelet
  finishes a pod with a grace-0 delete. Other kinds have no grace period.
- propagationPolicy: Background (default) adds nothing (the garbage collector deletes the
  dependents later); Orphan adds the `orphan` finalizer and Foreground `foregroundDeletion`,
  which the garbage collector (controller manager, issue 4) processes and then removes.
- An object with finalizers is only marked (deletionTimestamp = now + grace); the update that
  removes its last finalizer deletes it once its deletionGracePeriodSeconds is 0
  (`deleted_by_update`).
- A kind with `Rules.mark` (Namespace) is always marked first (`mark` sets status.phase
  Terminating); with `Rules.owns_contents` the API server then deletes its contents and the
  object itself (`repair.py`).
- Deleting an object already being deleted changes nothing, except that a shorter grace
  period moves deletionTimestamp earlier, and grace 0 without finalizers deletes it now.

Pure: no I/O; the clock is the `now` argument.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from k8semu.api import timestamps
from k8semu.apiserver.errors import Invalid
from k8semu.apiserver.objects import meta

PROPAGATION_POLICIES = ("Background", "Foreground", "Orphan")
ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"


class Action(enum.Enum):
    DELETE = "delete"  # remove the key now
    MARK = "mark"  # write `Plan.obj` (deletionTimestamp set)
    UNCHANGED = "unchanged"  # already being deleted: return it as it is


def no_grace(obj: Any, requested: int | None) -> int:
    """Most kinds: deleted at once; a requested grace is ignored, as Kubernetes does."""
    return 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """A kind's deletion rules, named by its registry row."""

    # The grace period of a delete (`requested`: the request's gracePeriodSeconds, if any).
    grace: Callable[[Any, int | None], int] = no_grace
    # Never deleted at once: a delete marks the object, and this changes what a mark means
    # (a Namespace's status.phase Terminating).
    mark: Callable[[Any], None] | None = None
    # Deleting it deletes what lives in it first (a Namespace's contents; `repair.py`).
    owns_contents: bool = False


DEFAULT_RULES = Rules()


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


def _copy(obj: Message) -> Message:
    new = type(obj)()
    new.CopyFrom(obj)
    return new


def plan(
    rules: Rules,
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
    grace = rules.grace(stored, grace_period_seconds)
    if grace == 0 and not nm.finalizers and rules.mark is None:
        return Plan(Action.DELETE, stored)
    nm.deletion_timestamp.CopyFrom(timestamps.time_at(now + grace))
    nm.deletion_grace_period_seconds = grace
    if nm.generation > 0:
        nm.generation += 1
    if rules.mark is not None:
        rules.mark(new)
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
