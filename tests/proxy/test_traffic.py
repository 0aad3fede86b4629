"""Per-endpoint traffic counters in-process (a Proxier fed a static table): requests counted
per endpoint (HTTP/1.x keep-alive and pipelined requests one by one, other connections as
one request each), an endpoint's counters folded into its port's when it is gone, the
per-endpoint /metrics families, and the gRPC messages the HPA reads."""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import AsyncIterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from k8semu import metrics
from k8semu.proxy import Endpoint, ListenAddress, PortKey, PortRule, Proxier
from k8semu.proxy import metrics as proxy_metrics
from k8semu.proxy.server import snapshot_messages

from .conftest import eventually

KEY = PortKey("ns", "web", "http", "TCP")
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _request(path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: web\r\n\r\n".encode()


async def _http_backend(ip: str, port: int) -> asyncio.AbstractServer:
    """Answers every request (one per blank line) with RESPONSE, keep-alive."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        buf = b""
        while data := await r.read(65536):
            buf += data
            while b"\r\n\r\n" in buf:
                _, buf = buf.split(b"\r\n\r\n", 1)
                w.write(RESPONSE)
        w.close()

    return await asyncio.start_server(handle, ip, port)


def _rule(cluster_ip: str, endpoints: tuple[Endpoint, ...]) -> PortRule:
    return PortRule(
        key=KEY,
        listen=(ListenAddress("TCP", cluster_ip, 80, True),),
        endpoints=endpoints,
        affinity_timeout=None,
    )


@pytest.fixture
async def web() -> AsyncIterator[tuple[Proxier, str, tuple[Endpoint, Endpoint]]]:
    """A proxier on a random ClusterIP:80 with two HTTP endpoints."""
    rng = random.Random()
    cluster_ip = f"127.96.{rng.randrange(251, 254)}.{rng.randrange(1, 254)}"
    net = rng.randrange(240, 250)
    port = rng.randrange(20000, 29000)
    eps = (Endpoint(f"127.244.{net}.1", port), Endpoint(f"127.244.{net}.2", port))
    servers = [await _http_backend(ep.ip, ep.port) for ep in eps]
    proxier = Proxier(sweep_interval=0.1)
    await proxier.start()
    await proxier.apply({KEY: _rule(cluster_ip, eps)})
    assert not proxier.bind_errors
    try:
        yield proxier, cluster_ip, eps
    finally:
        await proxier.stop()
        for s in servers:
            s.close()


async def _exchange(w: asyncio.StreamWriter, r: asyncio.StreamReader, data: bytes, n: int) -> None:
    w.write(data)
    async with asyncio.timeout(10):
        await r.readexactly(len(RESPONSE) * n)


def _endpoints(proxier: Proxier) -> dict[str, tuple[int, int, int]]:
    """(connections_total, requests, http_requests) per endpoint "ip:port"."""
    (port,) = proxier.snapshot()
    return {
        f"{e.ip}:{e.port}": (e.connections_total, e.requests, e.http_requests)
        for e in port.endpoints
    }


async def test_requests_counted_per_endpoint(
    web: tuple[Proxier, str, tuple[Endpoint, Endpoint]],
) -> None:
    proxier, cluster_ip, (ep1, ep2) = web
    first, second = f"{ep1.ip}:{ep1.port}", f"{ep2.ip}:{ep2.port}"
    # Listed before any traffic, with zeros: "no traffic" is not "not an endpoint here".
    assert _endpoints(proxier) == {first: (0, 0, 0), second: (0, 0, 0)}

    # Round robin: the first connection goes to ep1, keep-alive, 5 requests then 3 pipelined.
    r, w = await asyncio.open_connection(cluster_ip, 80)
    for i in range(5):
        await _exchange(w, r, _request(f"/{i}"), 1)
    await _exchange(w, r, _request("/a") + _request("/b") + _request("/c"), 3)
    # A POST whose body comes in a later read: the body's read is not a request.
    w.write(b"POST /form HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\n")
    await asyncio.sleep(0.05)
    await _exchange(w, r, b"\r\nbody", 1)
    w.close()

    # The second connection (ep2) is not HTTP: one request for the whole connection.
    r2, w2 = await asyncio.open_connection(cluster_ip, 80)
    await _exchange(w2, r2, b"\x16\x03\x01 hello\r\n\r\n", 1)
    w2.close()

    await eventually(
        lambda: _endpoints(proxier) == {first: (1, 9, 9), second: (1, 1, 0)},
        what=f"per-endpoint counters (now {_endpoints(proxier)})",
    )
    (port,) = proxier.snapshot()
    assert port.http_requests == 9 and port.connections_total == 2
    assert port.bytes_in == sum(e.bytes_in for e in port.endpoints) > 0
    await eventually(
        lambda: all(e.connections_active == 0 for e in proxier.snapshot()[0].endpoints),
        what="connections closed",
    )

    # What the gRPC service sends the HPA: the same, per endpoint.
    (message,) = snapshot_messages(proxier, "ns", "web")
    by_ip = {e.ip: e for e in message.endpoints}
    assert by_ip[ep1.ip].requests_total == 9 and by_ip[ep1.ip].http_requests_total == 9
    assert by_ip[ep2.ip].requests_total == 1 and by_ip[ep2.ip].port == ep2.port

    # ep1 leaves: its counters move into the port's totals, which stay where they were.
    await proxier.apply({KEY: _rule(cluster_ip, (ep2,))})
    await eventually(lambda: first not in _endpoints(proxier), what="ep1 forgotten")
    (port,) = proxier.snapshot()
    assert port.http_requests == 9 and port.bytes_in > 0


async def test_a_draining_endpoint_keeps_counting(
    web: tuple[Proxier, str, tuple[Endpoint, Endpoint]],
) -> None:
    proxier, cluster_ip, (ep1, ep2) = web
    r, w = await asyncio.open_connection(cluster_ip, 80)  # to ep1
    await _exchange(w, r, _request(), 1)
    await proxier.apply({KEY: _rule(cluster_ip, (ep2,))})
    await asyncio.sleep(0.3)  # a few sweeps: ep1 has a connection open, so it stays listed
    await _exchange(w, r, _request(), 1)
    assert _endpoints(proxier)[f"{ep1.ip}:{ep1.port}"] == (1, 2, 2)
    w.close()
    await eventually(
        lambda: f"{ep1.ip}:{ep1.port}" not in _endpoints(proxier), what="ep1 forgotten"
    )
    assert proxier.snapshot()[0].http_requests == 2


async def test_per_endpoint_metrics_families_parse(
    web: tuple[Proxier, str, tuple[Endpoint, Endpoint]],
) -> None:
    proxier, cluster_ip, (ep1, _) = web
    r, w = await asyncio.open_connection(cluster_ip, 80)
    await _exchange(w, r, _request() + _request(), 2)
    w.close()
    before = proxy_metrics.PORTS.proxier
    proxy_metrics.PORTS.proxier = weakref.ref(proxier)
    try:
        text = generate_latest(metrics.snapshot()).decode()
    finally:
        proxy_metrics.PORTS.proxier = before
    samples = {
        (s.name, s.labels.get("endpoint", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("service") == "web"
    }
    ep = f"{ep1.ip}:{ep1.port}"
    assert samples[("k8semu_proxy_endpoint_requests_total", ep)] == 2
    assert samples[("k8semu_proxy_endpoint_http_requests_total", ep)] == 2
    assert samples[("k8semu_proxy_endpoint_connections_total", ep)] == 1
    assert samples[("k8semu_proxy_endpoint_received_bytes_total", ep)] > 0
    assert ("k8semu_proxy_endpoint_connections_active", ep) in samples
    assert samples[("k8semu_proxy_http_requests_total", "")] == 2
