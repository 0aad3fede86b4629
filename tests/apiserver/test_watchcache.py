"""The watch cache alone: events fed straight in (no store, no processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import grpc
import pytest
from google.protobuf import any_pb2

from k8semu.api import kinds
from k8semu.apiserver.errors import Gone, StatusError
from k8semu.apiserver.objects import Selector, encode
from k8semu.apiserver.watchcache import TooSlow, WatchCache, WatchCacheConfig
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.etcd import kv_pb2

PODS = kinds.for_resource("pods")
EVERYTHING = Selector(PODS, "", "")


class FakeEtcd:
    """Just enough of etcd's MVCC to produce watch events with prev_kv."""

    def __init__(self, revision: int = 10) -> None:
        self.revision = revision
        self.kvs: dict[bytes, kv_pb2.KeyValue] = {}

    def put(self, name: str, ns: str = "default", **labels: str) -> kv_pb2.Event:
        pod = core_pb2.Pod()
        pod.metadata.name, pod.metadata.namespace = name, ns
        pod.metadata.labels.update(labels)
        self.revision += 1
        key = f"/registry/pods/{ns}/{name}".encode()
        prev = self.kvs.get(key)
        kv = kv_pb2.KeyValue(
            key=key,
            value=encode(pod),
            mod_revision=self.revision,
            create_revision=prev.create_revision if prev else self.revision,
        )
        self.kvs[key] = kv
        return kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv, prev_kv=prev)

    def delete(self, name: str, ns: str = "default") -> kv_pb2.Event:
        self.revision += 1
        key = f"/registry/pods/{ns}/{name}".encode()
        prev = self.kvs.pop(key)
        return kv_pb2.Event(
            type=kv_pb2.Event.DELETE,
            kv=kv_pb2.KeyValue(key=key, mod_revision=self.revision),
            prev_kv=prev,
        )


def _cache(etcd: FakeEtcd, **config: int | float) -> WatchCache:
    cache = WatchCache(PODS, None, WatchCacheConfig(**config))  # type: ignore[arg-type]
    cache.reset(etcd.kvs.values(), etcd.revision)
    return cache


def _watch(
    cache: WatchCache,
    namespace: str = "",
    selector: Selector = EVERYTHING,
    rv: int = 0,
    *,
    bookmarks: bool = False,
) -> AsyncGenerator[bytes]:
    """A client watch, registered at once (as the cache's `watch` does once it is ready); it
    yields serialized WatchEvents, as the server sends them."""
    return cache.stream(cache.register(namespace, selector, rv, bookmarks=bookmarks))


def _summary(raw: bytes) -> tuple[str, str, int]:
    ev = api.WatchEvent.FromString(raw)
    pod = core_pb2.Pod()
    assert ev.object.Unpack(pod)
    return ev.type, pod.metadata.name, int(pod.metadata.resource_version)


async def _take(stream: AsyncIterator[bytes], count: int) -> list[tuple[str, str, int]]:
    async def take() -> list[tuple[str, str, int]]:
        return [_summary(await anext(stream)) for _ in range(count)]

    return await asyncio.wait_for(take(), 5)


async def test_watch_from_now_sees_only_later_events_in_order() -> None:
    etcd = FakeEtcd()
    cache = _cache(etcd)
    cache.apply([etcd.put("before")])
    stream = _watch(cache)
    first = asyncio.ensure_future(_take(stream, 3))
    cache.apply([etcd.put("a"), etcd.put("b", ns="other")])
    cache.apply([etcd.delete("a")])
    assert await first == [("ADDED", "a", 12), ("ADDED", "b", 13), ("DELETED", "a", 14)]
    await stream.aclose()
    assert not cache.watchers


