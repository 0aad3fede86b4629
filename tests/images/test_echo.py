"""The echo image: keep-alive, the pod's name in answers, probe toggles, bad input, SIGTERM."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable

from tests.images.conftest import ImageProcess

POD_ENV = {"POD_NAME": "echo-abc12", "HOSTNAME": "echo-abc12", "POD_IP": "127.0.0.21"}


def test_keep_alive_answers_name_the_pod_and_request(
    start_image: Callable[..., ImageProcess],
) -> None:
    echo = start_image("echo", "--listen=:0", env=POD_ENV)
    host, port = echo.address()
    assert host == "127.0.0.21"  # the pod IP from the environment
    conn = http.client.HTTPConnection(host, port, timeout=5)
    bodies = []
    local_ports = set()
    for path in ("/one", "/two?x=1", "/three"):
        conn.request("GET", path, headers={"X-Test": "yes"})
        resp = conn.getresponse()
        assert resp.status == 200
        bodies.append(resp.read().decode())
        assert conn.sock is not None
        local_ports.add(conn.sock.getsockname()[1])
    conn.close()
    assert len(local_ports) == 1, "all three requests went over one kept-alive connection"
    assert "pod: echo-abc12" in bodies[0]
    assert "GET /two?x=1 HTTP/1.1" in bodies[1]
    assert "X-Test: yes" in bodies[2]
    echo.wait_line(r'"GET /three HTTP/1.1" 200')  # access log on stdout


def test_http_echo_text_and_pipelined_requests(start_image: Callable[..., ImageProcess]) -> None:
    echo = start_image("echo", "-listen=127.0.0.22:0", "-text=hello world")
    host, port = echo.address()
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"hello world\n") < 2:
            chunk = s.recv(4096)
            assert chunk, f"closed early: {data!r}"
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2


def test_healthz_fails_after_fail_and_recovers(start_image: Callable[..., ImageProcess]) -> None:
    echo = start_image("echo", "--listen=127.0.0.23:0")
    host, port = echo.address()

    def get(path: str) -> int:
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status

    assert get("/healthz") == 200
    assert get("/fail") == 200
    assert get("/healthz") == 500
    assert get("/recover") == 200
    assert get("/healthz") == 200


def test_garbage_gets_400_and_the_server_keeps_serving(
    start_image: Callable[..., ImageProcess],
) -> None:
    echo = start_image("echo", "--listen=127.0.0.24:0")
    host, port = echo.address()
    for garbage in (
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad\r\n\r\n",
    ):
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(garbage)
            reply = s.recv(4096)
            assert reply.startswith(b"HTTP/1.1 400"), reply
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"a" * 70000)
        assert s.recv(4096).startswith(b"HTTP/1.1 431")
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", "/still-alive")
    assert conn.getresponse().status == 200
    conn.close()


def test_sigterm_exits_zero_with_an_idle_keep_alive_connection_open(
    start_image: Callable[..., ImageProcess],
) -> None:
    echo = start_image("echo", "--listen=127.0.0.25:0")
    host, port = echo.address()
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", "/")
    conn.getresponse().read()
    assert echo.terminate(timeout=3) == 0
    echo.wait_line("stopped after 1 requests")
    conn.close()
