"""The generic informer: keeps an indexed local cache of one kind in step with the API server
and tells event handlers what changed (design decision 5, client-go's SharedIndexInformer).

The loop (client-go's reflector ListAndWatch):

1. list every object (paged, one consistent snapshot), replace the cache with it, and tell
   handlers the difference: on_add for new keys, on_update for changed ones, on_delete for
   keys that are gone; the informer has synced after the first list;
2. watch from the list's resourceVersion and apply each event to the cache, then to handlers;
   BOOKMARKs only advance the resourceVersion;
3. when the stream ends or breaks (deadline, API server restart, UNAVAILABLE), watch again
   from the last resourceVersion seen, after a back-off if it broke: nothing is lost or
   repeated; when the server says Gone (that version is compacted), list again (step 1).

Every `resync` seconds, on_update(obj, obj) is delivered again for every cached object, so
level-triggered controllers get to re-check everything even when nothing changes.

Handlers are plain functions called on the event loop, in event order; they must only
enqueue (a key on a WorkQueue) and return. An exception in a handler is logged and the next
handler still runs. The objects they get (and that `cache` hands out) are the cached messages
themselves: read-only (see `_cache`).

It does not reconcile, retry writes, or decide what a key means to a controller.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from google.protobuf.message import Message

from k8semu import aio
from k8semu.client._cache import Indexer, IndexFunc
from k8semu.client._client import Client
from k8semu.client._errors import ClientError, Gone
from k8semu.client._models import EventType, KindRef, meta, object_key, resolve
from k8semu.log import get_logger

log = get_logger(__name__)

M = TypeVar("M", bound=Message)

DEFAULT_RESYNC = 30.0
# A watch that ends this soon without an event counts as a failure (back off before the next).
_SHORT_WATCH = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class InformerConfig:
    """`resync`: seconds between re-deliveries of every cached object (0: never).
    `min_backoff`/`max_backoff`: pause after a failed list or a broken watch, doubling from
    the first to at most the second while failures continue (jittered by up to 20 %).
    `page_size`: objects per list page."""

    resync: float = DEFAULT_RESYNC
    min_backoff: float = 0.05
    max_backoff: float = 2.0
    page_size: int = 500

    def __post_init__(self) -> None:
        if self.resync < 0:
            raise ValueError(f"resync: must be >= 0 (0 turns it off), got {self.resync}")
        if not 0 < self.min_backoff <= self.max_backoff:
            raise ValueError("min_backoff/max_backoff: need 0 < min_backoff <= max_backoff")
        if self.page_size < 1:
            raise ValueError(f"page_size: must be >= 1, got {self.page_size}")


DEFAULT_INFORMER_CONFIG = InformerConfig()


@dataclass(frozen=True, slots=True)
class EventHandlers(Generic[M]):
    """Callbacks for one consumer; any may be None. on_delete gets the last known state."""

    on_add: Callable[[M], None] | None = None
    on_update: Callable[[M, M], None] | None = None
    on_delete: Callable[[M], None] | None = None


class Informer(Generic[M]):
    """A cache of every `kind` object (in `namespace`, matching the selectors) and events.

    Start it with `start()` (its own task; `stop()` ends it) or run `await informer.run()`
    in your TaskGroup (cancel to stop). Read `cache` only after `has_synced()`
    (`await wait_synced()`), as sample-controller starts workers only then.
    """

    def __init__(
        self,
        client: Client,
        kind: type[M] | str,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        indexers: Mapping[str, IndexFunc[M]] | None = None,
        config: InformerConfig = DEFAULT_INFORMER_CONFIG,
        resync: float | None = None,
    ) -> None:
        """`resync`, when given, overrides `config.resync`."""
        self._client = client
        self.kind = resolve(cast(KindRef, kind))
        self._namespace = namespace
        self._label_selector = label_selector
        self._field_selector = field_selector
        self.config = config
        self._resync = config.resync if resync is None else resync
        if self._resync < 0:
            raise ValueError(f"resync: must be >= 0 (0 turns it off), got {self._resync}")
        self.cache: Indexer[M] = Indexer(indexers)
        self._handlers: list[EventHandlers[M]] = []
        self._synced = asyncio.Event()
        self._resource_version = ""
        self._task: asyncio.Task[None] | None = None
        self._random = random.Random()

    # ---- consumers -------------------------------------------------------------------------

    def add_event_handler(
        self,
        on_add: Callable[[M], None] | None = None,
        on_update: Callable[[M, M], None] | None = None,
        on_delete: Callable[[M], None] | None = None,
    ) -> EventHandlers[M]:
        """Register handlers; one added late gets on_add for every object already cached."""
        handlers = EventHandlers(on_add, on_update, on_delete)
        self._handlers.append(handlers)
        if on_add is not None:
            for obj in self.cache.list():
                self._call(on_add, obj)
        return handlers

    def remove_event_handler(self, handlers: EventHandlers[M]) -> None:
        self._handlers.remove(handlers)

    def add_indexers(self, indexers: Mapping[str, IndexFunc[M]]) -> None:
        self.cache.add_indexers(indexers)

    def has_synced(self) -> bool:
        """True once the first list is in the cache (and its events were delivered)."""
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Until `has_synced()`; TimeoutError after `timeout` seconds when given."""
        async with asyncio.timeout(timeout):
            await self._synced.wait()

    @property
    def last_sync_resource_version(self) -> str:
        """The resourceVersion the cache reflects (of the last list, event or bookmark)."""
        return self._resource_version

    # ---- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Run in a task the informer owns (idempotent); `stop()` ends it."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"informer {self.kind.plural}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        await aio.cancel_and_wait([task])

    async def run(self) -> None:
        """List and watch (and resync) until cancelled."""
        async with asyncio.TaskGroup() as tg:
            if self._resync > 0:
                tg.create_task(self._resync_loop())
            await self._list_and_watch()

    # ---- the reflector -------------------------------------------------------------------

    async def _list_and_watch(self) -> None:
        need_list = True
        failures = 0
        while True:
            if failures:
                await asyncio.sleep(self._backoff(failures))
            if need_list:
                try:
                    await self._relist()
                except ClientError as exc:
                    failures += 1
                    log.warning("informer list failed", kind=self.kind.plural, error=str(exc))
                    continue
                need_list = False
                failures = 0
            try:
                began = time.monotonic()
                if await self._watch() or time.monotonic() - began >= _SHORT_WATCH:
                    failures = 0  # a clean end (deadline, server closed): watch again at once
                else:
                    failures += 1  # ended at once with nothing: do not spin on a bad server
            except Gone as exc:
                log.info("informer relists", kind=self.kind.plural, reason=exc.message)
                need_list = True
                failures = 0
            except ClientError as exc:
                failures += 1
                log.info(
                    "informer watch broke; resuming",
                    kind=self.kind.plural,
                    resource_version=self._resource_version,
                    error=str(exc),
                )

    async def _relist(self) -> None:
        page = await self._client.list_all(
            cast(Any, self.kind.message),
            namespace=self._namespace,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            page_size=self.config.page_size,
        )
        self._replace(cast(list[M], page.items))
        self._resource_version = page.resource_version
        self._synced.set()

    async def _watch(self) -> bool:
        """Follow one watch stream to its end; True when it delivered any event."""
        events = self._client.watch(
            cast(Any, self.kind.message),
            namespace=self._namespace,
            resource_version=self._resource_version,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            allow_bookmarks=True,
        )
        delivered = False
        async for event in events:
            delivered = True
            obj = cast(M, event.object)
            rv = meta(obj).resource_version
            if event.type is EventType.BOOKMARK:
                pass
            elif event.type is EventType.DELETED:
                self._delete(obj)
            else:
                self._upsert(obj)
            if rv:
                self._resource_version = rv
        return delivered

    def _replace(self, items: list[M]) -> None:
        fresh = {object_key(obj): obj for obj in items}
        for key in list(self.cache.keys()):
            if key not in fresh:
                gone = self.cache.remove(key)
                if gone is not None:
                    self._dispatch_delete(gone)
        for obj in fresh.values():
            old = self.cache.get(object_key(obj))
            if old is None or meta(old).resource_version != meta(obj).resource_version:
                self._upsert(obj)

    def _upsert(self, obj: M) -> None:
        old = self.cache.put(obj)
        for h in self._handlers:
            if old is None:
                if h.on_add is not None:
                    self._call(h.on_add, obj)
            elif h.on_update is not None:
                self._call(h.on_update, old, obj)

    def _delete(self, obj: M) -> None:
        if self.cache.remove(object_key(obj)) is not None:
            self._dispatch_delete(obj)  # the event's copy: the state when it was deleted

    def _dispatch_delete(self, obj: M) -> None:
        for h in self._handlers:
            if h.on_delete is not None:
                self._call(h.on_delete, obj)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self._resync)
            if not self.has_synced():
                continue
            for obj in self.cache.list():
                for h in self._handlers:
                    if h.on_update is not None:
                        self._call(h.on_update, obj, obj)

    def _backoff(self, failures: int) -> float:
        base = min(self.config.max_backoff, self.config.min_backoff * 2.0 ** min(failures - 1, 60))
        return base * (1.0 + 0.2 * self._random.random())

    def _call(self, handler: Callable[..., None], *args: M) -> None:
        try:
            handler(*args)
        except Exception:
            log.exception("informer event handler failed", kind=self.kind.plural)
