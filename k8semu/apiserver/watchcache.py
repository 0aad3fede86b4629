"""The watch cache: one etcd watch per resource feeds every client watch of that resource.

A `WatchCache` (one per kind, started lazily by the first client watch) lists the kind's whole
prefix once, then follows ONE etcd watch on `/registry/<plural>/` (prev_kv, progress notify).
It keeps the current objects and a bounded ring buffer of recent events, each decoded once and
shared by every client watch. Client watches register a `CacheWatcher`; the cache offers each
watcher the events under its namespace prefix, and the watcher's own stream applies the
selector (`transition`), so 1,000 watchers cost the store nothing extra. Streams yield the
serialized WatchEvent bytes, built once per event (and per outcome of a selector) and shared
by every watcher: the server's Watch handler sends them as they are (server.py), so fan-out
costs no per-watcher packing or serialization.

Invariants:
- `oldest < revision`-ordered buffer: every event of this kind with revision > `oldest` and
  <= `revision` is in the buffer; a watch from R is served when `oldest <= R`, else it gets
  OUT_OF_RANGE "too old resource version" and relists (Kubernetes' 410 Gone).
- A watcher holds references to shared events only, at most `max_pending` of them; past that it
  is cut off with RESOURCE_EXHAUSTED naming the resourceVersion to restart from.
- When the etcd watch breaks the cache resumes from `revision + 1`; when that revision has been
  compacted it relists, and every watcher whose position is below the new list revision gets
  OUT_OF_RANGE (it cannot be served without a gap). A watcher that keeps up never sees an
  event lost or twice.

It must not write to the store, and never blocks the fan-out on a slow client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message

from k8semu.api.kinds import Kind
from k8semu.apiserver.errors import Gone, StatusError, Unavailable
from k8semu.apiserver.objects import Selector, decode, meta, pack, prefix, range_end
from k8semu.apiserver.store import Store, StoreCompacted, translate
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.etcd import kv_pb2, rpc_pb2

log = get_logger(__name__)

_LIST_CHUNK = 1000
_MAX_BACKOFF = 2.0


class TooSlow(StatusError):
    """RESOURCE_EXHAUSTED: a client watch fell more than `max_pending` events behind."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchCacheConfig:
    capacity: int = 1000  # events kept per resource for watches from a recent resourceVersion
    max_pending: int = 1000  # events a client watch may fall behind before it is cut off
    bookmark_interval: float = 5.0
    ready_timeout: float = 10.0  # how long a client watch waits for the first list


DEFAULT_WATCH_CACHE = WatchCacheConfig()


class CachedEvent:
    """One etcd event, decoded once and shared (read-only) by every watcher; its WatchEvent
    bytes are built on first use and shared too."""

    __slots__ = ("_encoded", "_everyone", "_packed", "created", "cur", "key", "prev", "revision")

    def __init__(
        self, *, key: bytes, revision: int, cur: Message | None, prev: Message | None, created: bool
    ) -> None:
        self.key = key
        self.revision = revision
        self.cur = cur  # None for a delete
        self.prev = prev  # None when the key did not exist before
        self.created = created
        self._packed: dict[int, any_pb2.Any] = {}
        self._encoded: dict[tuple[str, int], bytes] = {}
        self._everyone: bytes | None = None

    def packed(self, obj: Message) -> any_pb2.Any:
        got = self._packed.get(id(obj))
        if got is None:
            got = self._packed[id(obj)] = pack(obj)
        return got

    def encoded(self, type_: str, obj: Message) -> bytes:
        """The serialized WatchEvent `type_` of `obj` (one of `cur`/`prev`), built once."""
        k = (type_, id(obj))
        got = self._encoded.get(k)
        if got is None:
            event = api.WatchEvent(type=type_, object=self.packed(obj))
            got = self._encoded[k] = event.SerializeToString()
        return got

    def for_everyone(self, selector: Selector) -> bytes | None:
        """`for_selector` for a selector that selects everything: the same for every such
        watcher, so computed once (b"" caches "no event")."""
        got = self._everyone
        if got is None:
            got = self._everyone = self.for_selector(selector) or b""
        return got or None

    def for_selector(self, selector: Selector) -> bytes | None:
        out = transition(selector, self)
        return None if out is None else self.encoded(out[0], out[1])