async def test_served_from_buffer_and_too_old_beyond_it() -> None:
    etcd = FakeEtcd()
    cache = _cache(etcd, capacity=3)
    for i in range(5):  # revisions 11..15; the buffer keeps 13..15
        cache.apply([etcd.put(f"p{i}")])
    assert (cache.oldest, cache.revision) == (12, 15)
    stream = _watch(cache, rv=13)
    assert await _take(stream, 2) == [("ADDED", "p3", 14), ("ADDED", "p4", 15)]
    await stream.aclose()
    with pytest.raises(Gone, match=r"too old resource version: 11 \(12\)"):
        _watch(cache, rv=11)
    # A resourceVersion ahead of the cache waits for it.
    ahead = _watch(cache, rv=16)
    pending = asyncio.ensure_future(_take(ahead, 1))
    cache.apply([etcd.put("p5"), etcd.put("p6")])
    assert await pending == [("ADDED", "p6", 17)]
    await ahead.aclose()


async def test_namespace_and_selector_transitions() -> None:
    etcd = FakeEtcd()
    cache = _cache(etcd)
    selector = Selector(PODS, "app=web", "")
    stream = _watch(cache, "default", selector, cache.revision)
    cache.apply([etcd.put("x", app="db")])  # 11: not selected
    cache.apply([etcd.put("x", app="web")])  # 12: enters -> ADDED
    cache.apply([etcd.put("x", app="web", tier="1")])  # 13: MODIFIED
    cache.apply([etcd.put("y", ns="other", app="web")])  # 14: other namespace
    cache.apply([etcd.put("x", app="db")])  # 15: leaves -> DELETED (last matching state)
    cache.apply([etcd.put("z", app="web")])  # 16: created matching -> ADDED
    cache.apply([etcd.delete("z")])  # 17
    assert await _take(stream, 5) == [
        ("ADDED", "x", 12),
        ("MODIFIED", "x", 13),
        ("DELETED", "x", 15),
        ("ADDED", "z", 16),
        ("DELETED", "z", 17),
    ]
    await stream.aclose()


async def test_bookmarks_carry_the_cache_revision() -> None:
    etcd = FakeEtcd()
    cache = _cache(etcd, bookmark_interval=0.01)
    stream = _watch(cache, "default", Selector(PODS, "app=none", ""), bookmarks=True)
    cache.apply([etcd.put("a")])
    cache.progress(20)
    while True:
        ev = await asyncio.wait_for(anext(stream), 5)
        assert api.WatchEvent.FromString(ev).type == "BOOKMARK"
        if _summary(ev)[2] == 20:
            break
    await stream.aclose()


async def test_slow_watcher_is_cut_off_and_others_continue() -> None:
    etcd = FakeEtcd()
    cache = _cache(etcd, max_pending=5)
    slow = _watch(cache)
    fast = _watch(cache)
    # Both register and deliver the first event; then `slow` stops reading.
    cache.apply([etcd.put("p0")])
    assert await _take(slow, 1) == [("ADDED", "p0", 11)]
    got = await _take(fast, 1)
    for i in range(1, 10):
        cache.apply([etcd.put(f"p{i}")])
        got += await _take(fast, 1)
    assert [name for _, name, _ in got] == [f"p{i}" for i in range(10)]
    assert len(cache.watchers) == 1  # only `fast`: the slow one's queue is gone
    with pytest.raises(TooSlow) as err:
        await anext(slow)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.message == (
        "watch of pods was too slow to keep up; restart it from resourceVersion 11"
    )
    await fast.aclose()


async def test_relist_after_a_gap_sends_watchers_to_relist() -> None:
    etcd = FakeEtcd()
    cache = _cache(etcd)
    stream = _watch(cache)
    cache.apply([etcd.put("a")])
    assert await _take(stream, 1) == [("ADDED", "a", 11)]
    etcd.put("b")  # lost with the etcd watch (compacted away)
    cache.reset(etcd.kvs.values(), etcd.revision)
    with pytest.raises(StatusError) as err:
        await anext(stream)
    assert err.value.code == grpc.StatusCode.OUT_OF_RANGE
    assert err.value.message == "too old resource version: 11 (12)"
    assert set(cache.objects) == {b"/registry/pods/default/a", b"/registry/pods/default/b"}
    # A relist that finds nothing new keeps watchers.
    keep = _watch(cache)
    pending = asyncio.ensure_future(_take(keep, 1))
    cache.reset(etcd.kvs.values(), etcd.revision)
    cache.apply([etcd.put("c")])
    assert await pending == [("ADDED", "c", 13)]
    await keep.aclose()


