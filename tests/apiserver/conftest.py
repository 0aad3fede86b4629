"""Fixtures: a real store (k8semu store or etcd) and a `python -m k8semu apiserver` process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from k8semu import transport
from k8semu.apiserver.objects import pack
from k8semu.cluster.processes import (
    EtcdCluster,
    K8semuStoreCluster,
    ProcessCluster,
    free_loopback_ports,
)
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import apiserver_pb2_grpc

DEADLINE = 30.0


class APIServerProcess:
    """One API server subprocess on a free loopback port, ended by pid."""

    def __init__(
        self, store: ProcessCluster, log_path: Path, extra_args: Sequence[str] = ()
    ) -> None:
        self.port = free_loopback_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "k8semu", "apiserver",
                "--listen-address", self.address,
                "--store-endpoints", ",".join(store.endpoints),
                "--bookmark-interval", "0.5",
                "--log-level", "warning",
                *extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_serving(self, timeout: float = DEADLINE) -> None:
        end = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise AssertionError(f"apiserver exited: {self.log_path.read_text()}")
                try:
                    resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"apiserver not serving in {timeout}s: {self.log_path.read_text()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _start(store: ProcessCluster, base: Path) -> Iterator[APIServerProcess]:
    with store:
        store.start()
        store.wait_ready(timeout=60)
        server = APIServerProcess(store, base / "apiserver.log")
        try:
            server.wait_serving()
            yield server
        finally:
            server.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8semuStoreCluster]:
    base = tmp_path_factory.mktemp("store")
    cluster = K8semuStoreCluster(base / "cluster", 3)
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


@pytest.fixture(scope="module")
def etcd_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[APIServerProcess]:
    if not EtcdCluster.available():
        pytest.skip("no etcd binary at /usr/bin/etcd")
    base = tmp_path_factory.mktemp("etcd")
    yield from _start(EtcdCluster(base / "cluster", 1), base)


class Client:
    """The API stub with a deadline on every unary call."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = apiserver_pb2_grpc.APIStub(channel)

    async def create(self, resource: str, obj: Message, namespace: str = "") -> api.ObjectResponse:
        req = api.CreateRequest(resource=resource, namespace=namespace, object=pack(obj))
        resp: api.ObjectResponse = await self.stub.Create(req, timeout=10)
        return resp

    async def get(self, resource: str, name: str, namespace: str = "") -> api.ObjectResponse:
        req = api.GetRequest(resource=resource, namespace=namespace, name=name)
        resp: api.ObjectResponse = await self.stub.Get(req, timeout=10)
        return resp

    async def list(self, resource: str, namespace: str = "", **kw: object) -> api.ListResponse:
        req = api.ListRequest(resource=resource, namespace=namespace, **kw)  # type: ignore[arg-type]
        resp: api.ListResponse = await self.stub.List(req, timeout=10)
        return resp

    async def update(
        self, resource: str, obj: Message, *, status: bool = False
    ) -> api.ObjectResponse:
        req = api.UpdateRequest(resource=resource, object=pack(obj))
        call = self.stub.UpdateStatus if status else self.stub.Update
        resp: api.ObjectResponse = await call(req, timeout=10)
        return resp

    async def delete(
        self, resource: str, name: str, namespace: str = "", **pre: str
    ) -> api.ObjectResponse:
        req = api.DeleteRequest(
            resource=resource,
            namespace=namespace,
            name=name,
            preconditions=api.Preconditions(**pre),
        )
        resp: api.ObjectResponse = await self.stub.Delete(req, timeout=10)
        return resp


@pytest.fixture
async def client(apiserver: APIServerProcess) -> AsyncIterator[Client]:
    async with transport.channel(apiserver.address) as channel:
        yield Client(channel)


@pytest.fixture
async def etcd_client(etcd_apiserver: APIServerProcess) -> AsyncIterator[Client]:
    async with transport.channel(etcd_apiserver.address) as channel:
        yield Client(channel)
