"""Garbage collector, sample-controller style (caches filled by hand, `reconcile` called, the
API calls compared), and end to end against a real store and API server: Background,
Foreground and Orphan deletion of a Deployment -> ReplicaSet -> Pods chain made by hand."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from google.protobuf.message import Message

from k8semu.client import Client, Informer, SharedInformers
from k8semu.client.events import EventRecorder
from k8semu.controllers.context import ControllerContext
from k8semu.controllers.gc import FOREGROUND_FINALIZER, ORPHAN_FINALIZER, GarbageCollector
from k8semu.pb.api.v1 import apps_pb2, core_pb2, meta_pb2
from tests.controllers.conftest import ControllerHarness
from tests.support.poll import eventually


def ref(owner: Message, *, block: bool = True) -> meta_pb2.OwnerReference:
    o = cast(Any, owner)
    api_version = "v1" if isinstance(owner, core_pb2.Node | core_pb2.Pod) else "apps/v1"
    return meta_pb2.OwnerReference(
        api_version=api_version,
        kind=type(owner).__name__,
        name=o.metadata.name,
        uid=o.metadata.uid,
        controller=True,
        block_owner_deletion=block,
    )


def deployment(name: str = "web", uid: str = "d1") -> apps_pb2.Deployment:
    d = apps_pb2.Deployment()
    d.metadata.name = name
    d.metadata.namespace = "default"
    d.metadata.uid = uid
    return d


def replicaset(name: str = "web-abc", uid: str = "r1", *owners: Message) -> apps_pb2.ReplicaSet:
    rs = apps_pb2.ReplicaSet()
    rs.metadata.name = name
    rs.metadata.namespace = "default"
    rs.metadata.uid = uid
    rs.metadata.owner_references.extend(ref(o) for o in owners)
    return rs


def pod(
    name: str, *owners: Message, block: bool = True, namespace: str = "default"
) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = namespace
    p.metadata.uid = f"uid-{name}"
    p.metadata.owner_references.extend(ref(o, block=block) for o in owners)
    return p


def deleting(obj: Any, finalizer: str) -> Any:
    obj.metadata.deletion_timestamp.GetCurrentTime()
    obj.metadata.deletion_grace_period_seconds = 0
    obj.metadata.finalizers.append(finalizer)
    return obj


class Harness(ControllerHarness):
    def __init__(self) -> None:
        super().__init__()
        self.gc = GarbageCollector(self.ctx)

    def add(self, *objs: Message, cache: bool = True, api: bool = True) -> None:
        """Objects in the fake API server and/or in the caches."""
        if api:
            self.client.seed(*objs)
        for obj in objs:
            if cache:
                stored = self.client.objects.get(self._key(obj)) if api else obj
                self.gc.informers[type(obj).__name__].cache.put(cast(Any, stored or obj))

    @staticmethod
    def _key(obj: Message) -> tuple[str, str, str]:
        from k8semu.client._models import meta, resolve

        kind = resolve(type(obj))
        m = meta(obj)
        return (kind.plural, m.namespace if kind.namespaced else "", m.name)

    def refresh(self, *informers: Informer[Any]) -> None:
        """The caches catch up with the fake API server."""
        super().refresh(*(informers or self.gc.informers.values()))

    async def drain(self) -> list[str]:
        """Reconcile what is queued (as workers would), with the caches catching up."""
        seen: list[str] = []
        while len(self.gc.queue):
            key = await self.gc.queue.get()
            seen.append(key)
            await self.gc.reconcile(key)
            self.gc.queue.done(key)
            self.refresh()
        return seen


async def test_dependents_of_live_owners_are_left_alone() -> None:
    h = Harness()
    d = deployment()
    rs = replicaset("web-abc", "r1", d)
    h.add(d, rs, pod("p1", rs))
    await h.gc.reconcile("Pod/default/p1")
    await h.gc.reconcile("ReplicaSet/default/web-abc")
    assert h.client.verbs() == []


async def test_an_owner_missing_from_the_cache_is_asked_for_before_anything_is_deleted() -> None:
    h = Harness()
    rs = replicaset()
    h.add(rs, cache=False)  # created, but its informer has not seen it yet
    h.add(pod("p1", rs))
    await h.gc.reconcile("Pod/default/p1")
    assert h.client.verbs() == []


async def test_background_dependents_of_a_gone_owner_are_deleted() -> None:
    h = Harness()
    rs = replicaset()
    h.add(rs, cache=False, api=False)  # deleted
    h.add(pod("p1", rs), pod("p2", rs))
    await h.gc.reconcile("Pod/default/p1")
    await h.gc.reconcile("Pod/default/p2")
    assert h.client.verbs() == ["delete pods default/p1", "delete pods default/p2"]
    assert [a.object for a in h.client.actions] == ["Background", "Background"]


async def test_the_owners_delete_event_queues_its_dependents() -> None:
    h = Harness()
    d = deployment()
    rs = replicaset("web-abc", "r1", d)
    h.add(d, rs, pod("p1", rs), pod("p2", rs))
    del h.client.objects[("deployments", "default", "web")]
    h.gc.informers["Deployment"].cache.remove("default/web")
    h.gc._handler_delete(h.gc._kinds["Deployment"])(d)
    assert await h.drain() == ["ReplicaSet/default/web-abc"]
    assert h.client.verbs() == ["delete replicasets default/web-abc"]
    # The ReplicaSet's own delete event queues its pods in turn (and its owner, which would
    # be waiting for it in a foreground deletion).
    h.gc._handler_delete(h.gc._kinds["ReplicaSet"])(rs)
    assert await h.drain() == ["Pod/default/p1", "Pod/default/p2", "Deployment/default/web"]
    assert h.client.verbs()[1:] == ["delete pods default/p1", "delete pods default/p2"]


async def test_a_dependent_of_a_gone_owner_whose_reference_was_just_removed_is_kept() -> None:
    h = Harness()
    rs = replicaset()
    h.add(rs, cache=False, api=False)
    stale = pod("p1", rs)
    h.add(stale)
    fresh = pod("p1")  # orphaned meanwhile: the API server has it without the reference
    h.client.objects[("pods", "default", "p1")] = fresh
    await h.gc.reconcile("Pod/default/p1")
    assert h.client.verbs() == []


async def test_only_the_gone_owner_reference_is_removed_when_another_owner_lives() -> None:
    h = Harness()
    gone = replicaset("old", "r-old")
    alive = replicaset("new", "r-new")
    h.add(gone, cache=False, api=False)
    h.add(alive, pod("p1", gone, alive))
    await h.gc.reconcile("Pod/default/p1")
    assert h.client.verbs() == ["update pods default/p1"]
    left = cast(core_pb2.Pod, h.client.objects[("pods", "default", "p1")])
    assert [r.name for r in left.metadata.owner_references] == ["new"]


async def test_orphan_removes_the_references_then_the_finalizer() -> None:
    h = Harness()
    rs = deleting(replicaset(), ORPHAN_FINALIZER)
    h.add(rs, pod("p1", rs), pod("p2", rs), pod("other"))
    await h.gc.reconcile("ReplicaSet/default/web-abc")
    assert h.client.verbs() == [
        "update pods default/p1",
        "update pods default/p2",
        "update replicasets default/web-abc",
    ]
    for name in ("p1", "p2"):
        p = cast(core_pb2.Pod, h.client.objects[("pods", "default", name)])
        assert list(p.metadata.owner_references) == []
    owner = cast(apps_pb2.ReplicaSet, h.client.objects[("replicasets", "default", "web-abc")])
    assert list(owner.metadata.finalizers) == []


async def test_orphaning_a_dependent_the_cache_has_an_old_copy_of_reads_it_again() -> None:
    h = Harness()
    rs = deleting(replicaset(), ORPHAN_FINALIZER)
    h.add(rs, pod("p1", rs))
    newer = pod("p1", rs)
    newer.metadata.labels["touched"] = "yes"
    h.client.seed(newer)  # changed on the API server; the cache still has the old version
    await h.gc.reconcile("ReplicaSet/default/web-abc")
    assert h.client.verbs() == [
        "update pods default/p1",  # Conflict: stale resourceVersion
        "update pods default/p1",  # after a fresh read
        "update replicasets default/web-abc",
    ]
    p = cast(core_pb2.Pod, h.client.objects[("pods", "default", "p1")])
    assert list(p.metadata.owner_references) == []
    assert p.metadata.labels["touched"] == "yes"


async def test_foreground_deletes_the_dependents_first_then_drops_the_finalizer() -> None:
    h = Harness()
    d = deleting(deployment(), FOREGROUND_FINALIZER)
    rs = replicaset("web-abc", "r1", d)
    h.add(d, rs, pod("p1", rs), pod("p2", rs, block=False))
    await h.gc.reconcile("Deployment/default/web")
    assert h.client.verbs() == []  # the ReplicaSet blocks it
    assert await h.drain() == ["ReplicaSet/default/web-abc"]
    # The ReplicaSet has dependents: the wait propagates (Foreground).
    assert h.client.verbs() == ["delete replicasets default/web-abc"]
    assert h.client.actions[0].object == "Foreground"

    # The API server marks the ReplicaSet as the Foreground delete does; its pods go first.
    marked = deleting(replicaset("web-abc", "r1", d), FOREGROUND_FINALIZER)
    h.client.clear()
    h.add(marked)
    await h.gc.reconcile("ReplicaSet/default/web-abc")
    assert sorted(await h.drain()) == ["Pod/default/p1", "Pod/default/p2"]
    assert sorted(h.client.verbs()) == ["delete pods default/p1", "delete pods default/p2"]

    # No blocking dependent left: the finalizers go, the ReplicaSet's and then the Deployment's.
    h.client.clear()
    await h.gc.reconcile("ReplicaSet/default/web-abc")
    assert h.client.verbs() == ["update replicasets default/web-abc"]
    del h.client.objects[("replicasets", "default", "web-abc")]  # the update deleted it
    h.refresh()
    await h.gc.reconcile("Deployment/default/web")
    assert h.client.verbs()[-1] == "update deployments default/web"
    left = cast(apps_pb2.Deployment, h.client.objects[("deployments", "default", "web")])
    assert FOREGROUND_FINALIZER not in left.metadata.finalizers


async def test_non_blocking_dependents_do_not_hold_a_foreground_owner() -> None:
    h = Harness()
    rs = deleting(replicaset(), FOREGROUND_FINALIZER)
    h.add(rs, pod("p1", rs, block=False))
    await h.gc.reconcile("ReplicaSet/default/web-abc")
    assert h.client.verbs() == ["update replicasets default/web-abc"]
    assert "Pod/default/p1" in h.gc.queue._queue  # still deleted


async def test_references_that_cannot_be_checked_count_as_live_owners() -> None:
    h = Harness()
    p = pod("p1")
    p.metadata.owner_references.add(api_version="example.com/v1", kind="Widget", name="w", uid="w1")
    p.metadata.owner_references.add(api_version="apps/v1", kind="ReplicaSet", name="r")  # no uid
    h.add(p)
    await h.gc.reconcile("Pod/default/p1")
    assert h.client.verbs() == []


async def test_a_cross_namespace_reference_is_reported_and_treated_as_absent() -> None:
    h = Harness()
    rs = replicaset()  # in "default"
    h.add(rs, pod("p1", rs, namespace="other"))
    await h.gc.reconcile("Pod/other/p1")
    assert h.client.verbs() == ["delete pods other/p1"]
    assert h.recorder.events[0][0] == "OwnerRefInvalidNamespace"
    assert "the owner is in namespace 'default', not 'other'" in h.recorder.events[0][2]


async def test_a_cluster_scoped_object_owned_by_a_namespaced_one_is_reported() -> None:
    h = Harness()
    node = core_pb2.Node()
    node.metadata.name = "n1"
    node.metadata.uid = "n1"
    owner = pod("p1")
    node.metadata.owner_references.append(ref(owner))
    h.add(owner, node)
    await h.gc.reconcile("Node//n1")
    assert h.client.verbs() == ["delete nodes n1"]
    assert h.recorder.events[0][0] == "OwnerRefInvalidNamespace"


def test_the_periodic_scan_queues_owned_and_finalizing_objects() -> None:
    h = Harness()
    d = deployment()
    h.add(d, replicaset("web-abc", "r1", d), deleting(deployment("x", "d2"), ORPHAN_FINALIZER))
    h.gc.scan()
    assert sorted(h.gc.queue._queue) == ["Deployment/default/x", "ReplicaSet/default/web-abc"]


# ---- end to end -------------------------------------------------------------------------------


@pytest.fixture
async def collector(client: Client) -> AsyncIterator[GarbageCollector]:
    informers = SharedInformers(client)
    recorder = EventRecorder(client, "controller-manager")
    gc = GarbageCollector(ControllerContext(client=client, informers=informers, recorder=recorder))
    informers.start()
    runner = asyncio.get_running_loop().create_task(gc.run())
    try:
        yield gc
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await informers.stop()


def _template(obj: Any) -> None:
    obj.spec.replicas = 2
    obj.spec.selector.match_labels["app"] = "web"
    obj.spec.template.metadata.labels["app"] = "web"
    obj.spec.template.spec.containers.add(name="c", image="busybox")


async def _chain(client: Client) -> tuple[str, apps_pb2.Deployment, apps_pb2.ReplicaSet]:
    """A namespace with Deployment web -> ReplicaSet web-abc -> Pods web-abc-0/1, by hand."""
    ns = core_pb2.Namespace()
    ns.metadata.name = f"gc-{uuid.uuid4().hex[:6]}"
    await client.create(ns)
    namespace = ns.metadata.name
    d = apps_pb2.Deployment()
    d.metadata.name = "web"
    d.metadata.namespace = namespace
    _template(d)
    d = await client.create(d)
    rs = apps_pb2.ReplicaSet()
    rs.metadata.name = "web-abc"
    rs.metadata.namespace = namespace
    rs.metadata.owner_references.append(ref(d))
    _template(rs)
    rs = await client.create(rs)
    for i in range(2):
        p = pod(f"web-abc-{i}", rs)
        p.metadata.namespace = namespace
        p.metadata.uid = ""
        p.spec.containers.add(name="c", image="busybox")
        await client.create(p)
    return namespace, d, rs


async def _names(client: Client, kind: Any, namespace: str) -> list[str]:
    return sorted(o.metadata.name for o in (await client.list_all(kind, namespace=namespace)).items)


async def test_end_to_end_background_deletion_removes_replicaset_and_pods(
    client: Client, collector: GarbageCollector
) -> None:
    namespace, _, _ = await _chain(client)
    await client.delete(apps_pb2.Deployment, "web", namespace=namespace)

    async def all_gone() -> bool:
        return (
            await _names(client, apps_pb2.ReplicaSet, namespace) == []
            and await _names(client, core_pb2.Pod, namespace) == []
        )

    await eventually(all_gone, what="the ReplicaSet and its pods collected")


async def _record_deletes(
    client: Client, kind: Any, namespace: str, since: str, out: dict[str, int]
) -> None:
    """name -> the store revision of its deletion, for every `kind` deleted in `namespace`."""
    async for event in client.watch(kind, namespace=namespace, resource_version=since):
        if event.type == "DELETED":
            out[f"{type(event.object).__name__}/{event.object.metadata.name}"] = int(
                event.object.metadata.resource_version
            )


async def test_end_to_end_foreground_deletion_waits_for_the_dependents(
    client: Client, collector: GarbageCollector
) -> None:
    namespace, _, _ = await _chain(client)
    since = (await client.list(core_pb2.Pod, namespace=namespace)).resource_version
    deleted: dict[str, int] = {}
    watches = [
        asyncio.get_running_loop().create_task(
            _record_deletes(client, kind, namespace, since, deleted)
        )
        for kind in (apps_pb2.Deployment, apps_pb2.ReplicaSet, core_pb2.Pod)
    ]
    try:
        marked = await client.delete(
            apps_pb2.Deployment, "web", namespace=namespace, propagation_policy="Foreground"
        )
        assert marked.metadata.HasField("deletion_timestamp")
        assert list(marked.metadata.finalizers) == [FOREGROUND_FINALIZER]

        async def all_deleted() -> bool:
            return len(deleted) == 4

        await eventually(all_deleted, what="the Deployment, its ReplicaSet and pods deleted")
    finally:
        for task in watches:
            task.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
    # Dependents first: the pods before the ReplicaSet, the ReplicaSet before the Deployment.
    pods = [deleted["Pod/web-abc-0"], deleted["Pod/web-abc-1"]]
    assert max(pods) < deleted["ReplicaSet/web-abc"] < deleted["Deployment/web"]


async def test_end_to_end_orphan_deletion_keeps_the_pods(
    client: Client, collector: GarbageCollector
) -> None:
    namespace, _, _ = await _chain(client)
    await client.delete(
        apps_pb2.ReplicaSet, "web-abc", namespace=namespace, propagation_policy="Orphan"
    )

    async def orphaned() -> bool:
        pods = (await client.list_all(core_pb2.Pod, namespace=namespace)).items
        return (
            await _names(client, apps_pb2.ReplicaSet, namespace) == []
            and len(pods) == 2
            and all(not p.metadata.owner_references for p in pods)
        )

    await eventually(orphaned, what="the ReplicaSet gone, its pods kept without references")
    # The Deployment, which still owns nothing now, is untouched.
    assert await _names(client, apps_pb2.Deployment, namespace) == ["web"]
