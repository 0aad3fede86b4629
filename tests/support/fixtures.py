"""The pytest plugin for the real-process test suites: a module-scoped one-replica
`k8semu store` (`store`), one `k8semu apiserver` on it (`apiserver`), a `client` of that
server with fast retries (`TEST_RETRIES`) and a fresh `namespace` per test.

Registered once, in tests/conftest.py. A package that needs a different store or server
(tests/apiserver's three replicas, tests/client's two API servers) defines a fixture of the
same name in its own conftest, which overrides this one; `apiserver` then runs on that
package's `store`, and `namespace` is made through that package's `client`. Nothing here is
imported by k8semu itself.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from k8semu.client import Client, Retries
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.api.v1 import core_pb2
from tests.support.apiserver import APIServerProcess, running, serving

# Tests restart servers under the client; retrying fast keeps the waits short.
TEST_RETRIES = Retries(attempts=6, base_delay=0.05, max_delay=0.5, cooloff=1.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8semuStoreCluster]:
    cluster = K8semuStoreCluster(tmp_path_factory.mktemp("store") / "cluster", 1)
    with running(cluster):
        yield cluster


@pytest.fixture(scope="module")
def apiserver(
    store: K8semuStoreCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[APIServerProcess]:
    with serving(store, tmp_path_factory.mktemp("apiserver") / "apiserver.log") as server:
        yield server


@pytest.fixture
async def client(apiserver: APIServerProcess) -> AsyncIterator[Client]:
    async with Client([apiserver.address], retries=TEST_RETRIES) as c:
        yield c


async def new_namespace(client: Client) -> str:
    ns = core_pb2.Namespace()
    ns.metadata.name = f"t-{uuid.uuid4().hex[:8]}"
    await client.create(ns)
    return ns.metadata.name


@pytest.fixture
async def namespace(client: Client) -> str:
    """A fresh namespace for one test."""
    return await new_namespace(client)


@pytest.fixture(scope="module")
def metrics_apiserver(
    store: K8semuStoreCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[APIServerProcess]:
    """An API server serving the resource metrics, scraping the kubelets every second (a
    module that runs kubelets on it overrides `apiserver` with this one)."""
    log = tmp_path_factory.mktemp("metrics-apiserver") / "apiserver.log"
    with serving(store, log, ["--metric-resolution", "1s"]) as server:
        yield server
