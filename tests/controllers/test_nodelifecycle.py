"""Node lifecycle controller, sample-controller style: caches filled by hand, a fake clock,
`reconcile` / `reconcile_eviction` called directly, the recorded API calls compared.

The end-to-end test at the bottom runs the controller in-process against a real store and
API server: a node whose Lease stops being renewed gets NotReady, tainted, and loses its pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from typing import Any, cast

import pytest
from google.protobuf.message import Message

from k8semu.client import AlreadyExists, Client, ClientError, Informer, NotFound, SharedInformers
from k8semu.client.events import EventRecorder
from k8semu.controllers.context import ControllerContext, ControllerManagerConfig
from k8semu.controllers.nodelifecycle import (
    NODE_LEASE_NAMESPACE,
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    NodeLifecycleController,
    node_condition,
    node_ready_status,
    toleration_seconds,
)
from k8semu.pb.api.v1 import coordination_pb2, core_pb2
from tests.controllers.conftest import T0, ControllerHarness, FakeClock
from tests.support.poll import eventually

CONFIG = ControllerManagerConfig(
    node_monitor_period=0.2, node_monitor_grace_period=6.0, pod_eviction_timeout=5.0
)


def ts(seconds: float) -> Any:
    from google.protobuf import timestamp_pb2

    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def make_node(name: str, ready: str = "True", heartbeat: float = T0) -> core_pb2.Node:
    node = core_pb2.Node()
    node.metadata.name = name
    node.metadata.uid = f"uid-{name}"
    node.metadata.resource_version = "1"
    if ready:
        for type_ in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
            cond = node.status.conditions.add(
                type=type_, status=ready if type_ == "Ready" else "False"
            )
            cond.last_heartbeat_time.CopyFrom(ts(heartbeat))
    return node


def make_lease(name: str, renew: float) -> coordination_pb2.Lease:
    lease = coordination_pb2.Lease()
    lease.metadata.name = name
    lease.metadata.namespace = NODE_LEASE_NAMESPACE
    lease.metadata.resource_version = "1"
    lease.spec.holder_identity = name
    lease.spec.renew_time.CopyFrom(ts(renew))
    return lease


def make_pod(name: str, node: str, *, ready: bool = True, tolerations: Any = ()) -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name = name
    pod.metadata.namespace = "default"
    pod.metadata.uid = f"uid-{name}"
    pod.metadata.resource_version = "1"
    pod.spec.node_name = node
    pod.spec.containers.add(name="c", image="busybox")
    pod.spec.tolerations.extend(tolerations)
    pod.status.phase = "Running"
    pod.status.conditions.add(type="Ready", status="True" if ready else "False")
    return pod


class Harness(ControllerHarness):
    def __init__(self, config: ControllerManagerConfig = CONFIG) -> None:
        super().__init__(config)
        self.clock = FakeClock()
        self.ctrl = NodeLifecycleController(self.ctx, clock=self.clock)

    def add(self, *objs: Message) -> None:
        """Put objects in the caches and in the fake API server."""
        self.client.seed(*objs)
        self.refresh()

    def refresh(self, *informers: Informer[Any]) -> None:
        super().refresh(*(informers or (self.ctrl.nodes, self.ctrl.pods, self.ctrl.leases)))

    def node(self, name: str) -> core_pb2.Node:
        return cast(core_pb2.Node, self.client.objects[("nodes", "", name)])


def taints(node: core_pb2.Node) -> set[str]:
    return {f"{t.key}:{t.effect}" for t in node.spec.taints}


UNREACHABLE = {f"{TAINT_UNREACHABLE}:NoExecute", f"{TAINT_UNREACHABLE}:NoSchedule"}
NOT_READY = {f"{TAINT_NOT_READY}:NoExecute", f"{TAINT_NOT_READY}:NoSchedule"}


# ---- node health ------------------------------------------------------------------------------


async def test_a_node_renewing_its_lease_is_left_alone() -> None:
    h = Harness()
    h.add(make_node("n1", heartbeat=T0 - 1000), make_lease("n1", T0))
    await h.ctrl.reconcile("n1")
    for step in range(1, 20):  # 20 s of a lease renewed every second
        h.clock.now = T0 + step
        h.add(make_lease("n1", T0 + step))
        await h.ctrl.reconcile("n1")
    assert h.client.verbs() == []


async def test_a_silent_node_goes_unknown_gets_unreachable_taints_and_its_pods_not_ready() -> None:
    h = Harness()
    h.add(make_node("n1"), make_lease("n1", T0), make_pod("web-1", "n1"))
    await h.ctrl.reconcile("n1")
    h.clock.now = T0 + 5.9  # within the 6 s grace period
    await h.ctrl.reconcile("n1")
    assert h.client.verbs() == []

    h.clock.now = T0 + 6.5
    await h.ctrl.reconcile("n1")
    assert h.client.verbs() == [
        "update_status nodes n1",
        "update nodes n1",
        "update_status pods default/web-1",
    ]
    node = h.node("n1")
    for type_ in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
        cond = node_condition(node, type_)
        assert cond is not None
        assert (cond.status, cond.reason, cond.message) == (
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        )
    assert taints(node) == UNREACHABLE
    assert all(t.time_added.ToNanoseconds() == int((T0 + 6.5) * 1e9) for t in node.spec.taints)
    pod = cast(core_pb2.Pod, h.client.objects[("pods", "default", "web-1")])
    assert [(c.type, c.status) for c in pod.status.conditions] == [("Ready", "False")]
    assert ("NodeNotReady", "n1", "Node n1 status is now: NodeNotReady") in h.recorder.events

    # Level-triggered: checking again changes nothing.
    h.client.clear()
    h.refresh()
    h.clock.now = T0 + 7
    await h.ctrl.reconcile("n1")
    assert h.client.verbs() == []


async def test_a_node_that_never_posted_status_gets_unknown_conditions() -> None:
    h = Harness()
    h.add(make_node("n1", ready=""))
    await h.ctrl.reconcile("n1")
    assert h.client.verbs() == []  # no Ready condition yet: no taint either
    h.clock.now = T0 + 7
    await h.ctrl.reconcile("n1")
    assert h.client.verbs() == ["update_status nodes n1", "update nodes n1"]
    ready = node_condition(h.node("n1"), "Ready")
    assert ready is not None
    assert (ready.status, ready.reason, ready.message) == (
        "Unknown",
        "NodeStatusNeverUpdated",
        "Kubelet never posted node status.",
    )
    assert taints(h.node("n1")) == UNREACHABLE


async def test_ready_false_from_the_kubelet_gives_not_ready_taints_and_ready_removes_them() -> None:
    h = Harness()
    node = make_node("n1", ready="False")
    node.spec.taints.add(key="dedicated", value="db", effect="NoSchedule")
    h.add(node, make_lease("n1", T0))
    await h.ctrl.reconcile("n1")
    assert h.client.verbs() == ["update nodes n1"]
    assert taints(h.node("n1")) == NOT_READY | {"dedicated:NoSchedule"}

    # The kubelet reports Ready again: our taints go, the user's stays.
    h.client.clear()
    back = make_node("n1", ready="True")
    back.spec.taints.extend(h.node("n1").spec.taints)
    back.metadata.resource_version = h.node("n1").metadata.resource_version
    h.client.objects[("nodes", "", "n1")] = back
    h.refresh()
    await h.ctrl.reconcile("n1")
    assert h.client.verbs() == ["update nodes n1"]
    assert taints(h.node("n1")) == {"dedicated:NoSchedule"}
    assert ("NodeReady", "n1", "Node n1 status is now: NodeReady") in h.recorder.events


async def test_a_stale_write_is_a_conflict_for_the_worker_to_retry() -> None:
    h = Harness()
    h.add(make_node("n1"), make_lease("n1", T0))
    await h.ctrl.reconcile("n1")
    stale = make_node("n1")
    stale.metadata.resource_version = "stale"
    h.ctrl.nodes.cache.put(stale)
    h.clock.now = T0 + 10
    from k8semu.client import Conflict

    with pytest.raises(Conflict):
        await h.ctrl.reconcile("n1")


async def test_a_deleted_node_is_forgotten() -> None:
    h = Harness()
    await h.ctrl.reconcile("gone")
    assert h.client.verbs() == []


# ---- eviction ---------------------------------------------------------------------------------


def unreachable_node(name: str, since: float, ready: str = "Unknown") -> core_pb2.Node:
    node = make_node(name, ready=ready)
    for key, effect in ((TAINT_UNREACHABLE, "NoExecute"), (TAINT_UNREACHABLE, "NoSchedule")):
        taint = node.spec.taints.add(key=key, effect=effect)
        taint.time_added.CopyFrom(ts(since))
    return node


def toleration(key: str = TAINT_UNREACHABLE, seconds: int | None = None) -> core_pb2.Toleration:
    tol = core_pb2.Toleration(key=key, operator="Exists", effect="NoExecute")
    if seconds is not None:
        tol.toleration_seconds = seconds
    return tol


async def test_pods_are_evicted_after_their_toleration() -> None:
    h = Harness()
    h.add(
        unreachable_node("n1", since=T0),
        make_node("n2"),  # one healthy node: not a full disruption
        make_pod("default-timeout", "n1"),
        make_pod("tolerates-10", "n1", tolerations=[toleration(seconds=10)]),
        make_pod("tolerates-forever", "n1", tolerations=[toleration()]),
        make_pod("elsewhere", "n2"),
    )
    keys = ["default/default-timeout", "default/tolerates-10", "default/tolerates-forever"]

    async def check_all() -> None:
        h.refresh()
        for key in [*keys, "default/elsewhere"]:
            await h.ctrl.reconcile_eviction(key)

    h.clock.now = T0 + 4.9
    await check_all()
    assert h.client.verbs() == []
    h.clock.now = T0 + 5.0  # pod_eviction_timeout
    await check_all()
    assert h.client.verbs() == ["delete pods default/default-timeout"]
    h.clock.now = T0 + 10.0
    await check_all()
    assert h.client.verbs()[1:] == ["delete pods default/tolerates-10"]
    h.clock.now = T0 + 100_000
    await check_all()
    assert len(h.client.actions) == 2
    assert (
        "TaintManagerEviction",
        "default-timeout",
        "Marking for deletion Pod default/default-timeout",
    ) in h.recorder.events


async def test_a_pod_not_due_yet_is_queued_for_its_deadline() -> None:
    h = Harness()
    h.add(unreachable_node("n1", since=T0), make_node("n2"), make_pod("p", "n1"))
    h.clock.now = T0 + 1
    await h.ctrl.reconcile_eviction("default/p")
    assert h.client.verbs() == []
    assert "default/p" in h.ctrl.evictions._waiting  # due in 4 s


async def test_no_eviction_when_every_node_is_down() -> None:
    h = Harness()
    h.add(
        unreachable_node("n1", since=T0),
        unreachable_node("n2", since=T0),
        make_pod("p", "n1"),
    )
    h.clock.now = T0 + 60
    await h.ctrl.reconcile_eviction("default/p")
    assert h.client.verbs() == []
    # One node comes back: evictions resume.
    h.add(make_node("n2"))
    await h.ctrl.reconcile_eviction("default/p")
    assert h.client.verbs() == ["delete pods default/p"]


async def test_other_noexecute_taints_evict_untolerating_pods_at_once() -> None:
    h = Harness()
    node = make_node("n1")
    node.spec.taints.add(key="maintenance", effect="NoExecute")  # no timeAdded: seen now
    h.add(node, make_pod("p", "n1"), make_pod("ok", "n1", tolerations=[toleration("maintenance")]))
    await h.ctrl.reconcile_eviction("default/p")
    await h.ctrl.reconcile_eviction("default/ok")
    assert h.client.verbs() == ["delete pods default/p"]
    assert h.client.actions[0].verb == "delete"


async def test_terminating_pods_and_pods_on_untainted_nodes_stay() -> None:
    h = Harness()
    terminating = make_pod("t", "n1")
    terminating.metadata.deletion_timestamp.CopyFrom(ts(T0))
    h.add(unreachable_node("n1", since=T0 - 1000), make_node("n2"), terminating)
    h.add(make_pod("fine", "n2"), make_pod("nowhere", "missing-node"))
    for key in ("default/t", "default/fine", "default/nowhere", "default/absent"):
        await h.ctrl.reconcile_eviction(key)
    assert h.client.verbs() == []


def test_pod_events_queue_evictions_only_for_pods_on_noexecute_tainted_nodes() -> None:
    h = Harness()
    h.add(unreachable_node("n1", since=T0), make_node("n2"))
    h.ctrl._pod_changed(make_pod("on-tainted", "n1"))
    h.ctrl._pod_changed(make_pod("on-healthy", "n2"))
    h.ctrl._pod_changed(make_pod("pending", ""))
    assert list(h.ctrl.evictions._queue) == ["default/on-tainted"]


def test_toleration_seconds_takes_the_smallest_matching_and_clamps_negatives() -> None:
    taint = core_pb2.Taint(key=TAINT_UNREACHABLE, effect="NoExecute")
    assert toleration_seconds([], taint, 300) == 300
    assert toleration_seconds([toleration()], taint, 300) == math.inf
    assert toleration_seconds([toleration(), toleration(seconds=60)], taint, 300) == 60
    assert toleration_seconds([toleration(seconds=-5)], taint, 300) == 0
    other = core_pb2.Taint(key="x", effect="NoExecute")
    assert toleration_seconds([], other, 300) == 0


# ---- end to end -------------------------------------------------------------------------------


async def _renew(client: Client, name: str, stop: asyncio.Event) -> None:
    """A stand-in kubelet: renews `name`'s Lease every 0.2 s until `stop`, and posts Ready
    again if the controller marked it Unknown (a machine too loaded to renew in time)."""
    while not stop.is_set():
        with contextlib.suppress(ClientError):
            lease = await client.get(coordination_pb2.Lease, name, namespace=NODE_LEASE_NAMESPACE)
            lease.spec.renew_time.GetCurrentTime()
            await client.update(lease)
            node = await client.get(core_pb2.Node, name)
            if node_ready_status(node) != "True":
                del node.status.conditions[:]
                ready = node.status.conditions.add(type="Ready", status="True")
                ready.last_heartbeat_time.GetCurrentTime()
                await client.update_status(node)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


async def _register(client: Client, name: str) -> None:
    node = core_pb2.Node()
    node.metadata.name = name
    node = await client.create(node)
    node.status.conditions.add(type="Ready", status="True").last_heartbeat_time.GetCurrentTime()
    await client.update_status(node)
    lease = make_lease(name, time.time())
    lease.metadata.resource_version = ""
    await client.create(lease)


async def test_end_to_end_a_silent_node_is_tainted_and_its_pod_evicted(client: Client) -> None:
    with contextlib.suppress(AlreadyExists):
        ns = core_pb2.Namespace()
        ns.metadata.name = NODE_LEASE_NAMESPACE
        await client.create(ns)
    suffix = uuid.uuid4().hex[:6]
    alive, silent = f"alive-{suffix}", f"silent-{suffix}"
    await _register(client, alive)
    await _register(client, silent)
    pod = make_pod(f"web-{suffix}", silent)
    pod.metadata.uid = pod.metadata.resource_version = ""
    pod = await client.create(pod)
    pod.status.conditions[0].status = "True"
    await client.update_status(pod)

    config = ControllerManagerConfig(
        node_monitor_period=0.1, node_monitor_grace_period=2.0, pod_eviction_timeout=0.5
    )
    informers = SharedInformers(client)
    recorder = EventRecorder(client, "controller-manager")
    ctrl = NodeLifecycleController(
        ControllerContext(client=client, informers=informers, recorder=recorder, config=config)
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        renewer = tg.create_task(_renew(client, alive, stop))
        informers.start()
        recorder.start()
        runner = tg.create_task(ctrl.run())
        try:

            async def silent_tainted() -> bool:
                node = await client.get(core_pb2.Node, silent)
                ready = node_condition(node, "Ready")
                return (
                    ready is not None
                    and ready.status == "Unknown"
                    and taints(node) == (UNREACHABLE)
                )

            await eventually(silent_tainted, what="the silent node is Unknown and tainted")

            async def pod_evicted() -> bool:
                try:
                    got = await client.get(core_pb2.Pod, pod.metadata.name, namespace="default")
                except NotFound:
                    return True
                return got.metadata.HasField("deletion_timestamp")

            await eventually(pod_evicted, what="the silent node's pod is deleted")

            async def alive_untouched() -> bool:
                node = await client.get(core_pb2.Node, alive)
                return taints(node) == set() and node_ready_status(node) == "True"

            await eventually(alive_untouched, what="the node renewing its lease stays Ready")

            async def event_written() -> bool:
                events = await client.list_all(core_pb2.Event, namespace="default")
                return any(
                    e.reason == "TaintManagerEviction"
                    and e.involved_object.name == pod.metadata.name
                    for e in events.items
                )

            await eventually(event_written, what="a TaintManagerEviction event")
        finally:
            stop.set()
            runner.cancel()
            await renewer
            await recorder.stop()
            await informers.stop()
