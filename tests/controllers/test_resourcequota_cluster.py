"""ResourceQuota on real processes: a store, an API server (the quota admission) and the
resourcequota controller in a controller manager. Pods are never scheduled: quota counts
them from creation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from k8semu.client import APIStatusError, Client, Invalid, NotFound
from k8semu.controllers.manager import ControllerManager
from k8semu.pb.api.v1 import core_pb2, quota_pb2
from tests.controllers.conftest import controller_manager
from tests.support.poll import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
async def manager(client: Client) -> AsyncIterator[ControllerManager]:
    async with controller_manager(client, "resourcequota") as cm:
        yield cm


def resource_quota(namespace: str, **hard: str) -> quota_pb2.ResourceQuota:
    q = quota_pb2.ResourceQuota(api_version="v1", kind="ResourceQuota")
    q.metadata.name, q.metadata.namespace = "q", namespace
    q.spec.hard.update(hard)
    return q


def pod(namespace: str, name: str) -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name, p.metadata.namespace = name, namespace
    p.spec.containers.add(name="c", image="nginx")
    return p


async def _used(client: Client, namespace: str, pods: str) -> bool:
    q = await client.get(quota_pb2.ResourceQuota, "q", namespace=namespace)
    return q.status.used.get("pods") == pods


async def test_quota_refuses_the_pod_over_it_and_frees_the_slot_on_deletion(
    client: Client, namespace: str, manager: ControllerManager
) -> None:
    await client.create(resource_quota(namespace, pods="2"))
    await eventually(lambda: _used(client, namespace, "0"), what="the controller counts")
    await client.create(pod(namespace, "a"))
    await client.create(pod(namespace, "b"))
    with pytest.raises(APIStatusError) as refused:
        await client.create(pod(namespace, "c"))
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.message == (
        'pods "c" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2'
    )
    with pytest.raises(NotFound):
        await client.get(core_pb2.Pod, "c", namespace=namespace)
    await client.delete(core_pb2.Pod, "a", namespace=namespace, grace_period_seconds=0)
    await eventually(lambda: _used(client, namespace, "1"), what="usage given back")
    await client.create(pod(namespace, "c"))


async def test_concurrent_creates_take_exactly_the_free_slots(
    client: Client, namespace: str, manager: ControllerManager
) -> None:
    await client.create(resource_quota(namespace, pods="3"))
    results = await asyncio.gather(
        *(client.create(pod(namespace, f"p{i}")) for i in range(8)), return_exceptions=True
    )
    admitted = [r for r in results if isinstance(r, core_pb2.Pod)]
    assert len(admitted) == 3, results
    assert all(isinstance(r, core_pb2.Pod | APIStatusError) for r in results), results
    assert len((await client.list(core_pb2.Pod, namespace=namespace)).items) == 3
    await eventually(lambda: _used(client, namespace, "3"), what="the controller agrees")


async def test_a_bad_quota_is_refused_and_nothing_written(client: Client, namespace: str) -> None:
    with pytest.raises(Invalid) as bad:
        await client.create(resource_quota(namespace, pods="-1", widgets="1"))
    assert 'spec.hard[pods]: Invalid value: "-1": must be greater than or equal to 0' in str(
        bad.value
    )
    assert 'spec.hard[widgets]: Invalid value: "widgets"' in str(bad.value)
    with pytest.raises(NotFound):
        await client.get(quota_pb2.ResourceQuota, "q", namespace=namespace)


async def test_limit_range_defaults_satisfy_the_quota_and_bounds_refuse(
    client: Client, namespace: str
) -> None:
    lr = quota_pb2.LimitRange(api_version="v1", kind="LimitRange")
    lr.metadata.name, lr.metadata.namespace = "lr", namespace
    lr.spec.limits.add(type="Container", max={"cpu": "1"}, default_request={"cpu": "100m"})
    await client.create(lr)
    await client.create(resource_quota(namespace, **{"requests.cpu": "1", "limits.cpu": "2"}))
    # The LimitRange fills in what the quota requires (admission runs LimitRanger first).
    created = await client.create(pod(namespace, "defaulted"))
    res = created.spec.containers[0].resources
    assert (res.requests["cpu"], res.limits["cpu"]) == ("100m", "1")
    big = pod(namespace, "big")
    big.spec.containers[0].resources.limits["cpu"] = "2"
    with pytest.raises(APIStatusError) as refused:
        await client.create(big)
    assert refused.value.message == (
        'pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2'
    )
    bad = quota_pb2.LimitRange(api_version="v1", kind="LimitRange")
    bad.metadata.name, bad.metadata.namespace = "bad", namespace
    bad.spec.limits.add(type="Container", min={"cpu": "2"}, max={"cpu": "1"})
    with pytest.raises(Invalid, match="min value 2 is greater than max value 1"):
        await client.create(bad)
    with pytest.raises(NotFound):
        await client.get(quota_pb2.LimitRange, "bad", namespace=namespace)
