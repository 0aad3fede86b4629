"""Fixtures for the end-to-end tests: `python -m k8semu scheduler` processes, on the
`apiserver` of k8semu.testing.fixtures, started on demand and ended by pid."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from k8semu.client import Client, Retries
from k8semu.cluster.processes import free_loopback_ports
from k8semu.pb.api.v1 import core_pb2
from k8semu.testing.apiserver import APIServerProcess
from k8semu.testing.poll import Eventually

TEST_RETRIES = Retries(attempts=6, base_delay=0.05, max_delay=0.5, cooloff=1.0)


class SchedulerProcess:
    """One `k8semu scheduler` process; output appended to `log_path`."""

    def __init__(self, api: str, log_path: Path, *extra: str) -> None:
        self.port = free_loopback_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "k8semu", "scheduler",
                    "--server", api,
                    "--listen-address", self.address,
                    "--log-level", "info",
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_serving(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise AssertionError(f"scheduler exited: {self.log_path.read_text()}")
                try:
                    resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"scheduler not serving in {timeout}s: {self.log_path.read_text()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def schedulers(tmp_path: Path) -> Iterator[list[SchedulerProcess]]:
    """Schedulers a test starts; every one is ended by pid afterwards."""
    started: list[SchedulerProcess] = []
    try:
        yield started
    finally:
        for s in started:
            s.close()
            # Shown by pytest only when the test failed.
            print(f"--- {s.log_path.name} (pid {s.pid}):\n{s.log_path.read_text()[-4000:]}")


@pytest.fixture
async def client(apiserver: APIServerProcess) -> AsyncIterator[Client]:
    async with Client([apiserver.address], retries=TEST_RETRIES) as c:
        yield c


@pytest.fixture
async def namespace(client: Client) -> str:
    ns = core_pb2.Namespace()
    ns.metadata.name = f"t-{uuid.uuid4().hex[:8]}"
    await client.create(ns)
    return ns.metadata.name


# Scheduling through real processes gets a minute.
eventually = Eventually(timeout=60.0)
