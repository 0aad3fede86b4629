"""Fixtures for the end-to-end tests: `python -m k8semu scheduler` processes, on the
`apiserver` of tests.support.fixtures, started on demand and ended by pid."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from k8semu.cluster import component
from tests.support.poll import Eventually


class SchedulerProcess(component.SchedulerProcess):
    """One `k8semu scheduler` process on the API server at `api`, started at once (with the
    launcher's command line, logging at info); output appended to `log_path`."""

    serving_timeout = 60.0
    proc: subprocess.Popen[bytes]  # started in __init__

    def __init__(self, api: str, log_path: Path, *extra: str) -> None:
        super().__init__([api], log_path, ["--log-level", "info", *extra])


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


# Scheduling through real processes gets a minute.
eventually = Eventually(timeout=60.0)
