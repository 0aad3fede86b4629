"""WatchHub: ordering, no gaps, no duplicates across catch-up, live delivery and demotion."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k8semu.pb.etcd import kv_pb2, rpc_pb2
from k8semu.pb.store import internal_pb2
from k8semu.store import errors
from k8semu.store.mvcc import MVCCStore
from k8semu.store.watch import NODELETE, NOPUT, WatchBatch, Watcher, WatchHub

Event = kv_pb2.Event
PUT = Event.PUT
DELETE = Event.DELETE


def ev(rev: int, key: bytes, typ: int = PUT, prev: bool = False) -> Event:
    e = Event(type=typ)  # type: ignore[arg-type]
    e.kv.key = key
    e.kv.mod_revision = rev
    if typ == PUT:
        e.kv.value = b"v%d" % rev
    if prev:
        e.prev_kv.key = key
        e.prev_kv.value = b"old"
    return e


class History:
    """An in-memory stand-in for MVCCStore.events, with a gate to hold reads open."""

    def __init__(self, limit: int = 1000) -> None:
        self.events: list[Event] = []
        self.revision = 1
        self.compact = 0
        self.limit = limit
        self.gate: asyncio.Event | None = None
        self.reads = 0
        self.rng: random.Random | None = None

    def write(self, *keys: bytes, typ: int = PUT) -> tuple[int, list[Event]]:
        self.revision += 1
        new = [ev(self.revision, k, typ, prev=True) for k in keys]
        self.events += new
        return self.revision, new

    async def read(self, start: int, key: bytes, end: bytes, end_rev: int) -> list[Event]:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.rng is not None:
            for _ in range(self.rng.randrange(3)):
                await asyncio.sleep(0)
        if start <= self.compact:
            raise errors.ErrCompacted
        out: list[Event] = []
        for e in self.events:
            rev = e.kv.mod_revision
            if rev < start or rev > end_rev:
                continue
            if len(out) >= self.limit and rev != out[-1].kv.mod_revision:
                break
            if in_range(key, end, e.kv.key):
                out.append(e)
        return out


def in_range(key: bytes, range_end: bytes, k: bytes) -> bool:
    """etcd's key range, written independently of watch.py."""
    if not range_end:
        return k == key
    return k >= key and (range_end == b"\x00" or k < range_end)


def revs(batch: WatchBatch) -> list[int]:
    return [e.kv.mod_revision for e in batch.events]


async def get(w: Watcher) -> WatchBatch:
    return await asyncio.wait_for(w.get(), 5)


def make(h: History, **kw: int) -> WatchHub:
    return WatchHub(h.read, h.revision, **kw)


def publish(hub: WatchHub, h: History, *keys: bytes, typ: int = PUT) -> None:
    rev, new = h.write(*keys, typ=typ)
    hub.notify(rev, new)


async def test_live_delivery_and_key_ranges() -> None:
    h = History()
    hub = make(h)
    one = hub.add(b"a", b"", 0)
    prefix = hub.add(b"p/", b"p0", 0)
    everything = hub.add(b"\x00", b"\x00", 0)
    above = hub.add(b"p", b"\x00", 0)
    assert one.synced and one.next_revision == 2 and len(hub) == 4
    publish(hub, h, b"a")  # 2
    publish(hub, h, b"p/1", b"p/2", b"b")  # 3: one txn
    publish(hub, h, b"p0")  # 4
    assert revs(await get(one)) == [2]
    batch = await get(prefix)
    assert [e.kv.key for e in batch.events] == [b"p/1", b"p/2"] and batch.revision == 4
    assert revs(await get(everything)) == [2, 3, 3, 3, 4]
    assert [e.kv.key for e in (await get(above)).events] == [b"p/1", b"p/2", b"p0"]
    assert one.pending == 0 and one.next_revision == 5 and h.reads == 0


async def test_filters_and_prev_kv() -> None:
    h = History()
    hub = make(h)
    plain = hub.add(b"k", b"", 0)
    with_prev = hub.add(b"k", b"", 0, prev_kv=True)
    no_put = hub.add(b"k", b"", 0, filters=[NOPUT])
    no_delete = hub.add(b"k", b"", 0, filters=[NODELETE])
    publish(hub, h, b"k")
    publish(hub, h, b"k", typ=DELETE)
    got = (await get(plain)).events
    assert [e.type for e in got] == [PUT, DELETE]
    assert not any(e.HasField("prev_kv") for e in got)
    full = (await get(with_prev)).events
    assert all(e.prev_kv.value == b"old" for e in full)
    assert full[0] is h.events[0]  # shared, not copied, when prev_kv is wanted
    assert [e.type for e in (await get(no_put)).events] == [DELETE]
    assert [e.type for e in (await get(no_delete)).events] == [PUT]


async def test_catch_up_from_history_then_live() -> None:
    h = History(limit=2)
    for i in range(8):
        h.write(b"k", b"other") if i % 2 else h.write(b"k")
    hub = make(h)
    assert hub.revision == 9
    w = hub.add(b"k", b"", 3)
    assert not w.synced and w.next_revision == 3
    seen: list[int] = []
    while not w.synced or w.pending:
        seen += revs(await get(w))
    assert seen == [3, 4, 5, 6, 7, 8, 9]
    publish(hub, h, b"k")
    assert revs(await get(w)) == [10]