def transition(selector: Selector, ev: CachedEvent) -> tuple[str, Message] | None:
    """Kubernetes' filtered-watch semantics: entering the selection is ADDED, leaving it
    DELETED (with the last matching state at the event's revision); None when not seen."""
    everything = selector.everything
    prev_match = ev.prev is not None and (everything or selector.matches(ev.prev))
    if ev.cur is None:
        return ("DELETED", ev.prev) if prev_match and ev.prev is not None else None
    cur_match = everything or selector.matches(ev.cur)
    if ev.prev is None:
        if not cur_match:
            return None
        return ("ADDED" if ev.created else "MODIFIED", ev.cur)
    if cur_match:
        return ("MODIFIED" if prev_match else "ADDED", ev.cur)
    if prev_match:
        return ("DELETED", ev.prev)
    return None


MAX_BATCH = 256  # events in one batched stream message
MAX_BATCH_BYTES = 1 << 20  # ... and at most about this many bytes (gRPC's limit is 4 MiB)
_EVENTS_TAG = b"\x1a"  # WatchEvent.events: field 3, length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def batch(events: list[bytes]) -> bytes:
    """One WatchEvent holding `events` (serialized WatchEvents) in `events`, built from the
    shared bytes without decoding them: a repeated message field is each element's bytes
    behind its tag and length."""
    return b"".join(_EVENTS_TAG + _varint(len(e)) + e for e in events)


def bookmark(kind: Kind, revision: int) -> bytes:
    obj = kind.new()
    meta(obj).resource_version = str(revision)
    return api.WatchEvent(type="BOOKMARK", object=pack(obj)).SerializeToString()


@dataclass(eq=False, slots=True, kw_only=True)
class CacheWatcher:
    """One client watch: a window on the cache from revision `since` on."""

    key_prefix: bytes
    selector: Selector
    since: int  # events at or below this revision are not for this watcher
    bookmarks: bool
    batching: bool = False  # the client takes several events in one stream message
    position: int = 0  # the revision of the last event this watcher consumed
    queue: deque[CachedEvent] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    error: StatusError | None = None
    ended: bool = False  # the server is shutting down: the stream ends cleanly

    def restart_revision(self) -> int:
        """The resourceVersion a restarted watch resumes from without a gap."""
        pos = max(self.since, self.position)
        if self.queue and self.queue[0].revision <= pos:
            return pos - 1  # part of revision `pos` is still queued: re-deliver it all
        return pos


