"""Watch fan-out: live events to synced watchers, history catch-up for the others.

The hub owns no storage and does no I/O of its own: the driver calls `notify` after every
applied batch, and watchers that are behind read history through the injected `read_events`
(an executor call into MVCCStore.events). It must not block the event loop and must not hold
more than a bounded number of events per watcher.

Each watcher is in one of two groups (etcd's synced/unsynced):

- synced: `notify` appends its matching events to its queue; nothing is missed because the
  watcher's next revision is exactly the hub's revision + 1 (or a future start revision);
- unsynced: it started in the past, or its consumer fell more than `max_pending` events
  behind. Its consumer's own `get()` reads history from `next_revision` up to the hub's
  revision at that moment, in chunks, and joins the synced group as soon as it reaches the
  hub's revision. Check and join happen with no await in between, so no notify can slip
  through the gap; reads are bounded above by the hub's revision, so nothing comes twice.

Every event has kv.mod_revision equal to its revision; a revision's events (one txn) always
travel in one batch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from k8semu.pb.etcd import kv_pb2, rpc_pb2
from k8semu.store import errors
from k8semu.store.errors import StoreError

Event = kv_pb2.Event
ReadEvents = Callable[[int, bytes, bytes, int], Awaitable[list[Event]]]

NOPUT = rpc_pb2.WatchCreateRequest.NOPUT
NODELETE = rpc_pb2.WatchCreateRequest.NODELETE
DEFAULT_MAX_PENDING = 1000


@dataclass(slots=True)
class WatchBatch:
    """One response's worth for a watcher.

    `events` is non-empty and in revision order unless `canceled`. `revision` is the hub's
    revision when the batch was handed out (for the response header). A canceled batch is
    final: `compact_revision` > 0 when the watcher fell behind compaction, 0 when it was
    removed.
    """

    events: list[Event] = field(default_factory=list)
    revision: int = 0
    canceled: bool = False
    compact_revision: int = 0


class Watcher:
    """A watch on [key, range_end) from `next_revision` on; consume it with `get()` from one
    task. Events handed out are shared with other watchers: do not mutate them."""

    __slots__ = (
        "_final",
        "_floor",
        "_getting",
        "_hub",
        "_pending",
        "_queue",
        "_wake",
        "key",
        "no_delete",
        "no_put",
        "prev_kv",
        "range_end",
        "synced",
    )

    def __init__(
        self,
        hub: WatchHub,
        key: bytes,
        range_end: bytes,
        next_revision: int,
        *,
        prev_kv: bool,
        filters: Sequence[int],
    ) -> None:
        self._hub = hub
        self.key = key
        self.range_end = range_end
        self.prev_kv = prev_kv
        self.no_put = NOPUT in filters
        self.no_delete = NODELETE in filters
        self.synced = False
        # While unsynced: the next revision to read from history. While synced: a floor for
        # events (a start revision in the future); the real next revision is hub.revision+1.
        self._floor = next_revision
        self._queue: deque[list[Event]] = deque()
        self._pending = 0
        self._wake = asyncio.Event()
        self._final: WatchBatch | None = None
        self._getting = False

    @property
    def next_revision(self) -> int:
        """The lowest revision not yet queued or delivered to this watcher."""
        if self.synced:
            return max(self._floor, self._hub.revision + 1)
        return self._floor

    @property
    def pending(self) -> int:
        """Events queued and not yet taken by `get()`."""
        return self._pending

    def matches(self, key: bytes) -> bool:
        end = self.range_end
        if not end:
            return key == self.key
        if end == b"\x00":
            return key >= self.key
        return self.key <= key < end

    async def get(self) -> WatchBatch:
        """The next batch; waits for events. After a canceled batch, returns it again."""
        if self._getting:
            raise RuntimeError("Watcher.get() is already being awaited")
        self._getting = True
        try:
            while True:
                if self._queue:
                    return self._take()
                if self._final is not None:
                    return self._final
                if not self.synced:
                    batch = await self._catch_up()
                    if batch is not None:
                        return batch
                    continue
                self._wake.clear()
                await self._wake.wait()
        finally:
            self._getting = False

    def _take(self) -> WatchBatch:
        events = self._queue.popleft()
        limit = self._hub.max_pending
        while self._queue and len(events) + len(self._queue[0]) <= limit:
            events += self._queue.popleft()
        self._pending -= len(events)
        return WatchBatch(events, self._hub.revision)

    async def _catch_up(self) -> WatchBatch | None:
        hub = self._hub
        start = self._floor
        end = hub.revision
        if start > end:
            hub._join(self)
            return None
        try:
            events = await hub._read(start, self.key, self.range_end, end)
        except StoreError as exc:
            if not isinstance(exc, errors.ErrCompacted):
                raise
            compact = max(getattr(exc, "compact_revision", 0), hub.compact_revision)
            # ErrCompacted means start <= compact revision; if the hub was not told yet,
            # `start` is the best lower bound we have.
            self._cancel(max(compact, start))
            return self._final
        if self._final is not None:
            return self._final  # removed while reading
        if events:
            last = events[-1].kv.mod_revision
            # A short read may be a chunk: continue after its last revision.
            self._floor = end + 1 if last >= end else last + 1
        else:
            self._floor = end + 1
        if self._floor > hub.revision:
            hub._join(self)
        out = self._filter(events, start, {})
        return WatchBatch(out, hub.revision) if out else None

    def _filter(
        self, events: Sequence[Event], floor: int, stripped: dict[int, Event]
    ) -> list[Event]:
        out: list[Event] = []
        for ev in events:
            if ev.kv.mod_revision < floor:
                continue
            if ev.type == Event.PUT:
                if self.no_put:
                    continue
            elif self.no_delete:
                continue
            if not self.prev_kv and ev.HasField("prev_kv"):
                ev = _strip(ev, stripped)
            out.append(ev)
        return out

    def _offer(self, events: list[Event]) -> None:
        self._queue.append(events)
        self._pending += len(events)
        self._wake.set()

    def _cancel(self, compact_revision: int) -> None:
        self._queue.clear()
        self._pending = 0
        self._final = WatchBatch([], self._hub.revision, True, compact_revision)
        self._wake.set()


def _strip(ev: Event, cache: dict[int, Event]) -> Event:
    """ev without prev_kv, built once per event and shared by every watcher that needs it."""
    out = cache.get(id(ev))
    if out is None:
        out = Event(type=ev.type)
        out.kv.CopyFrom(ev.kv)
        cache[id(ev)] = out
    return out


class WatchHub:
    """Fans applied events out to watchers (see the module docstring for the guarantees).

    `revision` is the last revision passed to `notify`; `compact_revision` the last one
    reported with it. Runs entirely in one event loop; `notify`, `add` and `remove` are
    synchronous.
    """

    def __init__(
        self,
        read_events: ReadEvents,
        revision: int,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        compact_revision: int = 0,
    ) -> None:
        self._read = read_events
        self.revision = revision
        self.compact_revision = compact_revision
        self.max_pending = max_pending
        self._watchers: set[Watcher] = set()
        # Synced watchers, by how they match: exact key, or key range (scanned).
        self._by_key: dict[bytes, set[Watcher]] = {}
        self._ranges: set[Watcher] = set()

    def __len__(self) -> int:
        return len(self._watchers)

    def add(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        *,
        prev_kv: bool = False,
        filters: Sequence[int] = (),
    ) -> Watcher:
        """Watch [key, range_end) from `start_revision` (0: from revision + 1)."""
        start = start_revision if start_revision > 0 else self.revision + 1
        w = Watcher(self, key, range_end, start, prev_kv=prev_kv, filters=filters)
        self._watchers.add(w)
        if start > self.revision:
            self._join(w)
        return w

    def remove(self, w: Watcher) -> None:
        """Stop a watcher; a pending or later `get()` returns a canceled batch."""
        if w not in self._watchers:
            return
        self._watchers.discard(w)
        self._leave(w)
        if w._final is None:
            w._cancel(0)

    def notify(
        self, revision: int, events: Sequence[Event], *, compact_revision: int | None = None
    ) -> None:
        """Deliver one applied batch: `events` in revision order, all with revisions
        <= `revision`, which becomes the hub's revision. Pass `compact_revision` after
        applying a compaction so canceled watchers can report it."""
        if compact_revision is not None and compact_revision > self.compact_revision:
            self.compact_revision = compact_revision
        if revision < self.revision:
            raise ValueError(f"notify({revision}) after revision {self.revision}")
        # Set first: a watcher demoted during fan-out resumes after this whole batch.
        self.revision = revision
        if events and self._watchers:
            self._fan_out(events)

    def reset(self, revision: int, *, compact_revision: int = 0) -> None:
        """The store jumped to `revision` without events (a snapshot was installed, or the
        store was reopened). Every watcher goes back to reading what it has not seen from
        history; one whose history is gone is canceled with the compact revision."""
        if compact_revision > self.compact_revision:
            self.compact_revision = compact_revision
        for w in self._watchers:
            self._leave(w)
            w._wake.set()
        self.revision = max(self.revision, revision)

    def _fan_out(self, events: Sequence[Event]) -> None:
        matched: dict[Watcher, list[Event]] = {}
        if self._by_key:
            for ev in events:
                ws = self._by_key.get(ev.kv.key)
                if ws:
                    for w in ws:
                        matched.setdefault(w, []).append(ev)
        for w in self._ranges:
            evs = [ev for ev in events if w.matches(ev.kv.key)]
            if evs:
                matched[w] = evs
        stripped: dict[int, Event] = {}
        for w, evs in matched.items():
            if w._final is not None:
                continue
            out = w._filter(evs, w._floor, stripped)
            if not out:
                continue
            w._offer(out)
            if w._pending > self.max_pending:
                # Slow consumer: stop queueing, let it catch up from history once it has
                # drained what it holds. Memory stays bounded; nothing is lost or repeated.
                self._leave(w)

    def _join(self, w: Watcher) -> None:
        if w.synced or w._final is not None or w not in self._watchers:
            return
        w.synced = True
        if w.range_end:
            self._ranges.add(w)
        else:
            self._by_key.setdefault(w.key, set()).add(w)

    def _leave(self, w: Watcher) -> None:
        if not w.synced:
            return
        w._floor = max(w._floor, self.revision + 1)
        w.synced = False
        if w.range_end:
            self._ranges.discard(w)
        else:
            ws = self._by_key.get(w.key)
            if ws is not None:
                ws.discard(w)
                if not ws:
                    del self._by_key[w.key]
