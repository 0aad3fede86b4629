"""Helpers the workload controllers share: pod readiness and availability, controller
references, selectors of API objects, pods made from a template, the order in which a
controller deletes surplus pods, and creation/deletion expectations.

Pure functions of API objects (the clock is a parameter where time matters), plus
`Expectations`, which is in-memory state only. No I/O here: reconcile loops call the client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from google.protobuf.message import Message

from k8semu.api.errors import SelectorError
from k8semu.api.selectors import LabelSelector
from k8semu.client._models import meta, object_key
from k8semu.pb.api.v1 import core_pb2, meta_pb2

M = TypeVar("M", bound=Message)

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
_TERMINAL_PHASES = ("Succeeded", "Failed")
# Kubernetes' ranking of pod phases when choosing pods to delete: the earlier, the sooner.
_PHASE_RANK = {"Pending": 0, "": 0, "Unknown": 1, "Running": 2}


# ---- pod state -------------------------------------------------------------------------------


def is_pod_active(pod: core_pb2.Pod) -> bool:
    """Not finished (Succeeded/Failed) and not being deleted: it counts towards replicas."""
    return pod.status.phase not in _TERMINAL_PHASES and not pod.metadata.HasField(
        "deletion_timestamp"
    )


def is_pod_terminating(pod: core_pb2.Pod) -> bool:
    return pod.metadata.HasField("deletion_timestamp")


def ready_condition(pod: core_pb2.Pod) -> core_pb2.PodCondition | None:
    for cond in pod.status.conditions:
        if cond.type == "Ready":
            return cond
    return None


def is_pod_ready(pod: core_pb2.Pod) -> bool:
    """The pod's Ready condition is True."""
    cond = ready_condition(pod)
    return cond is not None and cond.status == "True"


def ready_since(pod: core_pb2.Pod) -> float | None:
    """Seconds since the epoch when the pod last became Ready (None: not ready; 0.0 when the
    condition carries no transition time)."""
    cond = ready_condition(pod)
    if cond is None or cond.status != "True":
        return None
    if not cond.HasField("last_transition_time"):
        return 0.0
    return float(cond.last_transition_time.ToNanoseconds()) / 1e9


def is_pod_available(pod: core_pb2.Pod, min_ready_seconds: int, now: float) -> bool:
    """Ready for at least `min_ready_seconds` (Kubernetes' IsPodAvailable)."""
    since = ready_since(pod)
    if since is None:
        return False
    return min_ready_seconds <= 0 or since + min_ready_seconds <= now


def available_in(pod: core_pb2.Pod, min_ready_seconds: int, now: float) -> float | None:
    """Seconds until a ready pod becomes available (0 when it is); None when it is not ready."""
    since = ready_since(pod)
    if since is None:
        return None
    return max(0.0, since + min_ready_seconds - now)


def restart_count(pod: core_pb2.Pod) -> int:
    return sum(c.restart_count for c in pod.status.container_statuses)


def _timestamp_seconds(m: meta_pb2.ObjectMeta) -> float:
    return float(m.creation_timestamp.ToNanoseconds()) / 1e9


def deletion_rank(pod: core_pb2.Pod) -> tuple[Any, ...]:
    """Sort key: pods a controller should delete first sort first (Kubernetes' ActivePods):
    unassigned < assigned; Pending < Unknown < Running; not ready < ready; ready for a
    shorter time < longer; more restarts first; newer first."""
    since = ready_since(pod)
    return (
        1 if pod.spec.node_name else 0,
        _PHASE_RANK.get(pod.status.phase, 2),
        0 if since is None else 1,
        -(since or 0.0),
        -restart_count(pod),
        -_timestamp_seconds(pod.metadata),
        pod.metadata.name,
    )


def pods_to_delete(pods: Iterable[core_pb2.Pod], count: int) -> list[core_pb2.Pod]:
    """The `count` pods to delete first, in that order."""
    return sorted(pods, key=deletion_rank)[: max(0, count)]


# ---- owners, selectors, templates ---------------------------------------------------------------


def controller_ref(obj: Message) -> meta_pb2.OwnerReference | None:
    """The owner reference with controller=true, if any."""
    for ref in meta(obj).owner_references:
        if ref.controller:
            return ref
    return None


def controller_key(
    obj: Message, kind: str, lookup: Callable[[str, str], Message | None]
) -> str | None:
    """The key of the `kind` object that controls `obj`, found by `lookup(name, namespace)`
    (an informer cache's get_by_name), if it is there with the reference's uid (one deleted
    and created again under the same name is another owner)."""
    ref = controller_ref(obj)
    if ref is None or ref.kind != kind:
        return None
    owner = lookup(ref.name, meta(obj).namespace)
    if owner is None or meta(owner).uid != ref.uid:
        return None
    return object_key(owner)


