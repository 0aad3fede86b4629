"""End to end: Ingresses written to a real API server, served by a real `k8semu proxy`
process with `--ingress-port` (node 127.0.1.3), to HTTP backends this test runs on
127.244.x.y: routing by host and path, the forwarded headers, a streamed request body, an
endpoint that refuses connections routed around, the status written, and a bad Ingress
refused with Kubernetes' message naming the field (nothing written)."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from k8semu import pki
from k8semu.api import manifest
from k8semu.client import Client, Invalid, NotFound
from k8semu.cluster.component import ComponentProcess
from k8semu.cluster.processes import free_loopback_ports
from k8semu.pb.api.v1 import core_pb2, networking_pb2
from k8semu.proxy import get_metrics
from tests.support.apiserver import APIServerProcess

from .conftest import Addresses, endpoints, eventually, service

pytestmark = pytest.mark.slow

NODE_IP = "127.0.1.3"
OTHER_NODE_IP = "127.0.1.4"
TARGET = 8080
BIG = 3 * 1024 * 1024 + 1


class IngressProxy(ComponentProcess):
    component = "proxy"

    def __init__(
        self, apiserver: str, log_path: Any, ingress_port: int = 0, *, node_ip: str = NODE_IP
    ) -> None:
        self.ingress_port = ingress_port or free_loopback_ports(1)[0]
        self.tls_port = free_loopback_ports(1)[0]
        super().__init__(
            "proxy",
            [
                "--server", apiserver,
                "--node-name", "ingress-node",
                "--node-ip", node_ip,
                "--ingress-port", str(self.ingress_port),
                "--ingress-tls-port", str(self.tls_port),
                    "--connect-timeout", "1",
            ],
            log_path,
        )  # fmt: skip


@pytest.fixture(scope="module")
def proxy_process(
    apiserver: APIServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IngressProxy]:
    p = IngressProxy(apiserver.address, tmp_path_factory.mktemp("ingress") / "proxy.log")
    try:
        p.start()
        p.wait_serving()
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def proxy(proxy_process: IngressProxy) -> str:
    return f"http://{NODE_IP}:{proxy_process.ingress_port}"


@pytest.fixture
async def backends() -> AsyncIterator[list[web.AppRunner]]:
    runners: list[web.AppRunner] = []
    try:
        yield runners
    finally:
        for r in runners:
            await r.cleanup()


async def _echo(runners: list[web.AppRunner], ip: str, name: str) -> None:
    """An HTTP server answering JSON: its name, the path, the headers and the body's size."""

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/big":  # a large sized answer, streamed through
            return web.Response(body=b"y" * BIG)
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        answer = {"name": name, "path": request.path_qs, "headers": dict(request.headers)}
        return web.json_response(answer | {"size": size})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, ip, TARGET).start()
    runners.append(runner)


async def _app(
    client: Client, ns: str, name: str, addresses: Addresses, runners: list[web.AppRunner], n: int
) -> list[str]:
    ips = [addresses.pod_ip() for _ in range(n)]
    for i, ip in enumerate(ips):
        await _echo(runners, ip, f"{name}-{i}")
    ports = [{"name": "http", "port": 80, "targetPort": TARGET}]
    await client.create(service(ns, name, addresses.cluster_ip(), ports))
    await client.create(endpoints(ns, name, ips, [{"name": "http", "port": TARGET}]))
    return ips


def _ingress(ns: str, name: str, spec: dict[str, Any]) -> networking_pb2.Ingress:
    obj = manifest.from_dict(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }
    )
    assert isinstance(obj, networking_pb2.Ingress)
    return obj


async def _class(client: Client) -> None:
    ic = networking_pb2.IngressClass()
    ic.metadata.name = "k8semu"
    ic.metadata.annotations["ingressclass.kubernetes.io/is-default-class"] = "true"
    ic.spec.controller = "k8semu.io/ingress"
    try:
        await client.get(networking_pb2.IngressClass, "k8semu")
    except NotFound:
        await client.create(ic)


def _path(path: str, svc: str, path_type: str = "Prefix") -> dict[str, Any]:
    backend = {"service": {"name": svc, "port": {"name": "http"}}}
    return {"path": path, "pathType": path_type, "backend": backend}


async def _get(
    session: aiohttp.ClientSession, base: str, host: str, path: str, **kw: Any
) -> tuple[int, Any]:
    async with session.request(
        kw.pop("method", "GET"), base + path, headers={"Host": host}, **kw
    ) as r:
        text = await r.text()
        return r.status, (json.loads(text) if r.status == 200 else text)


