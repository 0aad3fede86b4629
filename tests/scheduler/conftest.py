"""Fixtures for the end-to-end tests: `python -m k8semu scheduler` processes, on the
`apiserver` of k8semu.testing.fixtures, started on demand and ended by pid."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from k8semu.client import Client, Retries
from k8semu.pb.api.v1 import core_pb2
from k8semu.testing.apiserver import APIServerProcess
from k8semu.testing.poll import Eventually
from k8semu.testing.process import ComponentProcess

TEST_RETRIES = Retries(attempts=6, base_delay=0.05, max_delay=0.5, cooloff=1.0)


class SchedulerProcess(ComponentProcess):
    """One `k8semu scheduler` process, started at once; output appended to `log_path`."""

    component = "scheduler"
    serving_timeout = 60.0
    proc: subprocess.Popen[bytes]  # started in __init__

    def __init__(self, api: str, log_path: Path, *extra: str) -> None:
        super().__init__("scheduler", ["--server", api, "--log-level", "info", *extra], log_path)
        self.start()


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
