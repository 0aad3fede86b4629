"""The API servicer: Kubernetes verbs over every stored kind, on the etcd v3 API.

Concurrency control is entirely the store's: create is a Txn on create_revision == 0, update
and delete a Txn on mod_revision == the resourceVersion the decision was based on, so two API
servers (or two requests on one) can never both win. Each handler decodes and validates the
whole request before its single write: nothing is half-written. Errors are StatusError
subclasses, turned into gRPC status codes in one place (`_handler`). Watches are served by
the watch cache (`watchcache.py`): one etcd watch per kind, whatever the number of clients.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import functools
import json
import secrets
import string
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message

from k8semu import transport
from k8semu.api import kinds, timestamps
from k8semu.api.kinds import Kind
from k8semu.apiserver import allocation, defaults, deletion, patch, validation
from k8semu.apiserver.allocation import DEFAULT_RANGES, Allocator, Claim, ServiceRanges, Taken
from k8semu.apiserver.errors import (
    CONFLICT_MESSAGE,
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    Gone,
    Invalid,
    NotFound,
    StatusError,
)
from k8semu.apiserver.eventttl import EventLeases, lease_not_found
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
from k8semu.apiserver.store import Store, StoreCompacted
from k8semu.apiserver.watchcache import DEFAULT_WATCH_CACHE, WatchCacheConfig, WatchCaches
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import apiserver_pb2_grpc, core_pb2
from k8semu.pb.etcd import kv_pb2, rpc_pb2

log = get_logger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
_GENERATED_CHARS = string.ascii_lowercase + string.digits
_LIST_CHUNK = 500
_DELETE_ATTEMPTS = 5
# A patch or bind carries no resourceVersion: on a conflict it is re-applied to a fresh read.
# Every lost race is someone else's won write, so N concurrent patchers need up to N attempts.
_PATCH_ATTEMPTS = 16
# A create compares the namespace's mod_revision (so it cannot slip into a namespace being
# terminated); a namespace updated meanwhile is read again.
_CREATE_ATTEMPTS = 5
# A Service write whose random address or port lost a race picks again from what is free
# (read after the first loss); two API servers filling a small range may collide a few times.
_ALLOCATE_ATTEMPTS = 16
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
        if self.draining:
            await refuse_draining(context)
        self.in_flight += 1
        try:
            return await method(self, request, context)
        except StatusError as exc:
            await transport.abort(context, exc.code, exc.message)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            log.exception("request failed", method=method.__name__)
            await transport.abort(context, grpc.StatusCode.INTERNAL, f"internal error: {exc!r}")
        finally:
            self.in_flight -= 1
            if self.draining and not self.in_flight:
                self.idle.set()
        raise AssertionError("unreachable")  # pragma: no cover - abort raises

    return wrapper


# A call refused because the server is shutting down carries this trailing metadata: the
# request was not applied, and k8semu.client sends it to another API server at once.
NOT_APPLIED = ("k8semu-not-applied", "shutting-down")
SHUTTING_DOWN = "the API server is shutting down; the request was not applied (try another)"


async def refuse_draining(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(
        grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN, trailing_metadata=(NOT_APPLIED,)
    )


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


def _put(k: bytes, value: bytes, lease: int = 0) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=value, lease=lease))


def _range_op(k: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=k))


def _delete_op(k: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k))


def _unchanged_since(k: bytes, mod_revision: int) -> list[rpc_pb2.Compare]:
    return [_C(key=k, target=_C.MOD, result=_C.EQUAL, mod_revision=mod_revision)]


def _absent(k: bytes) -> rpc_pb2.Compare:
    return _C(key=k, target=_C.CREATE, result=_C.EQUAL, create_revision=0)


def _key_op(k: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=k, keys_only=True))


def _is_service(kind: Kind) -> bool:
    return kind.kind == "Service"


def _releases(kind: Kind, stored: Message) -> list[rpc_pb2.RequestOp]:
    """Deletes of the allocation keys a Service being deleted holds (same Txn as the delete)."""
    if not _is_service(kind):
        return []
    return [_delete_op(k) for k in allocation.held(cast(core_pb2.Service, stored))]


def _lost_claims(claims: list[Claim], responses: Any) -> list[Claim]:
    """The claims whose keys exist: `responses` are the failure branch's ranges, in order."""
    return [c for c, r in zip(claims, responses, strict=True) if r.response_range.kvs]