@pytest.fixture
async def two_webs(
    client: Client, namespace: str, addresses: Addresses, backends: list[web.AppRunner]
) -> None:
    """The k8semu class, and a Service "web" with two live endpoints in `namespace`."""
    await _class(client)
    await _app(client, namespace, "web", addresses, backends, 2)


async def test_host_and_path_routing_headers_body_and_status(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: list[web.AppRunner],
    proxy: str,
    two_webs: None,
) -> None:
    await _app(client, namespace, "api", addresses, backends, 1)
    spec = {
        "rules": [
            {"host": "shop.example.com", "http": {"paths": [_path("/", "web")]}},
            {"host": "*.example.com", "http": {"paths": [_path("/api", "api")]}},
            {"http": {"paths": [_path("/v1", "api", "Exact")]}},
        ]
    }
    created = await client.create(_ingress(namespace, "routes", spec))
    assert created.spec.ingress_class_name == "k8semu"  # the default class, by admission
    async with aiohttp.ClientSession() as s:

        async def routed() -> bool:
            status, _ = await _get(s, proxy, "shop.example.com", "/")
            return status == 200

        await eventually(routed, what="the ingress serves the new Ingress")
        seen = set()
        for _ in range(4):
            status, body = await _get(s, proxy, "shop.example.com", "/cart?x=1")
            assert status == 200 and body["path"] == "/cart?x=1"
            seen.add(body["name"])
        assert seen == {"web-0", "web-1"}  # the L4 proxy's round robin
        headers = body["headers"]
        assert headers["X-Forwarded-Host"] == "shop.example.com"
        assert headers["X-Forwarded-Proto"] == "http"
        assert headers["X-Forwarded-For"] == "127.0.0.1"
        assert headers["Host"] == "shop.example.com"
        status, body = await _get(s, proxy, "a.example.com:80", "/api/items")
        assert (status, body["name"]) == (200, "api-0")
        assert (await _get(s, proxy, "a.example.com", "/other"))[0] == 404
        assert (await _get(s, proxy, "b.a.example.com", "/api"))[0] == 404  # one label only
        status, body = await _get(s, proxy, "10.1.2.3", "/v1")
        assert (status, body["name"]) == (200, "api-0")
        assert (await _get(s, proxy, "10.1.2.3", "/v1/x"))[0] == 404  # Exact

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield b"x" * 65536

        status, body = await _get(s, proxy, "shop.example.com", "/up", method="POST", data=chunks())
        assert (status, body["size"]) == (200, 64 * 65536)
        async with s.get(proxy + "/big", headers={"Host": "shop.example.com"}) as r:
            assert (r.status, len(await r.read())) == (200, BIG)
        async with s.head(proxy + "/big", headers={"Host": "shop.example.com"}) as r:
            assert (r.status, r.headers["Content-Length"], await r.read()) == (200, str(BIG), b"")

    async def listed() -> bool:
        ing = await client.get(networking_pb2.Ingress, "routes", namespace=namespace)
        return [i.ip for i in ing.status.load_balancer.ingress] == [NODE_IP]

    await eventually(listed, what="the node's IP in the Ingress's status")


async def test_refused_endpoint_is_routed_around_and_missing_service_is_503(
    client: Client, namespace: str, backends: list[web.AppRunner], proxy: str, two_webs: None
) -> None:
    await backends[-1].cleanup()  # web-1 goes away, still listed as ready
    backends.pop()
    spec = {
        "ingressClassName": "k8semu",
        "rules": [
            {
                "host": "r.example.com",
                "http": {"paths": [_path("/", "web"), _path("/gone", "nowhere")]},
            }
        ],
    }
    await client.create(_ingress(namespace, "around", spec))
    async with aiohttp.ClientSession() as s:

        async def routed() -> bool:
            return (await _get(s, proxy, "r.example.com", "/"))[0] == 200

        await eventually(routed, what="the ingress serves the new Ingress")
        for _ in range(6):
            status, body = await _get(s, proxy, "r.example.com", "/")
            assert (status, body["name"]) == (200, "web-0")
        assert (await _get(s, proxy, "r.example.com", "/gone"))[0] == 503


