"""Fixtures: two `python -m k8semu apiserver` processes on the shared 1-replica `store`.

The API server processes can be killed (SIGKILL, by pid) and restarted on the same address, so
clients and informers see a real crash and a real comeback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from k8semu import transport
from k8semu.client import Client
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.support.apiserver import APIServerProcess
from tests.support.fixtures import TEST_RETRIES
from tests.support.poll import Eventually


@pytest.fixture(scope="module")
def apiservers(
    store: K8semuStoreCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[APIServerProcess]]:
    base = tmp_path_factory.mktemp("apiservers")
    servers = [APIServerProcess(store, base / f"apiserver-{i}.log") for i in range(2)]
    try:
        for server in servers:
            server.wait_serving()
        yield servers
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def live_apiservers(apiservers: list[APIServerProcess]) -> list[APIServerProcess]:
    """The module's API servers, restarted first if an earlier test killed one."""
    for server in apiservers:
        if not server.running:
            server.start()
            server.wait_serving()
    return apiservers


@pytest.fixture
async def client(live_apiservers: list[APIServerProcess]) -> AsyncIterator[Client]:
    """The shared fixture's client, on the first of this package's two API servers."""
    async with Client([live_apiservers[0].address], retries=TEST_RETRIES) as c:
        yield c


async def compact(store: K8semuStoreCluster, revision: int) -> None:
    """The etcd v3 Compact RPC: forget every version below `revision`."""
    async with transport.channel(store.endpoints) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        await kv.Compact(rpc_pb2.CompactionRequest(revision=revision, physical=True), timeout=10)


# Client tests poll faster than the shared default (their waits are short alone); they give
# up no sooner, as an API server killed and restarted beside busy workers takes its time.
eventually = Eventually(interval=0.02)
