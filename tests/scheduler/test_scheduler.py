"""Scheduling cycles in the sample-controller style: informer caches pre-filled, the cycle run
directly against a RecordingClient, the recorded API actions compared with those expected."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from google.protobuf.message import Message

from k8semu.client import Client, Conflict, Unavailable
from k8semu.pb.api.v1 import core_pb2
from k8semu.scheduler import Scheduler, SchedulerConfig
from tests.scheduler.helpers import anti_affinity, node, pod
from tests.support.fakeclient import RecordingClient

# Back-offs of a millisecond, so a retry is due as soon as a test polls for it.
CONFIG = SchedulerConfig(
    leader_elect=False, listen_address="", initial_backoff=0.001, max_backoff=0.001
)


@pytest.fixture
def client() -> RecordingClient:
    return RecordingClient()


@pytest.fixture
async def sched(client: RecordingClient) -> AsyncIterator[Scheduler]:
    s = Scheduler(cast(Client, client), CONFIG, rng=random.Random(7))
    s.recorder.start()
    s.prime()
    yield s
    await s.recorder.stop()


def add(s: Scheduler, client: RecordingClient, *objs: Message) -> None:
    """What the informers would do: cache the object and call the scheduler's handler."""
    for obj in objs:
        client.seed(obj)
        if isinstance(obj, core_pb2.Node):
            s.nodes.cache.put(obj)
            s.on_node_add(obj)
        else:
            assert isinstance(obj, core_pb2.Pod)
            s.pods.cache.put(obj)
            s.on_pod_add(obj)


async def flush_events(s: Scheduler) -> None:
    await s.recorder.stop()
    s.recorder.start()


async def until_active(s: Scheduler, key: str) -> None:
    """Poll (with a deadline) until `key`'s back-off is over and it is active."""
    assert s.queue is not None
    deadline = time.monotonic() + 5
    while s.queue.where(key) != "active":
        assert time.monotonic() < deadline, f"{key} not active: {s.queue.where(key)}"
        await asyncio.sleep(0.001)
        s.queue.flush()


def binds(client: RecordingClient) -> dict[str, str]:
    return {a.name: a.object for a in client.actions if a.verb == "bind"}


def events(client: RecordingClient) -> list[tuple[str, str, str, str]]:
    out = []
    for a in client.actions:
        if a.verb == "create" and a.resource == "events":
            e: Any = a.object
            out.append((e.involved_object.name, e.type, e.reason, e.message))
    return out


def bound_from_informer(s: Scheduler, client: RecordingClient) -> None:
    """Deliver the informer's MODIFIED events for the pods the client bound."""
    for (plural, _ns, _name), obj in list(client.objects.items()):
        if plural == "pods":
            p = cast(core_pb2.Pod, obj)
            old = s.pods.cache.get(f"{p.metadata.namespace}/{p.metadata.name}")
            if old is not None and p.spec.node_name and not old.spec.node_name:
                new = core_pb2.Pod()
                new.CopyFrom(p)
                s.pods.cache.put(new)
                s.on_pod_update(old, new)


async def test_binds_to_the_node_that_fits_and_records_scheduled(
    sched: Scheduler, client: RecordingClient
) -> None:
    add(sched, client, node("small", cpu="1"), node("big", cpu="4"), pod("a", cpu="2"))
    assert await sched.schedule_pending() == 1
    await flush_events(sched)
    assert binds(client) == {"a": "big"}
    assert events(client) == [
        ("a", "Normal", "Scheduled", "Successfully assigned default/a to big")
    ]
    assert sched.cache.node_of("default/a") == "big"
    assert sched.queue is not None and "default/a" not in sched.queue


async def test_unschedulable_pod_gets_event_condition_and_waits(
    sched: Scheduler, client: RecordingClient
) -> None:
    add(
        sched,
        client,
        node("n1", cpu="1"),
        node("n2", cpu="1"),
        node("n3", cpu="8", taints=[("key", "value", "NoSchedule")]),
        pod("a", cpu="2"),
    )
    await sched.schedule_pending()
    await flush_events(sched)
    message = (
        "0/3 nodes are available: 1 node(s) had untolerated taint {key: value}, 2 Insufficient cpu."
    )
    assert binds(client) == {}
    assert events(client) == [("a", "Warning", "FailedScheduling", message)]
    [status] = [a for a in client.actions if a.verb == "update_status"]
    [cond] = [c for c in status.object.status.conditions if c.type == "PodScheduled"]
    assert (cond.status, cond.reason, cond.message) == ("False", "Unschedulable", message)
    assert sched.queue is not None and sched.queue.where("default/a") == "unschedulable"

    # A node that fits arrives: the pod is retried (after its back-off) and bound there.
    client.clear()
    add(sched, client, node("n4", cpu="4"))
    assert sched.queue.where("default/a") in ("active", "backoff")
    await until_active(sched, "default/a")
    await sched.schedule_pending()
    assert binds(client) == {"a": "n4"}


