"""The garbage collector: acts on ownerReferences and on the deletion finalizers the API
server sets (Kubernetes' garbage collector, without its graph: the informers' owner-uid
indices are the graph).

The API server's part (k8semu/apiserver/deletion.py): a delete with propagationPolicy
Background removes the object at once; Orphan and Foreground only mark it (deletionTimestamp)
and add the finalizer `orphan` or `foregroundDeletion`; the update that removes an object's
last finalizer deletes it. Everything about dependents happens here:

- **Background** (an owner is gone): a dependent whose owners are all absent or waiting for
  their dependents is deleted (Background, or Foreground when it has dependents of its own
  and one of its owners is deleting in the foreground, so the wait propagates down the
  chain Deployment -> ReplicaSet -> Pod). A dependent that still has another live owner only
  loses the references to the gone ones. "Absent" is decided on the API server, never on a
  cache alone: an owner missing from its informer's cache (informers of different kinds are
  not in step: a new Pod can arrive before its new ReplicaSet) is read with a GET, and absent
  means NotFound or another uid. Before any delete the dependent itself is read again, and the
  delete carries its uid and resourceVersion as preconditions, so an ownerReference removed
  meanwhile (orphaning) can never lose a pod.
- **Foreground** (owner being deleted with `foregroundDeletion`): its dependents are queued
  (those with blockOwnerDeletion first) and deleted as above; the finalizer is removed once
  no dependent with blockOwnerDeletion=true is left (Kubernetes' rule: the others are deleted
  too, but do not hold the owner).
- **Orphan** (owner being deleted with `orphan`): the ownerReferences to it are removed from
  its dependents, then the finalizer.

Watched kinds (one shared informer each, with uid and owner-uid indices): Deployment,
ReplicaSet, DaemonSet, Job, CronJob, Pod, Service, Endpoints, ConfigMap, Secret,
HorizontalPodAutoscaler, Node, Lease.
An ownerReference to any other kind, or without a uid, cannot be checked and counts as a
live owner (nothing is deleted on a guess). A cluster-scoped dependent naming a namespaced
owner, or a reference that only resolves in another namespace, gets a Warning event
OwnerRefInvalidNamespace and counts as absent, as in Kubernetes. Everything is re-checked
every `gc_interval` besides the events. Not done: cycle detection among foreground deletions
(Kubernetes unblocks such references; here a cycle of blocking references waits forever).

Owns deleting dependents and removing the `orphan`/`foregroundDeletion` finalizers and
ownerReferences; never deletes an object that has no ownerReferences.
"""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import Message

from k8semu.api import kinds
from k8semu.api.errors import UnknownKindError
from k8semu.api.kinds import Kind
from k8semu.client import (
    OWNER_UID_INDEX,
    Client,
    Conflict,
    Informer,
    NotFound,
    Preconditions,
    index_by_owner_uid,
)
from k8semu.client._models import meta
from k8semu.client.controller import run_workers
from k8semu.client.events import WARNING, EventRecorder
from k8semu.client.workqueue import WorkQueue
from k8semu.controllers._pods import copy_of
from k8semu.controllers.context import ControllerContext
from k8semu.log import get_logger
from k8semu.pb.api.v1 import (
    apps_pb2,
    autoscaling_pb2,
    batch_pb2,
    coordination_pb2,
    core_pb2,
    meta_pb2,
)

log = get_logger(__name__)

ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"
UID_INDEX = "metadata.uid"
DEFAULT_KINDS: tuple[type[Message], ...] = (
    apps_pb2.Deployment,
    apps_pb2.ReplicaSet,
    apps_pb2.DaemonSet,
    apps_pb2.StatefulSet,
    apps_pb2.ControllerRevision,
    batch_pb2.Job,
    batch_pb2.CronJob,
    core_pb2.Pod,
    core_pb2.Service,
    core_pb2.Endpoints,
    core_pb2.ConfigMap,
    core_pb2.Secret,
    core_pb2.PersistentVolumeClaim,
    autoscaling_pb2.HorizontalPodAutoscaler,
    core_pb2.Node,
    coordination_pb2.Lease,
)
_UPDATE_ATTEMPTS = 3
_ABSENT_REMEMBERED = 10_000


def index_by_uid(obj: Message) -> list[str]:
    return [meta(obj).uid]


