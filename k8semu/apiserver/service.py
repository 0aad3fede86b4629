"""The API servicer: Kubernetes verbs over every stored kind, on the etcd v3 API.

Concurrency control is entirely the store's: create is a Txn on create_revision == 0, update
and delete a Txn on mod_revision == the resourceVersion the decision was based on, so two API
servers (or two requests on one) can never both win. Each handler decodes and validates the
whole request before its single write: nothing is half-written. Errors are StatusError
subclasses: the two faces of this one API turn them into gRPC status codes (`grpcface.py`)
or metav1.Status (`rest/`), and both call these same verbs (DESIGN decision 11). Watches are
served by the watch cache (`watchcache.py`): one etcd watch per kind, whatever the number of
clients. A write with `dry_run` decides everything (defaults, validation, preconditions) and
answers what it would store, but writes nothing.

The verbs are generic: what is particular to a kind (defaults, validation, status, field
selectors, deletion rules, allocations, expiry) is its row in the registry (`registry/`),
and the verbs call that row's strategy; they never ask which kind they serve. Namespace
termination and allocation repair live in `repair.py`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Any

from google.protobuf.message import Message

from k8semu.api import kinds
from k8semu.api.kinds import Kind
from k8semu.apiserver import (
    admission,
    allocation,
    deletion,
    eviction,
    fieldmanager,
    patch,
    registry,
    repair,
    txn,
)
from k8semu.apiserver.allocation import DEFAULT_RANGES, Claim, ServiceRanges, Taken
from k8semu.apiserver.errors import (
    CONFLICT_MESSAGE,
    AlreadyExists,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    StatusError,
)
from k8semu.apiserver.eventttl import EventLeases, lease_not_found
from k8semu.apiserver.objects import (
    decode,
    describe,
    encode,
    key,
    meta,
    pack,
    parse_resource_version,
    prefix,
    range_end,
    unpack,
)
from k8semu.apiserver.registry import Registry
from k8semu.apiserver.registry.strategy import Strategy
from k8semu.apiserver.store import Store, StoreCompacted
from k8semu.apiserver.watchcache import DEFAULT_WATCH_CACHE, WatchCacheConfig, WatchCaches
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.etcd import kv_pb2, rpc_pb2

log = get_logger(__name__)

_LIST_CHUNK = 500
_DELETE_ATTEMPTS = 5
# A patch or bind carries no resourceVersion: on a conflict it is re-applied to a fresh read.
# Every lost race is someone else's won write, so N concurrent patchers need up to N attempts.
_PATCH_ATTEMPTS = 16
# A create compares the namespace's mod_revision (so it cannot slip into a namespace being
# terminated); a namespace updated meanwhile is read again.
_CREATE_ATTEMPTS = 5
# A write whose random address or port lost a race picks again from what is free (read after
# the first loss); two API servers filling a small range may collide a few times.
_ALLOCATE_ATTEMPTS = 16
_TOO_OLD_CONTINUE = (
    "the provided continue parameter is too old to display a consistent list result. You can"
    " start a new list without the continue parameter."
)
# pods/binding and pods/eviction: the resource of Bind and Evict (their requests name no
# other).
_BINDING_RESOURCE = "pods"


def _lost_claims(claims: list[Claim], responses: Any) -> list[Claim]:
    """The claims whose keys exist: `responses` are the failure branch's ranges, in order."""
    return [c for c, r in zip(claims, responses, strict=True) if r.response_range.kvs]


def _copy(obj: Message) -> Message:
    new = type(obj)()
    new.CopyFrom(obj)
    return new


class _StaleWrite(Conflict):
    """The object changed between our read and our conditional write (a patch retries)."""