async def test_notifications_during_catch_up_are_neither_lost_nor_repeated() -> None:
    h = History()
    for _ in range(5):
        h.write(b"k")  # 2..6
    hub = make(h)
    w = hub.add(b"k", b"", 2)
    h.gate = asyncio.Event()
    task = asyncio.create_task(w.get())
    await asyncio.sleep(0)
    assert h.reads == 1  # the read is in flight with end revision 6
    publish(hub, h, b"k")  # 7
    publish(hub, h, b"k")  # 8: both while the read is blocked
    h.gate.set()
    first = await asyncio.wait_for(task, 5)
    assert revs(first) == [2, 3, 4, 5, 6]
    assert not w.synced
    second = await get(w)  # reads again up to 8, then joins the live group
    assert revs(second) == [7, 8] and w.synced
    publish(hub, h, b"k")
    assert revs(await get(w)) == [9]


async def test_txn_never_split_across_batches() -> None:
    h = History(limit=2)
    h.write(b"a")  # 2
    h.write(b"a", b"b", b"c", b"d")  # 3
    h.write(b"a")  # 4
    hub = make(h, max_pending=2)
    w = hub.add(b"\x00", b"\x00", 2)
    batches = []
    while not w.synced or w.pending:
        batches.append(revs(await get(w)))
    assert batches == [[2, 3, 3, 3, 3], [4]]
    live = hub.add(b"\x00", b"\x00", 0)
    publish(hub, h, b"x", b"y", b"z")  # more than max_pending in one revision
    publish(hub, h, b"x")
    assert revs(await get(live)) == [5, 5, 5]  # a whole revision, even beyond the limit
    assert revs(await get(live)) == [6]


async def test_slow_watcher_demoted_then_catches_up() -> None:
    h = History(limit=7)
    hub = make(h, max_pending=5)
    slow = hub.add(b"k", b"", 0)
    fast = hub.add(b"k", b"", 0)
    fast_seen: list[int] = []
    for _ in range(40):
        publish(hub, h, b"k")
        fast_seen += revs(await get(fast))
    assert fast_seen == list(range(2, 42)) and fast.synced
    assert not slow.synced and slow.pending == 6  # bounded: max_pending + one batch
    assert slow.next_revision == 8
    seen: list[int] = []
    while not slow.synced:
        seen += revs(await get(slow))
        publish(hub, h, b"k")  # writes keep coming while it catches up
    while slow.pending:
        seen += revs(await get(slow))
    assert seen == list(range(2, hub.revision + 1))


async def test_compacted_history_cancels() -> None:
    h = History()
    for _ in range(10):
        h.write(b"k")
    h.compact = 6
    hub = make(h)
    hub.notify(h.revision, [], compact_revision=6)
    w = hub.add(b"k", b"", 4)
    batch = await get(w)
    assert batch.canceled and batch.compact_revision == 6 and batch.events == []
    assert (await get(w)).canceled  # final
    # when the hub has not been told about the compaction, report the lower bound
    hub2 = make(h)
    w2 = hub2.add(b"k", b"", 3)
    assert (await get(w2)).compact_revision == 3
    # start right after the compact revision is fine
    w3 = hub.add(b"k", b"", 7)
    assert revs(await get(w3)) == [7, 8, 9, 10, 11]


async def test_demoted_watcher_cancelled_by_compaction() -> None:
    h = History()
    hub = make(h, max_pending=2)
    w = hub.add(b"k", b"", 0)
    for _ in range(6):
        publish(hub, h, b"k")
    assert not w.synced
    h.compact = 6
    hub.notify(h.revision, [], compact_revision=6)
    # what it already holds is still delivered, in batches of at most max_pending
    assert revs(await get(w)) == [2, 3]
    assert revs(await get(w)) == [4]
    batch = await get(w)
    assert batch.canceled and batch.compact_revision == 6


