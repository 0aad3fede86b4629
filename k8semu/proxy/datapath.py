"""The data path: per Service port, pick an endpoint and move bytes, with asyncio Protocols.

Owns the balancer (round robin over ready endpoints, ClientIP affinity), the TCP splice
(connect with fail-over to the next endpoint, both directions with flow control, half-close,
idle clean-up) and the UDP relay (a session socket per client address, expired when idle),
and the counters of each Service port. It knows nothing of the API: `Frontend.update` is
told the endpoints; `k8semu.proxy.proxier` owns the listening sockets.

Invariants: a Frontend's endpoint list only affects *new* connections (existing ones keep
their endpoint until either side closes, so a removed endpoint drains); every accepted
connection is counted once in `connections_active` until its client side is lost; nothing a
peer sends raises out of a protocol callback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from k8semu.log import get_logger
from k8semu.proxy.table import Endpoint, PortKey
from k8semu.proxy.tunnelframes import framing
from k8semu.proxy.tunnelwire import (
    OK,
    TunnelRefused,
    frame,
    refusal,
    take_answer,
    udp_request,
    unframe,
)

log = get_logger(__name__)

# The first four bytes of an HTTP/1.x request line, per method: one slice and one set lookup
# per read tell whether a read starts a request.
_HTTP_REQUEST_STARTS = frozenset(
    m[:4]
    for m in (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"PATCH ", b"OPTIONS ",
              b"CONNECT ", b"TRACE ")
)  # fmt: skip
_HTTP_REQUEST_MARK = b" HTTP/1."
_UDP_PENDING_MAX = 64  # datagrams queued per session while its socket opens
# Sessions per UDP listener: each holds a socket, so a flood of (spoofed) client addresses
# must not take every file descriptor of the process; past this, new clients are dropped
# until sessions expire.
_UDP_MAX_SESSIONS = 4096
_RATE_WINDOW = 6  # samples (one per sweep) behind requests_per_second


@dataclass(frozen=True, slots=True, kw_only=True)
class DataPathConfig:
    """Timeouts in seconds.

    - `connect_timeout`: per endpoint attempt; then the next endpoint is tried.
    - `tcp_idle_timeout`: a connection with no bytes either way for this long is closed
      (kube-proxy leaves it to conntrack's established timeout, 24 h).
    - `tcp_half_open_timeout`: after one side sent EOF, the other has this long (conntrack's
      close-wait timeout, 1 h).
    - `udp_idle_timeout`: a UDP session with no datagram either way is forgotten (conntrack's
      UDP timeout, 30 s).
    - `write_buffer_high`/`write_buffer_low`: per side; reading from the other side pauses above
      high and resumes below low.
    - `tunnel_tls`: the client context connections through another node's tunnel are made
      with (mutual TLS: the cluster CA, this proxy's certificate); None: plain TCP.
    """

    connect_timeout: float = 2.0
    tcp_idle_timeout: float = 86400.0
    tcp_half_open_timeout: float = 3600.0
    udp_idle_timeout: float = 30.0
    write_buffer_high: int = 1024 * 1024
    write_buffer_low: int = 256 * 1024
    tunnel_tls: ssl.SSLContext | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "tcp_idle_timeout", "tcp_half_open_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if not self.udp_idle_timeout > 0:
            raise ValueError(f"udp_idle_timeout: must be > 0, got {self.udp_idle_timeout}")
        if not 0 <= self.write_buffer_low <= self.write_buffer_high:
            raise ValueError("write_buffer_low: must be between 0 and write_buffer_high")


DEFAULT_DATA_PATH = DataPathConfig()


class _Traffic:
    """What both a Service port and each of its endpoints count."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "connections_active",
        "connections_total",
        "http_requests",
    )

    def __init__(self) -> None:
        self.connections_total = 0
        self.connections_active = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.http_requests = 0


class PortStats(_Traffic):
    """Counters of one Service port (totals since it appeared). `bytes_in`, `bytes_out` and
    `http_requests` here are what no endpoint's `EndpointStats` holds: traffic not attributed
    to an endpoint, and the counters of endpoints the port has forgotten (`Frontend.forget`);
    the port's totals add its live endpoints' (`Frontend.totals`)."""

    __slots__ = ("_samples", "errors")

    def __init__(self) -> None:
        super().__init__()
        self.errors = 0
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=_RATE_WINDOW)

    def sample(self, now: float, http_requests: int) -> None:
        self._samples.append((now, http_requests))

    @property
    def requests_per_second(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


class EndpointStats(_Traffic):
    """Counters of one endpoint (pod IP:port) of one Service port, totals since the port
    first forwarded to it: connections (TCP) or sessions (UDP) it was given, bytes each way,
    and HTTP/1.x requests.

    "Requests" (`requests`) is what an L4 proxy can count honestly and cheaply: every
    connection is one request, except one whose first read starts with an HTTP/1.x method:
    there each read that starts with a method counts its request lines (`" HTTP/1."` marks,
    at least one). Keep-alive and pipelined HTTP/1.x requests are so counted one by one;
    request bodies, TLS and HTTP/2 are not looked into (an HTTP/2 or TLS connection is one
    request)."""

    __slots__ = ("http_connections",)

    def __init__(self) -> None:
        super().__init__()
        self.http_connections = 0

    @property
    def requests(self) -> int:
        return self.connections_total - self.http_connections + self.http_requests


class Balancer:
    """Round robin over the ready endpoints. With ClientIP affinity, a client's connections go
    to the endpoint of its last connection while that one is ready and was used within the
    timeout (kube-proxy's `recent` match: each connection renews it); a client without one
    gets the endpoint its IP hashes to, the same on every proxy with the same endpoints."""

    __slots__ = ("_index", "_next", "_sticky", "affinity_timeout", "endpoints")

    def __init__(self) -> None:
        self.endpoints: tuple[Endpoint, ...] = ()
        self._index: frozenset[Endpoint] = frozenset()
        self._next = 0
        self.affinity_timeout: float | None = None
        self._sticky: dict[str, tuple[Endpoint, float]] = {}

    def update(self, endpoints: tuple[Endpoint, ...], affinity_timeout: float | None) -> None:
        self.endpoints = endpoints
        self._index = frozenset(endpoints)
        self.affinity_timeout = affinity_timeout
        if affinity_timeout is None:
            self._sticky.clear()

    def candidates(self, client_ip: str, now: float) -> tuple[Endpoint, ...]:
        """Endpoints to try, in order: the chosen one first, then the others."""
        eps = self.endpoints
        n = len(eps)
        if n == 0:
            return ()
        if self.affinity_timeout is not None:
            sticky = self._sticky.get(client_ip)
            if (
                sticky is not None
                and sticky[0] in self._index
                and now - sticky[1] < self.affinity_timeout
            ):
                ep = sticky[0]
                return (ep, *(e for e in eps if e != ep))
            # A client's first choice is a hash of its IP, not the round robin: the proxies
            # sharing a ClusterIP listener (any may get the next connection) then agree.
            i = zlib.crc32(client_ip.encode()) % n
        else:
            i = self._next % n
            self._next = i + 1
        return eps[i:] + eps[:i] if i else eps

    def connected(self, client_ip: str, ep: Endpoint, now: float) -> None:
        if self.affinity_timeout is not None:
            self._sticky[client_ip] = (ep, now)

    def expire(self, now: float) -> None:
        if self.affinity_timeout is None or not self._sticky:
            return
        timeout = self.affinity_timeout
        for ip in [ip for ip, (_, at) in self._sticky.items() if now - at >= timeout]:
            del self._sticky[ip]


Dialer = Callable[[Endpoint], tuple[str, int, bytes]]
"""Where to connect for an endpoint: (host, port, preamble). A non-empty preamble (a tunnel's
CONNECT line) is sent first and its one-line answer awaited before bytes are spliced."""


def direct(ep: Endpoint) -> tuple[str, int, bytes]:
    return ep.ip, ep.port, b""


class Frontend:
    """One Service port on this node: its balancer, counters and live connections."""

    def __init__(
        self,
        key: PortKey,
        *,
        config: DataPathConfig = DEFAULT_DATA_PATH,
        dialer: Dialer = direct,
    ) -> None:
        self.key = key
        self.config = config
        self.dialer = dialer
        self.balancer = Balancer()
        self.stats = PortStats()
        # Per endpoint (ip, port) it forwarded to; kept while the endpoint is ready or has
        # connections open (a draining one keeps counting), then folded into `stats`.
        self.endpoint_stats: dict[tuple[str, int], EndpointStats] = {}
        self.connections: set[_ClientSide] = set()
        self.loop = asyncio.get_running_loop()
        self._failures = 0
        self._failure_logged = -1e9

    def update(self, endpoints: tuple[Endpoint, ...], affinity_timeout: float | None) -> None:
        self.balancer.update(endpoints, affinity_timeout)
        for ep in endpoints:
            self.stats_of(ep)

    def stats_of(self, ep: Endpoint) -> EndpointStats:
        """`ep`'s counters (created on first use: a ready endpoint is listed from the start,
        with zeros, so a reader tells "no traffic" from "not an endpoint here")."""
        key = (ep.ip, ep.port)
        stats = self.endpoint_stats.get(key)
        if stats is None:
            stats = self.endpoint_stats[key] = EndpointStats()
        return stats

    def forget(self) -> None:
        """Fold the counters of endpoints that are neither ready nor in use into the port's:
        a Service whose pods come and go must not grow a counter per pod IP ever seen."""
        if len(self.endpoint_stats) <= len(self.balancer.endpoints):
            return  # every ready endpoint has its entry (`update`): none is extra
        ready = {(ep.ip, ep.port) for ep in self.balancer.endpoints}
        port = self.stats
        for key in [k for k in self.endpoint_stats if k not in ready]:
            stats = self.endpoint_stats[key]
            if stats.connections_active > 0:
                continue
            port.bytes_in += stats.bytes_in
            port.bytes_out += stats.bytes_out
            port.http_requests += stats.http_requests
            del self.endpoint_stats[key]

    def totals(self) -> tuple[int, int, int]:
        """(bytes_in, bytes_out, http_requests) of the port: its own and its endpoints'."""
        port = self.stats
        bytes_in, bytes_out, http = port.bytes_in, port.bytes_out, port.http_requests
        for stats in self.endpoint_stats.values():
            bytes_in += stats.bytes_in
            bytes_out += stats.bytes_out
            http += stats.http_requests
        return bytes_in, bytes_out, http

    def failed(self, tried: int) -> None:
        """A client closed because no endpoint accepted: logged at most once a second."""
        self._failures += 1
        now = self.loop.time()
        if now - self._failure_logged >= 1.0:
            log.info(
                "no endpoint accepted the connection",
                service=str(self.key),
                tried=tried,
                clients=self._failures,
            )
            self._failure_logged = now
            self._failures = 0

    def tcp_protocol(self) -> asyncio.Protocol:
        return _ClientSide(self)

    def adopt(self, transport: Any, ep: Endpoint) -> None:
        """Take over an accepted `transport` (a tunnel's, after its CONNECT line) and splice
        it to `ep`, answering "OK" or "ERR" first."""
        splice = _ClientSide(self)
        peer = transport.get_extra_info("peername")
        splice.client_ip = peer[0] if peer else ""
        transport.set_protocol(splice)
        splice.start(transport, (ep,), greet=True)

    def sweep(self, interval: float, now: float) -> None:
        """Close TCP connections idle (or half-closed) for too long; called every `interval`."""
        self.balancer.expire(now)
        self.forget()
        self.stats.sample(now, self.totals()[2])
        idle_limit = self.config.tcp_idle_timeout
        half_limit = self.config.tcp_half_open_timeout
        for conn in list(self.connections):
            if conn.touched:
                conn.touched = False
                conn.idle = 0.0
                continue
            conn.idle += interval
            half = conn.client_eof or conn.up_eof
            if conn.idle >= (half_limit if half else idle_limit):
                conn.abort("idle")

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.abort("proxy stopping")


def _safe(call: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):
        call()


class _ClientSide(asyncio.Protocol):
    """The accepted side of one proxied TCP connection; owns the connection's state."""

    __slots__ = (
        "client_eof",
        "client_ip",
        "closed",
        "early",
        "expired",
        "f",
        "http",
        "idle",
        "stats",
        "task",
        "touched",
        "transport",
        "up",
        "up_eof",
    )

    def __init__(self, frontend: Frontend) -> None:
        self.f = frontend
        # The port's until an endpoint accepted, then that endpoint's (bytes and requests
        # are counted only once connected).
        self.stats: PortStats | EndpointStats = frontend.stats
        self.transport: Any = None
        self.up: Any = None  # the endpoint's transport once connected
        self.client_ip = ""
        self.client_eof = False
        self.up_eof = False
        self.closed = False
        self.touched = True
        self.idle = 0.0
        self.http: bool | None = None
        self.task: asyncio.Task[None] | None = None
        self.early: bytes | None = None
        self.expired = False

    # -- client events ---------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        f = self.f
        if f.balancer.affinity_timeout is not None:  # the peer's address costs a syscall
            peer = transport.get_extra_info("peername")
            self.client_ip = peer[0] if peer else ""
        self.start(transport, f.balancer.candidates(self.client_ip, f.loop.time()))

    def start(
        self, transport: Any, candidates: tuple[Endpoint, ...], *, greet: bool = False
    ) -> None:
        """Take over `transport` and connect it to the first of `candidates` that accepts.
        With `greet` (a tunnel's client), "OK\\n" or "ERR ...\\n" is written first."""
        self.transport = transport
        f = self.f
        stats = f.stats
        stats.connections_total += 1
        stats.connections_active += 1
        f.connections.add(self)
        if not candidates:
            stats.errors += 1
            if greet:
                transport.write(refusal("no endpoint"))
            transport.close()
            return
        # Nothing is read from the client until an endpoint accepted: no buffering here, and
        # the kernel's backlog is the flow control.
        transport.pause_reading()
        cfg = f.config
        transport.set_write_buffer_limits(cfg.write_buffer_high, cfg.write_buffer_low)
        self.task = f.loop.create_task(self._connect(candidates, greet))

    def data_received(self, data: bytes) -> None:
        up = self.up
        if up is None:
            self._hold(data)
            return
        up.write(data)
        stats = self.stats
        stats.bytes_in += len(data)
        self.touched = True
        http = self.http
        if http:
            if data[:4] in _HTTP_REQUEST_STARTS:
                stats.http_requests += data.count(_HTTP_REQUEST_MARK) or 1
        elif http is None:
            self.http = http = data[:4] in _HTTP_REQUEST_STARTS
            if http:
                assert isinstance(stats, EndpointStats)
                stats.http_connections += 1
                stats.http_requests += data.count(_HTTP_REQUEST_MARK) or 1

    def _hold(self, data: bytes) -> None:
        # uvloop starts reading after connection_made() even when it paused: keep what came
        # early (one read at most, as reading is paused again here) for the endpoint.
        self.early = data if self.early is None else self.early + data
        _safe(self.transport.pause_reading)

    def eof_received(self) -> bool:
        self.client_eof = True
        self.touched = True
        up = self.up
        if up is None:
            return True  # passed on once connected
        if self.up_eof:
            self._close_both()
        elif up.can_write_eof():
            _safe(up.write_eof)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        f = self.f
        f.connections.discard(self)
        f.stats.connections_active -= 1
        task = self.task
        if task is not None and not task.done():
            task.cancel()
        up = self.up
        if up is not None:
            self.stats.connections_active -= 1
            _safe(up.close if exc is None else up.abort)

    def pause_writing(self) -> None:  # the client reads slower than the endpoint sends
        if self.up is not None:
            _safe(self.up.pause_reading)

    def resume_writing(self) -> None:
        if self.up is not None:
            _safe(self.up.resume_reading)

    # -- endpoint side ---------------------------------------------------------------------

    async def _connect(self, candidates: tuple[Endpoint, ...], greet: bool) -> None:
        f = self.f
        loop = f.loop
        cfg = f.config
        for ep in candidates:
            if self.closed:
                return
            host, port, preamble = f.dialer(ep)
            # A timer that cancels this task, cheaper per connection than asyncio.timeout();
            # `expired` tells its cancellation from the client's going away.
            timer = loop.call_later(cfg.connect_timeout, self._connect_expired)
            try:
                tls = cfg.tunnel_tls if preamble else None  # a tunnel's: its host checked
                up, proto = await loop.create_connection(
                    lambda: _UpstreamSide(self), host, port, ssl=tls
                )
                if preamble:
                    await proto.handshake(up, preamble)
                    up = framing(up, proto)  # over TLS: frames, for half-close
            except asyncio.CancelledError:
                if not self.expired:
                    raise
                self.expired = False
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                f.stats.errors += 1
                continue
            except (OSError, ValueError) as exc:
                f.stats.errors += 1
                log.debug(
                    "endpoint did not accept",
                    service=str(f.key),
                    endpoint=f"{ep.ip}:{ep.port}",
                    error=str(exc) or type(exc).__name__,
                )
                continue
            finally:
                timer.cancel()
            if self.closed:
                up.abort()
                return
            up.set_write_buffer_limits(cfg.write_buffer_high, cfg.write_buffer_low)
            f.balancer.connected(self.client_ip, ep, loop.time())
            stats = self.stats = f.stats_of(ep)
            stats.connections_total += 1
            stats.connections_active += 1
            self.up = up
            if greet:
                self.transport.write(OK)
                self.transport = framing(self.transport, self)
            proto.splice()
            early, self.early = self.early, None
            if early:
                self.data_received(early)
            if self.client_eof:
                self.eof_received()
            else:
                self.transport.resume_reading()
            return
        f.failed(len(candidates))
        if greet:
            self.transport.write(refusal("connect failed"))
        self.transport.close()

    def _connect_expired(self) -> None:
        task = self.task
        if task is not None and not task.done():
            self.expired = True
            task.cancel()

    def on_up_data(self, data: bytes) -> None:
        self.transport.write(data)
        self.stats.bytes_out += len(data)
        self.touched = True

    def on_up_eof(self) -> bool:
        self.up_eof = True
        self.touched = True
        if self.client_eof:
            self._close_both()
        elif self.transport.can_write_eof():
            _safe(self.transport.write_eof)
        return True

    def on_up_lost(self, exc: Exception | None) -> None:
        if self.up is not None and not self.closed:
            _safe(self.transport.close)

    def _close_both(self) -> None:
        _safe(self.transport.close)
        if self.up is not None:
            _safe(self.up.close)

    def abort(self, why: str) -> None:
        log.debug("closing connection", service=str(self.f.key), why=why)
        _safe(self.transport.abort)
        if self.up is not None:
            _safe(self.up.abort)


class _UpstreamSide(asyncio.Protocol):
    """The endpoint side of one proxied TCP connection."""

    __slots__ = ("c", "handshaking", "transport", "waiter")

    def __init__(self, client: _ClientSide) -> None:
        self.c = client
        self.transport: Any = None
        self.waiter: asyncio.Future[None] | None = None
        self.handshaking = bytearray()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    async def handshake(self, transport: Any, preamble: bytes) -> None:
        """Send a tunnel's CONNECT line; its answer must be "OK\\n" (else ValueError)."""
        self.waiter = self.c.f.loop.create_future()
        transport.write(preamble)
        try:
            await self.waiter
        except BaseException:
            transport.abort()
            raise

    def splice(self) -> None:
        self.waiter = None
        if self.handshaking:
            rest = bytes(self.handshaking)
            self.handshaking.clear()
            self.transport.get_protocol().data_received(rest)  # through a TLS Unframer

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None:
            self.c.on_up_data(data)
            return
        self.handshaking += data
        if waiter.done():
            return
        try:
            if take_answer(self.handshaking):
                waiter.set_result(None)
        except TunnelRefused as exc:
            waiter.set_exception(ValueError(f"tunnel: {exc}"))

    def eof_received(self) -> bool:
        waiter = self.waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_exception(ConnectionRefusedError("tunnel closed"))
            return False
        return self.c.on_up_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionRefusedError("tunnel closed"))
        self.c.on_up_lost(exc)

    def pause_writing(self) -> None:  # the endpoint reads slower than the client sends
        _safe(self.c.transport.pause_reading)

    def resume_writing(self) -> None:
        _safe(self.c.transport.resume_reading)