async def test_bad_ingress_is_refused_naming_the_field(client: Client, namespace: str) -> None:
    bad = {
        "rules": [
            {
                "host": "1.2.3.4",
                "http": {
                    "paths": [
                        {"path": "relative", "pathType": "Prefix", "backend": {}},
                        {"path": "/x", "backend": {"service": {"name": "s"}}},
                    ]
                },
            }
        ]
    }
    with pytest.raises(Invalid) as err:
        await client.create(_ingress(namespace, "bad", bad))
    text = str(err.value)
    where = "spec.rules[0]"
    assert f'{where}.host: Invalid value: "1.2.3.4": must be a DNS name, not an IP address' in text
    assert f'{where}.http.paths[0].path: Invalid value: "relative": must be an absolute path' in (
        text
    )
    assert f"{where}.http.paths[0].backend: Invalid value: " in text
    assert "resource or service backend is required" in text
    assert f"{where}.http.paths[1].pathType: Required value: pathType must be specified" in text
    assert "port name or number is required" in text
    with pytest.raises(Invalid, match="either `defaultBackend` or `rules` must be specified"):
        await client.create(_ingress(namespace, "empty", {}))
    for name in ("bad", "empty"):
        with pytest.raises(NotFound):
            await client.get(networking_pb2.Ingress, name, namespace=namespace)


async def test_a_taken_ingress_port_is_reported_and_bound_once_free(
    apiserver: APIServerProcess, tmp_path: Path
) -> None:
    port = free_loopback_ports(1)[0]
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind((OTHER_NODE_IP, port))
    squatter.listen()
    p = IngressProxy(apiserver.address, tmp_path / "proxy.log", port, node_ip=OTHER_NODE_IP)
    try:
        p.start()
        p.wait_serving()
        want = f"ingress: cannot listen on {OTHER_NODE_IP}:{port}"

        async def reported() -> bool:
            metrics = await get_metrics(p.address)
            return any(e.startswith(want) for e in metrics.bind_errors)

        await eventually(reported, what="the taken ingress port in the metrics")
        squatter.close()

        async def bound() -> bool:
            metrics = await get_metrics(p.address)
            if metrics.bind_errors:
                return False
            async with aiohttp.ClientSession() as s:
                return (await _get(s, f"http://{OTHER_NODE_IP}:{port}", "x", "/"))[0] == 404

        await eventually(bound, what="the ingress bound once the port is free")
    finally:
        squatter.close()
        p.close()


async def test_tls_with_the_certificate_sni_picks(
    client: Client,
    namespace: str,
    proxy_process: IngressProxy,
    two_webs: None,
    tmp_path: Path,
) -> None:
    ca = pki.CertificateAuthority.load_or_create(tmp_path)
    cert, key = ca.issue(pki.CertSpec("s", "secure.example.com", hosts=("secure.example.com",)))
    secret = core_pb2.Secret(type="kubernetes.io/tls")
    secret.metadata.name, secret.metadata.namespace = "secure-tls", namespace
    secret.data["tls.crt"] = cert.public_bytes(serialization.Encoding.PEM)
    secret.data["tls.key"] = pki.key_pem(key)
    await client.create(secret)
    spec = {
        "tls": [{"hosts": ["secure.example.com"], "secretName": "secure-tls"}],
        "rules": [{"host": "secure.example.com", "http": {"paths": [_path("/", "web")]}}],
    }
    await client.create(_ingress(namespace, "secure", spec))
    trusted = ssl.create_default_context(cafile=str(ca.cert_path))
    base = f"https://{NODE_IP}:{proxy_process.tls_port}"

    async def get(context: ssl.SSLContext, name: str) -> tuple[int, Any]:
        connector = aiohttp.TCPConnector(ssl=context)
        url, headers = base + "/x", {"Host": name}
        async with (
            aiohttp.ClientSession(connector=connector) as s,
            s.get(url, headers=headers, server_hostname=name) as r,
        ):
            return r.status, await r.json()

    async def served() -> bool:
        try:
            return (await get(trusted, "secure.example.com"))[0] == 200
        except aiohttp.ClientSSLError:
            return False  # the default certificate until the Secret is loaded

    await eventually(served, what="HTTPS with the Ingress's certificate")
    status, body = await get(trusted, "secure.example.com")
    assert status == 200
    assert body["headers"]["X-Forwarded-Proto"] == "https"
    assert body["headers"]["X-Forwarded-Port"] == str(proxy_process.tls_port)
    with pytest.raises(aiohttp.ClientSSLError):  # no certificate for it: the default one
        await get(trusted, "other.example.com")
