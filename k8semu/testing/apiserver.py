"""A `k8semu apiserver` subprocess for tests: started on a free loopback port, ended by pid.

One class for every test package that needs a real API server (tests/apiserver, tests/client,
tests/cli): it can be killed with SIGKILL and restarted on the same address, so clients and
informers meet a real crash and a real comeback.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from k8semu.cluster.processes import free_loopback_ports

DEADLINE = 30.0


class HasEndpoints(Protocol):
    @property
    def endpoints(self) -> list[str]: ...


class APIServerProcess:
    """One API server process on a fixed loopback address; its output is appended to
    `log_path` across restarts. Starts at once unless `start=False`."""

    def __init__(
        self,
        store: HasEndpoints,
        log_path: Path,
        extra_args: Sequence[str] = (),
        *,
        start: bool = True,
    ) -> None:
        self.store = store
        self.port = free_loopback_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "k8semu", "apiserver",
                    "--listen-address", self.address,
                    "--store-endpoints", ",".join(self.store.endpoints),
                    "--bookmark-interval", "0.5",
                    "--log-level", "warning",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_serving(self, timeout: float = DEADLINE) -> None:
        """Poll the health service until it says SERVING (the system namespaces exist)."""
        assert self.proc is not None
        end = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise AssertionError(f"apiserver exited: {self.log_path.read_text()}")
                try:
                    resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"apiserver not serving in {timeout}s: {self.log_path.read_text()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, by pid."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.kill()
        self.start()
        self.wait_serving()

    def close(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
