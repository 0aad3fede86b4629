"""The one place where gRPC servers and channels are made (design decision 9).

Every server gets the standard health and reflection services; every channel gets the
same keepalive and message-size options. Deadlines for calls live here as named defaults.
TLS and authentication will be added here and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from k8semu.log import get_logger

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_log = get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Deadlines:
    """Per-call deadlines in seconds."""

    unary: float = 5.0
    peer_send: float = 2.0
    snapshot: float = 120.0


DEFAULT_DEADLINES = Deadlines()

_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's reconnect back-off grows to 120 s by default: a component restarted after a
    # few seconds down would stay unreachable to its clients (calls fail fast while the
    # channel backs off) long after it is back. Components here restart in about a second.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]
_SERVER_OPTIONS: list[tuple[str, int]] = [
    *_OPTIONS,
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.so_reuseport", 0),
]


# gRPC carries a status message in trailing metadata, which peers refuse past 8 KiB by default
# (and non-ASCII text is percent-encoded, up to 3x): a longer message, e.g. one echoing a 20 KB
# value, would reach the client as RESOURCE_EXHAUSTED instead of the real error.
MAX_STATUS_MESSAGE = 2000


def status_message(text: str) -> str:
    """`text`, shortened to fit a gRPC status message; says how much was cut."""
    if len(text) <= MAX_STATUS_MESSAGE:
        return text
    cut = len(text) - MAX_STATUS_MESSAGE
    return f"{text[:MAX_STATUS_MESSAGE]}... ({cut} more characters)"


async def abort(context: Any, code: grpc.StatusCode, message: str) -> NoReturn:
    """End an RPC with `code` and a message that is sure to reach the client."""
    await context.abort(code, status_message(message))
    raise AssertionError("unreachable")  # context.abort raises


class AddressError(ValueError):
    """A listen/peer URL or address that cannot be used."""


def parse_url(url: str, *, flag: str) -> str:
    """`http://127.0.0.1:2379` -> `127.0.0.1:2379`; the error names the flag."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "grpc"):
        raise AddressError(f"{flag}: {url!r}: only http:// URLs are supported (no TLS yet)")
    try:
        port = parts.port
    except ValueError as exc:
        raise AddressError(f"{flag}: {url!r}: bad port") from exc
    if not parts.hostname or port is None:
        raise AddressError(f"{flag}: {url!r}: expected http://HOST:PORT")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that wraps method handlers: `wrap(handler, method)` returns the
    handler to use (the same one to pass the call through). Only methods that exist reach it."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(details)
        return None if handler is None else self.wrap(handler, details.method)

    def wrap(self, handler: Any, method: str) -> Any:
        raise NotImplementedError


class _MalformedRequests(HandlerInterceptor):
    """The boundary for unary requests: undecodable bytes get INVALID_ARGUMENT naming the
    method (gRPC's own answer is UNKNOWN "Unexpected DecodeError"), and an exception a
    servicer did not expect is logged with its traceback and answered INTERNAL (a bug, but
    never a crash, and never a Python repr sent as UNKNOWN)."""

    def wrap(self, handler: Any, method: str) -> Any:
        if handler.request_streaming or handler.request_deserializer is None:
            return handler
        decode = handler.request_deserializer

        async def parse(raw: bytes, context: Any) -> Any:
            try:
                return decode(raw)
            except Exception as exc:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{method}: malformed request: {exc}"
                )

        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_unary(raw: bytes, context: Any) -> Any:
                request = await parse(raw, context)
                try:
                    return await unary(request, context)
                except (grpc.aio.BaseError, asyncio.CancelledError):
                    raise  # context.abort() and cancellation are how RPCs end on purpose
                except Exception as exc:
                    _log.exception("unexpected error in RPC", method=method)
                    await abort(
                        context, grpc.StatusCode.INTERNAL, f"{method}: internal error: {exc!r}"
                    )

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, response_serializer=handler.response_serializer
            )
        streaming = handler.unary_stream

        async def unary_stream(raw: bytes, context: Any) -> Any:
            async for item in streaming(await parse(raw, context), context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, response_serializer=handler.response_serializer
        )


def server(
    service_names: Iterable[str] = (),
    interceptors: Sequence[HandlerInterceptor] = (),
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A grpc.aio server with health and reflection; the caller adds servicers and ports.

    `interceptors` run inside the malformed-request boundary: they see decoded requests
    (the API server's request metrics), and what they raise is answered INTERNAL."""
    srv = grpc.aio.server(
        options=_SERVER_OPTIONS, interceptors=[_MalformedRequests(), *interceptors]
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, srv)
    names = [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], srv)
    return srv, health_servicer


def bind(srv: grpc.aio.Server, address: str, *, flag: str) -> int:
    """Bind `address` (HOST:PORT) insecurely; returns the bound port (useful with port 0)."""
    try:
        port = srv.add_insecure_port(address)
    except RuntimeError as exc:
        raise AddressError(f"{flag}: cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise AddressError(f"{flag}: cannot listen on {address} (in use or not local)")
    return port


def channel(target: str | Sequence[str]) -> grpc.aio.Channel:
    """An insecure channel; several targets are load-balanced round-robin with fail-over."""
    if isinstance(target, str):
        return grpc.aio.insecure_channel(target, options=_OPTIONS)
    addresses = ",".join(target)
    return grpc.aio.insecure_channel(
        f"ipv4:{addresses}",
        options=[*_OPTIONS, ("grpc.lb_policy_name", "round_robin")],
    )
