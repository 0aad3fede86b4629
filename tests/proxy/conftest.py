"""Fixtures: two `k8semu proxy` processes on the shared `apiserver` (node-1 on 127.0.1.1,
node-2 on 127.0.1.2); backends are small asyncio servers in the test process on
127.244.x.y addresses.

Addresses are randomized per module (ClusterIPs 127.96.X.*, pod IPs 127.244.Y.*, NodePorts),
so concurrent runs on one host do not share SO_REUSEPORT listeners by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from k8semu.api import manifest
from k8semu.cluster.component import ComponentProcess
from k8semu.cluster.processes import free_loopback_ports
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.proxy.v1 import proxy_pb2
from k8semu.proxy import get_metrics
from tests.support.apiserver import APIServerProcess
from tests.support.poll import Eventually

NODE_IPS = ("127.0.1.1", "127.0.1.2")
HALF_OPEN_TIMEOUT = 2.0
UDP_IDLE_TIMEOUT = 2.0
DEADLINE = 60.0  # a wait on real processes beside busy test workers (tests/support/poll.py)
# Addresses: what a module binds on its blocks' address .0 to claim them (unprivileged, and
# above the usual ephemeral range: never a connection's source port).
CLAIM_PORT = 65535


class Addresses:
    """Unique-per-module addresses and ports: a block of ClusterIPs (127.96.X.*) and one of
    pod IPs (127.244.Y.*) no other module on this host uses meanwhile, claimed by binding
    their address .0 (never handed out) to `CLAIM_PORT` without SO_REUSEADDR until `close()`.
    Picking at random only, two modules running at once (xdist workers, two test runs) shared
    a block now and then: a backend's bind failed (address in use), or the proxies of both
    shared a ClusterIP listener (SO_REUSEPORT) and one module's connections reached the
    other's proxy."""

    def __init__(self) -> None:
        rng = random.Random()
        self._claims: list[socket.socket] = []
        self._cluster = self._claim(rng, "127.96.{}.0", range(100, 250))
        self._pods = self._claim(rng, "127.244.{}.0", range(200, 250))
        self._next_cluster = 0
        self._next_pod = 0
        self._node_ports = rng.sample(range(30000, 32768), 120)  # room for `--count` loops

    def cluster_ip(self) -> str:
        self._next_cluster += 1
        return f"127.96.{self._cluster}.{self._next_cluster}"

    def pod_ip(self) -> str:
        self._next_pod += 1
        return f"127.244.{self._pods}.{self._next_pod}"

    def lb_ip(self) -> str:
        return f"127.100.0.{200 + self._cluster % 50}"

    def node_port(self) -> int:
        return self._node_ports.pop()

    def _claim(self, rng: random.Random, pattern: str, octets: range) -> int:
        for octet in rng.sample(octets, len(octets)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((pattern.format(octet), CLAIM_PORT))
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            self._claims.append(sock)
            return octet
        raise RuntimeError(f"every block {pattern.format('*')} is claimed by another module")

    def close(self) -> None:
        for sock in self._claims:
            sock.close()
        self._claims.clear()


@pytest.fixture(scope="module")
def addresses() -> Iterator[Addresses]:
    claimed = Addresses()
    try:
        yield claimed
    finally:
        claimed.close()


class ProxyProcess(ComponentProcess):
    """One `k8semu proxy` subprocess, ended by pid; its health and metrics service is on
    `metrics_address`."""

    component = "proxy"

    def __init__(self, apiserver: str, node: int, log_path: Path) -> None:
        self.apiserver = apiserver
        self.node_name = f"node-{node + 1}"
        self.node_ip = NODE_IPS[node]
        self.metrics_port, self.tunnel_port = free_loopback_ports(2)
        super().__init__(
            "proxy",
            [
                "--server", apiserver,
                "--node-name", self.node_name,
                "--node-ip", self.node_ip,
                "--tunnel-port", str(self.tunnel_port),
                "--tcp-half-open-timeout", str(HALF_OPEN_TIMEOUT),
                "--udp-idle-timeout", str(UDP_IDLE_TIMEOUT),
                "--connect-timeout", "1",
                "--log-level", "info",
            ],
            log_path,
            port=self.metrics_port,
        )  # fmt: skip
        self.metrics_address = self.address

    async def metrics(self, namespace: str = "", service: str = "") -> proxy_pb2.ProxyMetrics:
        return await get_metrics(self.metrics_address, namespace=namespace, service=service)


@pytest.fixture(scope="module")
def proxies(
    apiserver: APIServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ProxyProcess]]:
    base = tmp_path_factory.mktemp("proxies")
    procs = [ProxyProcess(apiserver.address, i, base / f"proxy-{i + 1}.log") for i in range(2)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.wait_serving()
        yield procs
    finally:
        for p in procs:
            p.close()


@pytest.fixture
def live_proxies(proxies: list[ProxyProcess]) -> list[ProxyProcess]:
    for p in proxies:
        if not p.running:
            p.start()
            p.wait_serving()
    return proxies


# -- backends --------------------------------------------------------------------------------


@dataclass
class Backends:
    """Servers this test started; closed at teardown."""

    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    transports: list[Any] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def http(self, ip: str, port: int, name: str) -> None:
        """HTTP/1.1 keep-alive; every answer's body is `name`; 400 and close on garbage."""
        body = name.encode()

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while True:
                    line = await r.readline()
                    if not line:
                        break
                    if b" HTTP/1." not in line or line.split(b" ", 1)[0] not in (b"GET", b"POST"):
                        w.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                        break
                    close = False
                    while True:
                        header = await r.readline()
                        if header in (b"\r\n", b"\n", b""):
                            break
                        close = close or header.lower().startswith(b"connection: close")
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    await w.drain()
                    if close:
                        break
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                w.close()

        self.servers.append(await asyncio.start_server(handle, ip, port))

    async def silent(self, ip: str, port: int) -> None:
        """Reads, never answers, never closes (until teardown)."""
        stop = self.stop

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while await r.read(65536):
                    pass
            await stop.wait()
            w.close()

        self.servers.append(await asyncio.start_server(handle, ip, port))

    async def udp_echo(self, ip: str, port: int, name: str) -> None:
        prefix = name.encode() + b":"

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.transport.sendto(prefix + data, addr)

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=(ip, port))
        self.transports.append(transport)

    async def close(self) -> None:
        self.stop.set()
        for t in self.transports:
            t.close()
        for s in self.servers:
            s.close()
        await asyncio.sleep(0)


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    b = Backends()
    try:
        yield b
    finally:
        await b.close()