async def _read_modify_write(
    what: str,
    read: Callable[[], Awaitable[tuple[Message, int]]],
    precondition: str | None,
    change: Callable[[Message], Message],
    write: Callable[[Message, int, Message], Awaitable[Message]],
) -> Message:
    """Optimistic concurrency for Patch, UpdateScale and Bind: `write(stored, mod_revision,
    change(stored))` of what `read` gives. A `precondition` (a resourceVersion) must be the
    stored one; without one a write that raises _StaleWrite is retried on a fresh read,
    `change` applied to the new state."""
    for _ in range(_PATCH_ATTEMPTS):
        stored, mod_revision = await read()
        if precondition is not None and precondition != str(mod_revision):
            raise _modified(what)
        obj = change(stored)
        meta(obj).resource_version = str(mod_revision)
        try:
            return await write(stored, mod_revision, obj)
        except _StaleWrite:
            if precondition is not None:
                raise
    raise _modified(what)


async def _patch(
    verbs: APIServicer,
    strategy: Strategy,
    namespace: str,
    request: api.PatchRequest,
    dry_run: bool,
) -> Message:
    """The Patch verb's read-patch-write; an apply to an object that is not there creates it
    (create-on-apply), unless it is an apply to the status subresource."""
    kind = strategy.kind
    doc = patch.parse(kind, request.name, request.patch_type, request.patch, request)
    manager = "" if doc.type == "apply" else request.field_manager  # apply records its own
    what = describe(kind, request.name)

    def update() -> Awaitable[Message]:
        return _read_modify_write(
            what,
            lambda: verbs._get(kind, namespace, request.name),
            patch.resource_version_precondition(doc),
            lambda stored: patch.apply(kind, stored, doc),
            lambda stored, rev, obj: verbs._apply(
                strategy,
                stored,
                rev,
                obj,
                _Write("status" if request.status else "", dry_run, manager),
            ),
        )

    def create() -> Awaitable[Message]:
        new = patch.new_object(kind, namespace, doc)
        return verbs.create(kind, namespace, new, dry_run=dry_run)

    applying = doc.type == "apply" and not request.status
    return await _or_create(what, update, create if applying else None)


@dataclasses.dataclass(frozen=True)
class _Write:
    """How an update writes: to which subresource ("", "status", "scale"), whether as a dry
    run, and who writes (the field manager that owns what it changes; "" nobody)."""

    subresource: str = ""
    dry_run: bool = False
    manager: str = ""


async def _or_create(
    what: str,
    update: Callable[[], Awaitable[Message]],
    create: Callable[[], Awaitable[Message]] | None,
) -> Message:
    """`update()`; when the object is not there, `create()` if given (server-side apply
    creates what it applies). A create that loses the race to another is tried as an update
    again."""
    for _ in range(_PATCH_ATTEMPTS):
        try:
            return await update()
        except NotFound:
            if create is None:
                raise
        with contextlib.suppress(AlreadyExists):
            return await create()
    raise _modified(what)


def _precondition(resource_version: str, field: str) -> str | None:
    """A request's resourceVersion precondition, checked ("" none); INVALID_ARGUMENT naming
    `field` when it is no resourceVersion."""
    if not resource_version:
        return None
    return str(parse_resource_version(resource_version, field=field))


def _modified(what: str, error: type[Conflict] = Conflict) -> Conflict:
    return error(f"Operation cannot be fulfilled on {what}: {CONFLICT_MESSAGE}")


def _busy(what: str) -> Conflict:
    return Conflict(
        f"Operation cannot be fulfilled on {what}: could not allocate its addresses in time"
        " (the ranges are busy); try again"
    )


def _check_preconditions(
    what: str, pre: api.Preconditions, stored: Message, mod_revision: int
) -> None:
    """A delete's uid and resourceVersion preconditions (ABORTED when either fails)."""
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


