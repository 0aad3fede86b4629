"""Garbage never raises out of the DNS resolver or the HTTP protocol (in-process, seeded)."""

from __future__ import annotations

import io
import random
from typing import Any

from k8semu.images import _common
from k8semu.images import _dnswire as w
from k8semu.images._http import HTTPProtocol, HTTPServer, Request, Response
from k8semu.images._zones import StaticZone, parse_record
from k8semu.images.dns import Resolver


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        if op < 0.5 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op < 0.75:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif b:
            del b[rng.randrange(len(b))]
    return bytes(b)


def test_dns_resolver_survives_random_and_mutated_packets() -> None:
    zone = StaticZone("example.test", [
        parse_record("www A 127.0.0.9", "example.test", 5),
        parse_record("alias CNAME www", "example.test", 5),
        parse_record("_x._tcp SRV 0 1 80 www", "example.test", 5),
    ])  # fmt: skip
    resolver = Resolver([zone], _common.Log(io.StringIO()))
    rng = random.Random(20261126)
    seeds = [w.build_query(n, t, 1) for n, t in
             (("www.example.test", w.A), ("alias.example.test", w.ANY),
              ("_x._tcp.example.test", w.SRV), ("other.org", w.TXT))]  # fmt: skip
    answered = 0
    for i in range(3000):
        if i % 3 == 0:
            packet = bytes(rng.randrange(256) for _ in range(rng.randint(0, 80)))
        else:
            packet = mutate(rng, rng.choice(seeds))
        reply = resolver.handle(packet, "fuzz", w.MAX_UDP_PLAIN if i % 2 else None)
        if reply is not None:
            w.parse(reply)  # whatever we send back is well formed
            answered += 1
    assert answered > 1000
    good = resolver.handle(seeds[0], "fuzz", w.MAX_UDP_PLAIN)
    assert good is not None and w.addresses(w.parse(good)) == ["127.0.0.9"]


class _FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_http_protocol_survives_random_and_mutated_input() -> None:
    def handler(request: Request) -> Response:
        return Response(200, request.target.encode("latin-1", "replace"))

    server = HTTPServer(handler, _common.Log(io.StringIO(), quiet=True))
    rng = random.Random(7)
    seed = b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.0\r\n\r\n"
    for i in range(2000):
        proto = HTTPProtocol(server)
        transport = _FakeTransport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        data = mutate(rng, seed) if i % 2 else bytes(rng.randrange(256) for _ in range(60))
        cut = rng.randrange(len(data) + 1)
        proto.data_received(data[:cut])
        proto.data_received(data[cut:])
        proto.connection_lost(None)
        assert transport.out == b"" or transport.out.startswith(b"HTTP/1.1 ")
    assert not server.connections
