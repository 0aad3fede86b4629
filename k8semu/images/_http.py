"""A small HTTP/1.1 server on asyncio Protocols for the built-in images (echo, web, agnhost).

It owns parsing, keep-alive, pipelining, back-pressure, idle timeouts and graceful shutdown;
handlers are plain functions from a parsed `Request` to a `Response` (no awaiting: every
built-in answer is computed at once, which keeps the per-request cost low enough for proxy
benchmarks). Malformed input gets a 400/413/431/501 and the connection is closed; nothing a
client sends can raise out of the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

from k8semu.images._common import Log, http_date, stop_event

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
IDLE_TIMEOUT_S = 75.0  # nginx's keepalive_timeout
SHUTDOWN_GRACE_S = 0.8


@dataclass(slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    peer: str

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def header(self, name: str, default: str = "") -> str:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return default

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.target} {self.version}"


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False


Handler = Callable[[Request], Response]


def error_response(status: int, detail: str = "") -> Response:
    phrase = _phrase(status)
    text = f"{status} {phrase}\n" + (f"{detail}\n" if detail else "")
    return Response(status, text.encode())


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _BadRequest(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class HTTPProtocol(asyncio.Protocol):
    """One client connection. Requests are answered in order as soon as they are complete."""

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._peer = "-"
        self._paused = False
        self._closing = False
        self.last_active = time.monotonic()

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = f"{peer[0]}:{peer[1]}"
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None
        if self._server.draining and not self._server.connections:
            self._server.all_closed.set()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        self._buffer += data
        self._process()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def pause_writing(self) -> None:
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()
            self._process()

    # state for the server

    @property
    def idle(self) -> bool:
        return not self._buffer

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # parsing

    def _process(self) -> None:
        while self._buffer and not self._paused and not self._closing:
            try:
                parsed = self._parse_one()
            except _BadRequest as bad:
                self._send(error_response(bad.status, bad.detail), None, close=True)
                return
            if parsed is None:
                return
            request, keep_alive = parsed
            try:
                response = self._server.handler(request)
            except Exception as exc:  # a handler bug must not kill the connection silently
                self._server.log.info(f"handler error: {exc!r}")
                response = error_response(500)
            self._send(response, request, close=response.close or not keep_alive)
            if self._server.draining and not self._buffer:
                self.close()

    def _parse_one(self) -> tuple[Request, bool] | None:
        buf = self._buffer
        # Tolerate stray CRLFs between requests (RFC 9112, section 2.2).
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEADER_BYTES:
                raise _BadRequest(431, "request header too large")
            return None
        if end > MAX_HEADER_BYTES:
            raise _BadRequest(431, "request header too large")
        head = bytes(buf[:end]).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "bad request line")
        method, target, version = parts
        if not target or not (target.startswith("/") or target == "*" or "://" in target):
            raise _BadRequest(400, "bad request target")
        headers: list[tuple[str, str]] = []
        length = 0
        connection = ""
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(400, "bad header line")
            value = value.strip()
            headers.append((name, value))
            lname = name.lower()
            if lname == "content-length":
                if not value.isdigit():
                    raise _BadRequest(400, "bad Content-Length")
                length = int(value)
                if length > MAX_BODY_BYTES:
                    raise _BadRequest(413, "body too large")
            elif lname == "transfer-encoding":
                raise _BadRequest(501, "Transfer-Encoding is not supported")
            elif lname == "connection":
                connection = value.lower()
        start = end + 4
        if len(buf) < start + length:
            return None
        body = bytes(buf[start : start + length])
        del buf[: start + length]
        if version == "HTTP/1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection
        return Request(method.upper(), target, version, headers, body, self._peer), keep_alive

    def _send(self, response: Response, request: Request | None, *, close: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        head_only = request is not None and request.method == "HEAD"
        status = response.status
        lines = [
            f"HTTP/1.1 {status} {_phrase(status)}",
            f"Server: {self._server.name}",
            f"Date: {self._server.date()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        lines.extend(f"{k}: {v}" for k, v in response.headers)
        if close:
            lines.append("Connection: close")
        elif request is not None and request.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        if not head_only:
            data += response.body
        transport.write(data)
        if request is not None:
            ua = request.header("User-Agent", "-")
            self._server.log.request(
                f'{request.peer} "{request.request_line}" {status} {len(response.body)} "{ua}"'
            )
        if close:
            self.close()


class HTTPServer:
    """Listens on (host, port) and answers with `handler`; `stop()` is the SIGTERM path:
    stop accepting, close idle keep-alive connections, let busy ones finish their request
    (up to SHUTDOWN_GRACE_S), then abort what is left."""

    def __init__(self, handler: Handler, log: Log, *, name: str = "k8semu") -> None:
        self.handler = handler
        self.log = log
        self.name = name
        self.connections: set[HTTPProtocol] = set()
        self.draining = False
        self.all_closed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._date = ""
        self._date_at = 0.0
        self._sweeper: asyncio.Task[None] | None = None

    def date(self) -> str:
        now = time.time()
        if now - self._date_at >= 1.0:
            self._date, self._date_at = http_date(now), now
        return self._date

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HTTPProtocol(self), host, port, reuse_address=True, backlog=1024
        )
        self._sweeper = asyncio.create_task(self._sweep_idle())
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(5)
            cutoff = time.monotonic() - IDLE_TIMEOUT_S
            for conn in list(self.connections):
                if conn.last_active < cutoff:
                    conn.close()

    async def stop(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        self.draining = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.idle:
                conn.close()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_closed.wait(), grace)
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 0.2)


async def serve_until_stopped(
    server: HTTPServer,
    host: str,
    port: int,
    *,
    prog: str,
    detail: str = "",
    farewell: Callable[[], str] | None = None,
) -> int:
    """Listen on (host, port), say so (`PROG: listening on HOST:PORT DETAIL`, the line tests
    read), serve until SIGTERM or SIGINT, drain, then log `farewell()` if given. Exit code 1
    when the address cannot be bound, else 0."""
    stop = stop_event()
    try:
        bound_host, bound_port = await server.start(host, port)
    except OSError as exc:
        server.log.info(f"{prog}: cannot listen on {host}:{port}: {exc}")
        return 1
    server.log.info(f"{prog}: listening on {bound_host}:{bound_port}{detail}")
    await stop.wait()
    server.log.info(f"{prog}: SIGTERM, draining")
    await server.stop()
    if farewell is not None:
        server.log.info(farewell())
    return 0