def selecting(owners: Iterable[M], labels: Mapping[str, str]) -> list[M]:
    """Those of `owners` whose spec.selector matches `labels` (who may adopt an orphan); an
    empty or malformed selector matches nothing."""
    out = []
    for owner in owners:
        selector = cast(Any, owner).spec.selector
        if selects_nothing(selector):
            continue
        try:
            if selector_of(selector).matches(labels):
                out.append(owner)
        except SelectorError:
            continue
    return out


def orphan_adopters(pod: core_pb2.Pod, owners: Iterable[M]) -> list[M]:
    """The owners (of the pod's namespace) that may adopt `pod` when it is a live orphan:
    those whose selector matches it; none when it has a controller or is terminating."""
    if controller_ref(pod) is not None or is_pod_terminating(pod):
        return []
    return selecting(owners, pod.metadata.labels)


def new_controller_ref(owner: Message, *, api_version: str, kind: str) -> meta_pb2.OwnerReference:
    """A reference making `owner` the controller of a dependent (blockOwnerDeletion set)."""
    m = meta(owner)
    return meta_pb2.OwnerReference(
        api_version=api_version,
        kind=kind,
        name=m.name,
        uid=m.uid,
        controller=True,
        block_owner_deletion=True,
    )


def adopted(orphan: M, owner: Message, *, api_version: str, kind: str) -> M:
    """A copy of `orphan` (a pod, a revision) with `owner` as its controller (what an
    adoption writes)."""
    new = copy_of(orphan)
    meta(new).owner_references.append(new_controller_ref(owner, api_version=api_version, kind=kind))
    return new


def selector_of(selector: meta_pb2.LabelSelector) -> LabelSelector:
    """The parsed `spec.selector`; SelectorError (naming the field) when it is malformed."""
    try:
        return LabelSelector.from_match(
            dict(selector.match_labels),
            [(e.key, e.operator, list(e.values)) for e in selector.match_expressions],
        )
    except SelectorError as exc:
        raise SelectorError(f"spec.selector: {exc}") from exc


def selects_nothing(selector: meta_pb2.LabelSelector) -> bool:
    """An empty selector: Kubernetes' workload controllers refuse to act on it."""
    return not selector.match_labels and not selector.match_expressions


def pod_from_template(
    template: core_pb2.PodTemplateSpec,
    owner: Message,
    *,
    api_version: str,
    kind: str,
) -> core_pb2.Pod:
    """A new pod of `owner` (generateName `<owner>-`) from its template, owned by it."""
    om = meta(owner)
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.generate_name = f"{om.name}-"
    pod.metadata.namespace = om.namespace
    pod.metadata.labels.update(template.metadata.labels)
    pod.metadata.annotations.update(template.metadata.annotations)
    pod.metadata.finalizers.extend(template.metadata.finalizers)
    pod.metadata.owner_references.append(
        new_controller_ref(owner, api_version=api_version, kind=kind)
    )
    pod.spec.CopyFrom(template.spec)
    return pod


def copy_of(obj: M) -> M:
    """A deep copy to modify (cached objects are read-only)."""
    out = type(obj)()
    out.CopyFrom(obj)
    return out


# ---- expectations ---------------------------------------------------------------------------

DEFAULT_EXPECTATIONS_TTL = 300.0  # seconds, Kubernetes' ExpectationsTimeout


@dataclass(slots=True)
class _Expected:
    adds: int = 0
    deletes: set[str] = field(default_factory=set)
    since: float = 0.0


class Expectations:
    """What a controller is waiting to see in its informer after its own writes (Kubernetes'
    ControllerExpectations with UID tracking of deletions), per controller key.

    `satisfied(key)` is False while creates or deletes it made have not shown up yet, so the
    next reconcile does not count a pod twice or create one too many. Expectations older than
    `ttl` are given up on (a watch event may have been missed), so a controller never stalls.
    """

    def __init__(
        self, *, ttl: float = DEFAULT_EXPECTATIONS_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._items: dict[str, _Expected] = {}

    def satisfied(self, key: str) -> bool:
        exp = self._items.get(key)
        if exp is None:
            return True
        if exp.adds <= 0 and not exp.deletes:
            return True
        return self._clock() - exp.since > self._ttl

    def expect_creations(self, key: str, count: int) -> None:
        exp = self._items.setdefault(key, _Expected())
        exp.adds = count
        exp.since = self._clock()

    def expect_deletions(self, key: str, pod_keys: Iterable[str]) -> None:
        exp = self._items.setdefault(key, _Expected())
        exp.deletes = set(pod_keys)
        exp.since = self._clock()

    def creation_observed(self, key: str) -> None:
        exp = self._items.get(key)
        if exp is not None and exp.adds > 0:
            exp.adds -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        exp = self._items.get(key)
        if exp is not None:
            exp.deletes.discard(pod_key)

    def pending(self, key: str) -> tuple[int, int]:
        """(creates, deletes) still expected for `key`."""
        exp = self._items.get(key)
        return (0, 0) if exp is None else (max(0, exp.adds), len(exp.deletes))

    def forget(self, key: str) -> None:
        self._items.pop(key, None)
