"""A `k8semu apiserver` subprocess for tests: started on a free loopback port, ended by pid.

One class for every test package that needs a real API server (tests/apiserver, tests/client,
tests/cli): it can be killed with SIGKILL and restarted on the same address, so clients and
informers meet a real crash and a real comeback. Its command line is the launcher's
(`cluster.component.APIServerProcess`) plus the tests' fast bookmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from k8semu.cluster import component

DEADLINE = 30.0


class HasEndpoints(Protocol):
    @property
    def endpoints(self) -> list[str]: ...


class APIServerProcess(component.APIServerProcess):
    """One API server process on the test's `store`; its output is appended to `log_path`
    across restarts. Starts at once unless `start=False`."""

    serving_timeout = DEADLINE

    def __init__(
        self,
        store: HasEndpoints,
        log_path: Path,
        extra_args: Sequence[str] = (),
        *,
        start: bool = True,
    ) -> None:
        self.store = store
        super().__init__(
            store.endpoints,
            log_path,
            ["--bookmark-interval", "0.5", "--log-level", "warning", *extra_args],
            start=start,
        )