async def test_a_revision_with_several_events_is_not_split_on_restart() -> None:
    etcd = FakeEtcd()
    cache = _cache(etcd, max_pending=2)
    stream = _watch(cache)
    first = asyncio.ensure_future(_take(stream, 1))
    a, b = etcd.put("a"), etcd.put("b")
    b.kv.mod_revision = a.kv.mod_revision  # one Txn, two keys: both at revision 11
    cache.apply([a, b])
    assert await first == [("ADDED", "a", 11)]
    cache.apply([etcd.put("c"), etcd.put("d")])  # 3 pending > 2
    # "b" at 11 was not delivered: restarting from 11 would lose it, so 10 (a comes again).
    with pytest.raises(TooSlow, match=r"restart it from resourceVersion 10$"):
        await anext(stream)


async def test_a_replayed_create_is_added_even_though_objects_already_hold_it() -> None:
    # The first watch of a kind from resourceVersion 10: the cache lists at 11 (after the
    # create) and then replays (10, 11] from the store; `objects` must not serve as the
    # create's previous version.
    etcd = FakeEtcd()
    created = etcd.put("late")
    cache = _cache(etcd)
    cache.oldest = cache.revision = 10  # what the store loop does for a hint of 10
    stream = _watch(cache, rv=10)
    pending = asyncio.ensure_future(_take(stream, 1))
    cache.apply([created])
    assert await pending == [("ADDED", "late", 11)]
    await stream.aclose()


async def test_a_batching_watcher_behind_gets_its_queue_in_one_message() -> None:
    etcd = FakeEtcd()
    cache = _cache(etcd)
    batching = cache.stream(cache.register("", EVERYTHING, 0, bookmarks=False, batching=True))
    plain = _watch(cache)
    # Both are behind by three events when they first run: only the batching one gets them
    # in one stream message, in order, each a whole WatchEvent as sent one by one.
    first_batch = asyncio.ensure_future(anext(batching))
    first_plain = asyncio.ensure_future(_take(plain, 3))
    cache.apply([etcd.put("a"), etcd.put("b", ns="other"), etcd.put("a", x="1")])
    message = await asyncio.wait_for(first_batch, 5)
    outer = api.WatchEvent.FromString(message)
    assert outer.type == "" and len(outer.events) == 3
    got = [_summary(e.SerializeToString()) for e in outer.events]
    assert got == [("ADDED", "a", 11), ("ADDED", "b", 12), ("MODIFIED", "a", 13)]
    assert await first_plain == got
    # Caught up, a single event travels alone, as for any watcher.
    next_one = asyncio.ensure_future(anext(batching))
    await asyncio.sleep(0)
    cache.apply([etcd.delete("b", ns="other")])
    assert _summary(await asyncio.wait_for(next_one, 5)) == ("DELETED", "b", 14)
    await batching.aclose()
    await plain.aclose()


def test_batch_bytes_decode_as_the_events_field_and_split_back() -> None:
    from k8semu.apiserver.watchcache import batch
    from k8semu.bench.api import _split_batch

    events = [
        api.WatchEvent(type="ADDED", object=None).SerializeToString(),
        api.WatchEvent(type="DELETED").SerializeToString() + b"",
        api.WatchEvent(type="MODIFIED", object=_any(300)).SerializeToString(),  # > 127 bytes
    ]
    message = batch(events)
    assert [e.SerializeToString() for e in api.WatchEvent.FromString(message).events] == events
    assert _split_batch(message) == events
    assert _split_batch(events[0]) == [events[0]]


def _any(size: int) -> any_pb2.Any:
    return any_pb2.Any(type_url="type.googleapis.com/x", value=b"v" * size)