async def test_assumed_pods_count_so_concurrent_decisions_do_not_overcommit(
    sched: Scheduler, client: RecordingClient
) -> None:
    add(sched, client, node("n", cpu="1"), pod("a", cpu="600m"), pod("b", cpu="600m"))
    await sched.schedule_pending()
    await flush_events(sched)
    assert list(binds(client)) == ["a"]
    assert ("b", "Warning", "FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.") in (
        events(client)
    )
    assert sched.cache.nodes["n"].requested_cpu == 600
    # The informer confirms the bind: the assumed pod becomes a bound one, counted once.
    bound_from_informer(sched, client)
    assert not sched.cache.assumed
    assert sched.cache.nodes["n"].requested_cpu == 600


async def test_bind_conflict_forgets_the_pod(sched: Scheduler, client: RecordingClient) -> None:
    add(sched, client, node("n"), pod("a", cpu="1"))
    client.fail_on[("bind", "pods")] = Conflict('pod a is already assigned to node "m"')
    await sched.schedule_pending()
    assert [a.verb for a in client.actions] == ["bind"]
    assert sched.cache.node_of("default/a") is None
    assert sched.cache.nodes["n"].requested_cpu == 0
    assert sched.queue is not None and "default/a" not in sched.queue


async def test_bind_failure_unassumes_and_backs_off(
    sched: Scheduler, client: RecordingClient
) -> None:
    add(sched, client, node("n"), pod("a", cpu="1"))
    client.fail_on[("bind", "pods")] = Unavailable("no API server")
    await sched.schedule_pending()
    assert sched.cache.nodes["n"].requested_cpu == 0
    assert sched.queue is not None and sched.queue.where("default/a") == "backoff"


async def test_pods_of_one_owner_spread_over_nodes(
    sched: Scheduler, client: RecordingClient
) -> None:
    add(sched, client, *(node(f"n{i}") for i in range(3)))
    add(sched, client, *(pod(f"web-{i}", owner_uid="rs-1") for i in range(3)))
    await sched.schedule_pending()
    assert sorted(binds(client).values()) == ["n0", "n1", "n2"]


async def test_anti_affinity_keeps_replicas_apart(
    sched: Scheduler, client: RecordingClient
) -> None:
    add(sched, client, node("n0"), node("n1"))
    for i in range(3):
        p = pod(f"web-{i}", labels={"app": "web"})
        add(sched, client, anti_affinity(p, {"app": "web"}, "kubernetes.io/hostname"))
    await sched.schedule_pending()
    await flush_events(sched)
    assert sorted(binds(client).values()) == ["n0", "n1"]
    failed = [e for e in events(client) if e[2] == "FailedScheduling"]
    assert len(failed) == 1
    assert failed[0][3] == (
        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
    )


async def test_ignores_other_schedulers_bound_and_deleting_pods(
    sched: Scheduler, client: RecordingClient
) -> None:
    deleting = pod("d")
    deleting.metadata.deletion_timestamp.FromSeconds(1)
    add(
        sched,
        client,
        node("n"),
        pod("other", scheduler_name="my-scheduler"),
        pod("mine", scheduler_name="default-scheduler"),
        pod("bound", node_name="n", cpu="1"),
        deleting,
    )
    await sched.schedule_pending()
    assert binds(client) == {"mine": "n"}
    assert sched.cache.nodes["n"].requested_cpu == 1000  # the bound pod counts


async def test_a_pod_that_cannot_be_read_is_reported_not_fatal(
    sched: Scheduler, client: RecordingClient
) -> None:
    add(sched, client, node("n"), pod("bad", cpu="lots"), pod("good"))
    await sched.schedule_pending()
    await flush_events(sched)
    assert binds(client) == {"good": "n"}
    [(name, type_, reason, message)] = [e for e in events(client) if e[2] == "FailedScheduling"]
    assert (name, type_, reason) == ("bad", "Warning", "FailedScheduling")
    assert "spec.containers[0].resources.requests[cpu]" in message and "lots" in message


async def test_deleting_a_bound_pod_retries_unschedulable_pods(
    sched: Scheduler, client: RecordingClient
) -> None:
    running = pod("running", node_name="n", cpu="1")
    add(sched, client, node("n", cpu="1"), running, pod("a", cpu="1"))
    await sched.schedule_pending()
    assert sched.queue is not None and sched.queue.where("default/a") == "unschedulable"
    sched.pods.cache.remove("default/running")
    sched.on_pod_delete(running)
    assert sched.queue.where("default/a") in ("active", "backoff")
    assert sched.cache.nodes["n"].requested_cpu == 0


async def test_not_ready_and_cordoned_nodes_are_skipped(
    sched: Scheduler, client: RecordingClient
) -> None:
    add(sched, client, node("down", ready=False), node("cordoned", unschedulable=True))
    add(sched, client, pod("a"))
    await sched.schedule_pending()
    await flush_events(sched)
    assert binds(client) == {}
    assert events(client)[0][3] == (
        "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable."
    )
