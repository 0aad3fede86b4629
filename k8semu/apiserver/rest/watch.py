"""Watch streams over HTTP: one JSON event per line, in a chunked response.

    {"type":"ADDED","object":{...}}\n

A watch without a resourceVersion (or "0") starts, as in Kubernetes, with an ADDED event for
every object that matches (a consistent List), then follows from that List's revision. The
events come from the Watch verb (the watch cache): each is decoded and encoded to JSON once
per event and shared by every watcher (`EventCodec`), as the gRPC face shares its bytes. An
error (a resourceVersion too old: 410 Expired) is an ERROR event carrying a Status, then the
stream ends; so does it after `timeoutSeconds`.
"""

from __future__ import annotations

import contextlib
import random
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message
from multidict import MultiDict, MultiMapping

from k8semu.api import manifest
from k8semu.api.kinds import Kind
from k8semu.apiserver.errors import StatusError
from k8semu.apiserver.rest import codec, tables
from k8semu.apiserver.rest.codec import Wanted, bad_request
from k8semu.apiserver.rest.handlers import Resources
from k8semu.apiserver.rest.paths import Target
from k8semu.apiserver.rest.status import of_error
from k8semu.pb.api.v1 import apiserver_pb2 as api

# kube-apiserver's --min-request-timeout: a watch without timeoutSeconds ends after a random
# time between this and twice this, so clients spread their re-watches.
MIN_REQUEST_TIMEOUT = 1800.0
_SHARED_EVENTS = 4096


class EventCodec:
    """The JSON line of each shared WatchEvent (the watch cache's bytes), made once."""

    def __init__(self) -> None:
        self._lines: OrderedDict[bytes, bytes] = OrderedDict()

    def line(self, event: bytes, kind: Kind) -> bytes:
        found = self._lines.get(event)
        if found is not None:
            return found
        type_, obj = decode(event, kind)
        made = codec.dumps({"type": type_, "object": manifest.to_dict(obj)}) + b"\n"
        self._lines[event] = made
        if len(self._lines) > _SHARED_EVENTS:
            self._lines.popitem(last=False)
        return made


def decode(event: bytes, kind: Kind) -> tuple[str, Message]:
    parsed = api.WatchEvent.FromString(event)
    obj = kind.message()
    parsed.object.Unpack(obj)
    return parsed.type, obj


def timeout_of(query: MultiMapping[str]) -> float:
    text = query.get("timeoutSeconds", "")
    if not text:
        return random.uniform(MIN_REQUEST_TIMEOUT, 2 * MIN_REQUEST_TIMEOUT)
    try:
        seconds = int(text)
    except ValueError:
        raise bad_request(f"timeoutSeconds: invalid value {text!r}: must be an integer") from None
    if seconds < 0:
        raise bad_request("timeoutSeconds: must be >= 0")
    return float(seconds) or MIN_REQUEST_TIMEOUT


@dataclass(eq=False)
class Stream:
    """One client watch: `lines()` yields its encoded events."""

    resources: Resources
    shared: EventCodec
    target: Target
    query: MultiMapping[str]
    wanted: Wanted
    include: str = field(init=False)  # includeObject, for Tables
    timeout: float = field(init=False)  # seconds the stream lasts (timeoutSeconds)
    _headers_sent: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        table = self.wanted.table
        self.include = tables.includes(self.query.get("includeObject", "")) if table else ""
        self.timeout = timeout_of(self.query)

    def _line(self, type_: str, obj: Message) -> bytes:
        if self.wanted.table and type_ != "BOOKMARK":
            doc: Any = tables.table(
                self.target.kind, [obj], include=self.include, headers=not self._headers_sent
            )
            self._headers_sent = True
        elif self.wanted.partial:
            doc = tables.partial_metadata(obj)
        else:
            doc = manifest.to_dict(obj)
        return codec.dumps({"type": type_, "object": doc}) + b"\n"

    def _event(self, event: bytes) -> bytes:
        if not self.wanted.table and not self.wanted.partial:
            return self.shared.line(event, self.target.kind)
        return self._line(*decode(event, self.target.kind))

    async def lines(self) -> AsyncGenerator[bytes]:
        """The events until the client leaves or an error (its ERROR event); the caller
        ends it after `timeout` seconds."""
        try:
            rv = self.query.get("resourceVersion", "")
            if rv in ("", "0"):
                listed = _list_query(self.query, self._field_selector())
                objs, rv, _ = await self.resources.list_objects(self.target, listed)
                for obj in objs:
                    yield self._line("ADDED", obj)
            request = api.WatchRequest(
                resource=self.target.kind.resource,
                namespace=self.target.namespace,
                label_selector=self.query.get("labelSelector", ""),
                field_selector=self._field_selector(),
                resource_version=rv,
                allow_bookmarks=self.query.get("allowWatchBookmarks", "") in ("1", "true"),
                allow_batching=True,
            )
            events = self.resources.verbs.Watch(request)
            try:
                async for message in events:
                    # A batch (the watcher fell behind) is one write of all its lines.
                    yield b"".join(self._event(e) for e in _unbatched(message))
            finally:
                await events.aclose()
        except StatusError as exc:
            status = of_error(exc, self.target.kind.resource, self.target.name)
            yield codec.dumps({"type": "ERROR", "object": status}) + b"\n"

    def _field_selector(self) -> str:
        """A watch of one object (.../pods/web?watch=1) is a watch of metadata.name."""
        selector = self.query.get("fieldSelector", "")
        if not self.target.name:
            return selector
        by_name = f"metadata.name={self.target.name}"
        return f"{selector},{by_name}" if selector else by_name


def _unbatched(message: bytes) -> list[bytes]:
    """The serialized WatchEvents in one message of the Watch verb: itself, or those of a
    batch (a WatchEvent with no type whose `events` hold them, field 3: tag 0x1a first)."""
    if message[:1] != b"\x1a":
        return [message]
    return [e.SerializeToString() for e in api.WatchEvent.FromString(message).events]


def _list_query(query: MultiMapping[str], field_selector: str) -> MultiMapping[str]:
    """The List before a watch from "now": the watch's selectors, no resourceVersion."""
    out: MultiDict[str] = MultiDict(query)
    for name in ("resourceVersion", "resourceVersionMatch", "limit", "continue", "fieldSelector"):
        with contextlib.suppress(KeyError):
            del out[name]
    out["fieldSelector"] = field_selector
    return out
