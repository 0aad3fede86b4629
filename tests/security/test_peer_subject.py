"""`transport.peer_subject`: who a verified client certificate names, for gRPC handlers and
aiohttp requests alike (the API server's authenticator reads CN as the user, O as groups)."""

from __future__ import annotations

import ssl

import aiohttp
import grpc
from aiohttp import web

from k8semu import transport
from tests.security.conftest import PKIFiles


def _client(pki_: PKIFiles, user: str | None) -> transport.ClientTLS:
    if user is None:
        return transport.ClientTLS(ca_file=pki_.ca)
    files = pki_[user]
    return transport.ClientTLS(ca_file=pki_.ca, cert_file=files.cert, key_file=files.key)


def _server_tls(pki_: PKIFiles) -> transport.ServerTLS:
    server = pki_["server"]
    return transport.ServerTLS(cert_file=server.cert, key_file=server.key, client_ca_file=pki_.ca)


async def test_grpc_handlers_see_the_client_certificate_subject(cluster_pki: PKIFiles) -> None:
    async def whoami(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        subject = transport.peer_subject(context)
        return repr(subject).encode()

    handler = grpc.method_handlers_generic_handler(
        "test.Who", {"Am": grpc.unary_unary_rpc_method_handler(whoami)}
    )
    srv, _ = transport.server()
    srv.add_generic_rpc_handlers([handler])
    port = transport.bind(srv, "127.0.0.1:0", flag="test", tls=_server_tls(cluster_pki))
    await srv.start()
    try:
        async with transport.channel(f"127.0.0.1:{port}", _client(cluster_pki, "node1")) as ch:
            answer = await ch.unary_unary("/test.Who/Am")(b"", timeout=10)
        expected = transport.PeerSubject("system:node:node1", ("system:nodes",))
        assert answer == repr(expected).encode()
    finally:
        await srv.stop(0)


async def test_rest_requests_see_the_client_certificate_subject(cluster_pki: PKIFiles) -> None:
    async def whoami(request: web.Request) -> web.Response:
        return web.Response(text=repr(transport.peer_subject(request)))

    app = web.Application()
    app.router.add_get("/", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    context = transport.server_ssl_context(_server_tls(cluster_pki), alpn=["http/1.1"])
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        answers = {}
        for user in ("admin", None):
            ctx: ssl.SSLContext = transport.client_ssl_context(_client(cluster_pki, user))
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"https://127.0.0.1:{port}/", ssl=ctx) as response,
            ):
                answers[user] = await response.text()
        admin = transport.PeerSubject("kubernetes-admin", ("system:masters",))
        assert answers == {"admin": repr(admin), None: "None"}
    finally:
        await runner.cleanup()
