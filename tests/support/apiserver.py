"""A `k8semu apiserver` subprocess for tests: started on a free loopback port, ended by pid.

One class for every test package that needs a real API server (tests/apiserver, tests/client,
tests/cli): it can be killed with SIGKILL and restarted on the same address, so clients and
informers meet a real crash and a real comeback. Its command line is the launcher's
(`cluster.component.APIServerProcess`) plus the tests' fast bookmarks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from k8semu.cluster import component
from k8semu.cluster.processes import EtcdCluster, K8semuStoreCluster, ProcessCluster

DEADLINE = 60.0  # a wait on real processes beside busy test workers (tests/support/poll.py)
Cluster = TypeVar("Cluster", bound=ProcessCluster)


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


def one_replica(backend: str, base: Path) -> ProcessCluster:
    """A one-member store of `backend` ("k8semu" or "etcd", for tests that run on both) in
    `base`, not started; skips the test where etcd is not installed."""
    if backend == "etcd":
        if not EtcdCluster.available():
            pytest.skip("no etcd binary at /usr/bin/etcd")
        return EtcdCluster(base, 1)
    return K8semuStoreCluster(base, 1)


@contextlib.contextmanager
def running(store: Cluster) -> Iterator[Cluster]:
    """`store` started and ready (it has a leader); stopped, every member by pid, after."""
    with store:
        store.start()
        store.wait_ready(timeout=60)
        yield store


@contextlib.contextmanager
def serving(
    store: HasEndpoints, log_path: Path, extra_args: Sequence[str] = ()
) -> Iterator[APIServerProcess]:
    """An API server on `store`, SERVING; ended after."""
    server = APIServerProcess(store, log_path, extra_args)
    try:
        server.wait_serving()
        yield server
    finally:
        server.close()


def on_new_store(store: ProcessCluster, log_path: Path) -> Iterator[APIServerProcess]:
    """A module fixture's body: `store` started, and an API server on it."""
    with running(store), serving(store, log_path) as server:
        yield server
