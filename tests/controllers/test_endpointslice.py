"""EndpointSlices: the controller on a fake cluster (conditions, ports, the 100-endpoint
limit, slices going with their Service), the kind's checks, and end to end on a store, an
API server and the controller (a pod's readiness reaching its slice)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from k8semu.api import timestamps
from k8semu.apiserver import registry
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.errors import Invalid
from k8semu.client import Client, SharedInformers
from k8semu.client.events import EventRecorder
from k8semu.controllers.context import ControllerContext
from k8semu.controllers.endpointslice import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    EndpointSliceController,
)
from k8semu.pb.api.v1 import core_pb2, discovery_pb2
from tests.controllers.conftest import FakeCluster
from tests.controllers.test_endpoints import make_pod, make_service
from tests.support.poll import eventually

ROW = registry.build(DEFAULT_RANGES).resolve("endpointslices")


def slices(cluster: FakeCluster) -> list[discovery_pb2.EndpointSlice]:
    return cluster.objects(discovery_pb2.EndpointSlice)


def summary(eps: discovery_pb2.EndpointSlice) -> list[tuple[str, bool, bool, bool]]:
    return [
        (e.addresses[0], e.conditions.ready, e.conditions.serving, e.conditions.terminating)
        for e in eps.endpoints
    ]


async def test_conditions_ports_labels_and_owner() -> None:
    cluster = FakeCluster()
    ctrl = EndpointSliceController(cluster.ctx)
    going = make_pod("web-3", "10.0.0.3")
    going.metadata.deletion_timestamp.CopyFrom(timestamps.now())
    cluster.add(
        make_service(),
        make_pod("web-1", "10.0.0.1"),
        make_pod("web-2", "10.0.0.2", ready=False),
        going,
        make_pod("no-ip", ""),
        make_pod("other", "10.0.0.9", labels={"app": "db"}),
    )
    await cluster.drain(ctrl)
    [eps] = slices(cluster)
    assert eps.metadata.name == "web-0" and eps.address_type == "IPv4"
    assert eps.metadata.labels[SERVICE_NAME_LABEL] == "web"
    assert eps.metadata.labels[MANAGED_BY_LABEL] == MANAGED_BY
    assert eps.metadata.labels["team"] == "a"
    assert eps.metadata.owner_references[0].kind == "Service"
    assert [(p.name, p.port, p.protocol) for p in eps.ports] == [("http", 8080, "TCP")]
    assert summary(eps) == [
        ("10.0.0.1", True, True, False),
        ("10.0.0.2", False, False, False),
        ("10.0.0.3", False, True, True),  # terminating, still serving
    ]
    assert eps.endpoints[0].node_name == "n1"
    assert eps.endpoints[0].target_ref.name == "web-1"
    cluster.client.clear()
    await cluster.drain(ctrl)
    assert cluster.client.actions == []  # nothing changed: nothing written


async def test_at_most_100_endpoints_per_slice_and_slices_go_with_the_service() -> None:
    cluster = FakeCluster()
    ctrl = EndpointSliceController(cluster.ctx)
    pods = [make_pod(f"web-{i:03}", f"10.0.{i // 200}.{i % 200 + 1}") for i in range(250)]
    cluster.add(make_service(), *pods)
    await cluster.drain(ctrl)
    assert sorted(len(s.endpoints) for s in slices(cluster)) == [50, 100, 100]
    del cluster.client.objects[("services", "default", "web")]
    cluster.sync()
    ctrl.queue.add("default/web")
    await cluster.drain(ctrl)
    assert slices(cluster) == []


async def test_an_empty_service_has_one_empty_slice() -> None:
    cluster = FakeCluster()
    ctrl = EndpointSliceController(cluster.ctx)
    cluster.add(make_service())
    await cluster.drain(ctrl)
    [eps] = slices(cluster)
    assert list(eps.endpoints) == [] and list(eps.ports) == []


def test_bad_slices_are_refused() -> None:
    eps = discovery_pb2.EndpointSlice(api_version="discovery.k8s.io/v1", kind="EndpointSlice")
    eps.metadata.name = "s"
    eps.address_type = "IPv5"
    eps.endpoints.add(addresses=[])
    eps.ports.add(port=70000)
    ROW.prepare_for_create(eps, namespace="default", uid="")
    with pytest.raises(Invalid) as bad:
        ROW.validate_create(eps)
    text = str(bad.value)
    assert 'addressType: Unsupported value: "IPv5"' in text
    assert "endpoints[0].addresses: Required value" in text
    assert "ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive" in text
    eps.address_type = "IPv4"
    eps.endpoints[0].addresses.append("10.0.0.300")
    with pytest.raises(Invalid, match=r'"10\.0\.0\.300": must be a valid IPv4 address'):
        ROW.validate_create(eps)


@pytest.mark.slow
async def test_end_to_end_a_slice_follows_readiness(client: Client, namespace: str) -> None:
    svc = make_service()
    svc.metadata.namespace, svc.spec.cluster_ip = namespace, ""
    await client.create(svc)
    pod = make_pod("web-1", "")
    pod.metadata.namespace, pod.metadata.uid = namespace, ""
    pod.status.Clear()
    await client.create(pod)
    informers = SharedInformers(client)
    ctx = ControllerContext(
        client=client, informers=informers, recorder=EventRecorder(client, "controller-manager")
    )
    ctrl = EndpointSliceController(ctx)
    informers.start()
    runner = asyncio.get_running_loop().create_task(ctrl.run())

    async def slice_is(expected: Any) -> bool:
        found = (await client.list(discovery_pb2.EndpointSlice, namespace=namespace)).items
        return [summary(s) for s in found] == expected

    async def set_ready(ready: bool) -> None:
        current = await client.get(core_pb2.Pod, "web-1", namespace=namespace)
        current.status.phase, current.status.pod_ip = "Running", "127.244.0.2"
        del current.status.conditions[:]
        current.status.conditions.add(type="Ready", status="True" if ready else "False")
        await client.update_status(current)

    try:
        await eventually(lambda: slice_is([[]]), what="one empty slice")
        await set_ready(False)
        await eventually(lambda: slice_is([[("127.244.0.2", False, False, False)]]))
        await set_ready(True)
        await eventually(lambda: slice_is([[("127.244.0.2", True, True, False)]]))
        await client.delete(core_pb2.Service, "web", namespace=namespace)
        await eventually(lambda: slice_is([]), what="the slices go with the service")
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await informers.stop()