class APIServicer:
    """The verbs; `store` is shared and stateless, so any number of servers may run."""

    def __init__(
        self,
        store: Store,
        *,
        bookmark_interval: float,
        watch_cache: WatchCacheConfig = DEFAULT_WATCH_CACHE,
        ranges: ServiceRanges = DEFAULT_RANGES,
        event_leases: EventLeases | None = None,
        rows: Registry | None = None,
    ) -> None:
        """`rows`: the registry (default: `registry.build(ranges)`, every kind's own rules)."""
        self.store = store
        self.event_leases = event_leases
        self.ranges = ranges
        self.registry: Registry = rows or registry.build(ranges)
        self.namespaces = repair.Namespaces(store, self.registry)
        self.bookmark_interval = bookmark_interval
        self.watch_caches = WatchCaches(
            store, dataclasses.replace(watch_cache, bookmark_interval=bookmark_interval)
        )
        # A graceful stop sets `draining`: new calls are refused (NOT_APPLIED) and `idle` is
        # set once the unary calls in flight are done.
        self.draining = False
        self.in_flight = 0
        self.idle = asyncio.Event()

    async def _lease_for(self, strategy: Strategy) -> int:
        """The lease an object is written with: those of expiring kinds (Events) get the
        --event-ttl lease."""
        if self.event_leases is None or not strategy.expires:
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

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """One request in flight, by either face (a graceful stop waits for them)."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.draining and not self.in_flight:
                self.idle.set()

    def drain(self) -> None:
        self.draining = True
        if not self.in_flight:
            self.idle.set()

    # ---- reads --------------------------------------------------------------------------

    def _target(
        self, resource: str, namespace: str, name: str, *, read: bool = False
    ) -> tuple[Strategy, str]:
        """The row of the kind a request about one object names (`read`: a Get, which
        read-only kinds serve too), and the object's namespace."""
        strategy = self.registry.resolve_read(resource) if read else self.registry.resolve(resource)
        if not name:
            raise Invalid(f"{strategy.kind.plural}: name: Required value")
        return strategy, (namespace or "default") if strategy.kind.namespaced else ""

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
        """The stored object and its mod_revision (NotFound when absent)."""
        return await self._get(kind, namespace, name)

    async def list_objects(self, kind: Kind, namespace: str, label_selector: str) -> list[Message]:
        resp = await self.store.scan(prefix(kind, namespace))
        selector = self.registry.strategy(kind).selector(label_selector, "")
        objs = (decode(kind, kv.value, kv.mod_revision) for kv in resp.kvs)
        return [obj for obj in objs if selector.matches(obj)]

    async def update_object(
        self, kind: Kind, stored: Message, mod_revision: int, obj: Message, *, status: bool = False
    ) -> Message:
        """`obj` over `stored` (read at `mod_revision`) as Update (`status`: UpdateStatus)."""
        sub = "status" if status else ""
        return await self._apply(
            self.registry.strategy(kind), stored, mod_revision, obj, _Write(sub)
        )

    async def delete_if_unchanged(
        self, kind: Kind, namespace: str, name: str, mod_revision: int
    ) -> bool:
        """Delete an object (no finalizers, no grace) unless it changed since `mod_revision`."""
        k = key(kind, namespace, name)
        resp = await self.store.txn(txn.if_unchanged(k, mod_revision, [txn.delete(k)]))
        return bool(resp.succeeded)

    async def Get(self, request: api.GetRequest) -> api.ObjectResponse:
        strategy, namespace = self._target(
            request.resource, request.namespace, request.name, read=True
        )
        if strategy.reader is not None:
            return api.ObjectResponse(
                object=pack(await strategy.reader.get(namespace, request.name))
            )
        obj, _ = await self._get(strategy.kind, namespace, request.name)
        return api.ObjectResponse(object=pack(obj))

    async def List(self, request: api.ListRequest, *, revision: int = 0) -> api.ListResponse:
        """`revision`: the list as it was at that store revision (resourceVersionMatch=Exact;
        Gone when compacted), else the latest; a continue token names its own."""
        strategy = self.registry.resolve_read(request.resource)
        kind = strategy.kind
        selector = strategy.selector(request.label_selector, request.field_selector)
        if request.limit < 0:
            raise Invalid("limit: must be >= 0")
        if strategy.reader is not None:
            # A read-only kind is one snapshot, small and unversioned: no pages, no revision.
            found = await strategy.reader.list(request.namespace)
            return api.ListResponse(items=[pack(obj) for obj in found if selector.matches(obj)])
        start_prefix = prefix(kind, request.namespace)
        end = range_end(start_prefix)
        start = start_prefix
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
                if not getattr(request, "continue"):
                    raise Gone(
                        f"too old resource version: {revision} (the store compacted it)"
                    ) from None
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

    async def Create(
        self, request: api.CreateRequest, *, dry_run: bool = False
    ) -> api.ObjectResponse:
        kind = self.registry.resolve(request.resource).kind
        obj = unpack(kind, request.object)
        uid = request.uid
        if uid:
            try:
                uid = str(uuid.UUID(uid))
            except ValueError:
                raise Invalid(
                    f"{describe(kind, meta(obj).name)}: uid: {request.uid!r} is not a UUID"
                ) from None
        # The manager owns what it sent (the defaults the create adds are nobody's).
        fieldmanager.record_update(None, obj, obj, request.field_manager, kind.api_version)
        created = await self.create(kind, request.namespace, obj, uid=uid, dry_run=dry_run)
        return api.ObjectResponse(object=pack(created))

    async def create(
        self, kind: Kind, namespace: str, obj: Message, *, uid: str = "", dry_run: bool = False
    ) -> Message:
        """Create `obj` (defaulted, admitted, validated, system fields set); returns it as
        stored. `uid`: the client's metadata.uid (a retried create recognises its object by it)."""
        strategy = self.registry.strategy(kind)
        strategy.prepare_for_create(obj, namespace=namespace, uid=uid)
        await strategy.admit(self, obj)  # the kind's own (a pod's priority)
        await admission.admit(self, strategy, obj, dry_run=dry_run)  # LimitRanger, quota
        if dry_run:
            m = meta(obj)
            if (await self.store.get(key(kind, m.namespace, m.name))).kvs:
                raise AlreadyExists(f"{describe(kind, m.name)} already exists")
            return obj
        return await self._insert(strategy, obj)

    async def _insert(self, strategy: Strategy, pristine: Message) -> Message:
        """The create's one Txn: the object and the keys of what it allocates are put if its
        name and those keys are free and its namespace is unchanged since found active."""
        kind, m = strategy.kind, meta(pristine)
        k = key(kind, m.namespace, m.name)
        ns_key = key(self.namespaces.strategy.kind, "", m.namespace) if kind.namespaced else b""
        taken = Taken()
        namespace_from_cache = True  # False once the cached copy failed the compare
        for _ in range(_ALLOCATE_ATTEMPTS if strategy.allocation else _CREATE_ATTEMPTS):
            obj, claims, _ = _allocated(strategy, pristine, None, taken)
            compare = [txn.absent(k), *(txn.absent(c.key) for c in claims)]
            if ns_key:
                revision = await self._active_namespace(ns_key, m.namespace, namespace_from_cache)
                compare += txn.unchanged_since(ns_key, revision)
            resp = await self._txn(
                rpc_pb2.TxnRequest(
                    compare=compare,
                    success=[
                        txn.put(k, encode(obj), await self._lease_for(strategy)),
                        *_claim_puts(obj, claims),
                    ],
                    failure=[txn.read(k), *(txn.read_key(c.key) for c in claims)],
                )
            )
            if resp.succeeded:
                meta(obj).resource_version = str(resp.header.revision)
                return obj
            if resp.responses[0].response_range.kvs:
                raise AlreadyExists(f"{describe(kind, m.name)} already exists")
            namespace_from_cache = False
            await self._lost(strategy, m.name, claims, resp.responses[1:], taken)
        if strategy.allocation is not None:
            raise _busy(describe(kind, m.name))
        raise Conflict(
            f"Operation cannot be fulfilled on namespaces {m.namespace!r}: it kept changing"
            " during the create; try again"
        )

    async def _active_namespace(self, ns_key: bytes, name: str, from_cache: bool) -> int:
        """The mod_revision of namespace `name`, which exists and is not being terminated.

        That holds at the write: its Txn compares the namespace's mod_revision with this one.
        The namespaces watch cache usually knows it (one store round trip, not two); when it
        does not (or `from_cache` is False: its copy proved stale), the store is asked."""
        ns_kv = self._cached(self.namespaces.strategy.kind, ns_key) if from_cache else None
        if ns_kv is not None and self.namespaces.terminating(ns_kv):
            ns_kv = None  # maybe stale (deleted and made again): the store decides
        if ns_kv is None:
            ns = await self.store.get(ns_key)
            if not ns.kvs:
                raise NotFound(f'namespaces "{name}" not found')
            ns_kv = ns.kvs[0]
        self.namespaces.check_active(ns_kv)
        return ns_kv.mod_revision

    async def _lost(
        self, strategy: Strategy, name: str, claims: list[Claim], responses: Any, taken: Taken
    ) -> None:
        """After a failed Txn: Invalid when a value the client asked for is taken; when a
        picked one is, learn what is taken in its range so the next pick avoids it."""
        lost = _lost_claims(claims, responses)
        for claim in lost:
            if claim.requested:
                raise Invalid(f"{describe(strategy.kind, name)}: {claim.taken_error()}")
        prefixes = strategy.allocation.prefixes if strategy.allocation else ()
        for start in {p for c in lost for p in prefixes if c.key.startswith(p)}:
            resp = await self.store.scan(start, keys_only=True)
            taken.of(start).update(kv.key[len(start) :].decode() for kv in resp.kvs)

    async def Update(
        self, request: api.UpdateRequest, *, dry_run: bool = False, unconditional: bool = False
    ) -> api.ObjectResponse:
        """`unconditional`: an object without a resourceVersion overwrites whatever is stored
        (Kubernetes' PUT); otherwise the resourceVersion is required."""
        return await self._update(request, status=False, dry_run=dry_run, uncond=unconditional)

    async def UpdateStatus(
        self, request: api.UpdateRequest, *, dry_run: bool = False, unconditional: bool = False
    ) -> api.ObjectResponse:
        return await self._update(request, status=True, dry_run=dry_run, uncond=unconditional)

    async def _update(
        self, request: api.UpdateRequest, *, status: bool, dry_run: bool, uncond: bool
    ) -> api.ObjectResponse:
        strategy = self.registry.resolve(request.resource)
        kind = strategy.kind
        if status:
            strategy.require_status()
        write = _Write("status" if status else "", dry_run, request.field_manager)
        obj = unpack(kind, request.object)
        m = meta(obj)
        if not m.name:
            raise Invalid(f"{describe(kind, '')}: metadata.name: Required value")
        if kind.namespaced and not m.namespace:
            raise Invalid(f"{describe(kind, m.name)}: metadata.namespace: Required value")
        namespace = m.namespace if kind.namespaced else ""
        if not m.resource_version and uncond:
            new = await _read_modify_write(
                describe(kind, m.name),
                lambda: self._get(kind, namespace, m.name),
                None,
                lambda stored: _copy(obj),
                lambda stored, rev, o: self._apply(strategy, stored, rev, o, write),
            )
            return api.ObjectResponse(object=pack(new))
        if not m.resource_version:
            raise Invalid(
                f"{describe(kind, m.name)}: metadata.resourceVersion: must be specified for an"
                " update"
            )
        rv = parse_resource_version(
            m.resource_version, field=f"{describe(kind, m.name)}: metadata.resourceVersion"
        )
        cached = self._cached(kind, key(kind, namespace, m.name))
        if cached is not None and cached.mod_revision == rv:
            # The watch cache has exactly the version the client read: no store read needed
            # (the Txn's compare on rv still decides).
            stored, mod_revision = decode(kind, cached.value, rv), rv
        else:
            stored, mod_revision = await self._get(kind, namespace, m.name)
        if mod_revision != rv:
            raise _modified(describe(kind, m.name))
        new = await self._apply(strategy, stored, rv, obj, write)
        return api.ObjectResponse(object=pack(new))

    async def _apply(
        self, strategy: Strategy, stored: Message, mod_revision: int, obj: Message, write: _Write
    ) -> Message:
        """Write `obj` over `stored` (read at `mod_revision`) as Update (or, to the status
        subresource, UpdateStatus) does; returns what is stored now (dry run: what would be,
        unwritten). Raises _StaleWrite when the object changed since that read."""
        if write.subresource == "status":
            new = strategy.prepare_for_status_update(obj, stored)
        else:
            new = strategy.prepare_for_update(obj, stored)
            strategy.validate_for_update(new, stored)
        api_version = strategy.kind.api_version
        fieldmanager.record_update(stored, obj, new, write.manager, api_version, write.subresource)
        if write.dry_run:
            meta(new).resource_version = str(mod_revision)
            return new
        return await self._overwrite(strategy, stored, mod_revision, new)

    async def _overwrite(
        self, strategy: Strategy, stored: Message, mod_revision: int, pristine: Message
    ) -> Message:
        """The update's one Txn, on `stored`'s mod_revision: the new object with the keys of
        what it allocates anew (released ones deleted). A no-op writes nothing."""
        kind, nm = strategy.kind, meta(pristine)
        k = key(kind, nm.namespace if kind.namespaced else "", nm.name)
        if deletion.deleted_by_update(pristine):
            return await self._delete_by_update(strategy, stored, mod_revision, pristine, k)
        taken = Taken()
        for _ in range(_ALLOCATE_ATTEMPTS if strategy.allocation else 1):
            new, claims, releases = _allocated(strategy, pristine, stored, taken)
            # A stale value (read with an older key) is written again: rotation by rewrite.
            if encode(new) == encode(stored) and not self.store.stale(k):
                return stored
            resp = await self._txn(
                rpc_pb2.TxnRequest(
                    compare=[
                        *txn.unchanged_since(k, mod_revision),
                        *(txn.absent(c.key) for c in claims),
                    ],
                    success=[
                        txn.put(k, encode(new), await self._lease_for(strategy)),
                        *_claim_puts(new, claims),
                        *(txn.delete(r) for r in releases),
                    ],
                    failure=[txn.read(k), *(txn.read_key(c.key) for c in claims)],
                )
            )
            if _written(resp, new, mod_revision):
                return new
            await self._lost(strategy, nm.name, claims, resp.responses[1:], taken)
        raise _busy(describe(kind, nm.name))

    async def _delete_by_update(
        self, strategy: Strategy, stored: Message, mod_revision: int, new: Message, k: bytes
    ) -> Message:
        """An update that removed the last thing holding a deleted object (its last
        finalizer) deletes it instead, in the same conditional Txn; what it owns goes first."""
        if encode(new) == encode(stored):
            return stored
        if strategy.deletion.owns_contents:
            await self.namespaces.delete_contents(meta(new).name)
        resp = await self._txn(
            rpc_pb2.TxnRequest(
                compare=txn.unchanged_since(k, mod_revision),
                success=[txn.delete(k), *_releases(strategy, stored)],
                failure=[txn.read(k)],
            )
        )
        if not _written(resp, new, mod_revision):  # the compare is the key's alone
            raise _modified(describe(strategy.kind, meta(new).name), _StaleWrite)
        return new

    async def Patch(
        self, request: api.PatchRequest, *, dry_run: bool = False
    ) -> api.ObjectResponse:
        strategy, namespace = self._target(request.resource, request.namespace, request.name)
        if request.status:
            strategy.require_status()
        return api.ObjectResponse(
            object=pack(await _patch(self, strategy, namespace, request, dry_run))
        )

    async def GetScale(self, request: api.GetRequest) -> api.Scale:
        """The scale subresource: the parent's replica counts and selector."""
        strategy, namespace = self._target(request.resource, request.namespace, request.name)
        strategy.require_scale()
        stored, _ = await self._get(strategy.kind, namespace, request.name)
        return strategy.scale_of(stored)

    async def UpdateScale(
        self, request: api.UpdateScaleRequest, *, dry_run: bool = False
    ) -> api.Scale:
        """Set the parent's spec.replicas through the generic Update rules (validation,
        generation); a resource_version is a precondition on the parent, as on /scale."""
        strategy, namespace = self._target(request.resource, request.namespace, request.name)
        strategy.require_scale()
        what = describe(strategy.kind, request.name)
        new = await _read_modify_write(
            what,
            lambda: self._get(strategy.kind, namespace, request.name),
            _precondition(request.resource_version, f"{what}: metadata.resourceVersion"),
            lambda stored: strategy.with_replicas(stored, request.replicas),
            lambda stored, rev, obj: self._apply(
                strategy, stored, rev, obj, _Write("scale", dry_run, request.field_manager)
            ),
        )
        return strategy.scale_of(new)

    async def Bind(self, request: api.BindRequest) -> api.ObjectResponse:
        """pods/binding: set the binding of an unbound pod (the scheduler's one write)."""
        strategy, namespace = self._target(_BINDING_RESOURCE, request.namespace, request.name)
        kind, bind = strategy.kind, strategy.bind
        what = describe(kind, request.name)
        if bind is None:
            raise NotFound(f"{kind.plural} have no binding subresource")
        if not request.node_name:
            raise Invalid(f"{what}: target.name: Required value")
        k = key(kind, namespace, request.name)

        def bound(stored: Message) -> Message:
            obj = _copy(stored)
            bind(obj, request.node_name)
            return obj

        async def put(stored: Message, mod_revision: int, obj: Message) -> Message:
            # As is: a binding skips the Update rules (no validation, generation unchanged).
            resp = await self.store.txn(
                rpc_pb2.TxnRequest(
                    compare=txn.unchanged_since(k, mod_revision),
                    success=[txn.put(k, encode(obj))],
                    failure=[txn.read(k)],
                )
            )
            if resp.succeeded:
                meta(obj).resource_version = str(resp.header.revision)
                return obj
            if not resp.responses[0].response_range.kvs:
                raise NotFound(f"{what} not found")
            raise _modified(what, _StaleWrite)

        precondition = _precondition(request.resource_version, f"{what}: resourceVersion")
        read = lambda: self._get(kind, namespace, request.name)  # noqa: E731
        new = await _read_modify_write(what, read, precondition, bound, put)
        return api.ObjectResponse(object=pack(new))

    async def Evict(self, request: api.EvictRequest) -> api.ObjectResponse:
        """pods/eviction: a delete its PodDisruptionBudget must allow (eviction.py)."""
        target = self._target(_BINDING_RESOURCE, request.namespace, request.name)
        return await eviction.evict(self, target[0], request)

    async def Delete(
        self, request: api.DeleteRequest, *, dry_run: bool = False
    ) -> api.ObjectResponse:
        strategy, namespace = self._target(request.resource, request.namespace, request.name)
        kind, rules = strategy.kind, strategy.deletion
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
            _check_preconditions(what, pre, stored, mod_revision)
            plan = deletion.plan(
                rules,
                stored,
                grace_period_seconds=grace,
                propagation_policy=policy,
                now=time.time(),
            )
            if plan.action is deletion.Action.UNCHANGED or (
                rules.owns_contents and plan.action is deletion.Action.DELETE
            ):
                # Already being deleted: finish a stuck termination (contents first, then it).
                if rules.owns_contents and not dry_run:
                    await self.namespaces.finalize(request.name)
                return api.ObjectResponse(object=pack(stored))
            if dry_run:
                return api.ObjectResponse(object=pack(plan.obj))
            writes = (
                [txn.delete(k), *_releases(strategy, stored)]
                if plan.action is deletion.Action.DELETE
                else [txn.put(k, encode(plan.obj))]
            )
            resp = await self.store.txn(txn.if_unchanged(k, mod_revision, writes))
            if resp.succeeded:
                meta(plan.obj).resource_version = str(resp.header.revision)
                if rules.owns_contents:
                    await self.namespaces.finalize(request.name)
                return api.ObjectResponse(object=pack(plan.obj))
        raise _modified(what)

    # ---- watch --------------------------------------------------------------------------

    async def Watch(self, request: api.WatchRequest) -> AsyncGenerator[bytes]:
        """Served from the kind's watch cache (k8semu/apiserver/watchcache.py): one etcd
        watch per kind, however many clients watch it. Yields serialized WatchEvents, shared
        by every watcher (each face encodes them once: the gRPC face passes the bytes on).
        A StatusError before the first event or during the stream ends it."""
        strategy = self.registry.resolve(request.resource)
        selector = strategy.selector(request.label_selector, request.field_selector)
        rv = 0
        if request.resource_version not in ("", "0"):
            rv = parse_resource_version(request.resource_version, field="resourceVersion")
        cache = self.watch_caches.get(strategy.kind, hint=rv)
        await cache.wait_ready()
        watcher = cache.register(
            request.namespace,
            selector,
            rv,
            bookmarks=request.allow_bookmarks,
            batching=request.allow_batching,
        )
        async for event in cache.stream(watcher):
            yield event

    # ---- discovery ----------------------------------------------------------------------

    async def Discovery(self, request: api.DiscoveryRequest) -> api.DiscoveryResponse:
        return api.DiscoveryResponse(
            resources=[
                api.APIResource(
                    name=k.plural,
                    short_names=list(k.short_names),
                    namespaced=k.namespaced,
                    kind=k.kind,
                    api_version=k.api_version,
                )
                for k in (strategy.kind for strategy in self.registry.served())
            ]
        )


