"""A recording stand-in for `k8semu.client.Client`, for controller and scheduler unit tests in
the sample-controller style: pre-fill an informer cache (or `Indexer`), call `reconcile(key)`,
then compare `client.actions` with the API calls expected.

It keeps an in-memory copy of what was written so a reconcile that writes and then reads sees
its write, bumps resourceVersion on every write, and answers a stale update with Conflict, as
the API server does. It does not validate or default objects: end-to-end tests do that with a
real API server. Only for tests.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from google.protobuf.message import Message

from k8semu.api import manifest
from k8semu.apiserver.registry.strategy import Strategy
from k8semu.client import AlreadyExists, Conflict, NotFound, ObjectList, Preconditions
from k8semu.client._models import KindRef, meta, resolve
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.api.v1.apiserver_pb2 import Scale

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Action:
    """One recorded call: verb ("create", "update", "update_status", "update_scale", "patch",
    "delete", "bind"), the kind's plural, namespace, name, and the object or patch sent."""

    verb: str
    resource: str
    namespace: str
    name: str
    object: Any = field(default=None, compare=False)

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.verb} {self.resource} {where}"


def _scale_of(obj: Message) -> Scale:
    # The API server's own view (its registry row's), so the fake answers as it does.
    return Strategy(kind=resolve(type(obj)), status=True, scale=True).scale_of(obj)


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


