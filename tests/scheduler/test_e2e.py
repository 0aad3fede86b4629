"""End to end: real store and API server processes, `python -m k8semu scheduler` processes,
Nodes created directly through the client (no kubelets)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest

from k8semu.bench.scheduler import run_scheduler_throughput
from k8semu.client import Client, NotFound
from k8semu.pb.api.v1 import coordination_pb2, core_pb2
from k8semu.scheduler import Scheduler, SchedulerConfig
from k8semu.scheduler.framework import parse_cpu
from tests.scheduler.conftest import SchedulerProcess, eventually
from tests.scheduler.helpers import node, pod
from tests.support.apiserver import APIServerProcess

pytestmark = pytest.mark.slow


async def delete_nodes(client: Client, names: Sequence[str]) -> None:
    for name in names:
        with contextlib.suppress(NotFound):
            await client.delete(core_pb2.Node, name)


async def pods_by_name(client: Client, namespace: str) -> dict[str, core_pb2.Pod]:
    pods = await client.list_all(core_pb2.Pod, namespace=namespace)
    return {p.metadata.name: p for p in pods.items}


def assert_fits(pods: Sequence[core_pb2.Pod], nodes: dict[str, core_pb2.Node]) -> None:
    """Every node's pods request no more cpu than it has, and tolerate its taints."""
    used: dict[str, int] = defaultdict(int)
    for p in pods:
        n = nodes[p.spec.node_name]
        for c in p.spec.containers:
            used[p.spec.node_name] += parse_cpu(c.resources.requests.get("cpu", "0"), "cpu")
        for taint in n.spec.taints:
            assert any(t.key == taint.key for t in p.spec.tolerations), (p.metadata.name, taint)
    for name, milli in used.items():
        assert milli <= parse_cpu(nodes[name].status.allocatable["cpu"], "cpu"), (name, milli)


async def test_binds_by_resources_and_taints_and_retries_when_a_node_arrives(
    apiserver: APIServerProcess,
    client: Client,
    namespace: str,
    schedulers: list[SchedulerProcess],
    tmp_path: Path,
) -> None:
    tag = namespace[2:]
    a, b, c = f"{tag}-a", f"{tag}-b", f"{tag}-c"
    try:
        await client.create(node(a, cpu="2"))
        await client.create(node(b, cpu="2", taints=[("dedicated", "gpu", "NoSchedule")]))
        stored = await client.get(core_pb2.Node, a)
        assert stored.status.allocatable["cpu"] == "2"  # status is kept on create
        schedulers.append(SchedulerProcess(apiserver.address, tmp_path / "scheduler.log"))
        schedulers[0].wait_serving()

        await client.create(pod("fits", namespace=namespace, cpu="1500m"))
        await eventually(
            lambda: _node_of(client, namespace, "fits", a), what="pod fits bound to node a"
        )
        gpu = core_pb2.Toleration(key="dedicated", operator="Equal", value="gpu")
        await client.create(pod("tolerant", namespace=namespace, cpu="1500m", tolerations=[gpu]))
        await eventually(
            lambda: _node_of(client, namespace, "tolerant", b), what="tolerant bound to node b"
        )

        await client.create(pod("big", namespace=namespace, cpu="1500m"))
        want = (
            "0/2 nodes are available: 1 Insufficient cpu, "
            "1 node(s) had untolerated taint {dedicated: gpu}."
        )

        async def failed_scheduling() -> bool:
            events = await client.list_all(core_pb2.Event, namespace=namespace)
            return any(
                e.involved_object.name == "big"
                and e.reason == "FailedScheduling"
                and e.type == "Warning"
                and e.message == want
                for e in events.items
            )

        await eventually(failed_scheduling, what=f"FailedScheduling event: {want}")

        async def unschedulable_condition() -> bool:
            big = await client.get(core_pb2.Pod, "big", namespace=namespace)
            return any(
                cond.type == "PodScheduled"
                and cond.status == "False"
                and cond.reason == "Unschedulable"
                and cond.message == want
                for cond in big.status.conditions
            )

        await eventually(unschedulable_condition, what="PodScheduled=False/Unschedulable")
        assert not (await client.get(core_pb2.Pod, "big", namespace=namespace)).spec.node_name

        await client.create(node(c, cpu="2"))
        await eventually(
            lambda: _node_of(client, namespace, "big", c), what="big bound to new node c"
        )
        pods = await pods_by_name(client, namespace)
        nodes = {n: await client.get(core_pb2.Node, n) for n in (a, b, c)}
        assert_fits(list(pods.values()), nodes)

        events = await client.list_all(core_pb2.Event, namespace=namespace)
        scheduled = {
            e.involved_object.name: e.message for e in events.items if e.reason == "Scheduled"
        }
        assert scheduled["big"] == f"Successfully assigned {namespace}/big to {c}"
        big = pods["big"]
        assert [(x.type, x.status) for x in big.status.conditions] == [("PodScheduled", "True")]
    finally:
        await delete_nodes(client, (a, b, c))


async def _node_of(client: Client, namespace: str, name: str, want: str) -> bool:
    p = await client.get(core_pb2.Pod, name, namespace=namespace)
    if p.spec.node_name and p.spec.node_name != want:
        raise AssertionError(f"{name} bound to {p.spec.node_name}, expected {want}")
    return p.spec.node_name == want


async def lease_holder(client: Client) -> str:
    try:
        lease = await client.get(coordination_pb2.Lease, "kube-scheduler", namespace="kube-system")
    except NotFound:
        return ""
    return lease.spec.holder_identity


