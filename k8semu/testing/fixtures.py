"""The pytest plugin for the real-process test suites: a module-scoped one-replica
`k8semu store` (`store`) and one `k8semu apiserver` on it (`apiserver`).

Registered once, in tests/conftest.py. A package that needs a different store or server
(tests/apiserver's three replicas, tests/client's two API servers) defines a fixture of the
same name in its own conftest, which overrides this one; `apiserver` then runs on that
package's `store`. Nothing here is imported by k8semu itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.testing.apiserver import APIServerProcess


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8semuStoreCluster]:
    cluster = K8semuStoreCluster(tmp_path_factory.mktemp("store") / "cluster", 1)
    with cluster:
        cluster.start()
        cluster.wait_ready(timeout=60)
        yield cluster


@pytest.fixture(scope="module")
def apiserver(
    store: K8semuStoreCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[APIServerProcess]:
    server = APIServerProcess(store, tmp_path_factory.mktemp("apiserver") / "apiserver.log")
    try:
        server.wait_serving()
        yield server
    finally:
        server.close()
