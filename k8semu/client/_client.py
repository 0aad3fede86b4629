"""The async, typed API client: one object per process, shared by every informer and loop.

Owns the channels to the API servers (made only through `k8semu.transport`), endpoint choice
(round robin, passing over endpoints that just answered UNAVAILABLE), the deadline of every
call, fail-over and retries (every call when nothing was sent; writes that may have been
applied only where sending them again is safe), Any packing, and the translation of gRPC
errors into `k8semu.client._errors`. It keeps no cache and knows nothing about informers.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar, cast, overload

import grpc
from google.protobuf.message import Message

from k8semu import transport
from k8semu.api import manifest
from k8semu.api.kinds import Kind
from k8semu.client._config import DEFAULT_RETRIES, DEFAULT_TIMEOUTS, Retries, Timeouts
from k8semu.client._errors import (
    AlreadyExists,
    APIStatusError,
    ClientError,
    Conflict,
    ConnectFailed,
    OutcomeUnknown,
    Timeout,
    Unavailable,
    UnexpectedObject,
    from_rpc_error,
)
from k8semu.client._models import (
    EventType,
    KindRef,
    ObjectList,
    Preconditions,
    WatchEvent,
    meta,
    pack,
    resolve,
    unpack,
)
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import apiserver_pb2_grpc, core_pb2

log = get_logger(__name__)

M = TypeVar("M", bound=Message)
R = TypeVar("R")

ChannelFactory = Callable[[str], grpc.aio.Channel]
"""Makes the channel to one endpoint; `transport.channel` unless a test plugs in another."""

DEFAULT_LIST_PAGE = 500


class _Endpoint:
    def __init__(self, address: str, channel: grpc.aio.Channel) -> None:
        self.address = address
        self.channel = channel
        self.stub: Any = apiserver_pb2_grpc.APIStub(channel)
        self.suspect_until = 0.0

    def suspect(self, now: float) -> bool:
        if now < self.suspect_until:
            return True
        # try_to_connect: an endpoint passed over while its channel failed must still be
        # reconnecting when the others go down; a channel nobody asks to connect stays in
        # TRANSIENT_FAILURE, and calls then fail on it faster than a reconnect takes.
        state = self.channel.get_state(try_to_connect=True)
        return state in (
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.SHUTDOWN,
        )


async def _pause(order: list[_Endpoint], delay: float, max_delay: float) -> None:
    """Every endpoint failed this round: wait `delay` before the next. A channel in
    TRANSIENT_FAILURE fails calls at once on its last error until its next connection
    attempt, which gRPC makes after its own reconnect back-off (up to 1 s, longer than
    this client's first pauses): so wait, up to `max_delay`, for a failed channel to
    change state instead; a server that came back is then tried once it can answer."""
    failed = grpc.ChannelConnectivity.TRANSIENT_FAILURE
    waiting = [ep.channel for ep in order if ep.channel.get_state() == failed]
    if not waiting:
        await asyncio.sleep(delay)
        return
    changes = [asyncio.ensure_future(ch.wait_for_state_change(failed)) for ch in waiting]
    try:
        await asyncio.wait(
            changes,
            timeout=max(delay, max_delay),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for change in changes:
            change.cancel()


class Client:
    """A client of one cluster's API servers; use as `async with Client([...]) as client`.

    Verbs take and return the generated message classes (`core_pb2.Pod`, ...). A kind is named
    by its message class, which also types the result (`await client.get(core_pb2.Pod, "web")`
    is a Pod), or by what a user types ("po", "deployments.apps"), which gives a Message.
    Namespaced kinds default to the "default" namespace where one object is meant; `list` and
    `watch` without a namespace span all namespaces.

    Every call has a deadline (`timeouts`) and starts on the next endpoint in round robin that
    is not known to be down. Fail-over (`retries` bounds the tries):

    - every call, writes included, moves on to the next endpoint when no connection could be
      made (nothing was sent: refused, or a server that is shutting down and sent GOAWAY);
    - get, list, watch (until its first event) and discovery also on any other UNAVAILABLE;
    - a write that was sent and broke off (UNAVAILABLE from a dropped connection or from the
      API server's store) may have been applied. It is sent again, elsewhere, only when that
      cannot apply it twice: a create with a name (it carries a uid of the client's choice, so
      an ALREADY_EXISTS on the retry is recognised as its own object), an update with a
      resourceVersion, a patch that sets metadata.resourceVersion, a delete with
      preconditions, a bind. When the retry's answer may be the first try's doing (Conflict,
      NotFound), the object is read back: the result is returned when it shows the write,
      else the error is raised saying an earlier try may have been applied. Other writes (a
      generateName create, a patch or delete without preconditions) raise OutcomeUnknown,
      except a patch whose effect the object already shows on reading it back;
    - DEADLINE_EXCEEDED is never retried: Timeout for reads, OutcomeUnknown for writes.

    Errors are ClientError subclasses. `tls`: CA and client certificate (None: plain text).
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        retries: Retries = DEFAULT_RETRIES,
        channel_factory: ChannelFactory | None = None,
        tls: transport.ClientTLS | None = None,
    ) -> None:
        factory = channel_factory or functools.partial(transport.channel, tls=tls)
        addresses = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not addresses:
            raise ValueError("endpoints: at least one API server address is needed")
        self.timeouts, self.retries, self.tls = timeouts, retries, tls
        self._endpoints = [_Endpoint(a, factory(a)) for a in addresses]
        self._next, self._closed = 0, False

    @property
    def endpoints(self) -> list[str]:
        return [ep.address for ep in self._endpoints]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for ep in self._endpoints:
            await ep.channel.close()

    # ---- verbs -----------------------------------------------------------------------------

    async def create(self, obj: M, *, namespace: str = "") -> M:
        """Create `obj` (in `namespace`, else its metadata.namespace, else "default")."""
        kind = resolve(type(obj))
        ns = namespace or meta(obj).namespace
        name = meta(obj).name
        # A named create may be sent twice; the uid tells our object from someone else's.
        uid = str(uuid.uuid4()) if name else ""
        req = api.CreateRequest(resource=kind.resource, namespace=ns, object=pack(obj), uid=uid)
        what = f"create {_describe(kind, name or meta(obj).generate_name, ns)}"

        async def resolve_(err: APIStatusError) -> Message | None:
            if not isinstance(err, AlreadyExists):
                return None
            got = await self._read_back(kind, name, ns)
            return got if got is not None and meta(got).uid == uid else None

        resp = await self._call(
            lambda s: s.Create(req, timeout=self.timeouts.call),
            what,
            write=_Write(safe=bool(name), resolve=resolve_),
        )
        return cast(M, unpack(kind, resp.object))

    @overload
    async def get(self, kind: type[M], name: str, *, namespace: str = "") -> M: ...
    @overload
    async def get(self, kind: str, name: str, *, namespace: str = "") -> Message: ...
    async def get(self, kind: KindRef, name: str, *, namespace: str = "") -> Message:
        k = resolve(kind)
        req = api.GetRequest(resource=k.resource, namespace=namespace, name=name)
        what = f"get {_describe(k, name, namespace)}"
        resp = await self._call(
            lambda s: s.Get(req, timeout=self.timeouts.call), what, idempotent=True
        )
        return unpack(k, resp.object)

    @overload
    async def list(
        self,
        kind: type[M],
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_: str = "",
    ) -> ObjectList[M]: ...
    @overload
    async def list(
        self,
        kind: str,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_: str = "",
    ) -> ObjectList[Message]: ...
    async def list(
        self,
        kind: KindRef,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_: str = "",
    ) -> ObjectList[Any]:
        """One page (all objects when `limit` is 0); pass `continue_` for the next page."""
        k = resolve(kind)
        req = api.ListRequest(
            resource=k.resource,
            namespace=namespace or "",
            label_selector=label_selector,
            field_selector=field_selector,
            limit=limit,
            **{"continue": continue_},
        )
        what = f"list {k.plural}"
        resp = await self._call(
            lambda s: s.List(req, timeout=self.timeouts.call), what, idempotent=True
        )
        return ObjectList(
            [unpack(k, item) for item in resp.items],
            resp.resource_version,
            getattr(resp, "continue"),
        )

    @overload
    async def list_all(
        self,
        kind: type[M],
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        page_size: int = DEFAULT_LIST_PAGE,
    ) -> ObjectList[M]: ...
    @overload
    async def list_all(
        self,
        kind: str,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        page_size: int = DEFAULT_LIST_PAGE,
    ) -> ObjectList[Message]: ...
    async def list_all(
        self,
        kind: KindRef,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        page_size: int = DEFAULT_LIST_PAGE,
    ) -> ObjectList[Any]:
        """Every page, following `continue`; all pages are read at the first page's revision,
        so the result is one consistent snapshot (Gone if the store compacts meanwhile)."""
        items: list[Message] = []
        token = ""
        first_rv = ""
        while True:
            page = await self.list(
                cast(Any, kind),
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                limit=page_size,
                continue_=token,
            )
            items.extend(page.items)
            first_rv = first_rv or page.resource_version
            token = page.continue_
            if not token:
                return ObjectList(items, first_rv, "")

    @overload
    def watch(
        self,
        kind: type[M],
        *,
        namespace: str | None = None,
        resource_version: str = "",
        label_selector: str = "",
        field_selector: str = "",
        allow_bookmarks: bool = False,
    ) -> AsyncIterator[WatchEvent[M]]: ...
    @overload
    def watch(
        self,
        kind: str,
        *,
        namespace: str | None = None,
        resource_version: str = "",
        label_selector: str = "",
        field_selector: str = "",
        allow_bookmarks: bool = False,
    ) -> AsyncIterator[WatchEvent[Message]]: ...
    async def watch(
        self,
        kind: KindRef,
        *,
        namespace: str | None = None,
        resource_version: str = "",
        label_selector: str = "",
        field_selector: str = "",
        allow_bookmarks: bool = False,
    ) -> AsyncIterator[WatchEvent[Any]]:
        """Changes after `resource_version` ("" or "0": from now), in order.

        The iterator ends when the stream reaches its deadline (`timeouts.watch`) or the server
        ends it; watch again from the last resourceVersion seen. Gone means that version is
        compacted away: list again. Closing the iterator (`break`, `aclose()`) ends the stream.
        """
        k = resolve(kind)
        req = api.WatchRequest(
            resource=k.resource,
            namespace=namespace or "",
            label_selector=label_selector,
            field_selector=field_selector,
            resource_version=resource_version,
            allow_bookmarks=allow_bookmarks,
            allow_batching=True,
        )
        what = f"watch {k.plural}"
        order = self._order()
        for attempt in range(self.retries.attempts):
            ep = await self._endpoint_for(order, attempt)
            call = ep.stub.Watch(req, timeout=self.timeouts.watch)
            started = False
            try:
                async for raw in call:
                    started = True
                    if raw.events:  # a batch: the server had several events queued for us
                        for one in raw.events:
                            yield _watch_event(k, one)
                    else:
                        yield _watch_event(k, raw)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return  # the stream's own deadline: a normal end
                err = from_rpc_error(exc, f"{what} via {ep.address}")
                if not self._should_retry(ep, err, attempt, idempotent=not started):
                    raise err from exc
                log.debug("watch retried", endpoint=ep.address, error=err.message)
            finally:
                call.cancel()

    async def update(self, obj: M) -> M:
        """Replace `obj` (named by its metadata); its resourceVersion must be the stored one,
        else Conflict. The status is kept as stored for kinds with a status subresource."""
        return await self._update(obj, status=False)

    async def update_status(self, obj: M) -> M:
        """Replace only `obj`'s status (the status subresource), with the same concurrency."""
        return await self._update(obj, status=True)

    async def get_scale(self, kind: KindRef, name: str, *, namespace: str = "") -> api.Scale:
        """The scale subresource (autoscaling/v1 Scale) of a deployment or replicaset:
        spec/status replicas, the selector as a string, the parent's resourceVersion."""
        k = resolve(kind)
        req = api.GetRequest(resource=k.resource, namespace=namespace, name=name)
        what = f"get scale of {_describe(k, name, namespace)}"
        return await self._call(
            lambda s: s.GetScale(req, timeout=self.timeouts.call), what, idempotent=True
        )

    async def update_scale(
        self,
        kind: KindRef,
        name: str,
        replicas: int,
        *,
        namespace: str = "",
        resource_version: str = "",
    ) -> api.Scale:
        """Set spec.replicas through the scale subresource; with `resource_version` (the
        parent's, as a Scale carries it) Conflict when the parent changed since."""
        k = resolve(kind)
        req = api.UpdateScaleRequest(
            resource=k.resource,
            namespace=namespace,
            name=name,
            replicas=replicas,
            resource_version=resource_version,
        )
        what = f"update scale of {_describe(k, name, namespace)}"
        # Setting an absolute count twice is harmless; a precondition would fail the retry.
        return await self._call(
            lambda s: s.UpdateScale(req, timeout=self.timeouts.call),
            what,
            idempotent=not resource_version,
        )

    @overload
    async def patch(
        self,
        kind: type[M],
        name: str,
        patch: Mapping[str, Any] | Sequence[Any],
        *,
        namespace: str = "",
        status: bool = False,
        patch_type: str = "merge",
    ) -> M: ...
    @overload
    async def patch(
        self,
        kind: str,
        name: str,
        patch: Mapping[str, Any] | Sequence[Any],
        *,
        namespace: str = "",
        status: bool = False,
        patch_type: str = "merge",
    ) -> Message: ...
    async def patch(
        self,
        kind: KindRef,
        name: str,
        patch: Mapping[str, Any] | Sequence[Any],
        *,
        namespace: str = "",
        status: bool = False,
        patch_type: str = "merge",
    ) -> Message:
        """Apply a JSON merge patch (RFC 7386, camelCase names, `None` deletes) to the object,
        or to its status when `status`; `patch_type` "json" (RFC 6902 operations) or "strategic"
        send those instead, not read back after a broken-off try (OutcomeUnknown)."""
        k = resolve(kind)
        req = api.PatchRequest(
            resource=k.resource,
            namespace=namespace,
            name=name,
            patch_type=patch_type,
            patch=json.dumps(patch).encode(),
            status=status,
        )
        what = f"patch {_describe(k, name, namespace)}"
        if patch_type != "merge" or not isinstance(patch, Mapping):
            resp = await self._call(lambda s: s.Patch(req, timeout=self.timeouts.call), what)
            return unpack(k, resp.object)
        metadata = patch.get("metadata")
        precondition = isinstance(metadata, Mapping) and bool(metadata.get("resourceVersion"))

        async def shows_patch(err: APIStatusError | None = None) -> Message | None:
            if err is not None and not isinstance(err, Conflict):
                return None
            got = await self._read_back(k, name, namespace)
            return got if got is not None and patch_applied(got, patch) else None

        resp = await self._call(
            lambda s: s.Patch(req, timeout=self.timeouts.call),
            what,
            write=_Write(safe=precondition, resolve=shows_patch, check=shows_patch),
        )
        return unpack(k, resp.object)

    @overload
    async def delete(
        self,
        kind: type[M],
        name: str,
        *,
        namespace: str = "",
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: Preconditions | None = None,
    ) -> M: ...
    @overload
    async def delete(
        self,
        kind: str,
        name: str,
        *,
        namespace: str = "",
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: Preconditions | None = None,
    ) -> Message: ...
    async def delete(
        self,
        kind: KindRef,
        name: str,
        *,
        namespace: str = "",
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: Preconditions | None = None,
    ) -> Message:
        """Delete an object; returns its last state (or, for a graceful delete, the object with
        deletionTimestamp set). `propagation_policy`: "Background", "Foreground" or "Orphan"."""
        k = resolve(kind)
        pre = preconditions or Preconditions()
        req = api.DeleteRequest(
            resource=k.resource,
            namespace=namespace,
            name=name,
            preconditions=api.Preconditions(uid=pre.uid, resource_version=pre.resource_version),
            propagation_policy=propagation_policy or "",
        )
        if grace_period_seconds is not None:
            req.grace_period_seconds = grace_period_seconds
        what = f"delete {_describe(k, name, namespace)}"

        async def resolve_(err: APIStatusError) -> Message | None:
            # A graceful delete only marks the object: the retry's precondition then fails.
            if not isinstance(err, Conflict):
                return None
            got = await self._read_back(k, name, namespace)
            if got is None or not meta(got).HasField("deletion_timestamp"):
                return None
            return got if not pre.uid or meta(got).uid == pre.uid else None

        resp = await self._call(
            lambda s: s.Delete(req, timeout=self.timeouts.call),
            what,
            write=_Write(safe=bool(pre.uid or pre.resource_version), resolve=resolve_),
        )
        return unpack(k, resp.object)

    async def bind(
        self, pod_name: str, node_name: str, *, namespace: str = "", resource_version: str = ""
    ) -> core_pb2.Pod:
        """Bind an unbound pod to a node (pods/binding); Conflict if it already has one."""
        k = resolve(core_pb2.Pod)
        req = api.BindRequest(
            namespace=namespace,
            name=pod_name,
            node_name=node_name,
            resource_version=resource_version,
        )
        what = f"bind {_describe(k, pod_name, namespace)} to {node_name}"

        async def resolve_(err: APIStatusError) -> Message | None:
            if not isinstance(err, Conflict):
                return None
            got = cast(core_pb2.Pod | None, await self._read_back(k, pod_name, namespace))
            return got if got is not None and got.spec.node_name == node_name else None

        # A pod is bound once: a second bind cannot apply twice, so it is always safe.
        resp = await self._call(
            lambda s: s.Bind(req, timeout=self.timeouts.call),
            what,
            write=_Write(safe=True, resolve=resolve_),
        )
        return cast(core_pb2.Pod, unpack(k, resp.object))

    async def discovery(self) -> builtins.list[api.APIResource]:
        """The resources the server serves (name, short names, namespaced, kind, apiVersion)."""
        req = api.DiscoveryRequest()
        resp = await self._call(
            lambda s: s.Discovery(req, timeout=self.timeouts.call), "discovery", idempotent=True
        )
        return list(resp.resources)

    # ---- internals -------------------------------------------------------------------------

    async def _update(self, obj: M, *, status: bool) -> M:
        kind = resolve(type(obj))
        req = api.UpdateRequest(resource=kind.resource, object=pack(obj))
        m = meta(obj)
        what = f"update {_describe(kind, m.name, m.namespace)}"

        def send(stub: Any) -> Awaitable[api.ObjectResponse]:
            method = stub.UpdateStatus if status else stub.Update
            return cast(Awaitable[api.ObjectResponse], method(req, timeout=self.timeouts.call))

        async def resolve_(err: APIStatusError) -> Message | None:
            if not isinstance(err, Conflict):
                return None
            got = await self._read_back(kind, m.name, m.namespace)
            return got if got is not None and same_write(obj, got, status=status) else None

        # The resourceVersion is a precondition: a second try cannot apply it twice.
        write = _Write(safe=bool(m.resource_version), resolve=resolve_)
        resp = await self._call(send, what, write=write)
        return cast(M, unpack(kind, resp.object))

    def _order(self) -> builtins.list[_Endpoint]:
        """This call's endpoints: round robin from the next one, those known down last."""
        n = len(self._endpoints)
        start = self._next
        self._next = (start + 1) % n
        rotated = [self._endpoints[(start + i) % n] for i in range(n)]
        now = time.monotonic()
        return sorted(rotated, key=lambda ep: ep.suspect(now))  # stable

    async def _endpoint_for(self, order: builtins.list[_Endpoint], attempt: int) -> _Endpoint:
        if self._closed:
            raise ClientError("the client is closed")
        if attempt and attempt % len(order) == 0:
            await _pause(order, self.retries.delay(attempt // len(order)), self.retries.max_delay)
        return order[attempt % len(order)]

    def _should_retry(
        self, ep: _Endpoint, err: APIStatusError, attempt: int, *, idempotent: bool
    ) -> bool:
        if not isinstance(err, Unavailable):
            return False
        ep.suspect_until = time.monotonic() + self.retries.cooloff
        return (
            idempotent or isinstance(err, ConnectFailed)
        ) and attempt + 1 < self.retries.attempts

    async def _read_back(self, kind: Kind, name: str, namespace: str) -> Message | None:
        """The object now, to judge a broken-off write; None when it cannot be read."""
        try:
            got: Message = await self.get(cast(Any, kind.message), name, namespace=namespace)
        except ClientError as exc:
            log.debug("read back failed", kind=kind.plural, name=name, error=str(exc))
            return None
        return got

    async def _call(
        self,
        send: Callable[[Any], Awaitable[R]],
        what: str,
        *,
        idempotent: bool = False,
        write: _Write | None = None,
    ) -> R:
        """One call with fail-over (see the class docstring); `write` says how a write that
        broke off may be tried again or judged."""
        order = self._order()
        write = write or _UNSAFE
        broken: APIStatusError | None = None  # a try of this write that was sent and broke off
        for attempt in range(self.retries.attempts):
            ep = await self._endpoint_for(order, attempt)
            try:
                return await send(ep.stub)
            except grpc.aio.AioRpcError as exc:
                cause = exc
                err = from_rpc_error(exc, f"{what} via {ep.address}")
            if self._should_retry(ep, err, attempt, idempotent=idempotent):
                log.debug("call retried", what=what, endpoint=ep.address, error=err.message)
                continue
            if idempotent:
                raise err from cause
            if isinstance(err, ConnectFailed):
                # Every endpoint tried refused; an earlier try may still have been applied.
                raise (err if broken is None else _outcome_unknown(broken)) from cause
            if _broke_off(err):
                if (
                    write.safe
                    and isinstance(err, Unavailable)
                    and attempt + 1 < self.retries.attempts
                ):
                    broken = err
                    log.info("write broke off; sending it again", what=what, error=err.message)
                    continue
                if write.check is not None:
                    shown = await write.check()
                    if shown is not None:
                        return cast(R, _Shown(shown))
                raise _outcome_unknown(err) from cause
            if broken is not None:
                shown = await write.resolve(err) if write.resolve is not None else None
                if shown is not None:
                    return cast(R, _Shown(shown))
                raise type(err)(
                    f"{err.message} (an earlier try, {broken.message}, broke off after it was"
                    " sent and may have been applied)",
                    code=err.code,
                ) from cause
            raise err from cause
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover


async def evict(
    client: Client,
    name: str,
    *,
    namespace: str = "",
    uid: str = "",
    grace_period_seconds: int | None = None,
) -> core_pb2.Pod:
    """pods/eviction: delete the pod if its PodDisruptionBudget allows it now (the pod as
    the delete left it); ResourceExhausted (429 TooManyRequests) when the budget does not.
    With the pod's `uid`, a retry after a broken-off call cannot evict a newer pod of the
    same name, so it is sent again; without, the outcome may be unknown."""
    k = resolve(core_pb2.Pod)
    req = api.EvictRequest(namespace=namespace, name=name, preconditions=api.Preconditions(uid=uid))
    if grace_period_seconds is not None:
        req.grace_period_seconds = grace_period_seconds
    resp = await client._call(
        lambda s: s.Evict(req, timeout=client.timeouts.call),
        f"evict {_describe(k, name, namespace)}",
        write=_Write(safe=bool(uid)),
    )
    return cast(core_pb2.Pod, unpack(k, resp.object))


async def request_token(
    client: Client,
    service_account: str,
    *,
    namespace: str = "default",
    pod: core_pb2.Pod | None = None,
    expiration_seconds: int = 3600,
    audiences: Sequence[str] = (),
) -> tuple[str, float]:
    """serviceaccounts/token: a signed token of `service_account` (bound to `pod` when
    given) and when it expires (seconds since the epoch). Each call mints a new token, so
    a broken-off call is simply sent again."""
    req = api.CreateTokenRequest(namespace=namespace, name=service_account)
    req.request.spec.expiration_seconds = expiration_seconds
    req.request.spec.audiences.extend(audiences)
    if pod is not None:
        ref = req.request.spec.bound_object_ref
        ref.kind, ref.api_version = "Pod", "v1"
        ref.name, ref.uid = pod.metadata.name, pod.metadata.uid
    resp = await client._call(
        lambda s: s.CreateToken(req, timeout=client.timeouts.call),
        f'request a token of serviceaccount "{service_account}" in namespace "{namespace}"',
        idempotent=True,
        write=_Write(safe=True),
    )
    expires = resp.status.expiration_timestamp
    return resp.status.token, expires.seconds + expires.nanos / 1e9


@dataclass(frozen=True, slots=True)
class _Write:
    """How a write may be tried again after a try that was sent broke off.

    `safe`: sending it again cannot apply it twice (a precondition, a name, a bind).
    `resolve(err)`: after such a retry answered `err` (ALREADY_EXISTS, ABORTED...), read back
    and return the object when it shows that the write was done, else None.
    `check()`: for a write that is not safe, read back and return the object when it already
    shows the write, else None (then OutcomeUnknown is raised)."""

    safe: bool = False
    resolve: Callable[[APIStatusError], Awaitable[Message | None]] | None = None
    check: Callable[[], Awaitable[Message | None]] | None = None


_UNSAFE = _Write()


class _Shown:
    """A write's result found by reading back: quacks like an ObjectResponse."""

    def __init__(self, obj: Message) -> None:
        self.object = pack(obj)


def _broke_off(err: APIStatusError) -> bool:
    """Sent, and then no answer: it may or may not have been applied."""
    return isinstance(err, (Unavailable, Timeout)) or err.code == grpc.StatusCode.CANCELLED


def _outcome_unknown(err: APIStatusError) -> OutcomeUnknown:
    return OutcomeUnknown(
        f"{err.message}; the request was sent, so it may or may not have been applied:"
        " read the object again before retrying",
        code=err.code,
    )


def patch_applied(obj: Message, patch: Mapping[str, Any] | Sequence[Any]) -> bool:
    """Whether applying the JSON merge patch `patch` (RFC 7386) to `obj` changes nothing, so
    the object already shows it; a metadata.resourceVersion in the patch (a precondition) is
    left out of the comparison. Not a merge patch (a list): False, nothing to compare."""
    if not isinstance(patch, Mapping):
        return False
    doc = manifest.to_dict(obj)
    wanted = dict(patch)
    metadata = wanted.get("metadata")
    if isinstance(metadata, Mapping) and "resourceVersion" in metadata:
        wanted["metadata"] = {k: v for k, v in metadata.items() if k != "resourceVersion"}
    return bool(_merge(doc, wanted) == doc)


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def same_write(sent: Message, stored: Message, *, status: bool) -> bool:
    """Whether `stored` holds what the update `sent` wrote (its status for an UpdateStatus,
    else everything but the status and the server's metadata)."""
    if status:
        return getattr(sent, "status", None) == getattr(stored, "status", None)
    a, b = type(sent)(), type(stored)()
    a.CopyFrom(sent)
    b.CopyFrom(stored)
    for obj in (a, b):
        if obj.DESCRIPTOR.fields_by_name.get("status") is not None:
            obj.ClearField("status")
        m = meta(obj)
        for name in ("resource_version", "generation", "uid", "creation_timestamp"):
            m.ClearField(name)
    return a == b


def _describe(kind: Kind, name: str, namespace: str) -> str:
    where = f"{namespace}/" if namespace and kind.namespaced else ""
    return f"{kind.plural}/{where}{name}"


def _watch_event(kind: Kind, raw: api.WatchEvent) -> WatchEvent[Message]:
    try:
        event_type = EventType(raw.type)
    except ValueError as exc:
        raise UnexpectedObject(f"unknown watch event type {raw.type!r}") from exc
    return WatchEvent(event_type, unpack(kind, raw.object))
