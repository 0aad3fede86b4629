"""The proxy tunnel over mutual TLS, in-process (issue 16 item 7): the dialing side (a
Proxier whose endpoints are on "another host") splices TCP and relays UDP through a TLS
tunnel with a proxy's certificate, on asyncio's loop and on uvloop (the components' loop);
the tunnel refuses a target that is not one of its pod IPs (the proxy moves on to the next
endpoint), a caller with a cluster certificate that is not a proxy's, and one of another CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from k8semu import pki, transport
from k8semu.cluster.processes import free_loopback_ports
from k8semu.proxy import DataPathConfig, Endpoint, ListenAddress, PortKey, PortRule, Proxier
from k8semu.proxy.tunnel import TunnelServer
from tests.security.conftest import PKIFiles

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
PROXY = "system:kube-proxy"


@dataclasses.dataclass(frozen=True)
class Certs:
    server: transport.ServerTLS
    proxy: transport.ClientTLS
    admin: transport.ClientTLS


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    made = pki.ensure_all(
        tmp_path_factory.mktemp("tunnel-pki"),
        [
            pki.CertSpec("proxy-a", PROXY, hosts=("127.0.0.1",)),
            pki.CertSpec("admin", "kubernetes-admin", ("system:masters",), server=False),
        ],
    )
    a, admin = made["proxy-a"], made["admin"]
    return Certs(
        transport.ServerTLS(
            cert_file=a.cert, key_file=a.key, client_ca_file=a.ca, require_client_cert=True
        ),
        transport.ClientTLS(ca_file=a.ca, cert_file=a.cert, key_file=a.key),
        transport.ClientTLS(ca_file=a.ca, cert_file=admin.cert, key_file=admin.key),
    )


def _run(loop: str, scenario: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(scenario())  # type: ignore[arg-type]


def _ips() -> tuple[str, str, str]:
    """A Service IP, a pod IP (of the tunnel's node) and one that is not a pod of it."""
    rng = random.Random()
    net = f"127.244.{rng.randrange(200, 250)}"
    return f"127.96.{rng.randrange(200, 250)}.{rng.randrange(1, 250)}", f"{net}.10", f"{net}.11"


async def _tunnel(certs: Certs, pod_ips: frozenset[str], *, tls: bool = True) -> TunnelServer:
    (port,) = free_loopback_ports(1)
    tunnel = TunnelServer(
        "127.0.0.1",
        port,
        tls=transport.server_ssl_context(certs.server) if tls else None,
        peers=(PROXY,),
        node_name="far",
    )
    tunnel.pod_ips = pod_ips
    await tunnel.start()
    return tunnel


def _proxier(certs: Certs, tunnel: TunnelServer, *, tls: bool = True) -> Proxier:
    def via_tunnel(ep: Endpoint) -> tuple[str, int, bytes]:
        return "127.0.0.1", tunnel.port, f"CONNECT {ep.ip}:{ep.port}\n".encode()

    config = DataPathConfig(tunnel_tls=transport.client_ssl_context(certs.proxy) if tls else None)
    return Proxier(config=config, dialer=via_tunnel)


@pytest.mark.parametrize("loop", LOOPS)
def test_tcp_and_udp_cross_a_tls_tunnel_only_to_its_pods(certs: Certs, loop: str) -> None:
    service_ip, pod_ip, other_ip = _ips()

    async def scenario() -> None:
        running = asyncio.get_running_loop()

        writers: list[asyncio.StreamWriter] = []

        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            writers.append(w)
            while data := await r.read(1000):
                w.write(data)
            await _close(w)

        class UDPEcho(asyncio.DatagramProtocol):
            def connection_made(self, transport_: Any) -> None:
                self.t = transport_

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.t.sendto(b"echo:" + data, addr)

        tcp = await asyncio.start_server(echo, pod_ip, 8080)
        other = await asyncio.start_server(echo, other_ip, 8080)  # listening, yet no pod
        udp, _ = await running.create_datagram_endpoint(UDPEcho, local_addr=(pod_ip, 8053))
        tunnel = await _tunnel(certs, frozenset({pod_ip}))
        proxier = _proxier(certs, tunnel)
        await proxier.start()
        keys = (PortKey("ns", "web", "", "TCP"), PortKey("ns", "dns", "", "UDP"))
        await proxier.apply(
            {
                keys[0]: PortRule(
                    key=keys[0],
                    listen=(ListenAddress("TCP", service_ip, 80, True),),
                    endpoints=(Endpoint(other_ip, 8080), Endpoint(pod_ip, 8080)),
                    affinity_timeout=None,
                ),
                keys[1]: PortRule(
                    key=keys[1],
                    listen=(ListenAddress("UDP", service_ip, 53, True),),
                    endpoints=(Endpoint(pod_ip, 8053),),
                    affinity_timeout=None,
                ),
            }
        )
        try:
            for _ in range(4):  # every other connection tries the refused endpoint first
                r, w = await asyncio.open_connection(service_ip, 80)
                async with asyncio.timeout(10):
                    w.write(b"through TLS")
                    assert await r.readexactly(11) == b"through TLS"
                await _close(w)
            assert tunnel.refused >= 1  # other_ip: not a pod IP of the tunnel's node
            answers: asyncio.Queue[bytes] = asyncio.Queue()
            client, _ = await running.create_datagram_endpoint(
                lambda: _Collect(answers), remote_addr=(service_ip, 53)
            )
            async with asyncio.timeout(10):  # UDP may drop: ask again until answered
                while True:
                    client.sendto(b"ping")
                    try:
                        async with asyncio.timeout(0.5):
                            assert await answers.get() == b"echo:ping"
                        break
                    except TimeoutError:
                        continue
            client.close()
        finally:
            await proxier.stop()
            await tunnel.stop()
            for s in (tcp, other):
                s.close()
            for w in writers:
                await _close(w)
            udp.close()

    _run(loop, scenario)


class _Collect(asyncio.DatagramProtocol):
    def __init__(self, into: asyncio.Queue[bytes]) -> None:
        self.into = into

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.into.put_nowait(data)


async def _ask(port: int, context: ssl.SSLContext, line: bytes) -> bytes:
    try:
        r, w = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
        )
    except (ssl.SSLError, OSError) as exc:
        return f"handshake: {exc}".encode()
    try:
        w.write(line)
        async with asyncio.timeout(10):
            return await r.read()
    except (ssl.SSLError, OSError) as exc:
        return f"closed: {exc}".encode()
    finally:
        await _close(w)


