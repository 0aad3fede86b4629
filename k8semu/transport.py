"""The one place where gRPC servers and channels are made (design decision 9).

Every server gets the standard health and reflection services; every channel gets the
same keepalive and message-size options. Deadlines for calls live here as named defaults.
TLS is made here and nowhere else: a server or channel given a `ServerTLS` / `ClientTLS`
serves or dials TLS (mutual when a client CA / client certificate is given), None is plain
text; `server_ssl_context` / `client_ssl_context` make the same thing for the asyncio (Raft
peers) and aiohttp (REST) listeners, and `peer_subject` tells a handler who the verified client
is. Keys and certificates themselves are made in `k8semu.pki`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # Not a back-off despite its name: the least time one connection attempt is given to
    # finish (TCP, TLS, the server's HTTP/2 SETTINGS); a refused attempt still ends at once and
    # the next one waits only the back-off above. At 200 ms, a server slowed by a busy host
    # (load 30 on two cores in make test) never answered a handshake in time: "connection
    # attempt timed out before receiving SETTINGS frame", attempt after attempt.
    ("grpc.min_reconnect_backoff_ms", 5_000),
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
    """`http://127.0.0.1:2379` -> `127.0.0.1:2379`; the error names the flag. `https://` is
    accepted too: whether a port speaks TLS is said by the certificate flags, as in etcd."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https", "grpc"):
        raise AddressError(f"{flag}: {url!r}: expected an http:// or https:// URL")
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

    def __init__(self) -> None:
        # method -> (handler, its wrapper): grpc asks on every call with the same handler
        # object, and building the wrapper (three closures and a handler) each time was
        # measurable per call on the store's client port.
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def wrap(self, handler: Any, method: str) -> Any:
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Any, method: str) -> Any:
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
        return grpc.unary_stream_rpc_method_handler(
            _streaming_after(handler.unary_stream, parse),
            response_serializer=handler.response_serializer,
        )


