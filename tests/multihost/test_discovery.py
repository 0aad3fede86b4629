"""`clusterinfo.discover` against a small HTTPS server of the test's own: the cluster's CA
(pinned) published by a server whose certificate another CA signed (a man in the middle
that copied the real cluster-info) is refused; so is a ConfigMap without a CA, a 403, and
the right server and pin pass and give the API servers.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from k8semu import pki
from k8semu.cluster import clusterinfo

TOKEN = "abcdef.0123456789abcdef"
SERVERS = ("127.0.0.1:7001", "127.0.0.1:7002")


def _ca(directory: Path) -> pki.CertificateAuthority:
    directory.mkdir()
    return pki.CertificateAuthority.load_or_create(directory)


class _Server:
    """One HTTPS listener on a free loopback port serving cluster-info (or a status code)."""

    def __init__(self, files: pki.CertFiles, body: bytes, status: int = 200) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.tokens.append(self.headers.get("Authorization", ""))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.tokens: list[str] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(files.cert), str(files.key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _body(ca_pem: bytes) -> bytes:
    cm = {"data": {clusterinfo.KEY: json.dumps(clusterinfo.kubeconfig(ca_pem, "", SERVERS))}}
    return json.dumps(cm).encode()


@pytest.fixture
def cas(tmp_path: Path) -> Iterator[tuple[pki.CertificateAuthority, pki.CertificateAuthority]]:
    yield _ca(tmp_path / "cluster"), _ca(tmp_path / "other")


def _serve(ca: pki.CertificateAuthority, body: bytes, status: int = 200) -> _Server:
    files = ca.ensure(pki.CertSpec("apiserver", "kube-apiserver", hosts=("127.0.0.1",)))
    return _Server(files, body, status)


def test_the_pinned_cluster_is_discovered(cas: tuple[pki.CertificateAuthority, ...]) -> None:
    cluster = cas[0]
    ca_pem = cluster.cert_path.read_bytes()
    server = _serve(cluster, _body(ca_pem))
    try:
        info = clusterinfo.discover(server.address, TOKEN, clusterinfo.ca_hash(ca_pem))
    finally:
        server.close()
    assert (info.ca, info.servers) == (ca_pem, SERVERS)
    assert server.tokens == [f"Bearer {TOKEN}"] * 2  # the blind read, then the verified one


def test_a_server_the_pinned_ca_did_not_sign_is_refused(
    cas: tuple[pki.CertificateAuthority, ...],
) -> None:
    cluster, other = cas
    ca_pem = cluster.cert_path.read_bytes()
    server = _serve(other, _body(ca_pem))  # the real CA, served by someone else
    try:
        with pytest.raises(clusterinfo.DiscoveryError, match="the pinned CA does not vouch"):
            clusterinfo.discover(server.address, TOKEN, clusterinfo.ca_hash(ca_pem))
    finally:
        server.close()


def test_bad_answers_are_refused(cas: tuple[pki.CertificateAuthority, ...]) -> None:
    cluster = cas[0]
    pin = clusterinfo.ca_hash(cluster.cert_path.read_bytes())
    cases = [
        (b'{"data": {"kubeconfig": "clusters: []"}}', 200, "not a kubeconfig with a CA"),
        (b'{"data": {}}', 200, "has no 'kubeconfig'"),
        (b"not json", 200, "has no 'kubeconfig'"),
        (b"{}", 403, "HTTP 403"),
    ]
    for body, status, message in cases:
        server = _serve(cluster, body, status)
        try:
            with pytest.raises(clusterinfo.DiscoveryError, match=message):
                clusterinfo.discover(server.address, TOKEN, pin)
        finally:
            server.close()