def allocation_prefix(k: bytes) -> bytes:
    return next(p for p in allocation.PREFIXES if k.startswith(p))


def _copy(obj: Message) -> Message:
    new = type(obj)()
    new.CopyFrom(obj)
    return new


class _StaleWrite(Conflict):
    """The object changed between our read and our conditional write (a patch retries)."""


def _conflict(what: str) -> Conflict:
    return _StaleWrite(f"Operation cannot be fulfilled on {what}: {CONFLICT_MESSAGE}")


def _set_pod_scheduled(pod: core_pb2.Pod) -> None:
    """The PodScheduled=True condition a binding sets, as Kubernetes' binding REST does."""
    for condition in pod.status.conditions:
        if condition.type == "PodScheduled":
            break
    else:
        condition = pod.status.conditions.add(type="PodScheduled")
    if condition.status != "True":
        condition.status = "True"
        condition.last_transition_time.CopyFrom(timestamps.now())


def _namespace_kind() -> Kind:
    return kinds.for_resource("namespaces")


def _terminating(kv: kv_pb2.KeyValue) -> bool:
    return meta(decode(_namespace_kind(), kv.value, kv.mod_revision)).HasField("deletion_timestamp")


def _check_namespace_active(kv: kv_pb2.KeyValue) -> None:
    ns = decode(_namespace_kind(), kv.value, kv.mod_revision)
    if meta(ns).HasField("deletion_timestamp"):
        name = meta(ns).name
        raise FailedPrecondition(
            f"unable to create new content: namespace {name} is being terminated"
        )


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

    def __init__(
        self,
        store: Store,
        *,
        bookmark_interval: float,
        watch_cache: WatchCacheConfig = DEFAULT_WATCH_CACHE,
        ranges: ServiceRanges = DEFAULT_RANGES,
        event_leases: EventLeases | None = None,
    ) -> None:
        self.store = store
        self.event_leases = event_leases
        self.allocator = Allocator(ranges)
        self.bookmark_interval = bookmark_interval
        self.watch_caches = WatchCaches(
            store, dataclasses.replace(watch_cache, bookmark_interval=bookmark_interval)
        )
        # A graceful stop sets `draining`: new calls are refused (NOT_APPLIED) and `idle` is
        # set once the unary calls in flight are done.
        self.draining = False
        self.in_flight = 0
        self.idle = asyncio.Event()

    async def _lease_for(self, kind: Kind) -> int:
        """The lease an object of `kind` is written with: Events expire (--event-ttl)."""
        if self.event_leases is None or kind.kind != "Event":
            return 0
        return await self.event_leases.lease()

    async def _txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """A write's Txn; one whose Event lease the store no longer knows (it expired while
        unused, or the store was restored) is sent again once with a fresh lease."""
        try:
            return await self.store.txn(req)
        except StatusError as exc:
            if self.event_leases is None or not lease_not_found(str(exc)):
                raise
        puts = [op.request_put for op in req.success if op.request_put.lease]
        for lease in {put.lease for put in puts}:
            self.event_leases.forget(lease)
        fresh = await self.event_leases.lease()
        for put in puts:
            put.lease = fresh
        return await self.store.txn(req)

    def drain(self) -> None:
        self.draining = True
        if not self.in_flight:
            self.idle.set()

    # ---- reads --------------------------------------------------------------------------

    async def _get(self, kind: Kind, namespace: str, name: str) -> tuple[Message, int]:
        resp = await self.store.get(key(kind, namespace, name))
        if not resp.kvs:
            raise NotFound(f"{describe(kind, name)} not found")
        kv = resp.kvs[0]
        return decode(kind, kv.value, kv.mod_revision), kv.mod_revision

    def _cached(self, kind: Kind, k: bytes) -> kv_pb2.KeyValue | None:
        """The watch cache's copy of key `k`, when this server has a ready cache of `kind`;
        possibly stale, so only for writes whose Txn compares its mod_revision."""
        cache = self.watch_caches.caches.get(kind.plural)
        if cache is None or not cache.ready:
            return None
        return cache.objects.get(k)

    async def get_object(self, kind: Kind, namespace: str, name: str) -> tuple[Message, int]:
        """The stored object and its mod_revision (NotFound when absent); for the server's
        own loops (bootstrap.py)."""
        return await self._get(kind, namespace, name)

    async def list_objects(self, kind: Kind, namespace: str, label_selector: str) -> list[Message]:
        start = prefix(kind, namespace)
        resp = await self.store.range(rpc_pb2.RangeRequest(key=start, range_end=range_end(start)))
        selector = Selector(kind, label_selector, "")
        objs = (decode(kind, kv.value, kv.mod_revision) for kv in resp.kvs)
        return [obj for obj in objs if selector.matches(obj)]

    async def update_object(
        self, kind: Kind, stored: Message, mod_revision: int, obj: Message
    ) -> Message:
        """Update `stored` (read at `mod_revision`) to `obj` as a client's Update would."""
        return await self._apply(kind, stored, mod_revision, obj, status=False)

    async def delete_if_unchanged(
        self, kind: Kind, namespace: str, name: str, mod_revision: int
    ) -> bool:
        """Delete an object (no finalizers, no grace) unless it changed since `mod_revision`."""
        k = key(kind, namespace, name)
        resp = await self.store.txn(
            rpc_pb2.TxnRequest(compare=_unchanged_since(k, mod_revision), success=[_delete_op(k)])
        )
        return bool(resp.succeeded)

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
        uid = request.uid
        if uid:
            try:
                uid = str(uuid.UUID(uid))
            except ValueError:
                raise Invalid(
                    f"{describe(kind, meta(obj).name)}: uid: {request.uid!r} is not a UUID"
                ) from None
        created = await self.create(kind, request.namespace, obj, uid=uid)
        return api.ObjectResponse(object=pack(created))

    async def create(self, kind: Kind, namespace: str, obj: Message, *, uid: str = "") -> Message:
        """Create `obj` (defaulted, validated, system fields set); returns it as stored.
        `uid` is the client's choice of metadata.uid (a retried create recognises its object
        by it); empty: a new random one."""
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
        m.uid = uid or str(uuid.uuid4())
        m.creation_timestamp.CopyFrom(timestamps.now())
        m.generation = 1
        m.ClearField("deletion_timestamp")
        m.ClearField("deletion_grace_period_seconds")
        defaults.apply(obj)
        validation.validate_create(kind, obj)
        k = key(kind, m.namespace, m.name)
        ns_key = key(_namespace_kind(), "", m.namespace) if kind.namespaced else b""
        service = _is_service(kind)
        pristine = obj
        taken = Taken()
        namespace_from_cache = True  # False once the cached copy failed the compare
        for _ in range(_ALLOCATE_ATTEMPTS if service else _CREATE_ATTEMPTS):
            compare = [_absent(k)]
            claims: list[Claim] = []
            if service:
                # Addresses are picked afresh on each attempt; their keys go in the same Txn.
                obj = _copy(pristine)
                svc = cast(core_pb2.Service, obj)
                claims = self.allocator.assign(
                    svc, None, taken, described=describe(kind, m.name)
                ).claims
                compare += [_absent(c.key) for c in claims]
            if ns_key:
                # "The namespace exists and is not terminating" holds at the write: the Txn
                # compares the namespace's mod_revision with the one checked here. The
                # namespaces watch cache usually knows it (one store round trip, not two);
                # when it does not, or its copy proved stale, the store is asked.
                ns_kv = self._cached(_namespace_kind(), ns_key) if namespace_from_cache else None
                if ns_kv is not None and _terminating(ns_kv):
                    ns_kv = None  # maybe stale (deleted and made again): the store decides
                if ns_kv is None:
                    ns = await self.store.get(ns_key)
                    if not ns.kvs:
                        raise NotFound(f'namespaces "{m.namespace}" not found')
                    ns_kv = ns.kvs[0]
                _check_namespace_active(ns_kv)
                compare += _unchanged_since(ns_key, ns_kv.mod_revision)
            holder = allocation.owner(m.namespace, m.name)
            resp = await self._txn(
                rpc_pb2.TxnRequest(
                    compare=compare,
                    success=[
                        _put(k, encode(obj), await self._lease_for(kind)),
                        *(_put(c.key, holder) for c in claims),
                    ],
                    failure=[_range_op(k), *(_key_op(c.key) for c in claims)],
                )
            )
            if resp.succeeded:
                meta(obj).resource_version = str(resp.header.revision)
                return obj
            if resp.responses[0].response_range.kvs:
                raise AlreadyExists(f"{describe(kind, m.name)} already exists")
            namespace_from_cache = False
            await self._lost(kind, m.name, claims, resp.responses[1:], taken)
        if service:
            raise Conflict(
                f"Operation cannot be fulfilled on {describe(kind, m.name)}: could not allocate"
                " its addresses in time (the ranges are busy); try again"
            )
        raise Conflict(
            f"Operation cannot be fulfilled on namespaces {m.namespace!r}: it kept changing"
            " during the create; try again"
        )

    async def _lost(
        self, kind: Kind, name: str, claims: list[Claim], responses: Any, taken: Taken
    ) -> None:
        """After a failed Txn: Invalid when a value the client asked for is taken; when a
        picked one is, learn what is taken in its range so the next pick avoids it."""
        lost = _lost_claims(claims, responses)
        for claim in lost:
            if claim.requested:
                raise Invalid(f"{describe(kind, name)}: {claim.taken_error()}")
        for start in {allocation_prefix(c.key) for c in lost}:
            resp = await self.store.range(
                rpc_pb2.RangeRequest(key=start, range_end=range_end(start), keys_only=True)
            )
            taken.of(start).update(kv.key[len(start) :].decode() for kv in resp.kvs)

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
        cached = self._cached(kind, key(kind, namespace, m.name))
        if cached is not None and cached.mod_revision == rv:
            # The watch cache has exactly the version the client read: no store read needed
            # (the Txn's compare on rv still decides).
            stored, mod_revision = decode(kind, cached.value, rv), rv
        else:
            stored, mod_revision = await self._get(kind, namespace, m.name)
        if mod_revision != rv:
            raise Conflict(
                f"Operation cannot be fulfilled on {describe(kind, m.name)}: {CONFLICT_MESSAGE}"
            )
        new = await self._apply(kind, stored, rv, obj, status=status)
        return api.ObjectResponse(object=pack(new))

    async def _apply(
        self, kind: Kind, stored: Message, mod_revision: int, obj: Message, *, status: bool
    ) -> Message:
        """Write `obj` over `stored` (read at `mod_revision`) as Update/UpdateStatus do; returns
        what is stored now. Raises _StaleWrite when the object changed since that read."""
        m = meta(obj)
        if status:
            new = type(stored)()
            new.CopyFrom(stored)
            new.status.CopyFrom(obj.status)  # type: ignore[attr-defined]
            if _is_service(kind):
                allocation.keep_allocated(
                    cast(core_pb2.Service, new), cast(core_pb2.Service, stored)
                )
        else:
            new = obj
            sm = meta(stored)
            if not m.uid:
                m.uid = sm.uid
            if not m.HasField("creation_timestamp"):
                m.creation_timestamp.CopyFrom(sm.creation_timestamp)
            # Deletion state is the server's: only Delete sets it.
            if sm.HasField("deletion_timestamp"):
                m.deletion_timestamp.CopyFrom(sm.deletion_timestamp)
            else:
                m.ClearField("deletion_timestamp")
            if sm.HasField("deletion_grace_period_seconds"):
                m.deletion_grace_period_seconds = sm.deletion_grace_period_seconds
            else:
                m.ClearField("deletion_grace_period_seconds")
            if _has_status(kind):
                new.status.CopyFrom(stored.status)  # type: ignore[attr-defined]
            defaults.apply(new)
            if _is_service(kind):
                allocation.keep_allocated(
                    cast(core_pb2.Service, new), cast(core_pb2.Service, stored)
                )
            m.generation = sm.generation + (1 if _content(new) != _content(stored) else 0)
            validation.validate_update(kind, new, stored)
        nm = meta(new)
        namespace = nm.namespace if kind.namespaced else ""
        k = key(kind, namespace, nm.name)
        deleting = deletion.deleted_by_update(new)
        allocating = _is_service(kind) and not deleting
        pristine = new
        taken = Taken()
        for _ in range(_ALLOCATE_ATTEMPTS if allocating else 1):
            claims: list[Claim] = []
            success = []
            if allocating:
                new = _copy(pristine)
                claims, releases = self.allocator.assign(
                    cast(core_pb2.Service, new),
                    cast(core_pb2.Service, stored),
                    taken,
                    described=describe(kind, nm.name),
                )
                holder = allocation.owner(namespace, nm.name)
                success += [_put(c.key, holder) for c in claims]
                success += [_delete_op(r) for r in releases]
            if encode(new) == encode(stored):
                return stored  # a no-op writes nothing
            if deleting:
                # The last finalizer is gone: this update is the object's deletion.
                if kind.kind == "Namespace":
                    await self._delete_namespace_contents(nm.name)
                success = [_delete_op(k), *_releases(kind, stored)]
            else:
                success.insert(0, _put(k, encode(new), await self._lease_for(kind)))
            resp = await self._txn(
                rpc_pb2.TxnRequest(
                    compare=[*_unchanged_since(k, mod_revision), *(_absent(c.key) for c in claims)],
                    success=success,
                    failure=[_range_op(k), *(_key_op(c.key) for c in claims)],
                )
            )
            if resp.succeeded:
                meta(new).resource_version = str(resp.header.revision)
                return new
            found = resp.responses[0].response_range.kvs
            if not found:
                raise NotFound(f"{describe(kind, nm.name)} not found")
            if found[0].mod_revision != mod_revision:
                raise _conflict(describe(kind, nm.name))
            await self._lost(kind, nm.name, claims, resp.responses[1:], taken)
        raise Conflict(
            f"Operation cannot be fulfilled on {describe(kind, nm.name)}: could not allocate"
            " its addresses in time (the ranges are busy); try again"
        )

    @_handler
    async def Patch(
        self, request: api.PatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ObjectResponse:
        kind = resolve(request.resource)
        if not request.name:
            raise Invalid(f"{kind.plural}: name: Required value")
        if request.status and not _has_status(kind):
            raise NotFound(f"{kind.plural} have no status subresource")
        namespace = (request.namespace or "default") if kind.namespaced else ""
        what = describe(kind, request.name)
        doc = patch.parse(kind, request.name, request.patch_type, request.patch)
        precondition = patch.resource_version_precondition(doc)
        for _ in range(_PATCH_ATTEMPTS):
            stored, mod_revision = await self._get(kind, namespace, request.name)
            if precondition is not None and precondition != str(mod_revision):
                raise Conflict(f"Operation cannot be fulfilled on {what}: {CONFLICT_MESSAGE}")
            obj = patch.apply(kind, stored, doc)
            meta(obj).resource_version = str(mod_revision)
            try:
                new = await self._apply(kind, stored, mod_revision, obj, status=request.status)
            except _StaleWrite:
                if precondition is not None:
                    raise
                continue  # re-read and re-apply the patch to the new state
            return api.ObjectResponse(object=pack(new))
        raise Conflict(f"Operation cannot be fulfilled on {what}: {CONFLICT_MESSAGE}")

    @_handler
    async def Bind(
        self, request: api.BindRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.ObjectResponse:
        """pods/binding: set spec.nodeName of an unbound pod (the scheduler's one write)."""
        kind = kinds.for_resource("pods")
        what = describe(kind, request.name)
        if not request.name:
            raise Invalid(f"{kind.plural}: name: Required value")
        if not request.node_name:
            raise Invalid(f"{what}: target.name: Required value")
        precondition = 0
        if request.resource_version:
            precondition = parse_resource_version(
                request.resource_version, field=f"{what}: resourceVersion"
            )
        namespace = request.namespace or "default"
        k = key(kind, namespace, request.name)
        for _ in range(_PATCH_ATTEMPTS):
            stored, mod_revision = await self._get(kind, namespace, request.name)
            if precondition and precondition != mod_revision:
                raise Conflict(f"Operation cannot be fulfilled on {what}: {CONFLICT_MESSAGE}")
            pod = core_pb2.Pod()
            pod.CopyFrom(cast(core_pb2.Pod, stored))
            if pod.metadata.HasField("deletion_timestamp"):
                raise Conflict(f"pod {request.name} is being deleted, cannot be assigned to a host")
            if pod.spec.node_name:
                raise Conflict(
                    f"pod {request.name} is already assigned to node {pod.spec.node_name!r}"
                )
            pod.spec.node_name = request.node_name
            _set_pod_scheduled(pod)
            resp = await self.store.txn(
                rpc_pb2.TxnRequest(
                    compare=_unchanged_since(k, mod_revision),
                    success=[_put(k, encode(pod))],
                    failure=[_range_op(k)],
                )
            )
            if resp.succeeded:
                pod.metadata.resource_version = str(resp.header.revision)
                return api.ObjectResponse(object=pack(pod))
            if not resp.responses[0].response_range.kvs:
                raise NotFound(f"{what} not found")
            if precondition:
                break
        raise Conflict(f"Operation cannot be fulfilled on {what}: {CONFLICT_MESSAGE}")

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
        grace = request.grace_period_seconds if request.HasField("grace_period_seconds") else None
        policy = deletion.check_options(grace, request.propagation_policy)
        for attempt in range(_DELETE_ATTEMPTS):
            cached = None
            if attempt == 0 and not pre.uid and not pre.resource_version:
                cached = self._cached(kind, k)  # a stale one only fails the Txn: read then
            if cached is not None:
                stored = decode(kind, cached.value, cached.mod_revision)
                mod_revision = cached.mod_revision
            else:
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
            plan = deletion.plan(
                kind, stored, grace_period_seconds=grace, propagation_policy=policy, now=time.time()
            )
            if plan.action is deletion.Action.UNCHANGED:
                if kind.kind == "Namespace":
                    await self.finalize_namespace(request.name)  # finish a stuck termination
                return api.ObjectResponse(object=pack(stored))
            if kind.kind == "Namespace" and plan.action is deletion.Action.DELETE:
                # Marked earlier but never finished: contents first, then the namespace.
                await self.finalize_namespace(request.name)
                return api.ObjectResponse(object=pack(stored))
            delete_now = plan.action is deletion.Action.DELETE
            writes = (
                [_delete_op(k), *_releases(kind, stored)]
                if delete_now
                else [_put(k, encode(plan.obj))]
            )
            resp = await self.store.txn(
                rpc_pb2.TxnRequest(compare=_unchanged_since(k, mod_revision), success=writes)
            )
            if resp.succeeded:
                meta(plan.obj).resource_version = str(resp.header.revision)
                if kind.kind == "Namespace":
                    await self.finalize_namespace(request.name)
                return api.ObjectResponse(object=pack(plan.obj))
        raise Conflict(f"Operation cannot be fulfilled on {what}: {CONFLICT_MESSAGE}")

    async def finalize_namespace(self, name: str) -> None:
        """Delete everything in namespace `name` (being terminated), then the namespace itself
        unless finalizers still hold it. Idempotent: Delete runs it, and so does the API server
        at start for namespaces left Terminating (a crash half way)."""
        await self._delete_namespace_contents(name)
        kind = _namespace_kind()
        k = key(kind, "", name)
        for _ in range(_DELETE_ATTEMPTS):
            try:
                stored, mod_revision = await self._get(kind, "", name)
            except NotFound:
                return
            if not deletion.deleted_by_update(stored):
                return  # not terminating, or finalizers still hold it
            resp = await self.store.txn(
                rpc_pb2.TxnRequest(
                    compare=_unchanged_since(k, mod_revision), success=[_delete_op(k)]
                )
            )
            if resp.succeeded:
                return
        raise _conflict(describe(kind, name))

    async def finalize_terminating_namespaces(self) -> list[str]:
        """Finish every namespace left Terminating; returns their names."""
        kind = _namespace_kind()
        start = prefix(kind, "")
        resp = await self.store.range(rpc_pb2.RangeRequest(key=start, range_end=range_end(start)))
        names = []
        for kv in resp.kvs:
            ns = decode(kind, kv.value, kv.mod_revision)
            if meta(ns).HasField("deletion_timestamp"):
                names.append(meta(ns).name)
                await self.finalize_namespace(meta(ns).name)
        return names

    async def repair_allocations(self) -> tuple[int, int]:
        """Make the allocation keys match the Services, as Kubernetes' repair loops do: free
        keys no Service holds (none should leak, every write is one Txn, but data from an
        older version or a hand edit may) and add the keys of Services that hold values
        without one. Everything is compared with the snapshot it was decided on, so a
        concurrent create or delete is never undone. Returns (freed, added)."""
        kind = kinds.for_resource("services")
        start = prefix(kind, "")
        resp = await self.store.range(rpc_pb2.RangeRequest(key=start, range_end=range_end(start)))
        revision = resp.header.revision
        want: dict[bytes, tuple[bytes, bytes, int]] = {}
        for kv in resp.kvs:
            svc = cast(core_pb2.Service, decode(kind, kv.value, kv.mod_revision))
            holder = allocation.owner(svc.metadata.namespace, svc.metadata.name)
            for k in allocation.held(svc):
                want.setdefault(k, (holder, kv.key, kv.mod_revision))
        freed = added = 0
        present: set[bytes] = set()
        for start in allocation.PREFIXES:
            got = await self.store.range(
                rpc_pb2.RangeRequest(key=start, range_end=range_end(start), revision=revision)
            )
            for kv in got.kvs:
                if kv.key in want and want[kv.key][0] == kv.value:
                    present.add(kv.key)
                    continue
                done = await self.store.txn(
                    rpc_pb2.TxnRequest(
                        compare=_unchanged_since(kv.key, kv.mod_revision),
                        success=[_delete_op(kv.key)],
                    )
                )
                freed += done.succeeded
        for k, (holder, svc_key, svc_revision) in want.items():
            if k in present:
                continue
            done = await self.store.txn(
                rpc_pb2.TxnRequest(
                    compare=[_absent(k), *_unchanged_since(svc_key, svc_revision)],
                    success=[_put(k, holder)],
                )
            )
            added += done.succeeded
            if not done.succeeded:
                log.warning("allocation held twice", key=k.decode(), holder=holder.decode())
        return freed, added

    async def _delete_namespace_contents(self, namespace: str) -> None:
        """Everything namespaced in `namespace` goes at once, finalizers and grace periods
        notwithstanding (Kubernetes' namespace controller deletes object by object and waits;
        we do not yet). Creates are refused meanwhile, so nothing new slips in."""
        services = kinds.for_resource("services")
        for _ in range(_DELETE_ATTEMPTS):
            # Services one by one, each with its allocation keys in its own Txn.
            start = prefix(services, namespace)
            resp = await self.store.range(
                rpc_pb2.RangeRequest(key=start, range_end=range_end(start))
            )
            if not resp.kvs:
                break
            for kv in resp.kvs:
                svc = decode(services, kv.value, kv.mod_revision)
                await self.store.txn(
                    rpc_pb2.TxnRequest(
                        compare=_unchanged_since(kv.key, kv.mod_revision),
                        success=[_delete_op(kv.key), *_releases(services, svc)],
                    )
                )
        for kind in kinds.all_kinds():
            if kind.namespaced and kind.list_message is not None:
                start = prefix(kind, namespace)
                await self.store.delete_range(start, range_end(start))

    # ---- watch --------------------------------------------------------------------------

    # Yields bytes, not WatchEvents: server.add_api_servicer registers a pass-through serializer.
    async def Watch(  # type: ignore[override]
        self, request: api.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        """Served from the kind's watch cache (k8semu/apiserver/watchcache.py): one etcd
        watch per kind, however many clients watch it. Yields serialized WatchEvents, shared
        by every watcher (server.py registers Watch with a serializer that passes bytes)."""
        if self.draining:
            await refuse_draining(context)
        try:
            kind = resolve(request.resource)
            selector = Selector(kind, request.label_selector, request.field_selector)
            rv = 0
            if request.resource_version not in ("", "0"):
                rv = parse_resource_version(request.resource_version, field="resourceVersion")
            cache = self.watch_caches.get(kind, hint=rv)
            stream = await cache.watch(
                request.namespace,
                selector,
                rv,
                bookmarks=request.allow_bookmarks,
                batching=request.allow_batching,
            )
            async for event in stream:
                yield event
        except StatusError as exc:
            await transport.abort(context, exc.code, exc.message)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            log.exception("watch failed")
            await transport.abort(context, grpc.StatusCode.INTERNAL, f"internal error: {exc!r}")

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
