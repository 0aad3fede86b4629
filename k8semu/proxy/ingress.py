"""The built-in ingress controller's data path: an HTTP/1.1 reverse proxy on the node's
IP (`--ingress-port`), part of the node's proxy process.

A request is matched by `Routes` (k8semu.proxy.ingress_table: host, then path) to a Service
port, whose ready endpoints and round robin are the L4 proxy's own (`Proxier.frontends`:
one copy, one balancer, and the endpoint's request counter the HPA reads counts ingress
requests too). The request goes to the chosen endpoint over a pooled keep-alive connection
(aiohttp), with `X-Forwarded-For` (appended), `-Host`, `-Proto` and `-Port`; request and
response bodies stream both ways (chunked or sized as the sender sent them); hop-by-hop
headers are dropped. An endpoint that refuses the connection is skipped for the next one
(nothing of the request was sent); one that fails later ends the request with 502.

Answers of its own: 404 when no route matches (no defaultBackend), 503 when the backend's
Service, port or ready endpoints are missing, 502 when no endpoint could be reached.
With a TLS port, the same on a TLS listener whose certificate SNI picks
(k8semu.proxy.ingress_tls), X-Forwarded-Proto https. Not done: WebSocket/Upgrade, endpoints
reached through the cross-host tunnel (a remote endpoint is skipped).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from k8semu.log import get_logger
from k8semu.proxy.datapath import Frontend
from k8semu.proxy.ingress_table import Backend, Routes, path_of
from k8semu.proxy.ingress_tls import Certificates
from k8semu.proxy.proxier import Proxier

log = get_logger(__name__)

DEFAULT_INGRESS_PORT = 80
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
    )
)
_CHUNK = 64 * 1024


def _plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n")


def forwarded_headers(request: web.BaseRequest, port: int) -> CIMultiDict[str]:
    """The request's end-to-end headers plus the X-Forwarded-* ones."""
    headers = request.headers.copy()
    for name in [n for n in headers if n.lower() in _HOP_BY_HOP]:
        headers.popall(name, None)
    host = request.headers.get("Host", "")
    client = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {client}" if prior else client
    headers["X-Forwarded-Host"] = host
    headers["X-Forwarded-Proto"] = "https" if request.secure else "http"
    headers["X-Forwarded-Port"] = str(port)
    headers["Host"] = host
    return headers


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the ingress listens: HTTP on `host:port`, HTTPS on `host:tls_port` (0: none)."""

    host: str
    port: int
    tls_port: int = 0


class IngressServer:
    """`await start()` (raises OSError when the address is taken), `set_routes(routes)` as
    often as they change, `await stop()`."""

    def __init__(
        self, proxier: Proxier, listen: Listen, certificates: Certificates | None = None
    ) -> None:
        self.proxier, self.certificates = proxier, certificates
        # The ports become the bound ones once listening (0 in `listen`: any free one).
        self.host, self.port, self.tls_port = listen.host, listen.port, listen.tls_port
        self.routes = Routes()
        self._server: asyncio.AbstractServer | None = None
        self._tls_server: asyncio.AbstractServer | None = None
        self._web: web.Server | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._server is not None and (not self.tls_port or self._tls_server is not None)

    def set_routes(self, routes: Routes) -> None:
        self.routes = routes

    async def start(self) -> None:
        """Bind what is not bound yet (raises OSError); the controller retries."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, use_dns_cache=False)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
        if self._web is None:
            self._web = web.Server(self._handle, access_log=None)
        if self._server is None:
            self._server, self.port = await self._listen(self.port, None)
            log.info("ingress listening", address=self.address)
        if self.tls_port and self._tls_server is None:
            tls = self.certificates.context if self.certificates is not None else None
            self._tls_server, self.tls_port = await self._listen(self.tls_port, tls)
            log.info("ingress listening (TLS)", address=f"{self.host}:{self.tls_port}")

    async def _listen(
        self, port: int, tls: ssl.SSLContext | None
    ) -> tuple[asyncio.AbstractServer, int]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
            sock.setblocking(False)
            assert self._web is not None
            loop = asyncio.get_running_loop()
            server = await loop.create_server(self._web, sock=sock, backlog=4096, ssl=tls)
        except BaseException:
            sock.close()
            raise
        return server, sock.getsockname()[1]

    async def stop(self) -> None:
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
        self._server = self._tls_server = None
        if self._web is not None:
            await self._web.shutdown(1.0)
            self._web = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        backend = self.routes.match(request.headers.get("Host", ""), path_of(request.raw_path))
        if backend is None:
            return _plain(404, "404 Not Found: no ingress rule matches")
        frontend = self.proxier.frontends.get(backend.key) if backend.key else None
        if frontend is None or not frontend.balancer.endpoints:
            return _plain(503, f"503 Service Unavailable: {_named(backend)} has no ready endpoint")
        try:
            return await self._forward(request, backend, frontend)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.debug("ingress request failed", backend=_named(backend), error=str(exc))
            raise web.HTTPBadGateway(text=f"502 Bad Gateway: {_named(backend)}\n") from None

    async def _forward(
        self, request: web.BaseRequest, backend: Backend, frontend: Frontend
    ) -> web.StreamResponse:
        assert self._session is not None
        loop = asyncio.get_running_loop()
        client_ip = request.remote or ""
        headers = forwarded_headers(request, self.tls_port if request.secure else self.port)
        body: Any = request.content if request.body_exists else None
        for ep in frontend.balancer.candidates(client_ip, loop.time()):
            host, port, preamble = frontend.dialer(ep)
            if preamble:  # a remote endpoint behind the tunnel: not reachable from here
                continue
            url = URL.build(scheme="http", host=host, port=port, encoded=True).join(
                URL(request.raw_path, encoded=True)
            )
            try:
                upstream = await self._session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=frontend.config.connect_timeout
                    ),
                )
            except (TimeoutError, aiohttp.ClientConnectorError):
                frontend.stats.errors += 1
                continue  # nothing of the request was sent: the next endpoint may take it
            frontend.balancer.connected(client_ip, ep, loop.time())
            frontend.stats_of(ep).http_requests += 1
            async with upstream:
                return await _relay(request, upstream)
        frontend.failed(len(frontend.balancer.endpoints))
        return _plain(502, f"502 Bad Gateway: no endpoint of {_named(backend)} accepted")


async def _relay(request: web.BaseRequest, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """The upstream's answer to the client: a small sized body read whole and sent with
    the head in one write; anything else streamed."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.headers.items():
        if name.lower() not in _HOP_BY_HOP:
            headers.add(name, value)
    length = upstream.content_length
    if (
        length is not None
        and length <= _CHUNK
        and request.method != "HEAD"
        and (upstream.status >= 200 and upstream.status not in (204, 304))
    ):
        body = await upstream.read()
        headers.popall("Content-Length", None)
        return web.Response(
            status=upstream.status, reason=upstream.reason, headers=headers, body=body
        )
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    await response.prepare(request)
    async for chunk in upstream.content.iter_chunked(_CHUNK):
        await response.write(chunk)
    await response.write_eof()
    return response


def _named(backend: Backend) -> str:
    return f"service {backend.namespace}/{backend.service}:{backend.port}"
