"""The dns image in zone mode: record types, NXDOMAIN/REFUSED, garbage, TCP, a Corefile."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from k8semu.images import _dnswire as w
from k8semu.images import dns
from tests.images.conftest import ImageProcess

RECORDS = """\
# a comment
$TTL 5
www        A     127.0.0.9
www        AAAA  ::1
@          NS    ns1
ns1        A     127.0.0.53
alias      CNAME www
_http._tcp SRV   0 5 8080 www
txt        TXT   "hello world" second
big        TXT   "%s"
"""


@pytest.fixture(scope="module")
def zone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """One zone-mode server for the module (the tests only read)."""
    tmp_path = tmp_path_factory.mktemp("zone")
    (tmp_path / "zone.txt").write_text(RECORDS % ("x" * 200,))
    dns = ImageProcess("dns", [
        "--listen", "127.0.0.41:0", "--zone", "example.test", "--records", "zone.txt",
        "--record", "extra 60 A 127.0.0.77",
    ], cwd=tmp_path)  # fmt: skip
    try:
        yield dns.address()
    finally:
        dns.close()


def test_zone_answers_record_types(zone_server: tuple[str, int]) -> None:
    server = zone_server

    def ask(name: str, qtype: int) -> w.Message:
        reply = w.query_sync(server, name, qtype, timeout=5)
        assert reply.flags & w.QR and reply.flags & w.AA
        return reply

    reply = ask("www.example.test", w.A)
    assert reply.rcode == w.NOERROR
    assert [(rr.rtype, rr.data, rr.ttl) for rr in reply.answers] == [(w.A, "127.0.0.9", 5)]
    assert [rr.data for rr in ask("WWW.Example.Test.", w.AAAA).answers] == ["::1"]
    assert [rr.data for rr in ask("extra.example.test", w.A).answers] == ["127.0.0.77"]
    assert ask("extra.example.test", w.A).answers[0].ttl == 60
    cname = ask("alias.example.test", w.A)
    assert [(rr.rtype, rr.data) for rr in cname.answers] == [
        (w.CNAME, "www.example.test"), (w.A, "127.0.0.9"),
    ]  # fmt: skip
    srv = ask("_http._tcp.example.test", w.SRV)
    assert [rr.data for rr in srv.answers] == [(0, 5, 8080, "www.example.test")]
    assert "127.0.0.9" in [rr.data for rr in srv.additional]
    assert [rr.data for rr in ask("txt.example.test", w.TXT).answers] == [("hello world", "second")]
    ns = ask("example.test", w.NS)
    assert [rr.data for rr in ns.answers] == ["ns1.example.test"]
    soa = ask("example.test", w.SOA)
    assert soa.answers and soa.answers[0].rtype == w.SOA
    nodata = ask("www.example.test", w.TXT)
    assert nodata.rcode == w.NOERROR and not nodata.answers and nodata.authority


def test_nxdomain_inside_refused_outside(zone_server: tuple[str, int]) -> None:
    server = zone_server
    nx = w.query_sync(server, "nope.example.test", w.A, timeout=5)
    assert nx.rcode == w.NXDOMAIN
    assert [rr.rtype for rr in nx.authority] == [w.SOA]
    refused = w.query_sync(server, "kubernetes.io", w.A, timeout=5)
    assert refused.rcode == w.REFUSED and not refused.answers


def test_garbage_then_valid_query_still_answered(zone_server: tuple[str, int]) -> None:
    server = zone_server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"\x01", server)  # not even a header: ignored
        s.sendto(b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff", server)
        data, _ = s.recvfrom(4096)
        reply = w.parse(data)
        assert reply.id == 0xABCD and reply.rcode == w.FORMERR
        # a compression loop in the question name
        s.sendto(
            b"\x00\x07\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", server
        )
        assert w.parse(s.recvfrom(4096)[0]).rcode == w.FORMERR
        s.sendto(b"\x00\x08" + b"\x85" * 40, server)  # a "response": ignored, no loop
    # TCP: garbage framed and unframed, then a valid query on a fresh connection
    with socket.create_connection(server, timeout=5) as c:
        c.sendall(struct.pack("!H", 3) + b"abc")
    reply = w.query_sync(server, "www.example.test", w.A, timeout=5)
    assert [rr.data for rr in reply.answers] == ["127.0.0.9"]


def test_tcp_queries_several_per_connection(zone_server: tuple[str, int]) -> None:
    server = zone_server
    with socket.create_connection(server, timeout=5) as c:
        for ident, name in ((1, "www.example.test"), (2, "ns1.example.test")):
            query = w.build_query(name, w.A, ident)
            c.sendall(struct.pack("!H", len(query)) + query)
            (length,) = struct.unpack("!H", c.recv(2, socket.MSG_WAITALL))
            reply = w.parse(c.recv(length, socket.MSG_WAITALL))
            assert reply.id == ident and reply.answers
            assert reply.answers[0].name == name


def test_udp_truncates_big_answers_and_tcp_gets_them_whole(
    start_image: Callable[..., ImageProcess], tmp_path: Path
) -> None:
    (tmp_path / "zone.txt").write_text("".join(f"many A 127.0.1.{i}\n" for i in range(1, 60)))
    dns = start_image("dns", "--listen", "127.0.0.42:0", "--zone", "big.test",
                      "--records", "zone.txt", cwd=tmp_path)  # fmt: skip
    server = dns.address()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(w.build_query("many.big.test", w.A, 7), server)
        udp = w.parse(s.recvfrom(4096)[0])
    assert udp.flags & w.TC
    full = w.query_sync(server, "many.big.test", w.A, timeout=5)  # retries over TCP
    assert len(full.answers) == 59


def test_minimal_corefile(start_image: Callable[..., ImageProcess], tmp_path: Path) -> None:
    (tmp_path / "db.corp").write_text("$ORIGIN corp.test.\napp IN A 127.0.0.88\n")
    (tmp_path / "Corefile").write_text(
        "corp.test:0 {\n  file db.corp\n  log\n  errors\n}\n"
        "hosts.test {\n  hosts {\n    127.0.0.99 printer.hosts.test\n    fallthrough\n  }\n"
        "  forward . 8.8.8.8\n}\n"
    )
    dns = start_image("dns", "-conf", "Corefile", "--listen", "127.0.0.43:0", cwd=tmp_path)
    server = dns.address()
    assert [rr.data for rr in w.query_sync(server, "app.corp.test", w.A).answers] == ["127.0.0.88"]
    printer = w.query_sync(server, "printer.hosts.test", w.A)
    assert [rr.data for rr in printer.answers] == ["127.0.0.99"]
    assert w.query_sync(server, "example.com", w.A).rcode == w.REFUSED  # no forwarding


def test_bad_arguments_exit_2(start_image: Callable[..., ImageProcess], tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("www A not-an-ip\n")
    bad = start_image("dns", "--zone", "x.test", "--records", "bad.txt", cwd=tmp_path)
    assert bad.proc.wait(20) == 2
    bad.wait_line(r"bad\.txt:1")
    nothing = start_image("dns", "--listen", "127.0.0.44:0")
    assert nothing.proc.wait(20) == 2


KUBERNETES_COREFILE = """\
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
"""


def test_the_kubernetes_default_corefile_means_cluster_mode(tmp_path: Path) -> None:
    """The Corefile of Kubernetes' CoreDNS add-on, mounted at /etc/coredns (under the pod
    dir), configures cluster mode with the API server from the kubernetes Service env."""
    (tmp_path / "etc/coredns").mkdir(parents=True)
    (tmp_path / "etc/coredns/Corefile").write_text(KUBERNETES_COREFILE)
    env = {"POD_IP": "127.0.0.45", "KUBERNETES_SERVICE_HOST": "127.96.0.1",
           "KUBERNETES_SERVICE_PORT": "443"}  # fmt: skip
    config = dns.parse_args(["-conf", "/etc/coredns/Corefile"], env, tmp_path)
    assert (config.host, config.port) == ("127.0.0.45", 53)
    assert config.kubernetes_zones == ["cluster.local"]
    assert config.servers == ["127.96.0.1:443"]
    assert config.ttl == 30
    assert config.health == ("127.0.0.45", 8080)
    assert config.ready == ("127.0.0.45", 8181)
