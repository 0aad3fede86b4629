"""The API server end to end: real store processes, a real `k8semu apiserver` process."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2

from k8semu import transport
from k8semu.api import manifest
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

from .conftest import NGINX_APP, Client, unpack


def _pod(name: str, namespace: str = "", labels: dict[str, str] | None = None) -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name = name
    pod.metadata.namespace = namespace
    pod.metadata.labels.update(labels or {})
    pod.spec.containers.add(name="c", image="busybox")
    return pod


async def _names(client: Client, resource: str, namespace: str, **kw: object) -> list[str]:
    resp = await client.list(resource, namespace, **kw)
    return [unpack(i, core_pb2.Pod).metadata.name for i in resp.items]


async def _crud(client: Client, namespace: str = "default") -> None:
    deploy, service = manifest.load_all(NGINX_APP, source="app.yaml")
    created = unpack((await client.create("deploy", deploy, namespace)).object, apps_pb2.Deployment)
    m = created.metadata
    assert (m.namespace, m.generation, len(m.uid)) == (namespace, 1, 36)
    assert m.creation_timestamp.seconds > 0 and int(m.resource_version) > 0
    assert created.spec.strategy.rolling_update.max_surge.str_val == "25%"
    assert created.spec.template.spec.restart_policy == "Always"
    got = unpack(
        (await client.get("deployments", "nginx-deployment", namespace)).object, apps_pb2.Deployment
    )
    assert got == created
    svc = unpack((await client.create("svc", service, namespace)).object, core_pb2.Service)
    assert svc.spec.type == "ClusterIP" and svc.spec.ports[0].target_port.str_val == "http"
    listed = await client.list("services", namespace)
    # `default` also holds the API servers' own `kubernetes` Service.
    names = [unpack(i, core_pb2.Service).metadata.name for i in listed.items]
    assert [n for n in names if n != "kubernetes"] == ["my-service"]
    assert int(listed.resource_version) >= int(svc.metadata.resource_version)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.create("deploy", deploy, namespace)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # Update: spec change bumps generation; status changes through Update are ignored.
    got.spec.replicas = 5
    got.status.replicas = 99
    updated = unpack((await client.update("deploy", got)).object, apps_pb2.Deployment)
    assert updated.spec.replicas == 5 and updated.metadata.generation == 2
    assert updated.status.replicas == 0
    assert int(updated.metadata.resource_version) > int(got.metadata.resource_version)
    updated.status.replicas = 5
    status = unpack(
        (await client.update("deploy", updated, status=True)).object, apps_pb2.Deployment
    )
    assert status.status.replicas == 5 and status.metadata.generation == 2
    # Delete with a stale precondition is refused; then it goes.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.delete(
            "deploy", "nginx-deployment", namespace, resource_version=m.resource_version
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    gone = unpack(
        (await client.delete("deploy", "nginx-deployment", namespace)).object, apps_pb2.Deployment
    )
    assert gone.metadata.uid == m.uid
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.get("deploy", "nginx-deployment", namespace)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await client.delete("svc", "my-service", namespace)


async def test_crud_round_trip(client: Client) -> None:
    await _crud(client)


async def test_crud_round_trip_on_real_etcd(etcd_client: Client) -> None:
    await _crud(etcd_client)


async def test_system_namespaces_exist_and_discovery(client: Client) -> None:
    names = [unpack(i, core_pb2.Namespace).metadata.name for i in (await client.list("ns")).items]
    assert {"default", "kube-system", "kube-public"} <= set(names)
    disc = await client.stub.Discovery(api.DiscoveryRequest(), timeout=10)
    assert {r.name for r in disc.resources} >= {"pods", "deployments", "namespaces"}


async def test_concurrent_updates_exactly_one_wins(client: Client) -> None:
    cm = core_pb2.ConfigMap()
    cm.metadata.name = "race"
    base = unpack((await client.create("cm", cm)).object, core_pb2.ConfigMap)
    attempts = []
    for i in range(2):
        copy = core_pb2.ConfigMap()
        copy.CopyFrom(base)
        copy.data["writer"] = str(i)
        attempts.append(client.update("configmaps", copy))
    results = await asyncio.gather(*attempts, return_exceptions=True)
    codes = sorted(r.code().name if isinstance(r, grpc.aio.AioRpcError) else "OK" for r in results)
    assert codes == ["ABORTED", "OK"], results
    errs = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert "the object has been modified" in (errs[0].details() or "")


async def test_list_selectors_and_paging(client: Client) -> None:
    ns = core_pb2.Namespace()
    ns.metadata.name = "paging"
    await client.create("namespaces", ns)
    for i in range(25):
        await client.create(
            "pods", _pod(f"p{i:02d}", labels={"tier": "a" if i % 2 else "b"}), "paging"
        )
    assert len(await _names(client, "po", "paging", label_selector="tier=a")) == 12
    assert await _names(client, "po", "paging", field_selector="metadata.name=p03") == ["p03"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.list("pods", "paging", field_selector="spec.bogus=x")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.bogus" in (err.value.details() or "")
    seen: list[str] = []
    token = ""
    versions = set()
    while True:
        page = await client.list("pods", "paging", limit=10, **{"continue": token})
        versions.add(page.resource_version)
        seen += [unpack(i, core_pb2.Pod).metadata.name for i in page.items]
        # A write between pages does not show up: pages are read at the first page's revision.
        if token == "":
            await client.create("pods", _pod("p99"), "paging")
        token = getattr(page, "continue")
        if not token:
            break
    assert seen == [f"p{i:02d}" for i in range(25)]
    assert len(versions) == 1


async def _collect(call: Any, count: int) -> list[api.WatchEvent]:
    events: list[api.WatchEvent] = []
    async for ev in call:
        if ev.type != "BOOKMARK":
            events.append(ev)
        if len(events) == count:
            break
    return events


async def test_watch_from_list_resource_version(client: Client) -> None:
    start = (await client.list("pods", "default")).resource_version
    call = client.stub.Watch(
        api.WatchRequest(resource="pods", namespace="default", resource_version=start)
    )
    pod = unpack((await client.create("pods", _pod("w1"))).object, core_pb2.Pod)
    pod.metadata.labels["x"] = "y"
    await client.update("pods", pod)
    await client.delete("pods", "w1")
    events = await asyncio.wait_for(_collect(call, 3), 60)
    call.cancel()
    assert [e.type for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    versions = [int(unpack(e.object, core_pb2.Pod).metadata.resource_version) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == 3


async def test_filtered_watch_and_bookmarks(client: Client) -> None:
    call = client.stub.Watch(
        api.WatchRequest(
            resource="pods", namespace="default", label_selector="sel=yes", allow_bookmarks=True
        )
    )
    # The watch starts "now": wait for a bookmark, which proves the watch is established.
    async for ev in call:
        assert ev.type == "BOOKMARK"
        assert unpack(ev.object, core_pb2.Pod).metadata.resource_version
        break
    pod = unpack(
        (await client.create("pods", _pod("f1", labels={"sel": "no"}))).object, core_pb2.Pod
    )
    pod.metadata.labels["sel"] = "yes"
    pod = unpack((await client.update("pods", pod)).object, core_pb2.Pod)
    pod.metadata.labels["sel"] = "no"
    await client.update("pods", pod)
    events = await asyncio.wait_for(_collect(call, 2), 60)
    call.cancel()
    assert [e.type for e in events] == ["ADDED", "DELETED"]
    await client.delete("pods", "f1")


async def test_watch_from_compacted_revision_is_out_of_range(
    client: Client, store: K8semuStoreCluster
) -> None:
    old = (await client.list("pods", "default")).resource_version
    for i in range(3):
        await client.create("pods", _pod(f"c{i}"))
    now = int((await client.list("pods", "default")).resource_version)
    async with transport.channel(store.endpoints) as channel:
        await rpc_pb2_grpc.KVStub(channel).Compact(
            rpc_pb2.CompactionRequest(revision=now, physical=True), timeout=10
        )
    # Pods already have a watch cache whose buffer still holds `old` (served, as Kubernetes
    # does); configmaps have none yet, so this watch asks the store for compacted history.
    call = client.stub.Watch(
        api.WatchRequest(resource="configmaps", namespace="default", resource_version=old)
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(_collect(call, 1), 60)
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "too old resource version" in (err.value.details() or "")


@pytest.mark.parametrize(
    ("case", "code", "needle"),
    [
        ("unknown resource", grpc.StatusCode.NOT_FOUND, "widgets"),
        ("wrong type", grpc.StatusCode.INVALID_ARGUMENT, "k8semu.api.v1.Pod"),
        ("undecodable", grpc.StatusCode.INVALID_ARGUMENT, "cannot decode"),
        ("invalid name", grpc.StatusCode.INVALID_ARGUMENT, "metadata.name"),
        ("missing name", grpc.StatusCode.INVALID_ARGUMENT, "metadata.name: Required value"),
        ("missing namespace", grpc.StatusCode.NOT_FOUND, 'namespaces "nowhere" not found'),
        ("negative replicas", grpc.StatusCode.INVALID_ARGUMENT, "spec.replicas: must be >= 0"),
        ("oversized", grpc.StatusCode.INVALID_ARGUMENT, "object: Too long"),
    ],
)
async def test_bad_create_is_refused_and_writes_nothing(
    client: Client, case: str, code: grpc.StatusCode, needle: str
) -> None:
    before = await _names(client, "pods", "")
    resource, namespace = "pods", "default"
    packed = any_pb2.Any()
    if case == "unknown resource":
        resource = "widgets"
        packed.Pack(_pod("bad-1"))
    elif case == "wrong type":
        packed.Pack(core_pb2.Service())
    elif case == "undecodable":
        packed.type_url = "type.googleapis.com/k8semu.api.v1.Pod"
        packed.value = b"\xff\xff\xff"
    elif case == "invalid name":
        packed.Pack(_pod("Bad_Name"))
    elif case == "missing name":
        packed.Pack(_pod(""))
    elif case == "missing namespace":
        packed.Pack(_pod("bad-2", "nowhere"))
        namespace = "nowhere"
    elif case == "negative replicas":
        deploy = manifest.load_all(NGINX_APP, source="m")[0]
        deploy.spec.replicas = -1  # type: ignore[attr-defined]
        deploy.metadata.name = "bad-3"  # type: ignore[attr-defined]
        resource = "deployments"
        packed.Pack(deploy)
    elif case == "oversized":
        pod = _pod("bad-4")
        pod.metadata.annotations["blob"] = "x" * (1536 * 1024)
        packed.Pack(pod)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stub.Create(
            api.CreateRequest(resource=resource, namespace=namespace, object=packed), timeout=10
        )
    assert err.value.code() == code, err.value.details()
    assert needle in (err.value.details() or "")
    assert await _names(client, "pods", "") == before
    assert "bad-3" not in await _names(client, "deployments", "")


async def test_stale_and_missing_resource_version_and_immutable_fields(client: Client) -> None:
    svc = core_pb2.Service()
    svc.metadata.name = "immut"
    svc.spec.cluster_ip = "127.96.0.10"
    svc.spec.ports.add(port=80)
    v1 = unpack((await client.create("svc", svc)).object, core_pb2.Service)
    v1.spec.ports[0].port = 81
    v2 = unpack((await client.update("svc", v1)).object, core_pb2.Service)
    v1.spec.ports[0].port = 82
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.update("svc", v1)  # v1's resourceVersion is stale now
    assert err.value.code() == grpc.StatusCode.ABORTED
    v2.spec.cluster_ip = "127.96.0.11"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.update("svc", v2)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.clusterIP: field is immutable" in (err.value.details() or "")
    v2.spec.cluster_ip = "127.96.0.10"
    v2.metadata.resource_version = ""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.update("svc", v2)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata.resourceVersion: must be specified for an update" in (
        err.value.details() or ""
    )
    now = unpack((await client.get("svc", "immut")).object, core_pb2.Service)
    assert now.spec.ports[0].port == 81


async def test_deleting_a_namespace_deletes_its_objects(client: Client) -> None:
    ns = core_pb2.Namespace()
    ns.metadata.name = "doomed"
    await client.create("ns", ns)
    await client.create("pods", _pod("inside"), "doomed")
    await client.delete("ns", "doomed")
    assert await _names(client, "pods", "doomed") == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.create("pods", _pod("late"), "doomed")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