def server(
    service_names: Iterable[str] = (),
    interceptors: Sequence[HandlerInterceptor] = (),
    *,
    boundary_in_handlers: bool = False,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A grpc.aio server with health and reflection; the caller adds servicers and ports.

    `interceptors` run inside the malformed-request boundary: they see decoded requests
    (the API server's request metrics), and what they raise is answered INTERNAL. With
    `boundary_in_handlers` the server has no interceptor (cheaper per call) and the caller
    registers every servicer through `GenericOnly`, which puts the boundary around them."""
    if boundary_in_handlers and interceptors:
        raise ValueError("interceptors need the boundary as an interceptor")
    srv = grpc.aio.server(
        options=_SERVER_OPTIONS,
        interceptors=None if boundary_in_handlers else [_MalformedRequests(), *interceptors],
    )
    health_servicer = health.aio.HealthServicer()
    registrar: Any = GenericOnly(srv) if boundary_in_handlers else srv
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registrar)
    names = [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], srv)
    return srv, health_servicer


class GenericOnly:
    """Registers a generated servicer (`add_*Servicer_to_server(servicer, GenericOnly(srv))`)
    with generic handlers only, each inside the malformed-request boundary, for a server made
    with `server(..., boundary_in_handlers=True)`. grpcio's aio server keeps one pending
    accept per registered method and waits on all of them with `asyncio.wait` for every
    incoming call (about 30 methods on the store's client port), and runs each interceptor as
    a chain of coroutines per call: together ~15% of a trivial call's server CPU (measured in
    docs/store.md, "Performance"). Generic handlers resolve the same methods from one accept."""

    def __init__(self, srv: grpc.aio.Server) -> None:
        self._srv = srv
        self._boundary = _MalformedRequests()

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._srv.add_generic_rpc_handlers([_Bounded(h, self._boundary) for h in handlers])

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Not registered: the generic handler added along serves these methods."""


class _Bounded(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are wrapped by `boundary` (once per method)."""

    def __init__(self, inner: grpc.GenericRpcHandler, boundary: _MalformedRequests) -> None:
        self._inner = inner
        self._boundary = boundary

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        return self._boundary.wrap(handler, handler_call_details.method)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTLS:
    """A listener's TLS: its certificate and key, and the CA its clients' certificates must be
    signed by. With `client_ca_file` and `require_client_cert` a client without such a
    certificate fails the handshake (etcd's --client-cert-auth); with `client_ca_file` alone a
    certificate is verified when given (kube-apiserver's --client-ca-file, which also takes
    tokens) -- gRPC's Python API cannot ask for an optional one, so gRPC listeners require it
    whenever a client CA is set."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    require_client_cert: bool = False


PEM = Path | bytes
"""A PEM file, or its bytes (a kubeconfig's `...-data`, decoded)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTLS:
    """A client's TLS: the CA that signed the servers' certificates, its own certificate and
    key for mutual TLS (none: it proves nothing), and `server_name`, the name checked against
    the server's certificate when not the dialled host (a channel over several servers)."""

    ca_file: PEM
    cert_file: PEM | None = None
    key_file: PEM | None = None
    server_name: str | None = None
    #: A file holding a bearer token sent with every call (read at each call: the kubelet
    #: rewrites a pod's ServiceAccount token before it expires), for a gRPC listener that
    #: takes tokens instead of a client certificate (the API server's token listener).
    token_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs its key and a key its certificate")


class TLSError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the file."""


def _read(path: PEM, what: str) -> bytes:
    if isinstance(path, bytes):
        return path
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSError(f"{what} {path}: {exc.strerror}") from exc


def _server_credentials(tls: ServerTLS) -> grpc.ServerCredentials:
    pair = (_read(tls.key_file, "key"), _read(tls.cert_file, "certificate"))
    ca = None if tls.client_ca_file is None else _read(tls.client_ca_file, "client CA")
    return grpc.ssl_server_credentials(
        [pair], root_certificates=ca, require_client_auth=ca is not None
    )


def channel_credentials(tls: ClientTLS) -> grpc.ChannelCredentials:
    """gRPC credentials for `tls` (also for synchronous channels: probes, scripts)."""
    key = None if tls.key_file is None else _read(tls.key_file, "key")
    cert = None if tls.cert_file is None else _read(tls.cert_file, "certificate")
    creds = grpc.ssl_channel_credentials(_read(tls.ca_file, "CA"), key, cert)
    if tls.token_file is None:
        return creds
    return grpc.composite_channel_credentials(
        creds, grpc.metadata_call_credentials(_TokenFile(tls.token_file))
    )


class _TokenFile(grpc.AuthMetadataPlugin):
    """`authorization: Bearer <the file's token>` on every call."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(
        self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback
    ) -> None:
        try:
            token = self.path.read_text().strip()
        except OSError as exc:
            callback((), TLSError(f"token {self.path}: {exc.strerror}"))
            return
        callback((("authorization", f"Bearer {token}"),), None)


def server_ssl_context(tls: ServerTLS, *, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """An `ssl` server context for asyncio and aiohttp listeners (see `ServerTLS`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file is not None:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise TLSError(f"certificate {tls.cert_file} / key {tls.key_file}: {exc}") from exc
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def client_ssl_context(tls: ClientTLS) -> ssl.SSLContext:
    """An `ssl` client context for asyncio connections (Raft peers, REST clients)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cadata=_read(tls.ca_file, "CA").decode())
        if tls.cert_file is not None and tls.key_file is not None:
            _load_chain(ctx, tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError, UnicodeDecodeError) as exc:
        raise TLSError(f"CA / client certificate: {exc}") from exc
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: PEM, key: PEM) -> None:
    if isinstance(cert, Path) and isinstance(key, Path):
        ctx.load_cert_chain(cert, key)
        return
    # `ssl` loads a certificate and key only from files: PEM bytes go through a private
    # temporary directory that is gone again once loaded.
    with tempfile.TemporaryDirectory(prefix="k8semu-tls-") as tmp:
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_path.write_bytes(_read(cert, "certificate"))
        key_path.touch(mode=0o600)
        key_path.write_bytes(_read(key, "key"))
        ctx.load_cert_chain(cert_path, key_path)


@dataclass(frozen=True, slots=True)
class PeerSubject:
    """Who a verified client certificate names: the user (CN) and groups (O), as Kubernetes
    reads them."""

    user: str
    groups: tuple[str, ...]


@functools.lru_cache(maxsize=256)
def _subject_of_der(der: bytes) -> PeerSubject:
    from cryptography import x509

    from k8semu.pki import subject_of

    user, groups = subject_of(x509.load_der_x509_certificate(der))
    return PeerSubject(user, groups)


@functools.lru_cache(maxsize=256)
def _subject_of_pem(pem: bytes) -> PeerSubject:
    from cryptography import x509

    from k8semu.pki import subject_of

    user, groups = subject_of(x509.load_pem_x509_certificate(pem))
    return PeerSubject(user, groups)


def peer_subject(context: Any) -> PeerSubject | None:
    """The verified client certificate's subject of a gRPC call (`context`, a
    grpc.aio.ServicerContext) or a REST request (an aiohttp `web.Request`); None on a plain
    connection or when the client sent no certificate. Only certificates the listener's client
    CA verified reach here: an unverifiable one fails the handshake."""
    auth = getattr(context, "auth_context", None)
    if auth is not None:
        pems = auth().get("x509_pem_cert") or []
        return _subject_of_pem(pems[0]) if pems else None
    transport_ = getattr(context, "transport", None)
    ssl_object = None if transport_ is None else transport_.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return _subject_of_der(der) if der else None


class PeerAllowList(HandlerInterceptor):
    """Only the named users (the verified client certificate's CN) may call the methods of
    `rules`: full method names (`/pkg.Service/Method`) or service prefixes (`/pkg.Service/`)
    -> the users allowed. Others get PERMISSION_DENIED naming who asked and who may; the
    refusal is logged. Methods no rule names pass through (health, reflection). Meant for a
    listener that requires client certificates: without one the caller is "anonymous"."""

    def __init__(self, rules: Mapping[str, Collection[str]], *, component: str) -> None:
        self._rules = {method: frozenset(users) for method, users in rules.items()}
        self._component = component

    def allowed(self, method: str) -> frozenset[str] | None:
        """The users allowed to call `method`; None when no rule names it."""
        found = self._rules.get(method)
        if found is None:
            found = self._rules.get(method.rpartition("/")[0] + "/")
        return found

    def wrap(self, handler: Any, method: str) -> Any:
        allowed = self.allowed(method)
        if allowed is None:
            return handler
        component = self._component

        async def check(context: Any) -> None:
            subject = peer_subject(context)
            user = "anonymous" if subject is None else subject.user
            if user in allowed:
                return
            _log.warning("call refused", component=component, method=method, user=user)
            await abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{component}: user {user!r} may not call {method}"
                f" (only {', '.join(sorted(allowed))})",
            )

        return _checked(handler, check)


def _streaming_after(
    streaming: Callable[[Any, Any], Any], before: Callable[[Any, Any], Awaitable[Any]]
) -> Callable[[Any, Any], Any]:
    """A streaming handler's behaviour that first awaits `before(request, context)` and
    passes what it returns on as the request. grpc.aio takes two shapes of streaming
    handler, and the wrapper must keep the one it wraps: an async generator yielding the
    answers (every servicer here), or a coroutine writing them with `context.write()`
    (grpcio's own health servicer's Watch; iterating it fails)."""
    if inspect.isasyncgenfunction(streaming):

        async def generate(request: Any, context: Any) -> Any:
            async for item in streaming(await before(request, context), context):
                yield item

        return generate

    async def write(request: Any, context: Any) -> Any:
        return await streaming(await before(request, context), context)

    return write


def _checked(handler: Any, check: Callable[[Any], Awaitable[None]]) -> Any:
    """`handler` (any of gRPC's four kinds) running `check(context)` before the call."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    single = handler.unary_unary or handler.stream_unary
    if single is not None:  # one answer

        async def answer(request: Any, context: Any) -> Any:
            await check(context)
            return await single(request, context)

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(answer, **kwargs)
        return grpc.stream_unary_rpc_method_handler(answer, **kwargs)

    async def checked(request: Any, context: Any) -> Any:
        await check(context)
        return request

    stream_out = _streaming_after(handler.unary_stream or handler.stream_stream, checked)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream_out, **kwargs)
    return grpc.stream_stream_rpc_method_handler(stream_out, **kwargs)


def bind(srv: grpc.aio.Server, address: str, *, flag: str, tls: ServerTLS | None = None) -> int:
    """Bind `address` (HOST:PORT), with TLS when `tls` is given; returns the bound port
    (useful with port 0)."""
    try:
        if tls is None:
            port = srv.add_insecure_port(address)
        else:
            port = srv.add_secure_port(address, _server_credentials(tls))
    except RuntimeError as exc:
        raise AddressError(f"{flag}: cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise AddressError(f"{flag}: cannot listen on {address} (in use or not local)")
    return port


def named_channels(
    user_agent: str, tls: ClientTLS | None = None
) -> Callable[[str], grpc.aio.Channel]:
    """A channel factory (`k8semu.client.Client(channel_factory=...)`) for a component named
    `user_agent`: the API server records it as the field manager of the client's writes."""
    return functools.partial(channel, tls=tls, user_agent=user_agent)


def channel(
    target: str | Sequence[str], tls: ClientTLS | None = None, *, user_agent: str = ""
) -> grpc.aio.Channel:
    """A channel, TLS when `tls` is given; several targets are load-balanced round-robin
    with fail-over. `user_agent` goes first in the calls' user agent (the API server names a
    client's writes after it)."""
    options: list[tuple[str, Any]] = list(_OPTIONS)
    if user_agent:
        options.append(("grpc.primary_user_agent", user_agent))
    if isinstance(target, str):
        address = target
    else:
        address = "ipv4:" + ",".join(target)
        options.append(("grpc.lb_policy_name", "round_robin"))
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    name = tls.server_name
    if name is None and not isinstance(target, str) and target:
        # Every server's certificate names its own address; one name is checked per channel.
        name = target[0].rpartition(":")[0].strip("[]")
    if name is not None:
        options.append(("grpc.ssl_target_name_override", name))
    return grpc.aio.secure_channel(address, channel_credentials(tls), options=options)
