"""The dns image (coredns/coredns, k8semu/dns): an authoritative DNS server over UDP and TCP.

Two sources of names, combinable:

- static zones: ``--zone example.test --records FILE`` (lines ``NAME [TTL] [IN] TYPE VALUE``,
  ``$ORIGIN``/``$TTL``; A, AAAA, CNAME, NS, MX, TXT, SRV, SOA) and ``--record "NAME TYPE VALUE"``;
- the cluster zone: ``--kubernetes cluster.local --server HOST:PORT[,...]`` (the API server;
  default from KUBERNETES_SERVICE_HOST/PORT) answered from Service and Endpoints informers.

A minimal Corefile works too (``-conf FILE``): server blocks ``ZONES[:PORT] { ... }`` with the
plugins ``kubernetes ZONES [{ endpoint URL }]``, ``file FILE [ZONE]``, ``hosts [FILE] { IP NAME }``,
``health [ADDR]`` and ``ready [ADDR]``; others (cache, errors, log, forward, ...) are accepted
and ignored — this server forwards nothing. Names outside every zone are REFUSED; garbage is
answered FORMERR when it has a header and ignored otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import re
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from k8semu.images import _common
from k8semu.images import _dnswire as w
from k8semu.images._http import HTTPServer, Request, Response
from k8semu.images._zones import (
    DEFAULT_TTL,
    Answer,
    RecordError,
    StaticZone,
    Zone,
    in_zone,
    parse_record,
    read_record_file,
)

if TYPE_CHECKING:
    from k8semu.transport import ClientTLS

DEFAULT_PORT = 53
#: Where the kubelet mounts a pod's ServiceAccount token and CA (under the container root).
SERVICE_ACCOUNT_DIR = "var/run/secrets/kubernetes.io/serviceaccount"
TCP_IDLE_S = 10.0


@dataclass(slots=True)
class DNSConfig:
    host: str
    port: int
    ttl: int = DEFAULT_TTL
    static: list[StaticZone] = field(default_factory=list)
    kubernetes_zones: list[str] = field(default_factory=list)
    servers: list[str] = field(default_factory=list)
    # In a pod of a TLS cluster: the mounted ServiceAccount CA and token (the API server's
    # token listener); None: plain text.
    tls: ClientTLS | None = None
    health: tuple[str, int] | None = None
    ready: tuple[str, int] | None = None
    quiet: bool = False


class Resolver:
    """Picks the zone for a question (longest origin) and builds the reply."""

    def __init__(self, zones: Sequence[Zone], log: _common.Log) -> None:
        self.zones = sorted(zones, key=lambda z: len(z.origin), reverse=True)
        self.log = log

    def handle(self, data: bytes, peer: str, max_size: int | None) -> bytes | None:
        """The reply to one query, or None to stay silent (not even a header, or a response)."""
        if len(data) < 12:
            return None
        ident, flags = struct.unpack_from("!2H", data, 0)
        if flags & w.QR:
            return None
        reply = w.Message(id=ident, flags=w.QR | (flags & (w.RD | 0x7800)))
        try:
            query = w.parse(data)
        except (w.DNSFormatError, ValueError):
            reply.flags |= w.FORMERR
            self.log.request(f"{peer} FORMERR (unparseable query)")
            return w.build(reply)
        reply.edns_size = query.edns_size
        if query.opcode != 0:
            reply.flags |= w.NOTIMP
            return w.build(reply, max_size)
        if len(query.questions) != 1:
            reply.flags |= w.FORMERR
            return w.build(reply, max_size)
        q = query.questions[0]
        reply.questions.append(q)
        answer = self.answer(q)
        if answer.rcode != w.REFUSED:
            reply.flags |= w.AA
        reply.flags |= answer.rcode
        reply.answers = answer.answers
        reply.authority = answer.authority
        reply.additional = answer.additional
        limit = None
        if max_size is not None:
            limit = max(w.MAX_UDP_PLAIN, min(query.edns_size or w.MAX_UDP_PLAIN, w.MAX_UDP_EDNS))
        try:
            wire = w.build(reply, limit)
        except ValueError:  # a name we cannot write back: answer without the question
            wire = w.build(w.Message(id=ident, flags=w.QR | w.SERVFAIL))
        self.log.request(
            f"{peer} {q.name}. {w.TYPE_NAMES.get(q.qtype, q.qtype)} "
            f"{w.RCODE_NAMES.get(answer.rcode, answer.rcode)} {len(answer.answers)} answers"
        )
        return wire

    def answer(self, q: w.Question) -> Answer:
        if q.qclass not in (w.CLASS_IN, w.ANY):
            return Answer(rcode=w.REFUSED)
        for zone in self.zones:
            if in_zone(q.name, zone.origin):
                try:
                    return zone.answer(q)
                except Exception as exc:  # a zone bug must not take the server down
                    self.log.info(f"dns: error answering {q}: {exc!r}")
                    return Answer(rcode=w.SERVFAIL)
        return Answer(rcode=w.REFUSED)


class UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = self.resolver.handle(data, f"{addr[0]}:{addr[1]}/udp", w.MAX_UDP_PLAIN)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors for earlier replies: nothing to do


class TCPProtocol(asyncio.Protocol):
    """Length-prefixed messages (RFC 1035 4.2.2), several per connection."""

    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.peer = "-"
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"{peer[0]}:{peer[1]}/tcp"
        self.server.tcp_connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.tcp_connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        self.buffer += data
        while len(self.buffer) >= 2 and self.transport is not None:
            (length,) = struct.unpack_from("!H", self.buffer, 0)
            if len(self.buffer) < 2 + length:
                return
            message = bytes(self.buffer[2 : 2 + length])
            del self.buffer[: 2 + length]
            reply = self.server.resolver.handle(message, self.peer, None)
            if reply is None:
                self.transport.close()
                return
            self.transport.write(struct.pack("!H", len(reply)) + reply)


class DNSServer:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.tcp_connections: set[TCPProtocol] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """TCP first (port 0 picks one), then UDP on the same port."""
        loop = asyncio.get_running_loop()
        self._tcp = await loop.create_server(
            lambda: TCPProtocol(self), host, port, reuse_address=True
        )
        bound = self._tcp.sockets[0].getsockname()
        port = int(bound[1])
        transport, _ = await loop.create_datagram_endpoint(
            lambda: UDPProtocol(self.resolver), local_addr=(host, port)
        )
        self._udp = transport
        return str(bound[0]), port

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(2)
            cutoff = time.monotonic() - TCP_IDLE_S
            for conn in list(self.tcp_connections):
                if conn.last_active < cutoff and conn.transport is not None:
                    conn.transport.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for conn in list(self.tcp_connections):
            if conn.transport is not None:
                conn.transport.close()


# ---- configuration ----


def _listen(value: str, default_port: int, default_host: str) -> tuple[str, int]:
    return _common.parse_listen(value, default_port, default_host)


def parse_corefile(text: str, config: DNSConfig, base: Path, default_host: str) -> None:
    """The small Corefile subset in the module docstring, added to `config`."""
    text = re.sub(r"#[^\n]*", "", text)
    tokens = re.findall(r'"[^"]*"|\{|\}|[^\s{}]+|\n', text)
    i = 0

    def line_args() -> list[str]:
        nonlocal i
        args: list[str] = []
        while i < len(tokens) and tokens[i] not in ("\n", "{", "}"):
            args.append(tokens[i].strip('"'))
            i += 1
        return args

    def block_lines() -> list[list[str]]:
        nonlocal i
        lines: list[list[str]] = []
        if i < len(tokens) and tokens[i] == "{":
            i += 1
            while i < len(tokens) and tokens[i] != "}":
                if tokens[i] == "\n":
                    i += 1
                    continue
                args = line_args()
                if args:
                    lines.append(args)
                if i < len(tokens) and tokens[i] == "{":
                    # A plugin's options (kubernetes' endpoint, hosts' entries) are read as
                    # lines of their own.
                    lines.extend(block_lines())
            if i >= len(tokens):
                raise _common.UsageError("Corefile: missing '}'")
            i += 1
        return lines

    while i < len(tokens):
        if tokens[i] == "\n":
            i += 1
            continue
        keys = line_args()
        while i < len(tokens) and tokens[i] == "\n":
            i += 1
        if i >= len(tokens) or tokens[i] != "{":
            raise _common.UsageError(f"Corefile: expected '{{' after {' '.join(keys)!r}")
        zones = []
        for key in keys:
            key = re.sub(r"^(dns|udp|tcp)://", "", key)
            zone, _, port = key.rpartition(":") if ":" in key else (key, "", "")
            if port:
                if not port.isdigit():
                    raise _common.UsageError(f"Corefile: bad port in {key!r}")
                config.port = int(port)
            zones.append(w.normalize(zone))
        for plugin in block_lines():
            _corefile_plugin(plugin, zones, config, base, default_host)


def _corefile_plugin(
    args: list[str], zones: list[str], config: DNSConfig, base: Path, default_host: str
) -> None:
    name, rest = args[0], args[1:]
    if name == "kubernetes":
        # Reverse zones are not served (no PTR records): they stay REFUSED.
        wanted = [w.normalize(z) for z in (rest or zones)]
        config.kubernetes_zones.extend(z for z in wanted if not z.endswith("arpa"))
    elif name == "endpoint":
        for url in rest:
            config.servers.append(re.sub(r"^[a-z]+://", "", url).rstrip("/"))
    elif name == "file" and rest:
        origin = w.normalize(rest[1]) if len(rest) > 1 else zones[0]
        path = Path(rest[0]) if Path(rest[0]).is_absolute() else base / rest[0]
        zone = StaticZone(origin, read_record_file(path, origin, config.ttl), config.ttl)
        config.static.append(zone)
    elif name == "health":
        config.health = _listen(rest[0] if rest else ":8080", 8080, default_host)
    elif name == "ready":
        config.ready = _listen(rest[0] if rest else ":8181", 8181, default_host)
    elif name == "ttl" and rest and rest[0].isdigit():
        config.ttl = int(rest[0])
    elif name in ("bind",) and rest:
        config.host = rest[0]
    elif name == "hosts":
        pass  # inline entries arrive as their own lines: "IP NAME..."
    elif _is_ip(name) and rest:
        for host in rest:
            rtype = "A" if "." in name else "AAAA"
            _add_static(config, parse_record(f"{host}. {rtype} {name}", "", config.ttl), zones)
    # cache, errors, log, loop, reload, loadbalance, forward, prometheus, ...: nothing to do


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _add_static(config: DNSConfig, rr: w.RR, zones: Sequence[str] = ()) -> None:
    best: StaticZone | None = None
    for zone in config.static:
        if in_zone(rr.name, zone.origin) and (best is None or len(zone.origin) > len(best.origin)):
            best = zone
    if best is None:
        origin = next((z for z in zones if in_zone(rr.name, z)), None)
        if origin is None:
            raise _common.UsageError(f"record {rr.name} is outside every --zone")
        best = StaticZone(origin, [], config.ttl)
        config.static.append(best)
    best.add(rr)


def parse_args(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> DNSConfig:
    parser = argparse.ArgumentParser(prog="dns", description=__doc__)
    parser.add_argument("--listen", "-dns.port", default=None, help="HOST:PORT (default :53)")
    parser.add_argument("--zone", action="append", default=[], help="a zone served statically")
    parser.add_argument("--records", action="append", default=[], help="record file, per --zone")
    parser.add_argument("--record", action="append", default=[], help='"NAME [TTL] TYPE VALUE"')
    parser.add_argument("--kubernetes", action="append", default=[], help="cluster zone")
    parser.add_argument("--server", default="", help="API server HOST:PORT[,HOST:PORT]")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL)
    parser.add_argument("--health", default=None, help="HTTP /health on HOST:PORT")
    parser.add_argument("--ready", default=None, help="HTTP /ready on HOST:PORT")
    parser.add_argument("-conf", "--conf", default=None, help="a (minimal) Corefile")
    parser.add_argument("--quiet", action="store_true", help="no query log")
    args = parser.parse_args(list(argv))
    host_default = _common.pod_ip(env)
    config = DNSConfig(host_default, DEFAULT_PORT, ttl=args.ttl, quiet=args.quiet)
    try:
        if args.conf:
            path = Path(args.conf)
            if path.is_absolute() and not path.exists():
                # an image path inside the pod dir
                path = _common.container_root(env, cwd) / args.conf.lstrip("/")
            elif not path.is_absolute():
                path = cwd / path
            try:
                text = path.read_text()
            except OSError as exc:
                raise _common.UsageError(f"-conf {args.conf}: {exc.strerror or exc}") from None
            parse_corefile(text, config, path.parent, host_default)
        if args.listen is not None:
            config.host, config.port = _listen(args.listen, config.port, host_default)
        zones = [w.normalize(z) for z in args.zone]
        if len(args.records) > max(1, len(zones)):
            raise _common.UsageError("give one --zone for each --records file")
        for z in zones:
            config.static.append(StaticZone(z, [], config.ttl))
        for index, records in enumerate(args.records):
            if not zones:
                raise _common.UsageError("--records needs a --zone")
            origin = zones[index] if index < len(zones) else zones[0]
            for rr in read_record_file(cwd / records, origin, config.ttl):
                _add_static(config, rr, zones)
        for text in args.record:
            if not zones:
                raise _common.UsageError("--record needs a --zone")
            _add_static(config, parse_record(text, zones[0], config.ttl, "--record"), zones)
    except RecordError as exc:
        raise _common.UsageError(str(exc)) from None
    config.kubernetes_zones.extend(w.normalize(z) for z in args.kubernetes)
    if args.server:
        config.servers = [s.strip() for s in args.server.split(",") if s.strip()]
    if config.kubernetes_zones and not config.servers:
        # The `kubernetes` Service's `grpc` port when it has one (its first, `https`, is the
        # REST API then), else its only port.
        host = env.get("KUBERNETES_SERVICE_HOST", "")
        port = env.get("KUBERNETES_SERVICE_PORT_GRPC") or env.get("KUBERNETES_SERVICE_PORT")
        if not host:
            raise _common.UsageError(
                "--kubernetes needs --server HOST:PORT or KUBERNETES_SERVICE_HOST/PORT"
            )
        config.servers = [f"[{host}]:{port or 443}" if ":" in host else f"{host}:{port or 443}"]
        config.tls = _service_account_tls(_common.container_root(env, cwd))
    if args.health is not None:
        config.health = _listen(args.health, 8080, host_default)
    if args.ready is not None:
        config.ready = _listen(args.ready, 8181, host_default)
    if not config.static and not config.kubernetes_zones:
        raise _common.UsageError("nothing to serve: give --zone/--records or --kubernetes")
    return config


def _service_account_tls(root: Path) -> ClientTLS | None:
    """The in-cluster credentials the kubelet mounted (a CA and a token: a TLS cluster),
    as the Kubernetes client libraries' in-cluster config reads them; None without."""
    from k8semu.transport import ClientTLS  # grpc: only for a cluster zone

    mount = root / SERVICE_ACCOUNT_DIR
    ca, token = mount / "ca.crt", mount / "token"
    try:
        if not ca.read_bytes().strip() or not token.exists():
            return None
    except OSError:
        return None
    return ClientTLS(ca_file=ca, token_file=token)