def being_deleted(obj: Message) -> bool:
    return meta(obj).HasField("deletion_timestamp")


def object_id(kind: Kind, obj: Message) -> str:
    """The work-queue key: "Kind/namespace/name" (namespace empty for cluster-scoped)."""
    m = meta(obj)
    return f"{kind.kind}/{m.namespace if kind.namespaced else ''}/{m.name}"


class _Owner(enum.Enum):
    PRESENT = "present"  # alive, or cannot be checked: leave the dependent alone
    WAITING = "waiting"  # being deleted in the foreground: its dependents must go
    ABSENT = "absent"  # gone (NotFound, another uid, or an invalid reference)


class GarbageCollector:
    """See the module docstring. Keys are "Kind/namespace/name"."""

    name = "garbagecollector"

    def __init__(
        self, ctx: ControllerContext, *, watch: Iterable[type[Message]] = DEFAULT_KINDS
    ) -> None:
        self._client: Client = ctx.client
        self._recorder: EventRecorder = ctx.recorder
        self._config = ctx.config
        self.queue: WorkQueue[str] = WorkQueue(name="garbagecollector")
        self.informers: dict[str, Informer[Any]] = {}
        self._kinds: dict[str, Kind] = {}
        self._unknown_logged: set[str] = set()
        # Owner uids the API server said are gone (saves a GET per dependent of one owner).
        self._absent: OrderedDict[str, None] = OrderedDict()
        for message in watch:
            kind = kinds.for_message(message)
            informer: Informer[Any] = ctx.informers.informer(
                message, indexers={UID_INDEX: index_by_uid, OWNER_UID_INDEX: index_by_owner_uid}
            )
            self.informers[kind.kind] = informer
            self._kinds[kind.kind] = kind
            informer.add_event_handler(
                on_add=self._handler_add(kind),
                on_update=self._handler_update(kind),
                on_delete=self._handler_delete(kind),
            )

    # ---- event handlers (enqueue only) -------------------------------------------------------

    def _handler_add(self, kind: Kind) -> Callable[[Message], None]:
        def on_add(obj: Message) -> None:
            self._consider(kind, obj)

        return on_add

    def _handler_update(self, kind: Kind) -> Callable[[Message, Message], None]:
        def on_update(old: Message, new: Message) -> None:
            self._consider(kind, new)
            # An owner waiting for this dependent no longer has to, once the reference goes.
            kept = {ref.uid for ref in meta(new).owner_references}
            for ref in meta(old).owner_references:
                if ref.uid not in kept:
                    self._enqueue_owner(kind, new, ref)

        return on_update

    def _handler_delete(self, kind: Kind) -> Callable[[Message], None]:
        def on_delete(obj: Message) -> None:
            for dep_kind, dep in self.dependents(kind, obj):
                self.queue.add(object_id(dep_kind, dep))
            for ref in meta(obj).owner_references:
                self._enqueue_owner(kind, obj, ref)

        return on_delete

    def _consider(self, kind: Kind, obj: Message) -> None:
        m = meta(obj)
        if m.owner_references or (
            being_deleted(obj)
            and (ORPHAN_FINALIZER in m.finalizers or FOREGROUND_FINALIZER in m.finalizers)
        ):
            self.queue.add(object_id(kind, obj))

    def _enqueue_owner(self, kind: Kind, dependent: Message, ref: meta_pb2.OwnerReference) -> None:
        owner_kind = self._kinds.get(ref.kind)
        if owner_kind is not None:
            ns = meta(dependent).namespace if owner_kind.namespaced else ""
            self.queue.add(f"{owner_kind.kind}/{ns}/{ref.name}")

    # ---- life cycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        for informer in self.informers.values():
            await informer.wait_synced()
        log.info(
            "controller started",
            controller=self.name,
            workers=self._config.workers,
            kinds=sorted(self.informers),
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                run_workers(self.queue, self.reconcile, self._config.workers, name=self.name)
            )
            tg.create_task(self._scan_loop())

    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.gc_interval)
            self.scan()

    def scan(self) -> None:
        """Queue everything that has owners or waits for us (the periodic re-check)."""
        for kind_name, informer in self.informers.items():
            kind = self._kinds[kind_name]
            for obj in informer.cache.list():
                self._consider(kind, obj)

    # ---- the graph, from the caches -------------------------------------------------------------

    def dependents(self, kind: Kind, owner: Message) -> list[tuple[Kind, Message]]:
        """Cached objects with an ownerReference to `owner` (by uid) that may validly have it:
        in the owner's namespace, or anywhere for a cluster-scoped owner."""
        m = meta(owner)
        if not m.uid:
            return []
        out: list[tuple[Kind, Message]] = []
        for kind_name, informer in self.informers.items():
            dep_kind = self._kinds[kind_name]
            for dep in informer.cache.by_index(OWNER_UID_INDEX, m.uid):
                if kind.namespaced and meta(dep).namespace != m.namespace:
                    continue
                out.append((dep_kind, dep))
        return out

    def _owner_kind(self, ref: meta_pb2.OwnerReference) -> Kind | None:
        try:
            kind = kinds.by_type(ref.api_version, ref.kind)
        except UnknownKindError:
            kind = None
        if kind is None or kind.kind not in self.informers:
            what = f"{ref.api_version}/{ref.kind}"
            if what not in self._unknown_logged:
                self._unknown_logged.add(what)
                log.warning("ownerReferences to this kind cannot be checked", kind=what)
            return None
        return kind

    async def _owner_state(
        self, kind: Kind, dependent: Message, ref: meta_pb2.OwnerReference
    ) -> _Owner:
        owner_kind = self._owner_kind(ref)
        if owner_kind is None or not ref.uid or not ref.name:
            return _Owner.PRESENT
        dm = meta(dependent)
        if owner_kind.namespaced and not kind.namespaced:
            self._invalid_namespace(
                dependent,
                f"ownerReference to {ref.kind} {ref.name!r}: a cluster-scoped object cannot"
                " be owned by a namespaced one",
            )
            return _Owner.ABSENT
        if ref.uid in self._absent:
            return _Owner.ABSENT  # uids are never reused: once gone, gone for good
        namespace = dm.namespace if owner_kind.namespaced else ""
        informer = self.informers[owner_kind.kind]
        cached = informer.cache.get_by_name(ref.name, namespace)
        owner: Message | None = None
        if cached is not None and meta(cached).uid == ref.uid:
            owner = cached
        else:
            # The cache may be behind the API server: ask it before calling the owner gone.
            try:
                live = await self._client.get(owner_kind.message, ref.name, namespace=namespace)
            except NotFound:
                live = None
            if live is not None and meta(live).uid == ref.uid:
                owner = live
        if owner is None:
            self._remember_absent(ref.uid)
            elsewhere = informer.cache.by_index(UID_INDEX, ref.uid)
            if elsewhere and owner_kind.namespaced:
                self._invalid_namespace(
                    dependent,
                    f"ownerReference to {ref.kind} {ref.name!r}: the owner is in namespace"
                    f" {meta(elsewhere[0]).namespace!r}, not {namespace!r}",
                )
            return _Owner.ABSENT
        om = meta(owner)
        if being_deleted(owner) and FOREGROUND_FINALIZER in om.finalizers:
            return _Owner.WAITING
        return _Owner.PRESENT

    def _remember_absent(self, uid: str) -> None:
        self._absent[uid] = None
        self._absent.move_to_end(uid)
        while len(self._absent) > _ABSENT_REMEMBERED:
            self._absent.popitem(last=False)

    def _invalid_namespace(self, dependent: Message, message: str) -> None:
        log.warning("invalid ownerReference", object=meta(dependent).name, problem=message)
        self._recorder.event(dependent, WARNING, "OwnerRefInvalidNamespace", message)

    # ---- reconcile ------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        kind_name, namespace, name = key.split("/", 2)
        informer = self.informers.get(kind_name)
        if informer is None:
            return
        kind = self._kinds[kind_name]
        obj = informer.cache.get_by_name(name, namespace)
        if obj is None:
            return
        m = meta(obj)
        if being_deleted(obj):
            if ORPHAN_FINALIZER in m.finalizers:
                await self._orphan_dependents(kind, obj)
            elif FOREGROUND_FINALIZER in m.finalizers:
                await self._delete_dependents(kind, obj)
            return  # otherwise its deletion is already under way
        if m.owner_references:
            await self._collect(kind, obj)

    async def _states(self, kind: Kind, obj: Message) -> dict[str, _Owner]:
        return {
            ref.uid: await self._owner_state(kind, obj, ref) for ref in meta(obj).owner_references
        }

    async def _collect(self, kind: Kind, cached: Message) -> None:
        """attemptToDelete: delete a dependent without live owners, or drop dead references."""
        states = await self._states(kind, cached)
        if all(s is _Owner.PRESENT for s in states.values()):
            return
        # Decide on the object as the API server has it now, not on the cache.
        m = meta(cached)
        try:
            obj = await self._client.get(kind.message, m.name, namespace=m.namespace)
        except NotFound:
            return
        if meta(obj).uid != m.uid or being_deleted(obj):
            return
        states = await self._states(kind, obj)
        solid = [u for u, s in states.items() if s is _Owner.PRESENT]
        gone = {u for u, s in states.items() if s is not _Owner.PRESENT}
        if not gone:
            return
        if solid:
            new = copy_of(obj)
            refs = [r for r in meta(new).owner_references if r.uid not in gone]
            del meta(new).owner_references[:]
            meta(new).owner_references.extend(refs)
            log.info("removing references to deleted owners", object=object_id(kind, obj))
            await self._client.update(new)
            return
        waiting = any(s is _Owner.WAITING for s in states.values())
        policy = "Foreground" if waiting and self.dependents(kind, obj) else "Background"
        log.info("deleting dependent", object=object_id(kind, obj), propagation=policy)
        om = meta(obj)
        try:
            await self._client.delete(
                kind.message,
                om.name,
                namespace=om.namespace,
                propagation_policy=policy,
                preconditions=Preconditions(uid=om.uid, resource_version=om.resource_version),
            )
        except NotFound:
            return
        # Conflict (it changed since the read): raised, retried with the new state.

    async def _delete_dependents(self, kind: Kind, owner: Message) -> None:
        """An owner deleting in the foreground: queue its dependents (blocking ones first);
        drop the finalizer once no blocking dependent is left."""
        uid = meta(owner).uid
        blocking_left = False
        deps = self.dependents(kind, owner)

        def blocks(dep: Message) -> bool:
            return any(r.uid == uid and r.block_owner_deletion for r in meta(dep).owner_references)

        for dep_kind, dep in sorted(deps, key=lambda kd: not blocks(kd[1])):
            if blocks(dep):
                blocking_left = True
            if not being_deleted(dep):
                self.queue.add(object_id(dep_kind, dep))
        if not blocking_left:
            await self._remove_finalizer(kind, owner, FOREGROUND_FINALIZER)

    async def _orphan_dependents(self, kind: Kind, owner: Message) -> None:
        uid = meta(owner).uid
        for dep_kind, dep in self.dependents(kind, owner):

            def drop(obj: Message) -> bool:
                refs = [r for r in meta(obj).owner_references if r.uid != uid]
                if len(refs) == len(meta(obj).owner_references):
                    return False
                del meta(obj).owner_references[:]
                meta(obj).owner_references.extend(refs)
                return True

            log.info("orphaning dependent", object=object_id(dep_kind, dep))
            await self._update(dep_kind, dep, drop)
        await self._remove_finalizer(kind, owner, ORPHAN_FINALIZER)

    async def _remove_finalizer(self, kind: Kind, owner: Message, finalizer: str) -> None:
        def drop(obj: Message) -> bool:
            m = meta(obj)
            if finalizer not in m.finalizers:
                return False
            m.finalizers.remove(finalizer)
            return True

        log.info("removing finalizer", object=object_id(kind, owner), finalizer=finalizer)
        await self._update(kind, owner, drop)

    async def _update(self, kind: Kind, cached: Message, mutate: Callable[[Message], bool]) -> None:
        """Apply `mutate` to a copy and write it; on Conflict read the object again and retry
        (a few times; then the Conflict goes to the worker loop). NotFound: nothing to do."""
        obj = copy_of(cached)
        m = meta(cached)
        for attempt in range(_UPDATE_ATTEMPTS):
            if not mutate(obj):
                return
            try:
                await self._client.update(obj)
                return
            except NotFound:
                return
            except Conflict:
                if attempt == _UPDATE_ATTEMPTS - 1:
                    raise
            try:
                obj = await self._client.get(kind.message, m.name, namespace=m.namespace)
            except NotFound:
                return
            if meta(obj).uid != m.uid:
                return