class WatchCache:
    """The cache of one kind. Feed it with `reset`/`apply`/`progress` (the store loop does, so
    can tests); client watches come in through `watch`."""

    def __init__(self, kind: Kind, store: Store | None, config: WatchCacheConfig) -> None:
        self.kind = kind
        self.store = store
        self.config = config
        self.prefix = prefix(kind, "")
        self.objects: dict[bytes, kv_pb2.KeyValue] = {}
        self.buffer: deque[CachedEvent] = deque()
        self.oldest = 0  # the buffer holds every event with revision > oldest
        self.revision = 0  # every event up to here is in the buffer (or was, before eviction)
        self.list_revision = 0
        self.watchers: set[CacheWatcher] = set()
        self.store_watches = 0  # etcd watches opened, over the cache's life (for tests/metrics)
        self.lists = 0
        self.last_error = ""
        self.ending = False  # set by end_watches: new watches end at once
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---- feeding ------------------------------------------------------------------------

    def reset(self, kvs: Iterable[kv_pb2.KeyValue], revision: int) -> None:
        """A fresh consistent list at `revision`: the buffer restarts there. Watchers that
        cannot be served from `revision` on without a gap are told to relist."""
        self.objects = {kv.key: kv for kv in kvs}
        self.lists += 1
        if self.revision and revision != self.revision:
            for w in list(self.watchers):
                pos = w.restart_revision()
                if pos < revision:
                    self._cut(w, Gone(f"too old resource version: {pos} ({revision})"))
        self.buffer.clear()
        self.oldest = self.revision = self.list_revision = revision
        self._ready.set()

    def apply(self, events: Iterable[kv_pb2.Event]) -> None:
        """Events from the etcd watch, in revision order."""
        batch: list[CachedEvent] = []
        for raw in events:
            if raw.kv.mod_revision <= self.revision:
                continue  # already seen (a resumed watch never repeats, but be sure)
            batch.append(self._cached(raw))
        if not batch:
            return
        self.buffer.extend(batch)
        while len(self.buffer) > self.config.capacity:
            self.oldest = max(self.oldest, self.buffer.popleft().revision)
        self.revision = batch[-1].revision
        for w in list(self.watchers):
            added = False
            for ev in batch:
                if ev.revision > w.since and ev.key.startswith(w.key_prefix):
                    w.queue.append(ev)
                    added = True
            if len(w.queue) > self.config.max_pending:
                self._cut(
                    w,
                    TooSlow(
                        f"watch of {self.kind.plural} was too slow to keep up; restart it from"
                        f" resourceVersion {w.restart_revision()}"
                    ),
                )
            elif added:
                w.wake.set()

    def progress(self, revision: int) -> None:
        """An etcd progress notification: nothing of this kind is pending up to `revision`."""
        self.revision = max(self.revision, revision)

    def _cached(self, ev: kv_pb2.Event) -> CachedEvent:
        kv = ev.kv
        revision = kv.mod_revision
        replayed = revision <= self.list_revision  # a hint's replay: objects are newer
        prev_kv = ev.prev_kv if ev.HasField("prev_kv") else None
        if prev_kv is None and not replayed:
            # Only for live events: during a replay `objects` holds later versions, and a
            # create would look like a MODIFIED of itself.
            prev_kv = self.objects.get(kv.key)
        prev = decode(self.kind, prev_kv.value, revision) if prev_kv is not None else None
        if ev.type == kv_pb2.Event.DELETE:
            if not replayed:
                self.objects.pop(kv.key, None)
            return CachedEvent(key=kv.key, revision=revision, cur=None, prev=prev, created=False)
        if not replayed:
            self.objects[kv.key] = kv
        cur = decode(self.kind, kv.value, revision)
        created = kv.create_revision == revision
        return CachedEvent(key=kv.key, revision=revision, cur=cur, prev=prev, created=created)

    def end_watches(self) -> None:
        """End every client watch cleanly, now and from now on (a graceful shutdown): the
        client watches again from its last resourceVersion, on another API server."""
        self.ending = True
        for w in list(self.watchers):
            w.ended = True
            w.queue.clear()
            self.watchers.discard(w)
            w.wake.set()

    def _cut(self, w: CacheWatcher, error: StatusError) -> None:
        w.error = error
        w.queue.clear()  # the memory goes now, not when the client reads again
        self.watchers.discard(w)
        w.wake.set()

    # ---- client watches -------------------------------------------------------------------

    def register(
        self,
        namespace: str,
        selector: Selector,
        resource_version: int,
        *,
        bookmarks: bool,
        batching: bool = False,
    ) -> CacheWatcher:
        """A watcher from `resource_version` (0: from now), once the cache is ready
        (`wait_ready`); its events come from `stream`. Gone when it is older than the buffer."""
        if resource_version and resource_version < self.oldest:
            raise Gone(f"too old resource version: {resource_version} ({self.oldest})")
        since = resource_version or max(self.revision, self.list_revision)
        w = CacheWatcher(
            key_prefix=prefix(self.kind, namespace),
            selector=selector,
            since=since,
            bookmarks=bookmarks,
            batching=batching,
            ended=self.ending,
        )
        if w.ended:
            return w
        w.queue.extend(
            ev for ev in self.buffer if ev.revision > since and ev.key.startswith(w.key_prefix)
        )
        if len(w.queue) > self.config.max_pending:
            raise TooSlow(
                f"watch of {self.kind.plural} from resourceVersion {resource_version} would start"
                f" {len(w.queue)} events behind; list and watch again"
            )
        self.watchers.add(w)
        return w

    async def stream(self, w: CacheWatcher) -> AsyncGenerator[bytes]:
        """A registered watcher's events; it leaves the cache when the stream ends."""
        interval = self.config.bookmark_interval
        next_bookmark = time.monotonic() + interval
        everything = w.selector.everything
        selector = w.selector
        queue = w.queue
        try:
            while True:
                if w.error is not None:
                    raise w.error
                if w.ended:
                    return
                while queue:
                    if w.batching and len(queue) > 1:
                        # Behind: what is queued goes out as one stream message. gRPC's cost
                        # is per message (~45 us of CPU here), so a batch of 10 costs about
                        # what 1.4 events cost one by one.
                        parts: list[bytes] = []
                        size = 0
                        while queue and len(parts) < MAX_BATCH and size < MAX_BATCH_BYTES:
                            ev = queue.popleft()
                            w.position = ev.revision
                            data = (
                                ev.for_everyone(selector)
                                if everything
                                else ev.for_selector(selector)
                            )
                            if data is not None:
                                parts.append(data)
                                size += len(data)
                        if len(parts) == 1:
                            yield parts[0]
                        elif parts:
                            yield batch(parts)
                    else:
                        ev = queue.popleft()
                        w.position = ev.revision
                        data = (
                            ev.for_everyone(selector) if everything else ev.for_selector(selector)
                        )
                        if data is not None:
                            yield data
                    if w.error is not None:
                        raise w.error
                    if w.ended:
                        return
                w.wake.clear()
                wait = next_bookmark - time.monotonic()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(w.wake.wait(), wait)
                    continue
                next_bookmark = time.monotonic() + interval
                if w.bookmarks:
                    yield bookmark(self.kind, max(w.since, w.position, self.revision))
        finally:
            self.watchers.discard(w)

    # ---- the store loop -----------------------------------------------------------------

    def start(self, hint: int = 0) -> None:
        """Start following the store; `hint` (a client's resourceVersion) lets the first watch
        start in the past, when the store still has that history."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(hint))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for w in list(self.watchers):
            self._cut(w, Unavailable("the API server is shutting down; watch again"))

    @property
    def ready(self) -> bool:
        """Listed at least once: `objects` is usable (possibly behind the store)."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        if self._ready.is_set():
            return
        try:
            await asyncio.wait_for(self._ready.wait(), self.config.ready_timeout)
        except TimeoutError:
            why = self.last_error or "still listing"
            what = self.kind.plural
            raise Unavailable(f"the watch cache of {what} is not ready: {why}") from None

    async def _run(self, hint: int) -> None:
        delay = 0.1
        start = 0  # 0: list first
        while True:
            try:
                if start == 0:
                    revision = await self._list()
                    start = revision + 1
                    if 0 < hint < revision:
                        # Serve the first watcher from its resourceVersion: the store replays
                        # (hint, revision] into the buffer; objects are already at `revision`.
                        self.oldest = self.revision = hint
                        start = hint + 1
                    hint = 0
                    log.info("watch cache listed", resource=self.kind.plural, revision=revision)
                await self._follow(start)
            except StoreCompacted as exc:
                self.last_error = exc.message
                log.info("watch cache relists", resource=self.kind.plural, error=exc.message)
                if self.revision < self.list_revision:  # the replay of a hint was compacted
                    self.reset(self.objects.values(), self.list_revision)
                    start = self.list_revision + 1
                else:
                    start = 0
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                message = exc.message if isinstance(exc, StatusError) else repr(exc)
                if not isinstance(exc, StatusError):
                    log.exception("watch cache failed", resource=self.kind.plural)
                self.last_error = message
                log.info("watch cache reconnects", resource=self.kind.plural, error=message)
                if self._ready.is_set():
                    start = self.revision + 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
                continue
            delay = 0.1  # pragma: no cover - _follow only returns by raising

    async def _list(self) -> int:
        assert self.store is not None
        end = range_end(self.prefix)
        start, revision = self.prefix, 0
        kvs: list[kv_pb2.KeyValue] = []
        while True:
            resp = await self.store.range(
                rpc_pb2.RangeRequest(key=start, range_end=end, limit=_LIST_CHUNK, revision=revision)
            )
            revision = revision or resp.header.revision
            kvs.extend(resp.kvs)
            if not (resp.more and resp.kvs):
                break
            start = resp.kvs[-1].key + b"\x00"
        self.reset(kvs, revision)
        return revision

    async def _follow(self, start: int) -> None:
        """Follow one etcd watch from `start`; returns only by raising."""
        assert self.store is not None
        create = rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(
                key=self.prefix,
                range_end=range_end(self.prefix),
                start_revision=start,
                prev_kv=True,
                progress_notify=True,
            )
        )
        forever: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def requests() -> AsyncIterator[rpc_pb2.WatchRequest]:
            yield create
            await forever  # keep the request side open for the life of the watch

        call = self.store.watch_stub.Watch(requests())
        self.store_watches += 1
        try:
            async for resp in call:
                if resp.canceled:
                    if resp.compact_revision:
                        raise StoreCompacted(
                            f"required revision {start} has been compacted",
                            resp.compact_revision,
                        )
                    raise Unavailable(f"store: watch canceled: {resp.cancel_reason}")
                if resp.created:
                    continue
                if resp.events:
                    self.apply(self.store.opened(resp.events))
                else:
                    self.progress(resp.header.revision)
            raise Unavailable("store: the watch stream ended")
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "watch") from None
        finally:
            forever.cancel()
            call.cancel()