# ---- running ----


async def serve(config: DNSConfig) -> int:
    log = _common.Log(quiet=config.quiet)
    stop = _common.stop_event()
    zones: list[Zone] = list(config.static)
    informers: list[object] = []
    client = None
    kube_zones = []
    if config.kubernetes_zones:
        from k8semu.client import Client, Informer
        from k8semu.images._kubezone import KubernetesZone
        from k8semu.pb.api.v1 import core_pb2

        client = Client(config.servers, tls=config.tls)
        services = Informer(client, core_pb2.Service)
        endpoints = Informer(client, core_pb2.Endpoints)
        services.start()
        endpoints.start()
        informers = [services, endpoints]
        for origin in config.kubernetes_zones:
            kube_zones.append(KubernetesZone(origin, services, endpoints, config.ttl))
        zones.extend(kube_zones)
    server = DNSServer(Resolver(zones, log))
    http_servers: list[HTTPServer] = []

    def health(request: Request) -> Response:
        if request.path in ("/health", "/healthz"):
            return Response(200, b"OK")
        if request.path == "/ready":
            if all(z.synced for z in kube_zones):
                return Response(200, b"OK")
            return Response(503, b"informers not synced\n")
        return Response(404, b"404 Not Found\n")

    try:
        host, port = await server.start(config.host, config.port)
        for addr in (config.health, config.ready):
            if addr is not None:
                http = HTTPServer(health, _common.Log(quiet=True), name="k8semu-dns")
                h, p = await http.start(*addr)
                http_servers.append(http)
                log.info(f"dns: health on {h}:{p}")
    except OSError as exc:
        log.info(f"dns: cannot listen on {config.host}:{config.port}: {exc}")
        await server.stop()
        return 1
    served = ", ".join(z.origin or "." for z in zones)
    log.info(f"dns: listening on {host}:{port} (udp+tcp), zones: {served}")
    if config.servers and config.kubernetes_zones:
        log.info(f"dns: cluster zone from API server {','.join(config.servers)}")
    sweeper = asyncio.create_task(server.sweep())
    await stop.wait()
    log.info("dns: SIGTERM, stopping")
    sweeper.cancel()
    await server.stop()
    for http in http_servers:
        await http.stop(0.2)
    for informer in informers:
        with contextlib.suppress(Exception):
            await informer.stop()  # type: ignore[attr-defined]
    if client is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 0.3)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return _common.main(argv, lambda args, env: serve(parse_args(args, env, Path.cwd())))


if __name__ == "__main__":
    raise SystemExit(main())
