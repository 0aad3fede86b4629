"""The gRPC face of the API: each API service method calls the verb of the same name.

The verbs (`service.APIServicer`) know nothing of gRPC: they raise StatusErrors, which this
face turns into their gRPC status codes in one place (`_unary`, `_stream`); any other
exception is INTERNAL (logged), never a crash. The REST face (`rest/`) calls the same verbs.
While the server drains, a call is refused with UNAVAILABLE and the trailing metadata
NOT_APPLIED, so k8semu.client sends it to another API server at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import Message

from k8semu import transport
from k8semu.apiserver.auth import grpcside
from k8semu.apiserver.auth.guard import Guard
from k8semu.apiserver.errors import StatusError
from k8semu.apiserver.service import APIServicer
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apiserver_pb2

log = get_logger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

# A call refused because the server is shutting down carries this trailing metadata: the
# request was not applied, and k8semu.client sends it to another API server at once.
NOT_APPLIED = ("k8semu-not-applied", "shutting-down")
# A call names its field manager (the writer recorded in managedFields) with this metadata;
# without it, the product of its user agent does (k8semu.client sends the component's name).
FIELD_MANAGER_METADATA = "k8semu-field-manager"
_MANAGED_WRITES = frozenset({"Create", "Update", "UpdateStatus", "Patch", "UpdateScale"})
_MAX_MANAGER = 128
SHUTTING_DOWN = "the API server is shutting down; the request was not applied (try another)"


async def _refuse_draining(context: Context) -> None:
    await context.abort(
        grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN, trailing_metadata=(NOT_APPLIED,)
    )


def _unary(
    servicer: APIServicer,
    verb: Callable[[Any], Awaitable[Message]],
    name: str,
    guard: Guard | None = None,
) -> Callable[[Any, Context], Awaitable[Message]]:
    """`verb` as a unary gRPC handler: StatusError -> its code; anything else -> INTERNAL.
    With a `guard`, the call is authenticated, authorized and audited first (auth/)."""

    managed = name in _MANAGED_WRITES

    async def handler(request: Any, context: Context) -> Message:
        if servicer.draining:
            await _refuse_draining(context)
        if managed and not request.field_manager and not _is_apply(request):
            request.field_manager = caller_manager(context.invocation_metadata())
        with servicer.call():
            try:
                if guard is None:
                    return await verb(request)
                record = await grpcside.admit(guard, name, request, context)
                outcome: Exception | Message | None = None
                try:
                    outcome = await verb(request)
                    return outcome
                except Exception as exc:
                    outcome = exc
                    raise
                finally:
                    grpcside.done(guard, record, outcome)
            except StatusError as exc:
                await transport.abort(context, exc.code, exc.message)
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                log.exception("request failed", method=name)
                await transport.abort(context, grpc.StatusCode.INTERNAL, f"internal error: {exc!r}")
        raise AssertionError("unreachable")  # pragma: no cover - abort raises

    return handler


def caller_manager(metadata: Any) -> str:
    """The field manager a gRPC call names: its `k8semu-field-manager` metadata, else its user
    agent's first product (`kubelet grpc-python-asyncio/1.66 ...` -> kubelet), as Kubernetes
    names a client's writes after its user agent."""
    agent = ""
    for key, value in metadata or ():
        if key == FIELD_MANAGER_METADATA:
            return str(value)[:_MAX_MANAGER]
        if key == "user-agent":
            agent = str(value)
    return agent.split(" ", 1)[0].split("/", 1)[0][:_MAX_MANAGER]


def _is_apply(request: Any) -> bool:
    """A server-side apply names its manager itself (Kubernetes requires it)."""
    return isinstance(request, apiserver_pb2.PatchRequest) and request.patch_type in (
        "apply",
        "application/apply-patch+yaml",
    )


def _stream(
    servicer: APIServicer, verb: Callable[[Any], AsyncIterator[bytes]], guard: Guard | None = None
) -> Callable[[Any, Context], AsyncIterator[bytes]]:
    """`verb` (Watch) as a server-streaming handler, the errors mapped as `_unary` does; a
    watch is authorized (and audited) once, at its start, as Kubernetes does."""

    async def handler(request: Any, context: Context) -> AsyncIterator[bytes]:
        if servicer.draining:
            await _refuse_draining(context)
        try:
            if guard is not None:
                grpcside.done(guard, await grpcside.admit(guard, "Watch", request, context), None)
            async for event in verb(request):
                yield event
        except StatusError as exc:
            await transport.abort(context, exc.code, exc.message)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.exception("watch failed")
            await transport.abort(context, grpc.StatusCode.INTERNAL, f"internal error: {exc!r}")

    return handler


def _serialize_watch_event(event: apiserver_pb2.WatchEvent | bytes) -> bytes:
    return event if isinstance(event, bytes) else event.SerializeToString()


def _message_class(descriptor: Any) -> Any:
    return message_factory.GetMessageClass(descriptor)


def add_api_servicer(
    servicer: APIServicer, server: grpc.aio.Server, guard: Guard | None = None
) -> None:
    """What the generated add_APIServicer_to_server does, on the verbs of `servicer`, except
    that Watch yields pre-serialized WatchEvent bytes: the watch cache serializes each event
    once for all. `guard`: authentication and authorization (None: everyone may do all)."""
    service = apiserver_pb2.DESCRIPTOR.services_by_name["API"]
    handlers = {}
    own = grpcside.own_methods(guard)
    for method in service.methods:
        request = _message_class(method.input_type)
        response = _message_class(method.output_type)
        if method.name in own:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                own[method.name],
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            continue
        verb = getattr(servicer, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _stream(servicer, verb, guard),
                request_deserializer=request.FromString,
                response_serializer=_serialize_watch_event,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(servicer, verb, method.name, guard),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