class RecordingClient:
    """Records writes in `actions`; `objects` maps (plural, namespace, name) to the current
    copy. `seed(obj)` stores an object without recording an action. `fail_on[(verb, resource)]`
    makes that call raise the given exception (to test error paths)."""

    def __init__(self) -> None:
        self.actions: list[Action] = []
        self.objects: dict[tuple[str, str, str], Message] = {}
        self.fail_on: dict[tuple[str, str], Exception] = {}
        self._rv = itertools.count(1)
        self._uid = itertools.count(1)

    # ---- helpers for tests -------------------------------------------------------------------

    def seed(self, *objs: Message) -> None:
        for obj in objs:
            self._store(copy.deepcopy(obj))

    def verbs(self) -> list[str]:
        """The actions as "verb resource ns/name" strings, in order."""
        return [str(a) for a in self.actions]

    def clear(self) -> None:
        self.actions.clear()

    # ---- the Client surface -------------------------------------------------------------------

    async def create(self, obj: M, *, namespace: str = "") -> M:
        kind = resolve(type(obj))
        out = copy.deepcopy(obj)
        m = meta(out)
        if namespace:
            m.namespace = namespace
        if kind.namespaced and not m.namespace:
            m.namespace = "default"
        if not m.name and m.generate_name:
            m.name = f"{m.generate_name}{next(self._uid):05x}"
        self._record("create", kind.plural, m.namespace, m.name, out)
        if (kind.plural, m.namespace, m.name) in self.objects:
            raise AlreadyExists(f'{kind.plural} "{m.name}" already exists')
        m.uid = m.uid or f"uid-{next(self._uid)}"
        self._store(out)
        return copy.deepcopy(out)

    async def get(self, kind: KindRef, name: str, *, namespace: str = "") -> Any:
        k = resolve(kind)
        ns = (namespace or "default") if k.namespaced else ""
        obj = self.objects.get((k.plural, ns, name))
        if obj is None:
            raise NotFound(f'{k.plural} "{name}" not found')
        return copy.deepcopy(obj)

    async def list(self, kind: KindRef, *, namespace: str = "", **_: Any) -> ObjectList[Any]:
        k = resolve(kind)
        items = [
            copy.deepcopy(o)
            for (plural, ns, _name), o in sorted(self.objects.items(), key=lambda kv: kv[0])
            if plural == k.plural and (not namespace or ns == namespace)
        ]
        return ObjectList(items=items, resource_version=str(next(self._rv)))

    async def update(self, obj: M) -> M:
        return self._update("update", obj)

    async def update_status(self, obj: M) -> M:
        return self._update("update_status", obj)

    async def patch(
        self,
        kind: KindRef,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str = "",
        status: bool = False,
    ) -> Any:
        k = resolve(kind)
        ns = (namespace or "default") if k.namespaced else ""
        self._record("patch_status" if status else "patch", k.plural, ns, name, dict(patch))
        current = self.objects.get((k.plural, ns, name))
        if current is None:
            raise NotFound(f'{k.plural} "{name}" not found')
        out = manifest.decode(_merge(manifest.to_dict(current), dict(patch)), k.message)
        self._store(out)
        return copy.deepcopy(out)

    async def delete(
        self,
        kind: KindRef,
        name: str,
        *,
        namespace: str = "",
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: Preconditions | None = None,
    ) -> Any:
        k = resolve(kind)
        ns = (namespace or "default") if k.namespaced else ""
        self._record("delete", k.plural, ns, name, propagation_policy)
        current = self.objects.pop((k.plural, ns, name), None)
        if current is None:
            raise NotFound(f'{k.plural} "{name}" not found')
        if (
            preconditions is not None
            and preconditions.uid
            and preconditions.uid != meta(current).uid
        ):
            self.objects[(k.plural, ns, name)] = current
            raise Conflict(f'{k.plural} "{name}": precondition failed: uid')
        return copy.deepcopy(current)

    async def get_scale(self, kind: KindRef, name: str, *, namespace: str = "") -> Scale:
        return _scale_of(await self.get(kind, name, namespace=namespace))

    async def update_scale(
        self,
        kind: KindRef,
        name: str,
        replicas: int,
        *,
        namespace: str = "",
        resource_version: str = "",
    ) -> Scale:
        """The scale subresource: spec.replicas, the parent's resourceVersion a precondition."""
        k = resolve(kind)
        ns = (namespace or "default") if k.namespaced else ""
        self._record("update_scale", k.plural, ns, name, replicas)
        current = self.objects.get((k.plural, ns, name))
        if current is None:
            raise NotFound(f'{k.plural} "{name}" not found')
        if resource_version and resource_version != meta(current).resource_version:
            raise Conflict(
                f'Operation cannot be fulfilled on {k.plural} "{name}": '
                "the object has been modified; please apply your changes to the latest version"
            )
        out = copy.deepcopy(current)
        cast(Any, out).spec.replicas = replicas
        self._store(out)
        return _scale_of(out)

    async def bind(
        self, pod_name: str, node_name: str, *, namespace: str = "", resource_version: str = ""
    ) -> core_pb2.Pod:
        ns = namespace or "default"
        self._record("bind", "pods", ns, pod_name, node_name)
        pod = self.objects.get(("pods", ns, pod_name))
        if pod is None:
            raise NotFound(f'pods "{pod_name}" not found')
        pod = cast(core_pb2.Pod, pod)
        if pod.spec.node_name:
            raise Conflict(f'pods "{pod_name}" is already assigned to node "{pod.spec.node_name}"')
        pod.spec.node_name = node_name
        self._store(pod)
        return copy.deepcopy(pod)

    # ---- internals -----------------------------------------------------------------------------

    def _record(self, verb: str, resource: str, namespace: str, name: str, obj: Any) -> None:
        self.actions.append(Action(verb, resource, namespace, name, copy.deepcopy(obj)))
        failure = self.fail_on.get((verb, resource))
        if failure is not None:
            raise failure

    def _update(self, verb: str, obj: M) -> M:
        kind = resolve(type(obj))
        m = meta(obj)
        ns = m.namespace if kind.namespaced else ""
        self._record(verb, kind.plural, ns, m.name, obj)
        current = self.objects.get((kind.plural, ns, m.name))
        if current is None:
            raise NotFound(f'{kind.plural} "{m.name}" not found')
        if m.resource_version and m.resource_version != meta(current).resource_version:
            raise Conflict(
                f'Operation cannot be fulfilled on {kind.plural} "{m.name}": '
                "the object has been modified; please apply your changes to the latest version"
            )
        out = copy.deepcopy(obj)
        self._store(out)
        return copy.deepcopy(out)

    def _store(self, obj: Message) -> None:
        kind = resolve(type(obj))
        m = meta(obj)
        m.resource_version = str(next(self._rv))
        self.objects[(kind.plural, m.namespace if kind.namespaced else "", m.name)] = obj