# -- UDP -------------------------------------------------------------------------------------


class UDPListener(asyncio.DatagramProtocol):
    """One bound UDP address of a Service port; a session per client address."""

    def __init__(self, get_frontend: Callable[[], Frontend]) -> None:
        self._frontend = get_frontend
        self.transport: Any = None
        self.sessions: dict[Any, _UDPSession | _TunnelledUDPSession] = {}

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        session = self.sessions.get(addr)
        if session is None:
            session = self._open(addr)
            if session is None:
                return
        session.send(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp listener error", error=str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        for session in list(self.sessions.values()):
            session.close()

    def _open(self, addr: Any) -> _UDPSession | _TunnelledUDPSession | None:
        f = self._frontend()
        candidates = f.balancer.candidates(addr[0], f.loop.time())
        if not candidates or len(self.sessions) >= _UDP_MAX_SESSIONS:
            f.stats.errors += 1
            return None
        ep = candidates[0]
        host, port, preamble = f.dialer(ep)
        if preamble:  # on another host: framed over its node's tunnel
            tunnelled = _TunnelledUDPSession(self, f, addr, ep)
            self.sessions[addr] = tunnelled
            _session_opened(f, tunnelled.stats)
            f.balancer.connected(addr[0], ep, f.loop.time())
            tunnelled.task = f.loop.create_task(tunnelled.open(host, port, udp_request(preamble)))
            return tunnelled
        session = _UDPSession(self, f, addr, ep)
        self.sessions[addr] = session
        _session_opened(f, session.stats)
        f.balancer.connected(addr[0], ep, f.loop.time())
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect((ep.ip, ep.port))
        except OSError as exc:
            f.stats.errors += 1
            log.debug("udp session not opened", service=str(f.key), error=str(exc))
            session.close()
            return None
        session.task = f.loop.create_task(session.open(sock))
        return session

    def sweep(self, interval: float) -> None:
        limit = self._frontend().config.udp_idle_timeout
        for session in list(self.sessions.values()):
            if session.touched:
                session.touched = False
                session.idle = 0.0
                continue
            session.idle += interval
            if session.idle >= limit:
                session.close()


def _session_opened(f: Frontend, stats: EndpointStats) -> None:
    for counters in (f.stats, stats):
        counters.connections_total += 1
        counters.connections_active += 1


def _session_closed(f: Frontend, stats: EndpointStats) -> None:
    f.stats.connections_active -= 1
    stats.connections_active -= 1


class _UDPSession(asyncio.DatagramProtocol):
    """One client address's socket connected to its endpoint."""

    def __init__(self, listener: UDPListener, f: Frontend, client: Any, ep: Endpoint) -> None:
        self.listener = listener
        self.f = f
        self.stats = f.stats_of(ep)
        self.client = client
        self.ep = ep
        self.transport: Any = None
        self.pending: list[bytes] | None = []
        self.touched = True
        self.idle = 0.0
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    async def open(self, sock: socket.socket) -> None:
        try:
            await self.f.loop.create_datagram_endpoint(lambda: self, sock=sock)
        except OSError as exc:
            sock.close()
            self.f.stats.errors += 1
            log.debug("udp session not opened", service=str(self.f.key), error=str(exc))
            self.close()

    def connection_made(self, transport: Any) -> None:
        if self.closed:
            transport.abort()
            return
        self.transport = transport
        pending, self.pending = self.pending, None
        for data in pending or ():
            transport.sendto(data)

    def send(self, data: bytes) -> None:
        self.touched = True
        self.stats.bytes_in += len(data)
        if self.transport is not None:
            self.transport.sendto(data)
        elif self.pending is not None and len(self.pending) < _UDP_PENDING_MAX:
            self.pending.append(data)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.touched = True
        self.stats.bytes_out += len(data)
        out = self.listener.transport
        if out is not None:
            out.sendto(data, self.client)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable (nobody listens there): forget the session, so the client's
        # next datagram opens one to the next endpoint.
        self.f.stats.errors += 1
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _session_closed(self.f, self.stats)
        if self.listener.sessions.get(self.client) is self:
            del self.listener.sessions[self.client]
        if self.transport is not None:
            _safe(self.transport.close)
        # An open() still under way finishes and connection_made() aborts its transport.


# -- UDP over a tunnel -----------------------------------------------------------------------


class _TunnelledUDPSession(asyncio.Protocol):
    """One client address's session to an endpoint on another host: one TCP connection to the
    endpoint node's tunnel, opened with ``CONNECT ip:port udp``; after its "OK", datagrams go
    both ways as frames (`frame`). The tunnel closing (refused, endpoint unreachable, tunnel
    gone) ends the session, so the client's next datagram picks an endpoint afresh, as an ICMP
    error does for a direct session. Same interface as `_UDPSession` for the listener."""

    def __init__(self, listener: UDPListener, f: Frontend, client: Any, ep: Endpoint) -> None:
        self.listener = listener
        self.f = f
        self.stats = f.stats_of(ep)
        self.client = client
        self.ep = ep
        self.transport: Any = None
        self.pending: list[bytes] | None = []
        self.buf = bytearray()
        self.touched = True
        self.idle = 0.0
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    async def open(self, host: str, port: int, preamble: bytes) -> None:
        loop = self.f.loop
        try:
            async with asyncio.timeout(self.f.config.connect_timeout):
                await loop.create_connection(lambda: self, host, port, ssl=self.f.config.tunnel_tls)
        except (OSError, TimeoutError) as exc:
            self.f.stats.errors += 1
            log.debug("udp tunnel not opened", service=str(self.f.key), error=str(exc))
            self.close()
            return
        if self.closed:
            _safe(self.transport.abort)
            return
        self.transport.write(preamble)
        # A tunnel that accepts but never answers must not hold the client's datagrams for
        # as long as the client keeps sending (that would keep the session alive forever).
        loop.call_later(self.f.config.connect_timeout, self._answer_overdue)

    def _answer_overdue(self) -> None:
        if self.pending is not None and not self.closed:
            self._fail("no answer from the tunnel")

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.pending is not None:  # still waiting for the tunnel's answer line
            try:
                if not take_answer(self.buf):
                    return
            except TunnelRefused as exc:
                self._fail(str(exc))
                return
            pending, self.pending = self.pending, None
            for datagram in pending:
                self.transport.write(frame(datagram))
        out = self.listener.transport
        for datagram in unframe(self.buf):
            self.touched = True
            self.stats.bytes_out += len(datagram)
            if out is not None:
                out.sendto(datagram, self.client)

    def _fail(self, why: str) -> None:
        self.f.stats.errors += 1
        log.debug("udp tunnel refused", service=str(self.f.key), why=why)
        self.close()

    def send(self, data: bytes) -> None:
        self.touched = True
        self.stats.bytes_in += len(data)
        if self.pending is None:
            transport = self.transport
            if transport is None:
                return
            # UDP may drop; a slow tunnel must not grow this process's memory.
            if transport.get_write_buffer_size() > self.f.config.write_buffer_high:
                self.f.stats.errors += 1
                return
            transport.write(frame(data))
        elif len(self.pending) < _UDP_PENDING_MAX:
            self.pending.append(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _session_closed(self.f, self.stats)
        if self.listener.sessions.get(self.client) is self:
            del self.listener.sessions[self.client]
        if self.transport is not None:
            _safe(self.transport.close)