def _allocated(
    strategy: Strategy, pristine: Message, stored: Message | None, taken: Taken
) -> tuple[Message, list[Claim], list[bytes]]:
    """A copy of `pristine` with its allocated values picked afresh (avoiding `taken`),
    the keys the write claims and those it releases; `pristine` itself for a kind that
    allocates nothing."""
    if strategy.allocation is None:
        return pristine, [], []
    obj = _copy(pristine)
    described = describe(strategy.kind, meta(obj).name)
    claims, releases = strategy.allocation.assign(obj, stored, taken, described=described)
    return obj, claims, releases


def _written(resp: rpc_pb2.TxnResponse, new: Message, mod_revision: int) -> bool:
    """Whether a write's Txn on an object read at `mod_revision` succeeded (then `new` gets
    its resourceVersion). NOT_FOUND when the object is gone, _StaleWrite when it changed;
    False when only an allocation key was taken (its `failure` reads: the object first)."""
    if resp.succeeded:
        meta(new).resource_version = str(resp.header.revision)
        return True
    found = resp.responses[0].response_range.kvs
    what = describe(kinds.for_message(new), meta(new).name)
    if not found:
        raise NotFound(f"{what} not found")
    if found[0].mod_revision != mod_revision:
        raise _modified(what, _StaleWrite)
    return False


def _claim_puts(obj: Message, claims: list[Claim]) -> list[rpc_pb2.RequestOp]:
    """The allocation keys `obj` claims, valued with their holder."""
    holder = allocation.owner(meta(obj).namespace, meta(obj).name)
    return [txn.put(c.key, holder) for c in claims]


def _releases(strategy: Strategy, stored: Message) -> list[rpc_pb2.RequestOp]:
    """Deletes of the allocation keys `stored` holds (same Txn as its delete)."""
    if strategy.allocation is None:
        return []
    return [txn.delete(k) for k in strategy.allocation.held(stored)]
