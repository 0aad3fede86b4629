"""The Events recorder every component uses (client-go's EventRecorder + correlator).

`recorder.event(obj, "Warning", "FailedScheduling", "0/3 nodes are available: ...")` returns at
once; a background task writes the Event. A repeat of the same (object, type, reason, message)
within `DEFAULT_AGGREGATION_WINDOW` bumps `count` and `lastTimestamp` of the Event already
written instead of creating another, as Kubernetes does. Events are best effort: when the
API server is away or the backlog is full they are dropped (and logged), never blocking the
caller's loop.

Owns the Event objects it writes; it must not be used for anything a controller relies on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import zlib
from collections import OrderedDict
from typing import Any, cast

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from k8semu import aio
from k8semu.api import timestamps
from k8semu.client._client import Client
from k8semu.client._errors import ClientError, NotFound
from k8semu.client._models import meta, resolve
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2, meta_pb2

log = get_logger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
DEFAULT_AGGREGATION_WINDOW = 600.0  # seconds, as client-go's EventCorrelator
DEFAULT_BACKLOG = 1000
DEFAULT_WRITERS = 4
_REMEMBERED = 4096  # (object, reason, message) entries kept for aggregation


def object_reference(obj: Message) -> meta_pb2.ObjectReference:
    """A reference to `obj` (kind, apiVersion, namespace, name, uid, resourceVersion)."""
    kind = resolve(type(obj))
    m = meta(obj)
    return meta_pb2.ObjectReference(
        kind=kind.kind,
        api_version=kind.api_version,
        namespace=m.namespace,
        name=m.name,
        uid=m.uid,
        resource_version=m.resource_version,
    )


def _key(event: core_pb2.Event) -> tuple[str, ...]:
    """What makes two events repeats of each other."""
    ref = event.involved_object
    return (event.metadata.namespace, ref.uid or ref.name, event.type, event.reason, event.message)


def _now() -> timestamp_pb2.Timestamp:
    return timestamps.now()  # first/lastTimestamp are metav1.Time: whole seconds


class EventRecorder:
    """Writes Events as `component` (on `host`, e.g. the node name). Start with `start()`,
    end with `await stop()` (it tries to write what is queued for up to a second)."""

    def __init__(
        self,
        client: Client,
        component: str,
        *,
        host: str = "",
        backlog: int = DEFAULT_BACKLOG,
        aggregation_window: float = DEFAULT_AGGREGATION_WINDOW,
        writers: int = DEFAULT_WRITERS,
    ) -> None:
        """`writers` Events are written at a time (a burst of 1,000 binds would otherwise
        trail by seconds); events of one (object, type, reason, message) always go to the same
        writer, so repeats are still counted into one Event, in order."""
        if writers < 1 or backlog < 1:
            raise ValueError("writers and backlog: must be >= 1")
        self._client = client
        self.component = component
        self.host = host or os.uname().nodename
        n = min(writers, backlog)
        self._queues: list[asyncio.Queue[core_pb2.Event]] = [
            asyncio.Queue(maxsize=max(1, backlog // n)) for _ in range(n)
        ]
        self._window = aggregation_window
        # (namespace, uid, type, reason, message) -> (event name, count, first written at)
        self._seen: OrderedDict[tuple[str, ...], tuple[str, int, float]] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0

    def event(self, obj: Message, type_: str, reason: str, message: str) -> None:
        """Record an Event about `obj` (any kind); never blocks, never raises."""
        try:
            ref = object_reference(obj)
        except Exception as exc:  # an unregistered kind: a bug in the caller, not fatal
            log.warning("event about an unknown kind dropped", error=str(exc), reason=reason)
            return
        now = _now()
        event = core_pb2.Event(
            api_version="v1",
            kind="Event",
            metadata=meta_pb2.ObjectMeta(namespace=ref.namespace or "default"),
            involved_object=ref,
            reason=reason,
            message=message[:1024],
            source=core_pb2.EventSource(component=self.component, host=self.host),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            type=type_,
            reporting_component=self.component,
            reporting_instance=self.host,
        )
        queue = self._queues[zlib.crc32(repr(_key(event)).encode()) % len(self._queues)]
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    def start(self) -> None:
        if not self._tasks or all(t.done() for t in self._tasks):
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._run(q), name=f"events {i}")
                for i, q in enumerate(self._queues)
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                for queue in self._queues:
                    await queue.join()
        await aio.cancel_and_wait(tasks)

    async def _run(self, queue: asyncio.Queue[core_pb2.Event]) -> None:
        while True:
            event = await queue.get()
            try:
                await self._write(event)
            except ClientError as exc:
                self.dropped += 1
                log.info("event not written", reason=event.reason, error=str(exc))
            except Exception:
                self.dropped += 1
                log.exception("event not written", reason=event.reason)
            finally:
                queue.task_done()

    async def _write(self, event: core_pb2.Event) -> None:
        ref = event.involved_object
        key = _key(event)
        seen = self._seen.get(key)
        now = time.monotonic()
        if seen is not None and now - seen[2] < self._window:
            name, count, first = seen
            patch: dict[str, Any] = {
                "count": count + 1,
                "lastTimestamp": timestamps.format_time(event.last_timestamp),
            }
            try:
                await self._client.patch(
                    core_pb2.Event, name, patch, namespace=event.metadata.namespace
                )
            except NotFound:
                pass  # deleted (TTL, namespace gone): write a fresh one below
            else:
                self._remember(key, (name, count + 1, first))
                return
        event.metadata.name = f"{ref.name or 'event'}.{time.time_ns():x}"
        created = cast(core_pb2.Event, await self._client.create(event))
        self._remember(key, (created.metadata.name, 1, now))

    def _remember(self, key: tuple[str, ...], value: tuple[str, int, float]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)
