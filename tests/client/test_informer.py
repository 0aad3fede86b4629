"""The informer against real processes: sync, events in order, resume after an API server
restart without losing an update, relist on Gone, resync, and the indexed cache."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.message import Message

from k8semu.client import (
    NAMESPACE_INDEX,
    Client,
    Informer,
    InformerConfig,
    ObjectList,
    index_by_namespace,
    object_key,
)
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.api.v1 import core_pb2

from .conftest import TEST_RETRIES, APIServerProcess, compact, eventually

FAST = InformerConfig(resync=0, min_backoff=0.05, max_backoff=0.5)


class Recorder:
    """Event handlers that only append (as real ones only enqueue)."""

    def __init__(self, informer: Informer[Any]) -> None:
        self.events: list[tuple[str, str, str]] = []
        informer.add_event_handler(
            on_add=lambda o: self.events.append(("add", object_key(o), _value(o))),
            on_update=lambda old, new: self.events.append(
                ("update", object_key(new), f"{_value(old)}->{_value(new)}")
            ),
            on_delete=lambda o: self.events.append(("delete", object_key(o), _value(o))),
        )


def _value(obj: Message) -> str:
    return str(getattr(obj, "data", {}).get("n", ""))


class CountingClient(Client):
    lists = 0

    async def list_all(self, *args: Any, **kwargs: Any) -> ObjectList[Any]:
        self.lists += 1
        page: ObjectList[Any] = await super().list_all(*args, **kwargs)
        return page


@contextlib.asynccontextmanager
async def watched_and_writer(
    servers: list[APIServerProcess], namespace: str
) -> AsyncIterator[tuple[CountingClient, Client]]:
    """A counting client on the first API server (an informer's) and a writer on the second,
    with `namespace` created."""
    first, second = servers
    async with (
        CountingClient([first.address], retries=TEST_RETRIES) as watched,
        Client([second.address], retries=TEST_RETRIES) as writer,
    ):
        ns = core_pb2.Namespace()
        ns.metadata.name = namespace
        await writer.create(ns)
        yield watched, writer


def cm(name: str, namespace: str, n: int) -> core_pb2.ConfigMap:
    c = core_pb2.ConfigMap()
    c.metadata.name = name
    c.metadata.namespace = namespace
    c.data["n"] = str(n)
    return c


async def assert_cache_matches_list(
    informer: Informer[core_pb2.ConfigMap], client: Client, namespace: str
) -> None:
    async def same() -> bool:
        listed = await client.list(core_pb2.ConfigMap, namespace=namespace)
        want = {object_key(o): o.metadata.resource_version for o in listed.items}
        have = {object_key(o): o.metadata.resource_version for o in informer.cache.list()}
        return want == have

    await eventually(same, what="the informer's cache equals a fresh list")


async def test_sync_then_events_in_order(client: Client, namespace: str) -> None:
    await client.create(cm("before", namespace, 0))
    informer = Informer(client, core_pb2.ConfigMap, namespace=namespace, config=FAST, indexers={})
    rec = Recorder(informer)
    assert not informer.has_synced()
    informer.start()
    try:
        await informer.wait_synced(10)
        assert informer.cache.get_by_name("before", namespace) is not None
        assert rec.events == [("add", f"{namespace}/before", "0")]
        obj = await client.create(cm("x", namespace, 1))
        obj.data["n"] = "2"
        obj = await client.update(obj)
        await client.delete(core_pb2.ConfigMap, "x", namespace=namespace)
        await eventually(lambda: len(rec.events) == 4, what="4 events")
        assert rec.events[1:] == [
            ("add", f"{namespace}/x", "1"),
            ("update", f"{namespace}/x", "1->2"),
            ("delete", f"{namespace}/x", "2"),
        ]
        assert f"{namespace}/x" not in informer.cache
        # A handler added late is told about what is already cached.
        late: list[str] = []
        informer.add_event_handler(on_add=lambda o: late.append(o.metadata.name))
        assert late == ["before"]
    finally:
        await informer.stop()


async def test_resume_after_api_server_restart(live_apiservers: list[APIServerProcess]) -> None:
    first, _ = live_apiservers
    async with watched_and_writer(live_apiservers, "resume") as (watched, writer):
        objs = [await writer.create(cm(f"o{i}", "resume", 0)) for i in range(5)]
        informer = Informer(watched, core_pb2.ConfigMap, namespace="resume", config=FAST)
        rec = Recorder(informer)
        informer.start()
        try:
            await informer.wait_synced(10)
            first.kill()
            # Writes while the informer's API server is down: every one must arrive.
            for step in range(1, 4):
                for i, o in enumerate(objs):
                    o.data["n"] = str(step)
                    objs[i] = await writer.update(o)
            await writer.delete(core_pb2.ConfigMap, "o4", namespace="resume")
            await writer.create(cm("late", "resume", 9))
            first.restart()
            await assert_cache_matches_list(informer, writer, "resume")
            assert watched.lists == 1, "resumed from the last resourceVersion, no relist"
            for i in range(4):
                updates = [e[2] for e in rec.events if e[0] == "update" and e[1] == f"resume/o{i}"]
                assert updates == ["0->1", "1->2", "2->3"]
            assert ("delete", "resume/o4", "1") not in rec.events  # deleted at step 3
            assert [e for e in rec.events if e[0] == "delete"] == [("delete", "resume/o4", "3")]
            assert ("add", "resume/late", "9") in rec.events
        finally:
            await informer.stop()


async def test_relist_on_gone(
    live_apiservers: list[APIServerProcess], store: K8semuStoreCluster
) -> None:
    first, _ = live_apiservers
    async with watched_and_writer(live_apiservers, "gone") as (watched, writer):
        keep = await writer.create(cm("keep", "gone", 0))
        await writer.create(cm("drop", "gone", 0))
        informer = Informer(watched, core_pb2.ConfigMap, namespace="gone", config=FAST)
        rec = Recorder(informer)
        informer.start()
        try:
            await informer.wait_synced(10)
            first.kill()
            keep.data["n"] = "1"
            await writer.update(keep)
            await writer.delete(core_pb2.ConfigMap, "drop", namespace="gone")
            await writer.create(cm("new", "gone", 2))
            now = await writer.list(core_pb2.ConfigMap, namespace="gone")
            # The restarted server has no watch cache, so the informer's resourceVersion is
            # looked up in the store, which has compacted it away: Gone, then a relist.
            await compact(store, int(now.resource_version))
            first.restart()
            await assert_cache_matches_list(informer, writer, "gone")
            assert watched.lists == 2
            assert ("update", "gone/keep", "0->1") in rec.events
            assert ("delete", "gone/drop", "0") in rec.events  # last state the cache saw
            assert ("add", "gone/new", "2") in rec.events
        finally:
            await informer.stop()


async def test_resync_and_indexers(client: Client, namespace: str) -> None:
    await client.create(cm("r", namespace, 5))
    informer = Informer(
        client,
        core_pb2.ConfigMap,
        namespace=namespace,
        config=FAST,
        resync=0.2,
        indexers={NAMESPACE_INDEX: index_by_namespace},
    )
    resynced: list[str] = []
    informer.add_event_handler(
        on_update=lambda old, new: resynced.append(new.metadata.name) if old is new else None
    )
    async with asyncio.TaskGroup() as tg:  # owned by the caller's TaskGroup this time
        task = tg.create_task(informer.run())
        await informer.wait_synced(10)
        assert [o.metadata.name for o in informer.cache.by_index(NAMESPACE_INDEX, namespace)] == [
            "r"
        ]
        await eventually(lambda: len(resynced) >= 2, what="two resyncs")
        task.cancel()
