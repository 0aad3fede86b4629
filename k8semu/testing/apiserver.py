"""A `k8semu apiserver` subprocess for tests: started on a free loopback port, ended by pid.

One class for every test package that needs a real API server (tests/apiserver, tests/client,
tests/cli): it can be killed with SIGKILL and restarted on the same address, so clients and
informers meet a real crash and a real comeback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from k8semu.testing.process import ComponentProcess

DEADLINE = 30.0


class HasEndpoints(Protocol):
    @property
    def endpoints(self) -> list[str]: ...


class APIServerProcess(ComponentProcess):
    """One API server process on a fixed loopback address; its output is appended to
    `log_path` across restarts. Starts at once unless `start=False`. Its health service says
    SERVING once the system namespaces exist."""

    component = "apiserver"
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
        self.extra_args = tuple(extra_args)
        super().__init__(
            "apiserver",
            [
                "--store-endpoints", ",".join(store.endpoints),
                "--bookmark-interval", "0.5",
                "--log-level", "warning",
                *self.extra_args,
            ],
            log_path,
        )  # fmt: skip
        if start:
            self.start()

    def restart(self) -> None:
        self.kill()
        self.start()
        self.wait_serving()
