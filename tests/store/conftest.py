"""Fixtures for tests that run real `k8semu store` processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from k8semu import transport
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.etcd import rpc_pb2_grpc


class Client:
    """Stubs of every etcd v3 service on one endpoint."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.watch = rpc_pb2_grpc.WatchStub(channel)
        self.lease = rpc_pb2_grpc.LeaseStub(channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(channel)


@pytest.fixture
def store_cluster(tmp_path: Path) -> Iterator[K8semuStoreCluster]:
    cluster = K8semuStoreCluster(tmp_path / "cluster", 3)
    with cluster:
        cluster.start()
        cluster.wait_ready(timeout=60)
        yield cluster


@pytest.fixture
async def clients(store_cluster: K8semuStoreCluster) -> AsyncIterator[dict[str, Client]]:
    channels = {name: transport.channel(m.endpoint) for name, m in store_cluster.members.items()}
    yield {name: Client(ch) for name, ch in channels.items()}
    for ch in channels.values():
        await ch.close()
