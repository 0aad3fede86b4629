"""`k8semu status` (and the launcher's health checks) must not call a live component down
because the machine is busy: a probe whose connection takes longer than 50 ms to answer (a
TLS handshake at load average 30 here) still gets the component's answer."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from k8semu.cluster.probes import Probes
from k8semu.cluster.processes import free_loopback_ports

DELAY_S = 0.3  # before the server's first bytes reach the prober


def _pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
    with contextlib.suppress(OSError):
        first = True
        while data := src.recv(65536):
            if first:
                time.sleep(delay)
                first = False
            dst.sendall(data)
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def _slow_proxy(port: int, upstream: int) -> Iterator[None]:
    """A TCP proxy on `port` whose answers start DELAY_S late: a server on a busy machine."""
    lsock = socket.create_server(("127.0.0.1", port))
    lsock.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = lsock.accept()
            except TimeoutError:
                continue
            server = socket.create_connection(("127.0.0.1", upstream))
            conns.extend((client, server))
            threading.Thread(target=_pump, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=_pump, args=(server, client, DELAY_S), daemon=True).start()

    accepter = threading.Thread(target=serve, daemon=True)
    accepter.start()
    try:
        yield
    finally:
        stop.set()
        accepter.join()
        lsock.close()
        for c in conns:
            c.close()


@pytest.fixture
def slow_health_server() -> Iterator[str]:
    """A gRPC health server reached through the slow proxy; its address."""
    direct, slow = free_loopback_ports(2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{direct}")
    server.start()
    try:
        with _slow_proxy(slow, direct):
            yield f"127.0.0.1:{slow}"
    finally:
        server.stop(None)


def test_a_probe_waits_for_a_slow_connection_within_its_timeout(slow_health_server: str) -> None:
    probes = Probes()
    try:
        assert probes.health([slow_health_server], timeout=5.0) == {slow_health_server: "SERVING"}
    finally:
        probes.close()
