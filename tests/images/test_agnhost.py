"""agnhost netexec: /hostname, /echo and the UDP hostname command."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable

from k8semu.cluster.processes import free_loopback_ports
from tests.images.conftest import ImageProcess


def test_netexec_http_and_udp(start_image: Callable[..., ImageProcess]) -> None:
    http_port, udp_port = free_loopback_ports(2)
    agn = start_image(
        "agnhost", "netexec", f"--http-port={http_port}", f"--udp-port={udp_port}",
        env={"POD_IP": "127.0.0.71", "HOSTNAME": "netexec-0"},
    )  # fmt: skip
    host, port = agn.address()
    assert (host, port) == ("127.0.0.71", http_port)
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", "/hostname")
    assert conn.getresponse().read() == b"netexec-0"
    conn.request("GET", "/echo?msg=hello")
    assert conn.getresponse().read() == b"hello"
    conn.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"hostname", (host, udp_port))
        assert s.recvfrom(100)[0] == b"netexec-0"
    assert agn.terminate() == 0