EMPTY_TTL = 30.0  # seconds a store's "none in this namespace" stands in for the cache's


class WatchCaches:
    """The caches of one API server, one per kind, created on first use."""

    def __init__(self, store: Store, config: WatchCacheConfig = DEFAULT_WATCH_CACHE) -> None:
        self.store = store
        self.config = config
        self.caches: dict[str, WatchCache] = {}
        self.ending = False
        self._empty: dict[tuple[str, str], float] = {}  # (plural, namespace) -> when

    def get(self, kind: Kind, hint: int = 0) -> WatchCache:
        cache = self.caches.get(kind.plural)
        if cache is None:
            cache = self.caches[kind.plural] = WatchCache(kind, self.store, self.config)
            cache.ending = self.ending
            cache.start(hint)
        return cache

    def snapshot(self, kind: Kind, namespace: str) -> list[Message] | None:
        """The objects of one namespace in the ready cache of `kind`; possibly stale, so only
        for writes that compare what they read. None (ask the store) when there is no such
        cache, or it has none there and the store has not said so in the last
        EMPTY_TTL seconds (`confirm_empty`): an object written a moment ago may not have
        reached the cache yet, and "none" is the answer that would let a write skip it
        (Kubernetes' quota admission does the same live lookup)."""
        cache = self.caches.get(kind.plural)
        if cache is None or not cache.ready:
            return None
        start = prefix(kind, namespace)
        kvs = [kv for k, kv in list(cache.objects.items()) if k.startswith(start)]
        seen = self._empty.get((kind.plural, namespace), -EMPTY_TTL)
        if not kvs and time.monotonic() - seen >= EMPTY_TTL:
            return None
        return [decode(kind, kv.value, kv.mod_revision) for kv in kvs]

    def confirm_empty(self, kind: Kind, namespace: str) -> None:
        """The store has just said the namespace has no object of `kind`."""
        self._empty[(kind.plural, namespace)] = time.monotonic()

    def end_watches(self) -> None:
        """WatchCache.end_watches of every cache, and of any made from now on."""
        self.ending = True
        for cache in self.caches.values():
            cache.end_watches()

    async def stop(self) -> None:
        for cache in self.caches.values():
            await cache.stop()