async def _close(w: asyncio.StreamWriter) -> None:
    w.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await w.wait_closed()


@pytest.mark.parametrize("loop", LOOPS)
def test_only_proxies_of_this_cluster_open_a_tunnel(
    certs: Certs, rogue_pki: PKIFiles, loop: str
) -> None:
    _, pod_ip, _ = _ips()
    rogue = rogue_pki["admin"]
    strangers = {
        "admin": transport.client_ssl_context(certs.admin),
        "no certificate": transport.client_ssl_context(
            transport.ClientTLS(ca_file=certs.proxy.ca_file)
        ),
        "another CA": transport.client_ssl_context(
            transport.ClientTLS(ca_file=certs.proxy.ca_file, cert_file=rogue.cert,
                                key_file=rogue.key)
        ),
    }  # fmt: skip

    async def scenario() -> None:
        tunnel = await _tunnel(certs, frozenset({pod_ip}))
        try:
            line = f"CONNECT {pod_ip}:8080\n".encode()
            answer = await _ask(tunnel.port, strangers["admin"], line)
            assert answer.startswith(b"ERR user 'kubernetes-admin' may not open a tunnel")
            for who in ("no certificate", "another CA"):
                answer = await _ask(tunnel.port, strangers[who], line)
                assert not answer.startswith((b"OK", b"ERR")), (who, answer)
            store = f"CONNECT 127.0.0.1:{free_loopback_ports(1)[0]}\n".encode()
            proxy = transport.client_ssl_context(certs.proxy)
            answer = await _ask(tunnel.port, proxy, store)
            assert answer == b"ERR 127.0.0.1 is not a pod IP of node far\n"
        finally:
            await tunnel.stop()

    _run(loop, scenario)


# A client as `nc -N` is one: the request, then shutdown(SHUT_WR), then everything answered.
_HALF_CLOSING_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.sendall(sys.argv[3].encode())
s.shutdown(socket.SHUT_WR)
out = b""
while chunk := s.recv(65536):
    out += chunk
sys.stdout.buffer.write(out)
"""


async def _half_closing_client(ip: str, port: int, request: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HALF_CLOSING_CLIENT, ip, str(port), request,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
@pytest.mark.parametrize("loop", LOOPS)
def test_half_close_crosses_the_tunnel(certs: Certs, loop: str, tls: bool) -> None:
    """Both directions' EOF cross the tunnel, TLS or not (TLS carries it as an empty frame):
    a half-closing client process gets the whole answer of a pod that answers only after
    the request's EOF, and of an `http.server` pod process; a pod that shuts down its
    sending side first still gets what the client sends after."""
    service_ip, pod_ip, _ = _ips()

    async def scenario() -> None:
        got_after_eof: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def pod(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            first = await r.readexactly(1)
            if first == b"Q":  # answer after the client's EOF
                data = first + await r.read()
                w.write(b"got %d bytes" % len(data) * 5000)
            else:  # half-close first, then read what still comes
                w.write(b"hello")
                w.write_eof()
                got_after_eof.set_result(first + await r.read())
            await _close(w)

        server = await asyncio.start_server(pod, pod_ip, 8080)
        web = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "http.server", "--bind", pod_ip, "8081",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        tunnel = await _tunnel(certs, frozenset({pod_ip}), tls=tls)
        proxier = _proxier(certs, tunnel, tls=tls)
        await proxier.start()
        keys = (PortKey("ns", "answer", "", "TCP"), PortKey("ns", "web", "", "TCP"))
        await proxier.apply(
            {
                key: PortRule(
                    key=key,
                    listen=(ListenAddress("TCP", service_ip, port, True),),
                    endpoints=(Endpoint(pod_ip, target),),
                    affinity_timeout=None,
                )
                for key, port, target in ((keys[0], 80, 8080), (keys[1], 81, 8081))
            }
        )
        try:
            request = "Q" + "x" * 99_999
            answer = await _half_closing_client(service_ip, 80, request)
            assert answer == b"got 100000 bytes" * 5000
            async with asyncio.timeout(30):
                while True:  # the web pod may still be starting
                    try:
                        _, probe = await asyncio.open_connection(pod_ip, 8081)
                    except OSError:
                        await asyncio.sleep(0.1)
                        continue
                    await _close(probe)
                    break
            page = await _half_closing_client(service_ip, 81, "GET / HTTP/1.0\r\n\r\n")
            assert page.startswith(b"HTTP/1.0 200 OK") and b"Directory listing" in page, page
            r, w = await asyncio.open_connection(service_ip, 80)
            async with asyncio.timeout(10):
                w.write(b"H")
                assert await r.read() == b"hello"  # the pod's EOF came through
                w.write(b"after your EOF")
                w.write_eof()
                assert await got_after_eof == b"Hafter your EOF"
            await _close(w)
        finally:
            await proxier.stop()
            await tunnel.stop()
            server.close()
            web.terminate()
            await web.wait()

    _run(loop, scenario)
