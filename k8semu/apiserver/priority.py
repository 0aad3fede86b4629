"""The Priority admission step, as kube-apiserver's Priority plugin: on a pod's create it
resolves spec.priorityClassName to spec.priority and spec.preemptionPolicy; on a
PriorityClass's create it keeps globalDefault unique.

- A pod naming a class gets its value and preemption policy; an unknown name is refused
  (403 Forbidden: `pods "web" is forbidden: no PriorityClass with name gold was found`).
- A pod naming none gets the global default class's (and its name), else priority 0.
- A pod may repeat the computed priority or policy, never give another one.
- The built-in `system-cluster-critical` and `system-node-critical` are known even before the
  API server has created their objects (bootstrap.py does at start).

A pod's classes are read from the API server's watch cache of PriorityClasses (a handful of
objects, so each pod create costs a dict walk, not a store round trip); a class created a
moment ago that the cache has not seen yet is read from the store, but a new global default
applies once the cache has it (as kube-apiserver's admission reads its informer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

from google.protobuf.message import Message

from k8semu.api import kinds
from k8semu.apiserver.errors import FailedPrecondition, NotFound
from k8semu.apiserver.objects import decode
from k8semu.apiserver.registry.scheduling import (
    PREEMPT_LOWER_PRIORITY,
    SYSTEM_CLASSES,
    system_class,
)
from k8semu.pb.api.v1 import core_pb2, scheduling_pb2
from k8semu.pb.etcd import kv_pb2

PRIORITY_CLASSES = kinds.for_message(scheduling_pb2.PriorityClass)


class _Cache(Protocol):
    @property
    def objects(self) -> Mapping[bytes, kv_pb2.KeyValue]: ...

    async def wait_ready(self) -> None: ...


class _Caches(Protocol):
    def get(self, kind: kinds.Kind, hint: int = 0) -> _Cache: ...


class Objects(Protocol):
    """The API servicer, as admission reads it (its watch caches, and the store)."""

    @property
    def watch_caches(self) -> _Caches: ...

    async def get_object(self, kind: kinds.Kind, namespace: str, name: str) -> tuple[Message, int]:
        """The stored object (NotFound when absent)."""
        ...

    async def list_objects(
        self, kind: kinds.Kind, namespace: str, label_selector: str
    ) -> list[Message]:
        """The stored objects, read from the store."""
        ...


def _forbidden(resource: str, name: str, why: str) -> FailedPrecondition:
    return FailedPrecondition(f'{resource} "{name}" is forbidden: {why}')


async def _classes(objects: Objects) -> dict[str, scheduling_pb2.PriorityClass]:
    """Every class, from the API server's watch cache of them (started on first use)."""
    found = {n: system_class(n) for n in SYSTEM_CLASSES}
    cache = objects.watch_caches.get(PRIORITY_CLASSES)
    await cache.wait_ready()
    for kv in cache.objects.values():
        pc = cast(scheduling_pb2.PriorityClass, decode(PRIORITY_CLASSES, kv.value, kv.mod_revision))
        found[pc.metadata.name] = pc
    return found


async def _stored(objects: Objects, name: str) -> scheduling_pb2.PriorityClass | None:
    """A class the watch cache has not seen yet (created a moment ago), from the store."""
    try:
        obj, _ = await objects.get_object(PRIORITY_CLASSES, "", name)
    except NotFound:
        return None
    return cast(scheduling_pb2.PriorityClass, obj)


async def admit(objects: Objects, obj: Any) -> None:
    """Fill in or check `obj` (a Pod or a PriorityClass) before its create; raises
    FailedPrecondition (Forbidden) with Kubernetes' message."""
    if isinstance(obj, core_pb2.Pod):
        await _admit_pod(objects, obj)
    elif isinstance(obj, scheduling_pb2.PriorityClass) and obj.global_default:
        # Rare, and must see a default made a moment ago: read from the store.
        stored = await objects.list_objects(PRIORITY_CLASSES, "", "")
        for pc in cast(list[scheduling_pb2.PriorityClass], stored):
            if pc.global_default and pc.metadata.name != obj.metadata.name:
                raise _forbidden(
                    "priorityclasses",
                    obj.metadata.name,
                    f"PriorityClass {pc.metadata.name} is already marked as default."
                    " Only one default can exist",
                )


async def _admit_pod(objects: Objects, pod: core_pb2.Pod) -> None:
    spec, name = pod.spec, pod.metadata.name
    classes = await _classes(objects)
    wanted = spec.priority_class_name
    if wanted:
        pc = classes.get(wanted) or await _stored(objects, wanted)
        if pc is None:
            raise _forbidden("pods", name, f"no PriorityClass with name {wanted} was found")
    else:
        pc = next((c for c in classes.values() if c.global_default), None)
    value = pc.value if pc is not None else 0
    policy = (pc.preemption_policy if pc is not None else "") or PREEMPT_LOWER_PRIORITY
    if spec.HasField("priority") and spec.priority != value:
        raise _forbidden(
            "pods",
            name,
            f"the integer value of priority ({spec.priority}) must not be provided in pod spec;"
            f" priority admission controller computed {value} from the given PriorityClass name",
        )
    if spec.preemption_policy and spec.preemption_policy != policy:
        raise _forbidden(
            "pods",
            name,
            f"the string value of PreemptionPolicy ({spec.preemption_policy}) must not be"
            f" provided in pod spec; priority admission controller computed {policy} from the"
            " given PriorityClass name",
        )
    if pc is not None:
        spec.priority_class_name = pc.metadata.name
    spec.priority = value
    spec.preemption_policy = policy
