"""Fixtures: a real store (k8semu store or etcd) and a `python -m k8semu apiserver` process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from k8semu import transport
from k8semu.apiserver.objects import pack
from k8semu.cluster.processes import EtcdCluster, K8semuStoreCluster
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import apiserver_pb2_grpc
from tests.support.apiserver import APIServerProcess, on_new_store, running


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8semuStoreCluster]:
    with running(K8semuStoreCluster(tmp_path_factory.mktemp("store") / "cluster", 3)) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def etcd_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[APIServerProcess]:
    if not EtcdCluster.available():
        pytest.skip("no etcd binary at /usr/bin/etcd")
    base = tmp_path_factory.mktemp("etcd")
    yield from on_new_store(EtcdCluster(base / "cluster", 1), base / "apiserver.log")


# Kubernetes' own example (its documentation's nginx Deployment) and a Service for it.
NGINX_APP = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
          name: http
        resources:
          limits: {cpu: 500m, memory: 128Mi}
        readinessProbe:
          httpGet: {path: /, port: http}
---
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app: nginx
  ports:
    - protocol: TCP
      port: 80
      targetPort: http
"""


def unpack(packed: any_pb2.Any, cls: type[Any]) -> Any:
    obj = cls()
    assert packed.Unpack(obj), packed.type_url
    return obj


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
