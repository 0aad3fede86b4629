"""The API servicer: Kubernetes verbs over every stored kind, on the etcd v3 API.

Concurrency control is entirely the store's: create is a Txn on create_revision == 0, update
and delete a Txn on mod_revision == the resourceVersion the decision was based on, so two API
servers (or two requests on one) can never both win. Each handler decodes and validates the
whole request before its single write: nothing is half-written. Errors are StatusError
subclasses, turned into gRPC status codes in one place (`_handler`). Every watch is its own
etcd watch for now (no watch cache yet).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import secrets
import string
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from k8semu.api import kinds
from k8semu.api.kinds import Kind
from k8semu.apiserver import defaults, validation
from k8semu.apiserver.errors import (
    CONFLICT_MESSAGE,
    AlreadyExists,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    StatusError,
)
from k8semu.apiserver.objects import (
    Selector,
    decode,
    describe,
    encode,
    key,
    meta,
    pack,
    parse_resource_version,
    prefix,
    range_end,
    resolve,
    unpack,
)
from k8semu.apiserver.store import Store, StoreCompacted, translate
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import apiserver_pb2_grpc
from k8semu.pb.etcd import kv_pb2, rpc_pb2

log = get_logger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
_GENERATED_CHARS = string.ascii_lowercase + string.digits
_LIST_CHUNK = 500
_DELETE_ATTEMPTS = 5
_TOO_OLD_CONTINUE = (
    "the provided continue parameter is too old to display a consistent list result. You can"
    " start a new list without the continue parameter."
)
_C = rpc_pb2.Compare


def _handler(
    method: Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]:
    """StatusError -> its gRPC code; any other exception -> INTERNAL (logged), never a crash."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return await method(self, request, context)
        except StatusError as exc:
            await context.abort(exc.code, exc.message)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            log.exception("request failed", method=method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc!r}")
        raise AssertionError("unreachable")  # pragma: no cover - abort raises

    return wrapper


def _now_seconds() -> int:
    return int(time.time())


def _has_status(kind: Kind) -> bool:
    return "status" in kind.message.DESCRIPTOR.fields_by_name


def _content(obj: Message) -> bytes:
    """Everything but metadata and status: what a generation bump is about."""
    copy = type(obj)()
    copy.CopyFrom(obj)
    copy.ClearField("metadata")
    if "status" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("status")
    return copy.SerializeToString(deterministic=True)


def _put(k: bytes, value: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=value))


def _range_op(k: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=k))