async def test_remove_and_future_start() -> None:
    h = History()
    hub = make(h)
    w = hub.add(b"k", b"", 0)
    task = asyncio.create_task(w.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await w.get()  # one consumer at a time
    hub.remove(w)
    hub.remove(w)  # idempotent
    batch = await asyncio.wait_for(task, 5)
    assert batch.canceled and batch.compact_revision == 0 and len(hub) == 0
    publish(hub, h, b"k")
    future = hub.add(b"k", b"", 5)
    assert future.synced and future.next_revision == 5
    for _ in range(4):
        publish(hub, h, b"k")  # 3..6
    assert revs(await get(future)) == [5, 6]


async def test_reset_after_snapshot_install() -> None:
    h = History()
    hub = make(h)
    w = hub.add(b"k", b"", 0)
    publish(hub, h, b"k")  # 2
    task = asyncio.create_task(w.get())
    assert revs(await asyncio.wait_for(task, 5)) == [2]
    task = asyncio.create_task(w.get())
    await asyncio.sleep(0)  # parked, waiting for live events
    for _ in range(3):
        h.write(b"k")  # 3..5 arrive inside a snapshot: no notify
    hub.reset(h.revision)
    assert revs(await asyncio.wait_for(task, 5)) == [3, 4, 5]
    assert w.synced
    publish(hub, h, b"k")
    assert revs(await get(w)) == [6]
    h.compact = 7
    for _ in range(3):
        h.write(b"k")
    hub.reset(h.revision, compact_revision=7)
    batch = await get(w)
    assert batch.canceled and batch.compact_revision == 7


async def test_with_real_store(tmp_path: Path) -> None:
    store = MVCCStore(tmp_path / "kv.db")
    index = 0

    def apply(*reqs: internal_pb2.InternalRequest) -> None:
        nonlocal index
        entries = []
        for r in reqs:
            index += 1
            entries.append((index, 1, r.SerializeToString()))
        results = store.apply_batch(entries)
        hub.notify(store.revision, [e for r in results for e in r.events])

    async def read(start: int, key: bytes, end: bytes, end_rev: int) -> list[Event]:
        return store.events(start, key, end, end_rev=end_rev, limit=3)

    hub = WatchHub(read, store.revision)

    def put(key: bytes) -> internal_pb2.InternalRequest:
        return internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=b"x"))

    apply(put(b"/a/1"), put(b"/a/2"), put(b"/b/1"))
    apply(internal_pb2.InternalRequest(delete_range=rpc_pb2.DeleteRangeRequest(key=b"/a/1")))
    w = hub.add(b"/a/", b"/a0", 1, prev_kv=True)
    apply(put(b"/a/3"))
    seen = []
    while not w.synced or w.pending:
        seen += (await get(w)).events
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in seen] == [
        (PUT, b"/a/1", 2),
        (PUT, b"/a/2", 3),
        (DELETE, b"/a/1", 5),
        (PUT, b"/a/3", 6),
    ]
    assert seen[2].prev_kv.key == b"/a/1"
    store.close()


# --- property: any interleaving delivers exactly the matching history --------------------

_WATCHES = [(b"a", b""), (b"b", b""), (b"a", b"c"), (b"\x00", b"\x00"), (b"b", b"\x00")]


@settings(max_examples=150, deadline=None)
@given(
    plan=st.lists(
        st.one_of(
            st.tuples(
                st.just("write"),
                st.lists(st.sampled_from([b"a", b"b", b"c"]), min_size=1, max_size=3),
            ),
            st.tuples(
                st.just("add"), st.tuples(st.integers(0, 30), st.integers(0, len(_WATCHES) - 1))
            ),
            st.tuples(st.just("yield"), st.integers(1, 4)),
        ),
        max_size=60,
    ),
    max_pending=st.integers(1, 6),
    limit=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_interleaving_delivers_exactly_once_in_order(
    plan: list[tuple[str, Any]], max_pending: int, limit: int, seed: int
) -> None:
    asyncio.run(_scenario(plan, max_pending, limit, seed))


async def _scenario(plan: list[tuple[str, Any]], max_pending: int, limit: int, seed: int) -> None:
    rng = random.Random(seed)
    h = History(limit=limit)
    h.rng = rng
    for _ in range(3):
        h.write(b"a", b"b")
    hub = WatchHub(h.read, h.revision, max_pending=max_pending)
    watchers: list[tuple[Watcher, int, bytes, bytes]] = []
    received: dict[int, list[list[int]]] = {}
    tasks: list[asyncio.Task[None]] = []

    async def consume(i: int, w: Watcher) -> None:
        while True:
            batch = await w.get()
            assert not batch.canceled
            received[i].append([e.kv.mod_revision for e in batch.events])
            got[i] += [(e.kv.mod_revision, e.kv.key) for e in batch.events]
            for _ in range(rng.randrange(4)):  # a consumer that is sometimes slow
                await asyncio.sleep(0)

    got: dict[int, list[tuple[int, bytes]]] = {}
    for kind, arg in plan:
        if kind == "write":
            publish(hub, h, *arg)
        elif kind == "add":
            back, which = arg
            key, end = _WATCHES[which]
            start = max(1, hub.revision - back) if back else 0
            w = hub.add(key, end, start)
            i = len(watchers)
            watchers.append((w, start or hub.revision + 1, key, end))
            received[i] = []
            got[i] = []
            tasks.append(asyncio.create_task(consume(i, w)))
        else:
            for _ in range(arg):
                await asyncio.sleep(0)

    def expected(i: int) -> list[tuple[int, bytes]]:
        _, start, key, end = watchers[i]
        return [
            (e.kv.mod_revision, e.kv.key)
            for e in h.events
            if e.kv.mod_revision >= start and in_range(key, end, e.kv.key)
        ]

    for _ in range(10_000):
        if all(got[i] == expected(i) for i in got):
            break
        await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for i in got:
        assert got[i] == expected(i), (i, watchers[i][1:])
        flat = [r for batch in received[i] for r in batch]
        assert all(batch for batch in received[i])
        # a revision's events never straddle two batches
        for a, b in zip(received[i], received[i][1:], strict=False):
            assert a[-1] < b[0]
        assert flat == [r for r, _ in got[i]]
