"""The pieces every component shares: SharedInformers (one informer per kind), the worker
loop (retry with back-off, NotFound is done), the Events recorder (aggregation) against a real
API server, and the recording client used by reconcile unit tests."""

from __future__ import annotations

import asyncio

import pytest

from k8semu.client import (
    Client,
    InformerConfig,
    NotFound,
    SharedInformers,
    index_by_namespace,
)
from k8semu.client.controller import run_worker
from k8semu.client.events import WARNING, EventRecorder
from k8semu.client.workqueue import RateLimits, WorkQueue
from k8semu.pb.api.v1 import core_pb2
from tests.support.fakeclient import RecordingClient

from .conftest import eventually

FAST = InformerConfig(resync=0, min_backoff=0.05, max_backoff=0.5)
QUICK_RETRY = RateLimits(base_delay=0.001, max_delay=0.01, qps=1000.0, burst=1000)


def _cm(name: str, namespace: str = "default") -> core_pb2.ConfigMap:
    c = core_pb2.ConfigMap()
    c.metadata.name = name
    c.metadata.namespace = namespace
    return c


async def test_shared_informers_hand_out_one_informer_per_kind(
    client: Client, namespace: str
) -> None:
    informers = SharedInformers(client, config=FAST)
    a = informers.informer(core_pb2.ConfigMap, indexers={"ns": index_by_namespace})
    b = informers.informer(core_pb2.ConfigMap, indexers={"ns": index_by_namespace})
    other = informers.informer(core_pb2.ConfigMap, namespace=namespace)
    assert a is b and a is not other
    await client.create(_cm("one", namespace))
    informers.start()
    try:
        await informers.wait_synced(timeout=30)
        assert informers.has_synced()
        assert [c.metadata.name for c in a.cache.by_index("ns", namespace)] == ["one"]
        assert other.cache.get_by_name("one", namespace) is not None
    finally:
        await informers.stop()


async def test_worker_retries_failures_and_treats_not_found_as_done() -> None:
    queue: WorkQueue[str] = WorkQueue(limits=QUICK_RETRY)
    calls: list[str] = []

    async def reconcile(key: str) -> None:
        calls.append(key)
        if key == "flaky" and calls.count("flaky") < 3:
            raise RuntimeError("transient")
        if key == "gone":
            raise NotFound("gone")
        if key == "broken":
            raise RuntimeError("always")

    worker = asyncio.create_task(run_worker(queue, reconcile, max_retries=4))
    for key in ("flaky", "gone", "broken"):
        queue.add(key)
    await eventually(lambda: calls.count("flaky") == 3 and calls.count("broken") == 5)
    assert calls.count("gone") == 1
    assert queue.num_requeues("flaky") == 0  # success forgot its back-off
    assert queue.num_requeues("broken") == 0  # dropped after max_retries, forgotten
    queue.shutdown()
    await asyncio.wait_for(worker, 5)


async def test_event_recorder_writes_and_aggregates_repeats(client: Client, namespace: str) -> None:
    pod = core_pb2.Pod()
    pod.metadata.name = "p"
    pod.metadata.namespace = namespace
    pod.spec.containers.add(name="c", image="busybox")
    pod = await client.create(pod)
    recorder = EventRecorder(client, "test-component", host="node-x")
    recorder.start()
    try:
        for _ in range(3):
            recorder.event(pod, WARNING, "BackOff", "Back-off restarting failed container")
        recorder.event(pod, WARNING, "Other", "something else")

        async def events() -> list[core_pb2.Event]:
            return (await client.list(core_pb2.Event, namespace=namespace)).items

        async def settled() -> bool:
            got = {e.reason: e.count for e in await events()}
            return got == {"BackOff": 3, "Other": 1}

        await eventually(settled)
        backoff = next(e for e in await events() if e.reason == "BackOff")
        assert backoff.involved_object.kind == "Pod"
        assert backoff.involved_object.uid == pod.metadata.uid
        assert backoff.source.component == "test-component"
        assert backoff.source.host == "node-x"
        assert backoff.type == WARNING
    finally:
        await recorder.stop()


async def test_event_recorder_drops_instead_of_blocking_when_backlog_is_full() -> None:
    recorder = EventRecorder(RecordingClient(), "c", backlog=2, writers=1)  # type: ignore[arg-type]
    pod = core_pb2.Pod()
    pod.metadata.name = "p"
    for i in range(5):
        recorder.event(pod, WARNING, "R", str(i))  # not started: nothing drains the queue
    assert recorder.dropped == 3


async def test_recording_client_records_and_checks_resource_versions() -> None:
    fake = RecordingClient()
    created = await fake.create(_cm("a"))
    stale = core_pb2.ConfigMap()
    stale.CopyFrom(created)
    created.data["k"] = "v"
    await fake.update(created)
    from k8semu.client import Conflict

    with pytest.raises(Conflict):
        await fake.update(stale)
    patched = await fake.patch(core_pb2.ConfigMap, "a", {"data": {"k": None, "x": "y"}})
    assert dict(patched.data) == {"x": "y"}
    await fake.delete(core_pb2.ConfigMap, "a")
    with pytest.raises(NotFound):
        await fake.get(core_pb2.ConfigMap, "a")
    assert fake.verbs() == [
        "create configmaps default/a",
        "update configmaps default/a",
        "update configmaps default/a",
        "patch configmaps default/a",
        "delete configmaps default/a",
    ]