def _encode_continue(next_key: bytes, revision: int) -> str:
    raw = json.dumps({"rv": revision, "start": base64.b64encode(next_key).decode()})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_continue(token: str, start_prefix: bytes) -> tuple[bytes, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        next_key = base64.b64decode(data["start"], validate=True)
        revision = int(data["rv"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise Invalid("continue: invalid continue token") from None
    if not next_key.startswith(start_prefix) or revision <= 0:
        raise Invalid("continue: the continue token is not for this list")
    return next_key, revision


class APIServicer(apiserver_pb2_grpc.APIServicer):
    """The verbs; `store` is shared and stateless, so any number of servers may run."""

    def __init__(self, store: Store, *, bookmark_interval: float) -> None:
        self.store = store
        self.bookmark_interval = bookmark_interval

    # ---- reads --------------------------------------------------------------------------

    async def _get(self, kind: Kind, namespace: str, name: str) -> tuple[Message, int]:
        resp = await self.store.get(key(kind, namespace, name))
        if not resp.kvs:
            raise NotFound(f"{describe(kind, name)} not found")
        kv = resp.kvs[0]
        return decode(kind, kv.value, kv.mod_revision), kv.mod_revision

    @_handler
    async def Get(
        self, request: api.GetRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ObjectResponse:
        kind = resolve(request.resource)
        if not request.name:
            raise Invalid(f"{kind.plural}: name: Required value")
        namespace = (request.namespace or "default") if kind.namespaced else ""
        obj, _ = await self._get(kind, namespace, request.name)
        return api.ObjectResponse(object=pack(obj))

    @_handler
    async def List(
        self, request: api.ListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ListResponse:
        kind = resolve(request.resource)
        selector = Selector(kind, request.label_selector, request.field_selector)
        if request.limit < 0:
            raise Invalid("limit: must be >= 0")
        start_prefix = prefix(kind, request.namespace)
        end = range_end(start_prefix)
        start, revision = start_prefix, 0
        if getattr(request, "continue"):
            start, revision = _decode_continue(getattr(request, "continue"), start_prefix)
        items: list[Message] = []
        next_key = b""
        while True:
            chunk = max(request.limit, _LIST_CHUNK) if request.limit else 0
            try:
                resp = await self.store.range(
                    rpc_pb2.RangeRequest(key=start, range_end=end, limit=chunk, revision=revision)
                )
            except StoreCompacted:
                raise Gone(_TOO_OLD_CONTINUE) from None
            revision = revision or resp.header.revision
            for index, kv in enumerate(resp.kvs):
                obj = decode(kind, kv.value, kv.mod_revision)
                if selector.matches(obj):
                    items.append(obj)
                if request.limit and len(items) == request.limit:
                    if resp.more or index + 1 < len(resp.kvs):
                        next_key = kv.key + b"\x00"
                    break
            else:
                if resp.more and resp.kvs:
                    start = resp.kvs[-1].key + b"\x00"
                    continue
            break
        return api.ListResponse(
            items=[pack(obj) for obj in items],
            resource_version=str(revision),
            **{"continue": _encode_continue(next_key, revision) if next_key else ""},
        )

    # ---- writes -------------------------------------------------------------------------

    @_handler
    async def Create(
        self, request: api.CreateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ObjectResponse:
        kind = resolve(request.resource)
        obj = unpack(kind, request.object)
        return api.ObjectResponse(object=pack(await self.create(kind, request.namespace, obj)))

    async def create(self, kind: Kind, namespace: str, obj: Message) -> Message:
        """Create `obj` (defaulted, validated, system fields set); returns it as stored."""
        m = meta(obj)
        if kind.namespaced:
            if namespace and m.namespace and namespace != m.namespace:
                raise Invalid(
                    f"{describe(kind, m.name)}: metadata.namespace: {m.namespace!r} does not"
                    f" match the namespace of the request ({namespace!r})"
                )
            m.namespace = namespace or m.namespace or "default"
        if m.resource_version:
            raise Invalid(
                f"{describe(kind, m.name)}: metadata.resourceVersion: must not be set on create"
            )
        if not m.name and m.generate_name:
            m.name = m.generate_name + "".join(secrets.choice(_GENERATED_CHARS) for _ in range(5))
        m.uid = str(uuid.uuid4())
        m.creation_timestamp.FromSeconds(_now_seconds())
        m.generation = 1
        m.ClearField("deletion_timestamp")
        m.ClearField("deletion_grace_period_seconds")
        defaults.apply(obj)
        validation.validate_create(kind, obj)
        k = key(kind, m.namespace, m.name)
        compare = [_C(key=k, target=_C.CREATE, result=_C.EQUAL, create_revision=0)]
        failure = [_range_op(k)]
        ns_key = b""
        if kind.namespaced:
            ns_key = key(kinds.for_resource("namespaces"), "", m.namespace)
            compare.append(_C(key=ns_key, target=_C.CREATE, result=_C.GREATER, create_revision=0))
            failure.append(_range_op(ns_key))
        resp = await self.store.txn(
            rpc_pb2.TxnRequest(compare=compare, success=[_put(k, encode(obj))], failure=failure)
        )
        if not resp.succeeded:
            if resp.responses[0].response_range.kvs:
                raise AlreadyExists(f"{describe(kind, m.name)} already exists")
            raise NotFound(f'namespaces "{m.namespace}" not found')
        m.resource_version = str(resp.header.revision)
        return obj

    @_handler
    async def Update(
        self, request: api.UpdateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ObjectResponse:
        return await self._update(request, status=False)

    @_handler
    async def UpdateStatus(
        self, request: api.UpdateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ObjectResponse:
        return await self._update(request, status=True)

    async def _update(self, request: api.UpdateRequest, *, status: bool) -> api.ObjectResponse:
        kind = resolve(request.resource)
        if status and not _has_status(kind):
            raise NotFound(f"{kind.plural} have no status subresource")
        obj = unpack(kind, request.object)
        m = meta(obj)
        if not m.name:
            raise Invalid(f"{describe(kind, '')}: metadata.name: Required value")
        if kind.namespaced and not m.namespace:
            raise Invalid(f"{describe(kind, m.name)}: metadata.namespace: Required value")
        if not m.resource_version:
            raise Invalid(
                f"{describe(kind, m.name)}: metadata.resourceVersion: must be specified for an"
                " update"
            )
        rv = parse_resource_version(
            m.resource_version, field=f"{describe(kind, m.name)}: metadata.resourceVersion"
        )
        namespace = m.namespace if kind.namespaced else ""
        stored, mod_revision = await self._get(kind, namespace, m.name)
        if mod_revision != rv:
            raise Conflict(
                f"Operation cannot be fulfilled on {describe(kind, m.name)}: {CONFLICT_MESSAGE}"
            )
        if status:
            new = type(stored)()
            new.CopyFrom(stored)
            new.status.CopyFrom(obj.status)  # type: ignore[attr-defined]
        else:
            new = obj
            sm = meta(stored)
            if not m.uid:
                m.uid = sm.uid
            if not m.HasField("creation_timestamp"):
                m.creation_timestamp.CopyFrom(sm.creation_timestamp)
            if sm.HasField("deletion_timestamp"):
                m.deletion_timestamp.CopyFrom(sm.deletion_timestamp)
            else:
                m.ClearField("deletion_timestamp")
            if _has_status(kind):
                new.status.CopyFrom(stored.status)  # type: ignore[attr-defined]
            defaults.apply(new)
            m.generation = sm.generation + (1 if _content(new) != _content(stored) else 0)
            validation.validate_update(kind, new, stored)
        if encode(new) == encode(stored):
            return api.ObjectResponse(object=pack(stored))  # a no-op writes nothing
        k = key(kind, namespace, m.name)
        resp = await self.store.txn(
            rpc_pb2.TxnRequest(
                compare=[_C(key=k, target=_C.MOD, result=_C.EQUAL, mod_revision=rv)],
                success=[_put(k, encode(new))],
                failure=[_range_op(k)],
            )
        )
        if not resp.succeeded:
            if not resp.responses[0].response_range.kvs:
                raise NotFound(f"{describe(kind, m.name)} not found")
            raise Conflict(
                f"Operation cannot be fulfilled on {describe(kind, m.name)}: {CONFLICT_MESSAGE}"
            )
        meta(new).resource_version = str(resp.header.revision)
        return api.ObjectResponse(object=pack(new))

    @_handler
    async def Delete(
        self, request: api.DeleteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ObjectResponse:
        kind = resolve(request.resource)
        if not request.name:
            raise Invalid(f"{kind.plural}: name: Required value")
        namespace = (request.namespace or "default") if kind.namespaced else ""
        k = key(kind, namespace, request.name)
        what = describe(kind, request.name)
        pre = request.preconditions
        for _ in range(_DELETE_ATTEMPTS):
            stored, mod_revision = await self._get(kind, namespace, request.name)
            if pre.uid and pre.uid != meta(stored).uid:
                raise Conflict(
                    f"Precondition failed for {what}: UID in precondition: {pre.uid}, UID in"
                    f" object meta: {meta(stored).uid}"
                )
            if pre.resource_version and pre.resource_version != str(mod_revision):
                raise Conflict(
                    f"Precondition failed for {what}: ResourceVersion in precondition:"
                    f" {pre.resource_version}, ResourceVersion in object meta: {mod_revision}"
                )
            resp = await self.store.txn(
                rpc_pb2.TxnRequest(
                    compare=[_C(key=k, target=_C.MOD, result=_C.EQUAL, mod_revision=mod_revision)],
                    success=[
                        rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k))
                    ],
                )
            )
            if resp.succeeded:
                meta(stored).resource_version = str(resp.header.revision)
                if kind.kind == "Namespace":
                    await self._delete_namespace_contents(request.name)
                return api.ObjectResponse(object=pack(stored))
        raise Conflict(f"Operation cannot be fulfilled on {what}: {CONFLICT_MESSAGE}")

    async def _delete_namespace_contents(self, namespace: str) -> None:
        """Best effort: no finalizer holds the namespace yet, so a failure leaves objects."""
        for kind in kinds.all_kinds():
            if kind.namespaced and kind.list_message is not None:
                start = prefix(kind, namespace)
                await self.store.delete_range(start, range_end(start))

    # ---- watch --------------------------------------------------------------------------

    async def Watch(
        self, request: api.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[api.WatchEvent]:
        try:
            async for event in self._watch(request):
                yield event
        except StatusError as exc:
            await context.abort(exc.code, exc.message)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            log.exception("watch failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc!r}")

    async def _watch(self, request: api.WatchRequest) -> AsyncIterator[api.WatchEvent]:
        kind = resolve(request.resource)
        selector = Selector(kind, request.label_selector, request.field_selector)
        rv_text = request.resource_version
        rv = 0
        if rv_text not in ("", "0"):
            rv = parse_resource_version(rv_text, field="resourceVersion")
        start = prefix(kind, request.namespace)
        outgoing: asyncio.Queue[rpc_pb2.WatchRequest] = asyncio.Queue()
        await outgoing.put(
            rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(
                    key=start,
                    range_end=range_end(start),
                    start_revision=rv + 1 if rv else 0,
                    prev_kv=True,
                    progress_notify=request.allow_bookmarks,
                )
            )
        )

        async def requests() -> AsyncIterator[rpc_pb2.WatchRequest]:
            while True:
                yield await outgoing.get()

        call = self.store.watch_stub.Watch(requests())
        incoming: asyncio.Queue[rpc_pb2.WatchResponse | BaseException] = asyncio.Queue()

        async def read() -> None:
            try:
                async for resp in call:
                    await incoming.put(resp)
                await incoming.put(EOFError("the store ended the watch"))
            except grpc.aio.AioRpcError as exc:
                await incoming.put(translate(exc, "watch"))

        reader = asyncio.get_running_loop().create_task(read())
        last_rv = rv
        try:
            while True:
                try:
                    item = await asyncio.wait_for(incoming.get(), self.bookmark_interval)
                except TimeoutError:
                    if request.allow_bookmarks and last_rv:
                        yield self._bookmark(kind, last_rv)
                    continue
                if isinstance(item, StatusError):
                    raise item
                if isinstance(item, BaseException):
                    raise Gone(f"watch ended: {item}; list and watch again")
                if item.canceled:
                    if item.compact_revision:
                        raise Gone(f"too old resource version: {rv} ({item.compact_revision})")
                    raise Gone(f"watch canceled by the store: {item.cancel_reason}")
                if item.created:
                    last_rv = last_rv or item.header.revision
                    continue
                if not item.events:  # a progress notification: nothing pending below it
                    last_rv = max(last_rv, item.header.revision)
                    continue
                for ev in item.events:
                    out = self._event(kind, selector, ev)
                    if out is not None:
                        yield out
                    last_rv = max(last_rv, ev.kv.mod_revision)
        finally:
            reader.cancel()
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    @staticmethod
    def _bookmark(kind: Kind, revision: int) -> api.WatchEvent:
        obj = kind.new()
        meta(obj).resource_version = str(revision)
        return api.WatchEvent(type="BOOKMARK", object=pack(obj))

    @staticmethod
    def _event(kind: Kind, selector: Selector, ev: kv_pb2.Event) -> api.WatchEvent | None:
        """Kubernetes' filtered-watch semantics: entering the selection is ADDED, leaving it
        DELETED (with the last matching state at the event's revision)."""
        revision = ev.kv.mod_revision
        prev = decode(kind, ev.prev_kv.value, revision) if ev.HasField("prev_kv") else None
        prev_match = prev is not None and selector.matches(prev)
        if ev.type == kv_pb2.Event.DELETE:
            if prev is None or not prev_match:
                return None
            return api.WatchEvent(type="DELETED", object=pack(prev))
        cur = decode(kind, ev.kv.value, revision)
        cur_match = selector.matches(cur)
        if prev is None:
            if not cur_match:
                return None
            kind_of = "ADDED" if ev.kv.create_revision == revision else "MODIFIED"
            return api.WatchEvent(type=kind_of, object=pack(cur))
        if cur_match:
            return api.WatchEvent(type="MODIFIED" if prev_match else "ADDED", object=pack(cur))
        if prev_match:
            return api.WatchEvent(type="DELETED", object=pack(prev))
        return None

    # ---- discovery ----------------------------------------------------------------------

    @_handler
    async def Discovery(
        self, request: api.DiscoveryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.DiscoveryResponse:
        return api.DiscoveryResponse(
            resources=[
                api.APIResource(
                    name=k.plural,
                    short_names=list(k.short_names),
                    namespaced=k.namespaced,
                    kind=k.kind,
                    api_version=k.api_version,
                )
                for k in kinds.all_kinds()
                if k.list_message is not None
            ]
        )
