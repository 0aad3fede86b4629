"""The cluster autoscaler controller on a real store and API server, with a fake clock and no
kubelet (the test plays the kubelets): it carries on with what the status ConfigMap asked for
(ignoring what is not a slot), and removes an underused node as cluster-autoscaler does:
unneeded for the set time -> cordon and taint, its ReplicaSet pods deleted -> once they are
gone, the slot leaves nodeGroups -> once its Node is no longer Ready, the Node is deleted."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from k8semu.client import Client, NotFound, SharedInformers
from k8semu.controllers.clusterautoscaler import targets
from k8semu.controllers.clusterautoscaler.controller import (
    MAX_NODE_PROVISION_TIME,
    TO_BE_DELETED_TAINT,
    ClusterAutoscaler,
)
from k8semu.controllers.clusterautoscaler.pools import NodePool
from k8semu.controllers.context import ControllerContext, ControllerManagerConfig
from k8semu.pb.api.v1 import core_pb2
from tests.controllers.conftest import CapturingRecorder, FakeClock
from tests.support.poll import Eventually

pytestmark = pytest.mark.slow

eventually = Eventually()
POOL = NodePool(
    name="cat",
    min_nodes=1,
    max_nodes=3,
    scale_down_unneeded_time=30.0,
    capacity=(("cpu", "4"), ("memory", "8Gi"), ("pods", "10")),
)


@contextlib.asynccontextmanager
async def _running(
    client: Client, pool: NodePool
) -> AsyncIterator[tuple[ClusterAutoscaler, FakeClock]]:
    """A cluster autoscaler of ``pool`` on a fake clock, its informers synced."""
    informers = SharedInformers(client)
    ctx = ControllerContext(
        client=client,
        informers=informers,
        recorder=CapturingRecorder(),
        config=ControllerManagerConfig(node_pools=(pool,)),
    )
    clock = FakeClock()
    ca = ClusterAutoscaler(ctx, clock=clock)
    informers.start()
    try:
        await informers.wait_synced(timeout=20)
        yield ca, clock
    finally:
        await informers.stop()


@pytest.fixture
async def autoscaler(client: Client) -> AsyncIterator[tuple[ClusterAutoscaler, FakeClock]]:
    async with _running(client, POOL) as running:
        yield running


async def _ready_node(client: Client, name: str, status: str = "True") -> core_pb2.Node:
    try:
        node = await client.get(core_pb2.Node, name)
    except NotFound:
        node = await client.create(POOL.template(name))
    node.status.CopyFrom(POOL.template(name).status)
    node.status.conditions[0].status = status
    return await client.update_status(node)


def _rs_pod(namespace: str, name: str, node: str, cpu: str) -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name = name
    pod.metadata.namespace = namespace
    pod.metadata.owner_references.add(
        api_version="apps/v1", kind="ReplicaSet", name="web", uid="rs-uid", controller=True
    )
    pod.spec.node_name = node
    c = pod.spec.containers.add(name="app", image="busybox")
    c.resources.requests["cpu"] = cpu
    return pod


async def test_resumes_from_the_configmap_and_removes_an_underused_node(
    client: Client, namespace: str, autoscaler: tuple[ClusterAutoscaler, FakeClock]
) -> None:
    ca, clock = autoscaler
    cm = core_pb2.ConfigMap()
    cm.metadata.name = targets.STATUS_NAME
    cm.metadata.namespace = targets.NAMESPACE
    asked = {"cat": {"nodes": ["cat-1", "cat-0", "cat-9", "w1"]}, "gone": {"nodes": ["x"]}}
    cm.data[targets.NODE_GROUPS_KEY] = json.dumps(asked)
    await client.create(cm)
    await ca.load_targets()
    assert ca.targets == {"cat": ["cat-0", "cat-1"]}  # a former leader's, its junk left out

    for name in ("cat-0", "cat-1"):
        await _ready_node(client, name)
    await client.create(_rs_pod(namespace, "busy", "cat-0", "3"))  # 75% of cat-0
    await client.create(_rs_pod(namespace, "web-1", "cat-1", "100m"))  # fits on cat-0 too
    await eventually(lambda: len(ca.pods.cache) >= 2 and len(ca.nodes.cache) >= 2)

    await ca.scan()
    assert ca.unneeded == {"cat-1": clock.now} and not ca.draining
    clock.advance(29.0)
    await ca.scan()
    assert not ca.draining  # not unneeded for scaleDownUnneededTime (30s) yet
    clock.advance(1.0)
    await ca.scan()
    assert list(ca.draining) == ["cat-1"]
    node = await client.get(core_pb2.Node, "cat-1")
    assert node.spec.unschedulable
    assert [t.key for t in node.spec.taints] == [TO_BE_DELETED_TAINT]
    recorder = ca.recorder
    assert isinstance(recorder, CapturingRecorder)
    assert ("ScaleDown", "cat-1", "marked the node as toBeDeleted/unschedulable") in recorder.events
    assert ("ScaleDown", "web-1", "deleting pod for node scale down") in recorder.events
    with contextlib.suppress(NotFound):  # deleted gracefully: the kubelet would confirm it
        await client.delete(core_pb2.Pod, "web-1", namespace=namespace, grace_period_seconds=0)
    await eventually(lambda: ca.pods.cache.get(f"{namespace}/web-1") is None)

    await ca.scan()
    assert ca.targets["cat"] == ["cat-0"] and not ca.draining
    data = (await client.get(core_pb2.ConfigMap, targets.STATUS_NAME, namespace="kube-system")).data
    assert targets.decode(data[targets.NODE_GROUPS_KEY]) == {"cat": frozenset({"cat-0"})}
    assert "Name:        cat" in data[targets.STATUS_KEY]

    await ca.scan()  # still Ready (its kubelet not stopped yet): the Node stays
    await client.get(core_pb2.Node, "cat-1")
    await _ready_node(client, "cat-1", status="Unknown")  # its kubelet stopped
    await eventually(lambda: _status_of(ca, "cat-1") == "Unknown")
    await ca.scan()
    with pytest.raises(NotFound):
        await client.get(core_pb2.Node, "cat-1")
    await client.delete(core_pb2.Node, "cat-0")


def _status_of(ca: ClusterAutoscaler, name: str) -> str:
    node = ca.nodes.cache.get(name)
    return node.status.conditions[0].status if node is not None else ""


async def test_a_node_that_never_turns_ready_is_given_up(client: Client) -> None:
    pool = NodePool(name="prov", max_nodes=2, initial_nodes=1, capacity=POOL.capacity)
    async with _running(client, pool) as (ca, clock):
        await ca.load_targets()
        assert ca.targets == {"prov": ["prov-0"]} and set(ca.requested) == {"prov-0"}
        await ca.scan()
        clock.advance(MAX_NODE_PROVISION_TIME)
        await ca.scan()
        assert ca.targets == {"prov": []} and not ca.requested
        cm = await client.get(core_pb2.ConfigMap, targets.STATUS_NAME, namespace="kube-system")
        assert targets.decode(cm.data[targets.NODE_GROUPS_KEY])["prov"] == frozenset()
