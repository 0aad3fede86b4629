"""UDP through the tunnel, in-process: a proxier whose endpoints are "on another host" (its
dialer sends every connection through a `TunnelServer`), a UDP echo pod behind it. The same
path carries a remote pod's UDP port in the overlay and a UDP Service's remote endpoints."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from k8semu.cluster.processes import free_loopback_ports
from k8semu.proxy import DataPathConfig, Endpoint, ListenAddress, PortKey, PortRule, Proxier
from k8semu.proxy.tunnel import TunnelServer
from k8semu.proxy.tunnelwire import frame, parse_request, udp_request, unframe

KEY = PortKey("ns", "dns", "", "UDP")


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.t.sendto(b"echo:" + data, addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.put_nowait(data)


async def _udp_service(
    config: DataPathConfig, tunnel_port: int, listen_ip: str, endpoints: tuple[Endpoint, ...]
) -> Proxier:
    """A started proxier serving a UDP Service on ``listen_ip:53`` whose ``endpoints`` are
    all on another host: it reaches every one through the tunnel at 127.0.0.1:``tunnel_port``."""

    def via_tunnel(ep: Endpoint) -> tuple[str, int, bytes]:
        return "127.0.0.1", tunnel_port, f"CONNECT {ep.ip}:{ep.port}\n".encode()

    proxier = Proxier(config=config, dialer=via_tunnel, sweep_interval=0.1)
    await proxier.start()
    rule = PortRule(
        key=KEY,
        listen=(ListenAddress("UDP", listen_ip, 53, True),),
        endpoints=endpoints,
        affinity_timeout=None,
    )
    await proxier.apply({KEY: rule})
    return proxier


async def _client() -> tuple[asyncio.DatagramTransport, _Client]:
    """A UDP client socket on 127.0.0.1 that queues what it receives."""
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(
        _Client, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )


@pytest.fixture
async def tunnel() -> AsyncIterator[TunnelServer]:
    (port,) = free_loopback_ports(1)
    server = TunnelServer("127.0.0.1", port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def test_udp_framing_and_request_line() -> None:
    buf = bytearray(frame(b"a") + frame(b"") + frame(b"xyz")[:3])
    assert unframe(buf) == [b"a", b""] and bytes(buf) == frame(b"xyz")[:3]
    buf += frame(b"xyz")[3:]
    assert unframe(buf) == [b"xyz"] and not buf
    assert udp_request(b"CONNECT 127.244.1.5:53\n") == b"CONNECT 127.244.1.5:53 udp\n"
    assert parse_request(b"CONNECT 127.244.1.5:53 udp\n") == ("127.244.1.5", 53, "UDP")
    assert parse_request(b"CONNECT 127.244.1.5:53\n") == ("127.244.1.5", 53, "TCP")
    with pytest.raises(ValueError, match="unknown transport"):
        parse_request(b"CONNECT 127.244.1.5:53 sctp\n")


async def test_udp_datagrams_cross_the_tunnel_and_a_dead_endpoint_is_left(
    tunnel: TunnelServer,
) -> None:
    rng = random.Random()
    listen_ip = f"127.96.{rng.randrange(240, 250)}.{rng.randrange(1, 254)}"
    pod_ip = f"127.244.{rng.randrange(240, 250)}.{rng.randrange(1, 254)}"
    dead_ip = pod_ip.rsplit(".", 1)[0] + ".254"
    port = rng.randrange(20000, 29000)
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(pod_ip, port))

    proxier = await _udp_service(
        DataPathConfig(udp_idle_timeout=0.5),
        tunnel.port,
        listen_ip,
        (Endpoint(dead_ip, port), Endpoint(pod_ip, port)),
    )
    assert not proxier.bind_errors
    client, proto = await _client()
    try:
        # The first session may go to the dead endpoint: the far side's ICMP error closes its
        # tunnel, the session ends, the next datagram opens one to the live endpoint.
        answered: list[bytes] = []
        async with asyncio.timeout(20):
            while not answered:
                client.sendto(b"ping", (listen_ip, 53))
                try:
                    async with asyncio.timeout(0.5):
                        answered.append(await proto.got.get())
                except TimeoutError:
                    continue
        assert answered == [b"echo:ping"]
        # Several datagrams, one session, each answered whole (frames keep their boundaries).
        # (1 byte and up: asyncio's sendto drops an empty datagram, on every path.)
        for i in range(1, 21):
            client.sendto(b"x" * i, (listen_ip, 53))
        got: list[bytes] = []
        async with asyncio.timeout(10):
            while len(got) < 20:
                reply = await proto.got.get()
                if reply != b"echo:ping":  # a ping above answered after its 0.5 s wait
                    got.append(reply)
        replies = sorted(got, key=len)
        assert replies == [b"echo:" + b"x" * i for i in range(1, 21)]
        (snap,) = proxier.snapshot()
        assert snap.bytes_out >= len(b"echo:ping") and snap.connections_total >= 1
        assert tunnel.frontend is not None and tunnel.frontend.stats.connections_total >= 1
    finally:
        client.close()
        await proxier.stop()
        echo.close()


async def test_a_udp_session_to_a_silent_tunnel_ends() -> None:
    """A tunnel that accepts but never answers: the session fails after the connect timeout
    (counted as an error) instead of holding the client's datagrams for as long as it sends."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w)
        await r.read()  # reads the CONNECT line and whatever follows, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    silent_port = server.sockets[0].getsockname()[1]
    rng = random.Random()
    listen_ip = f"127.96.{rng.randrange(240, 250)}.{rng.randrange(1, 254)}"

    proxier = await _udp_service(
        DataPathConfig(connect_timeout=0.3),
        silent_port,
        listen_ip,
        (Endpoint("127.244.250.1", 5353),),
    )
    client, _ = await _client()
    try:
        client.sendto(b"hello?", (listen_ip, 53))
        async with asyncio.timeout(10):
            while True:
                (snap,) = proxier.snapshot()
                if snap.connections_total == 1 and snap.errors >= 1:
                    break
                await asyncio.sleep(0.05)
        assert snap.connections_active == 0
        assert accepted  # it did reach the "tunnel"
    finally:
        client.close()
        await proxier.stop()
        server.close()
        for w in accepted:
            w.close()


async def test_idle_tunnelled_connections_are_closed_by_the_tunnel() -> None:
    """The tunnel sweeps its TCP connections with the proxy's idle timeout, as Service
    connections are swept: an idle one is closed; one in use is not."""
    rng = random.Random()
    pod_ip = f"127.244.{rng.randrange(240, 250)}.{rng.randrange(1, 254)}"

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(1000):
            w.write(data)
        w.close()

    backend = await asyncio.start_server(echo, pod_ip, 0)
    port = backend.sockets[0].getsockname()[1]
    (tunnel_port,) = free_loopback_ports(1)
    tunnel = TunnelServer(
        "127.0.0.1",
        tunnel_port,
        config=DataPathConfig(tcp_idle_timeout=0.5),
        sweep_interval=0.1,
    )
    await tunnel.start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", tunnel_port)
        w.write(f"CONNECT {pod_ip}:{port}\n".encode())
        async with asyncio.timeout(10):
            assert await r.readline() == b"OK\n"
            for _ in range(8):  # in use for longer than the idle timeout: kept
                w.write(b"ping")
                assert await r.readexactly(4) == b"ping"
                await asyncio.sleep(0.1)
            assert await r.read() == b""  # then idle: closed by the tunnel
        w.close()
    finally:
        await tunnel.stop()
        backend.close()