async def test_leader_killed_the_other_takes_over_and_no_pod_is_bound_twice(
    apiserver: APIServerProcess,
    client: Client,
    namespace: str,
    schedulers: list[SchedulerProcess],
    tmp_path: Path,
) -> None:
    tag = namespace[2:]
    names = [f"{tag}-{i}" for i in range(3)]
    total = 60
    try:
        for name in names:
            await client.create(node(name, cpu="4", pods="30"))
        for i in range(2):
            schedulers.append(SchedulerProcess(apiserver.address, tmp_path / f"sched-{i}.log"))
        for s in schedulers:
            s.wait_serving()
        by_pid = {s.pid: s for s in schedulers}

        async def has_leader() -> bool:
            holder = await lease_holder(client)
            return any(f"_{pid}_" in holder for pid in by_pid)

        await eventually(has_leader, what="one of the two schedulers holds the Lease")
        holder = await lease_holder(client)
        leader = next(s for pid, s in by_pid.items() if f"_{pid}_" in holder)
        other = next(s for s in schedulers if s is not leader)

        # Every nodeName each pod is ever seen with, from a watch running all along.
        seen: dict[str, set[str]] = defaultdict(set)

        # From a listed revision: a watch opened "from now" in a task may start after the
        # first writes below and miss them.
        since = (await client.list(core_pb2.Pod, namespace=namespace)).resource_version

        async def watch() -> None:
            async for event in client.watch(
                core_pb2.Pod, namespace=namespace, resource_version=since
            ):
                p = event.object
                if p.spec.node_name:
                    seen[p.metadata.name].add(p.spec.node_name)

        watcher = asyncio.create_task(watch())
        try:
            killed_at = 0.0
            for i in range(total):
                await client.create(pod(f"p-{i:03d}", namespace=namespace, cpu="150m"))
                if i == total // 3:
                    leader.kill()  # SIGKILL, while pods keep arriving
                    killed_at = time.monotonic()

            async def other_leads() -> bool:
                return f"_{other.pid}_" in await lease_holder(client)

            await eventually(other_leads, timeout=60, what="the survivor takes the Lease")
            took_over = time.monotonic() - killed_at

            async def all_bound() -> bool:
                pods = await pods_by_name(client, namespace)
                return len(pods) == total and all(p.spec.node_name for p in pods.values())

            await eventually(all_bound, timeout=60, what=f"all {total} pods bound")
            await eventually(lambda: len(seen) == total, what="the watch saw every bind")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        print(f"take-over after SIGKILL of the leader: {took_over:.2f} s")
        twice = {name: nodes for name, nodes in seen.items() if len(nodes) != 1}
        assert not twice, f"pods seen on more than one node: {twice}"
        pods = await pods_by_name(client, namespace)
        nodes = {n: await client.get(core_pb2.Node, n) for n in names}
        assert_fits(list(pods.values()), nodes)
        assert other.proc.poll() is None
    finally:
        await delete_nodes(client, names)


async def test_losing_the_lease_stops_scheduling_at_once(client: Client, namespace: str) -> None:
    """An in-process scheduler leads, binds, then another holder takes its Lease: the loop
    and queue are gone before the next pod arrives, so that pod is left alone."""
    tag = namespace[2:]
    name = f"{tag}-n"
    config = SchedulerConfig(
        lease_name=f"scheduler-{tag}", listen_address="127.0.0.1:0", initial_backoff=0.05
    )
    sched = Scheduler(client, config)
    try:
        await client.create(node(name))
        await sched.start()
        await eventually(lambda: sched.is_leader and sched.queue is not None, what="leads")
        await client.create(pod("before", namespace=namespace))
        await eventually(lambda: _node_of(client, namespace, "before", name), what="bound")

        # A patch: a read-modify-update raced the scheduler's own renewals (a Conflict when
        # one landed between the read and the write, on a busy host).
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        taken = {"holderIdentity": "another-scheduler", "leaseDurationSeconds": 3600}
        await client.patch(
            coordination_pb2.Lease,
            config.lease_name,
            {"spec": {**taken, "renewTime": now}},
            namespace="kube-system",
        )
        await eventually(lambda: not sched.is_leader and sched.queue is None, what="stops")

        await client.create(pod("after", namespace=namespace))
        await eventually(
            lambda: sched.pods.cache.get(f"{namespace}/after") is not None,
            what="the informer sees the new pod",
        )
        assert sched.queue is None and not sched.cache.assumed
        assert not (await client.get(core_pb2.Pod, "after", namespace=namespace)).spec.node_name
    finally:
        await sched.stop(1.0)
        await delete_nodes(client, [name])


async def test_the_throughput_benchmark_runs_and_cleans_up(
    apiserver: APIServerProcess, client: Client
) -> None:
    result = await run_scheduler_throughput(
        [apiserver.address], nodes=5, pods=20, scheduler="inprocess", timeout=60
    )
    assert result["bound"] == 20 and result["pods_per_s"] > 0
    assert result["latency_ms"]["max"] >= result["latency_ms"]["p50"] > 0
    nodes = await client.list_all(core_pb2.Node)
    assert not [n for n in nodes.items if n.metadata.name.startswith("bench-")]


async def test_a_graceful_stop_hands_the_lease_back(client: Client, namespace: str) -> None:
    config = SchedulerConfig(lease_name=f"scheduler-{namespace}", listen_address="")
    sched = Scheduler(client, config)
    try:
        await sched.start()
        await eventually(lambda: sched.is_leader, what="leads")
    finally:
        await sched.stop(1.0)
    lease = await client.get(coordination_pb2.Lease, config.lease_name, namespace="kube-system")
    assert lease.spec.holder_identity == ""
