"""The data path in-process (a Proxier fed a static table), on asyncio's loop and on uvloop:
flow control, half-close, idle clean-up, stop, the tunnel's dialing side."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from k8semu.cluster.processes import free_loopback_ports
from k8semu.proxy import DataPathConfig, Endpoint, ListenAddress, PortKey, PortRule, Proxier
from k8semu.proxy.tunnel import TunnelServer

from .conftest import eventually

KEY = PortKey("ns", "svc", "", "TCP")


def _addresses() -> tuple[str, str, int]:
    rng = random.Random()
    return (
        f"127.96.{rng.randrange(251, 254)}.{rng.randrange(1, 254)}",
        f"127.244.{rng.randrange(251, 254)}.{rng.randrange(1, 254)}",
        rng.randrange(20000, 29000),
    )


async def _proxier(
    backend_ip: str, port: int, cluster_ip: str, **config: Any
) -> tuple[Proxier, tuple[str, int]]:
    proxier = Proxier(config=DataPathConfig(**config), sweep_interval=0.1)
    await proxier.start()
    rule = PortRule(
        key=KEY,
        listen=(ListenAddress("TCP", cluster_ip, 80, True),),
        endpoints=(Endpoint(backend_ip, port),),
        affinity_timeout=None,
    )
    await proxier.apply({KEY: rule})
    assert not proxier.bind_errors
    return proxier, (cluster_ip, 80)


@pytest.fixture
async def env() -> AsyncIterator[tuple[str, str, int]]:
    yield _addresses()


async def test_backpressure_reaches_the_endpoint_and_every_byte_arrives(
    env: tuple[str, str, int],
) -> None:
    cluster_ip, backend_ip, port = env
    total = 64 * 1024 * 1024
    chunk = random.randbytes(1024 * 1024)
    sent = 0
    digest = hashlib.sha256()

    class Source(asyncio.Protocol):
        """Writes `total` bytes as fast as its own flow control allows."""

        def connection_made(self, transport: Any) -> None:
            self.t = transport
            self.paused = False
            self.pump()

        def pump(self) -> None:
            nonlocal sent
            while sent < total and not self.paused:
                self.t.write(chunk)
                digest.update(chunk)
                sent += len(chunk)
            if sent >= total:
                self.t.write_eof()

        def pause_writing(self) -> None:
            self.paused = True

        def resume_writing(self) -> None:
            self.paused = False
            self.pump()

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Source, backend_ip, port)
    proxier, addr = await _proxier(backend_ip, port, cluster_ip)
    try:
        r, w = await asyncio.open_connection(*addr, limit=1024 * 1024)
        # The client does not read yet: the proxy must stop reading from the endpoint, so the
        # endpoint's writes stall far below the total (no unbounded buffering in between).
        await asyncio.sleep(0)

        async def stalled() -> bool:
            before = sent
            await asyncio.sleep(0.3)
            return sent == before

        for _ in range(50):
            if await stalled():
                break
        assert sent < total // 2, f"{sent} bytes left the endpoint before the client read"
        got = hashlib.sha256()
        received = 0
        async with asyncio.timeout(30):
            while data := await r.read(1024 * 1024):
                got.update(data)
                received += len(data)
        assert received == total and got.digest() == digest.digest()
        w.close()
    finally:
        await proxier.stop()
        server.close()


async def test_half_close_keeps_the_other_direction_open(env: tuple[str, str, int]) -> None:
    cluster_ip, backend_ip, port = env

    async def answer_after_eof(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = await r.read()  # until the client's EOF came through the proxy
        w.write(b"got %d bytes" % len(data))
        await w.drain()
        w.close()

    server = await asyncio.start_server(answer_after_eof, backend_ip, port)
    proxier, addr = await _proxier(backend_ip, port, cluster_ip)
    try:
        r, w = await asyncio.open_connection(*addr)
        w.write(b"x" * 100_000)
        w.write_eof()
        async with asyncio.timeout(10):
            assert await r.read() == b"got 100000 bytes"
        w.close()
        snap = proxier.snapshot()[0]
        assert snap.bytes_in == 100_000 and snap.bytes_out == len(b"got 100000 bytes")
    finally:
        await proxier.stop()
        server.close()


async def test_idle_connections_are_closed_busy_ones_kept(env: tuple[str, str, int]) -> None:
    cluster_ip, backend_ip, port = env

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(1000):
            w.write(data)
        w.close()

    server = await asyncio.start_server(echo, backend_ip, port)
    proxier, addr = await _proxier(backend_ip, port, cluster_ip, tcp_idle_timeout=0.6)
    try:
        idle_r, idle_w = await asyncio.open_connection(*addr)
        busy_r, busy_w = await asyncio.open_connection(*addr)
        async with asyncio.timeout(10):
            # The busy one talks every 0.1 s until the idle one is closed by the proxy.
            closed = asyncio.ensure_future(idle_r.read())
            while not closed.done():
                busy_w.write(b"ping")
                assert await busy_r.readexactly(4) == b"ping"
                await asyncio.sleep(0.1)
            assert closed.result() == b""
            busy_w.write(b"ping")
            assert await busy_r.readexactly(4) == b"ping"
        idle_w.close()
        busy_w.close()
    finally:
        await proxier.stop()
        server.close()


async def test_stop_closes_listeners_and_connections(env: tuple[str, str, int]) -> None:
    cluster_ip, backend_ip, port = env

    async def hold(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()
        w.close()

    server = await asyncio.start_server(hold, backend_ip, port)
    proxier, addr = await _proxier(backend_ip, port, cluster_ip)
    try:
        r, w = await asyncio.open_connection(*addr)
        w.write(b"hello")
        await w.drain()

        await eventually(lambda: proxier.snapshot()[0].bytes_in >= 5, what="bytes through")
        await proxier.stop()
        async with asyncio.timeout(10):
            with contextlib.suppress(ConnectionError):
                assert await r.read() == b""
        with pytest.raises(OSError):
            await asyncio.open_connection(*addr)
        w.close()
    finally:
        await proxier.stop()
        server.close()


async def test_endpoints_reached_through_a_tunnel(env: tuple[str, str, int]) -> None:
    """The dialing side of the tunnel: CONNECT, OK, splice; an ERR (nobody listens at that
    endpoint on the far side) makes the proxy try the next endpoint."""
    cluster_ip, backend_ip, port = env
    dead_ip = backend_ip.rsplit(".", 1)[0] + ".254"

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(1000):
            w.write(data)
        w.close()

    server = await asyncio.start_server(echo, backend_ip, port)
    (tunnel_port,) = free_loopback_ports(1)
    tunnel = TunnelServer("127.0.0.1", tunnel_port)
    await tunnel.start()

    def via_tunnel(ep: Endpoint) -> tuple[str, int, bytes]:
        return "127.0.0.1", tunnel_port, f"CONNECT {ep.ip}:{ep.port}\n".encode()

    proxier = Proxier(dialer=via_tunnel)
    await proxier.start()
    rule = PortRule(
        key=KEY,
        listen=(ListenAddress("TCP", cluster_ip, 80, True),),
        endpoints=(Endpoint(backend_ip, port), Endpoint(dead_ip, port)),
        affinity_timeout=None,
    )
    await proxier.apply({KEY: rule})
    try:
        for _ in range(4):  # the round robin starts at the dead one every other time
            r, w = await asyncio.open_connection(cluster_ip, 80)
            async with asyncio.timeout(10):
                w.write(b"through the tunnel")
                assert await r.readexactly(18) == b"through the tunnel"
            w.close()
        assert proxier.snapshot()[0].errors >= 1
        assert tunnel.frontend is not None and tunnel.frontend.stats.connections_total >= 5
    finally:
        await proxier.stop()
        await tunnel.stop()
        server.close()


async def test_udp_session_moves_on_from_an_unreachable_endpoint(
    env: tuple[str, str, int],
) -> None:
    cluster_ip, backend_ip, port = env
    dead_ip = backend_ip.rsplit(".", 1)[0] + ".254"
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.t.sendto(b"echo:" + data, addr)

    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=(backend_ip, port))
    key = PortKey("ns", "dns", "", "UDP")
    proxier = Proxier(config=DataPathConfig(udp_idle_timeout=0.5), sweep_interval=0.1)
    await proxier.start()
    rule = PortRule(
        key=key,
        listen=(ListenAddress("UDP", cluster_ip, 53, True),),
        endpoints=(Endpoint(dead_ip, port), Endpoint(backend_ip, port)),  # dead one first
        affinity_timeout=None,
    )
    await proxier.apply({key: rule})
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect((cluster_ip, 53))
    try:
        replies = []
        async with asyncio.timeout(10):
            while not replies:
                await loop.sock_sendall(sock, b"q")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        replies.append(await loop.sock_recv(sock, 100))
        assert replies == [b"echo:q"]
        snap = proxier.snapshot()[0]
        assert snap.errors >= 1 and snap.connections_total >= 2  # the dead session, then one
        await eventually(
            lambda: proxier.snapshot()[0].connections_active == 0, what="idle session expired"
        )
    finally:
        sock.close()
        await proxier.stop()
        echo.close()


async def test_connect_timeout_moves_on_to_the_next_endpoint(env: tuple[str, str, int]) -> None:
    cluster_ip, backend_ip, port = env
    stuck_ip = backend_ip.rsplit(".", 1)[0] + ".253"
    # A listener whose accept queue is full: the kernel drops further SYNs, connects hang.
    stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stuck.bind((stuck_ip, port))
    stuck.listen(0)
    fillers = []
    for _ in range(4):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect((stuck_ip, port))
        fillers.append(s)

    async def hello(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"hello")
        await w.drain()
        w.close()

    server = await asyncio.start_server(hello, backend_ip, port)
    proxier = Proxier(config=DataPathConfig(connect_timeout=0.3))
    await proxier.start()
    rule = PortRule(
        key=KEY,
        listen=(ListenAddress("TCP", cluster_ip, 80, True),),
        endpoints=(Endpoint(stuck_ip, port), Endpoint(backend_ip, port)),
        affinity_timeout=None,
    )
    await proxier.apply({KEY: rule})
    try:
        for _ in range(2):  # one of them starts with the stuck endpoint
            r, w = await asyncio.open_connection(cluster_ip, 80)
            async with asyncio.timeout(10):
                assert await r.read() == b"hello"
            w.close()
        assert proxier.snapshot()[0].errors >= 1
    finally:
        await proxier.stop()
        server.close()
        stuck.close()
        for s in fillers:
            s.close()