# -- client helpers --------------------------------------------------------------------------


async def http_get(host: str, port: int, *, source: str | None = None) -> str:
    """One request on a new connection; the body (which backend answered)."""
    async with asyncio.timeout(5):
        r, w = await asyncio.open_connection(host, port, local_addr=(source, 0) if source else None)
        try:
            w.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = await r.read()
        finally:
            w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"bad answer {data[:80]!r}")
    return body.decode()


class KeepAlive:
    """One keep-alive connection for several requests."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    @classmethod
    async def open(cls, host: str, port: int) -> KeepAlive:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        return cls(r, w)

    async def get(self) -> str:
        async with asyncio.timeout(5):
            self.w.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            head = await self.r.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            return (await self.r.readexactly(length)).decode()

    def close(self) -> None:
        self.w.close()


# A connection refused or cut while the proxy programs a Service counts as not yet.
eventually = Eventually(
    timeout=DEADLINE,
    retry_on=(OSError, TimeoutError, ConnectionError, asyncio.IncompleteReadError),
)


def service(
    namespace: str,
    name: str,
    cluster_ip: str,
    ports: list[dict[str, Any]],
    *,
    type_: str = "ClusterIP",
    affinity: str = "None",
) -> core_pb2.Service:
    obj = manifest.decode(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "type": type_,
                "clusterIP": cluster_ip,
                "ports": ports,
                "sessionAffinity": affinity,
            },
        },
        core_pb2.Service,
    )
    assert isinstance(obj, core_pb2.Service)
    return obj


def endpoints(
    namespace: str, name: str, ips: list[str], ports: list[dict[str, Any]]
) -> core_pb2.Endpoints:
    obj = manifest.decode(
        {
            "metadata": {"name": name, "namespace": namespace},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips], "ports": ports}] if ips else [],
        },
        core_pb2.Endpoints,
    )
    assert isinstance(obj, core_pb2.Endpoints)
    return obj


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    """The in-process data path tests run on asyncio's loop and on uvloop (they differ:
    uvloop starts reading after connection_made even when it paused); the rest on asyncio's."""
    if not item.nodeid.split("::")[0].endswith("test_datapath.py"):
        return {"asyncio": asyncio.new_event_loop}
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
