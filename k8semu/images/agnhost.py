"""The agnhost image (registry.k8s.io/e2e-test-images/agnhost): a few of its subcommands.

- ``netexec [--http-port 8080] [--udp-port 8081]``: HTTP ``/hostname``, ``/echo?msg=``,
  ``/clientip``, ``/healthz``, ``/exit?code=N`` (exits with N after answering); UDP:
  ``hostname`` and ``echo TEXT`` datagrams. Unlike the real one there is no ``/shell`` nor
  ``/dial``.
- ``serve-hostname [--port 9376] [--udp] [--tcp] [--http=false]``: the pod's name to every
  HTTP request (or TCP connection / UDP datagram).
- ``pause`` (the default): wait for SIGTERM.

Listening addresses follow POD_IP like every built-in image.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import cast

from k8semu.images import _common
from k8semu.images._http import HTTPServer, Request, Response


def _hostname(env: Mapping[str, str]) -> str:
    return env.get("HOSTNAME", "") or env.get("POD_NAME", "") or os.uname().nodename


class _UDPEcho(asyncio.DatagramProtocol):
    def __init__(self, hostname: str, netexec: bool) -> None:
        self.hostname = hostname
        self.netexec = netexec
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.transport is None:
            return
        text = data.decode("utf-8", "replace").strip()
        if not self.netexec or text == "hostname":
            reply = self.hostname
        elif text.startswith("echo "):
            reply = text[5:]
        else:
            reply = ""
        self.transport.sendto(reply.encode(), addr)


class _TCPHostname(asyncio.Protocol):
    def __init__(self, hostname: str) -> None:
        self.hostname = hostname

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        transport.write(self.hostname.encode())
        transport.close()


async def netexec(args: Sequence[str], env: Mapping[str, str], log: _common.Log) -> int:
    parser = argparse.ArgumentParser(prog="agnhost netexec")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--udp-port", type=int, default=8081)
    parser.add_argument("--sctp-port", type=int, default=-1)
    opts, _ = parser.parse_known_args(list(args))
    host = _common.pod_ip(env)
    hostname = _hostname(env)
    exit_code: list[int] = []
    stop = _common.stop_event()

    def handler(request: Request) -> Response:
        query = urllib.parse.parse_qs(request.query)
        path = request.path
        if path == "/hostname":
            return Response(200, hostname.encode())
        if path == "/echo":
            return Response(200, query.get("msg", [""])[0].encode())
        if path == "/clientip":
            return Response(200, request.peer.encode())
        if path in ("/healthz", "/health"):
            return Response(200, b"ok")
        if path == "/exit":
            code = query.get("code", ["0"])[0]
            exit_code.append(int(code) if code.isdigit() else 0)
            stop.set()
            return Response(200, b"", close=True)
        if path == "/":
            return Response(200, b"NOW: netexec (k8semu)")
        return Response(404, b"404 page not found\n")

    http = HTTPServer(handler, log, name="agnhost")
    try:
        h, p = await http.start(host, opts.http_port)
        loop = asyncio.get_running_loop()
        udp = None
        if opts.udp_port >= 0:
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UDPEcho(hostname, True), local_addr=(host, opts.udp_port)
            )
    except OSError as exc:
        log.info(f"agnhost netexec: cannot listen: {exc}")
        return 1
    log.info(f"agnhost netexec: listening on {h}:{p} (http), udp {opts.udp_port}")
    await stop.wait()
    await http.stop(0.3)
    if udp is not None:
        udp.close()
    return exit_code[0] if exit_code else 0


async def serve_hostname(args: Sequence[str], env: Mapping[str, str], log: _common.Log) -> int:
    parser = argparse.ArgumentParser(prog="agnhost serve-hostname")
    parser.add_argument("--port", type=int, default=9376)
    parser.add_argument("--http", default="true")
    parser.add_argument("--tcp", action="store_true")
    parser.add_argument("--udp", action="store_true")
    opts, _ = parser.parse_known_args(list(args))
    host = _common.pod_ip(env)
    hostname = _hostname(env)
    stop = _common.stop_event()
    loop = asyncio.get_running_loop()
    closers: list[asyncio.BaseTransport | asyncio.Server] = []
    http = None
    try:
        if opts.tcp:
            closers.append(
                await loop.create_server(lambda: _TCPHostname(hostname), host, opts.port)
            )
        elif opts.http.lower() != "false":
            http = HTTPServer(lambda _: Response(200, hostname.encode()), log, name="agnhost")
            await http.start(host, opts.port)
        if opts.udp:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UDPEcho(hostname, False), local_addr=(host, opts.port)
            )
            closers.append(transport)
    except OSError as exc:
        log.info(f"agnhost serve-hostname: cannot listen: {exc}")
        return 1
    log.info(f"agnhost serve-hostname: serving {hostname} on {host}:{opts.port}")
    await stop.wait()
    if http is not None:
        await http.stop(0.3)
    for closer in closers:
        closer.close()
    return 0


async def pause(args: Sequence[str], env: Mapping[str, str], log: _common.Log) -> int:
    await _common.stop_event().wait()
    return 0


SUBCOMMANDS = {"netexec": netexec, "serve-hostname": serve_hostname, "pause": pause}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv) or ["pause"]
    env = _common.env()
    sub = SUBCOMMANDS.get(args[0])
    if sub is None:
        print(
            f"agnhost: unsupported subcommand {args[0]!r}; built in: {', '.join(SUBCOMMANDS)}",
            file=sys.stderr,
        )
        return 2
    command = sub

    async def go() -> int:
        return await command(args[1:], env, _common.Log())

    return _common.run(go)


if __name__ == "__main__":
    raise SystemExit(main())
