"""The listening side: one socket per (protocol, IP, port) of the service table, each handing
its traffic to its Service port's `Frontend`.

Owns binding and unbinding as the table changes (shared addresses with SO_REUSEPORT, NodePorts
exclusive), remembering what could not be bound and trying again, the periodic sweep of idle
connections and UDP sessions, and the metrics snapshot. It takes a table (`apply`) from
whoever computes one: the API-driven `ProxyServer`, a benchmark, a test. It never talks to
the API.

Closing a listener stops new connections only; connections it accepted keep running until
either side ends them (a removed Service port drains, as a removed endpoint does).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from k8semu import aio
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2
from k8semu.proxy.datapath import (
    DEFAULT_DATA_PATH,
    DataPathConfig,
    Dialer,
    Frontend,
    UDPListener,
    direct,
)
from k8semu.proxy.table import ListenAddress, PortKey, PortRule, build_table

log = get_logger(__name__)

DEFAULT_SWEEP_INTERVAL = 1.0
DEFAULT_BIND_RETRY_INTERVAL = 5.0
LISTEN_BACKLOG = 4096

BindErrorHandler = Callable[[PortKey, ListenAddress, str], None]


@dataclass(eq=False)
class _Listener:
    address: ListenAddress
    key: PortKey
    server: asyncio.AbstractServer | None = None
    udp: UDPListener | None = None
    udp_transport: Any = None

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.udp_transport is not None:
            self.udp_transport.close()


@dataclass(frozen=True, slots=True)
class EndpointSnapshot:
    """What `Proxier.snapshot()` reports per endpoint of a Service port (`EndpointStats`)."""

    ip: str
    port: int
    connections_total: int
    connections_active: int
    bytes_in: int
    bytes_out: int
    requests: int
    http_requests: int


@dataclass(frozen=True, slots=True)
class PortSnapshot:
    """What `Proxier.snapshot()` reports per Service port."""

    key: PortKey
    listen: tuple[str, ...]
    ready_endpoints: int
    connections_total: int
    connections_active: int
    bytes_in: int
    bytes_out: int
    errors: int
    http_requests: int
    requests_per_second: float
    endpoints: tuple[EndpointSnapshot, ...] = ()


@dataclass
class _BindState:
    errors: dict[ListenAddress, str] = field(default_factory=dict)


@dataclass(kw_only=True, eq=False)
class Proxier:
    """Listeners and Frontends for a service table. `await start()`, then `await apply(table)`
    as often as the table changes (idempotent), `await stop()` at the end."""

    config: DataPathConfig = DEFAULT_DATA_PATH
    dialer: Dialer = direct
    on_bind_error: BindErrorHandler | None = None
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL
    bind_retry_interval: float = DEFAULT_BIND_RETRY_INTERVAL
    frontends: dict[PortKey, Frontend] = field(default_factory=dict, init=False)
    _rules: dict[PortKey, PortRule] = field(default_factory=dict, init=False)
    _draining: list[Frontend] = field(default_factory=list, init=False)
    _listeners: dict[ListenAddress, _Listener] = field(default_factory=dict, init=False)
    _bind: _BindState = field(default_factory=_BindState, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    @property
    def bind_errors(self) -> dict[ListenAddress, str]:
        return dict(self._bind.errors)

    def listening(self) -> list[ListenAddress]:
        return list(self._listeners)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sweeper(), name="sweep")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await aio.cancel_and_wait([task])
        async with self._lock:
            for listener in self._listeners.values():
                listener.close()
            self._listeners.clear()
            for frontend in [*self.frontends.values(), *self._draining]:
                frontend.close_all()
            self.frontends.clear()
            self._draining.clear()

    async def apply_objects(
        self,
        services: Iterable[core_pb2.Service],
        endpoints: Iterable[core_pb2.Endpoints],
        *,
        node_ip: str = "127.0.0.1",
        node_name: str = "",
    ) -> None:
        """Serve exactly these Services (a static table: benchmarks, tests)."""
        by_name = {(e.metadata.namespace, e.metadata.name): e for e in endpoints}
        await self.apply(build_table(services, by_name, node_ip=node_ip, node_name=node_name))

    async def apply(self, table: Mapping[PortKey, PortRule]) -> None:
        async with self._lock:
            await self._apply(dict(table))

    async def _apply(self, table: dict[PortKey, PortRule]) -> None:
        self._rules = table
        for key, rule in table.items():
            frontend = self.frontends.get(key)
            if frontend is None:
                frontend = self.frontends[key] = Frontend(
                    key, config=self.config, dialer=self.dialer
                )
            frontend.update(rule.endpoints, rule.affinity_timeout)
        for key in [k for k in self.frontends if k not in table]:
            self._draining.append(self.frontends.pop(key))

        desired = {addr: rule.key for rule in table.values() for addr in rule.listen}
        for addr in [a for a in self._listeners if a not in desired]:
            self._listeners.pop(addr).close()
            log.info("stopped listening", address=str(addr))
        for addr in [a for a in self._bind.errors if a not in desired]:
            del self._bind.errors[addr]
        # Before the first await below: a connection accepted meanwhile must find its
        # listener's Frontend (one whose key changed has just been moved to draining).
        for addr, listener in self._listeners.items():
            listener.key = desired[addr]
        for addr, key in desired.items():
            if addr in self._listeners:
                continue
            try:
                self._listeners[addr] = await self._listen(addr, key)
            except OSError as exc:
                message = f"cannot listen on {addr}: {exc.strerror or exc}"
                if self._bind.errors.get(addr) != message:
                    self._bind.errors[addr] = message
                    log.warning("cannot bind", service=str(key), address=str(addr), error=message)
                    if self.on_bind_error is not None:
                        self.on_bind_error(key, addr, message)
                continue
            if self._bind.errors.pop(addr, None) is not None:
                log.info("bound after all", service=str(key), address=str(addr))
            else:
                log.info("listening", service=str(key), address=str(addr))

    def _frontend_of(self, listener: _Listener) -> Callable[[], Frontend]:
        def get() -> Frontend:
            return self.frontends[listener.key]

        return get

    async def _listen(self, addr: ListenAddress, key: PortKey) -> _Listener:
        loop = asyncio.get_running_loop()
        listener = _Listener(addr, key)
        udp = addr.protocol == "UDP"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if addr.shared:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((addr.ip, addr.port))
            sock.setblocking(False)
            if udp:
                protocol = UDPListener(self._frontend_of(listener))
                transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
                listener.udp, listener.udp_transport = protocol, transport
            else:
                frontends = self.frontends

                def accept() -> asyncio.Protocol:
                    return frontends[listener.key].tcp_protocol()

                listener.server = await loop.create_server(
                    accept, sock=sock, backlog=LISTEN_BACKLOG
                )
        except BaseException:
            sock.close()
            raise
        return listener

    async def _sweeper(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.sweep_interval
        since_retry = 0.0
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for frontend in self.frontends.values():
                frontend.sweep(interval, now)
            for frontend in self._draining:
                frontend.sweep(interval, now)
            self._draining = [f for f in self._draining if f.connections]
            for listener in list(self._listeners.values()):
                if listener.udp is not None and listener.key in self.frontends:
                    listener.udp.sweep(interval)
            since_retry += interval
            if self._bind.errors and since_retry >= self.bind_retry_interval:
                since_retry = 0.0
                async with self._lock:
                    await self._apply(self._rules)

    def snapshot(self) -> list[PortSnapshot]:
        listen: dict[PortKey, list[str]] = {}
        for addr, listener in self._listeners.items():
            listen.setdefault(listener.key, []).append(f"{addr.ip}:{addr.port}")
        out = []
        for key, f in sorted(self.frontends.items(), key=lambda kv: str(kv[0])):
            s = f.stats
            bytes_in, bytes_out, http_requests = f.totals()
            out.append(
                PortSnapshot(
                    key=key,
                    listen=tuple(sorted(listen.get(key, ()))),
                    ready_endpoints=len(f.balancer.endpoints),
                    connections_total=s.connections_total,
                    connections_active=s.connections_active,
                    bytes_in=bytes_in,
                    bytes_out=bytes_out,
                    errors=s.errors,
                    http_requests=http_requests,
                    requests_per_second=s.requests_per_second,
                    endpoints=tuple(
                        EndpointSnapshot(
                            ip,
                            port,
                            e.connections_total,
                            max(0, e.connections_active),
                            e.bytes_in,
                            e.bytes_out,
                            e.requests,
                            e.http_requests,
                        )
                        for (ip, port), e in sorted(f.endpoint_stats.items())
                    ),
                )
            )
        return out
