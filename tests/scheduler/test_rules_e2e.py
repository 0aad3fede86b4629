"""The scheduler's remaining rules end to end: a real store and API server, `k8semu scheduler`
processes, and either Nodes created directly (placement) or simulated kubelets (preemption,
where victims must really terminate). Also the API server's side: PriorityClass, priority
admission, and the checks of the new pod fields, with Kubernetes' messages and nothing
written."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from k8semu.api import manifest
from k8semu.client import APIStatusError, Client, Invalid, NotFound
from k8semu.pb.api.v1 import core_pb2, scheduling_pb2
from tests.kubelet.conftest import KubeletProcess, kubelets  # noqa: F401
from tests.scheduler.conftest import SchedulerProcess, eventually
from tests.scheduler.helpers import node, pod
from tests.scheduler.test_e2e import delete_nodes
from tests.support.apiserver import APIServerProcess

pytestmark = pytest.mark.slow

ZONE = "topology.kubernetes.io/zone"


def priority_class(name: str, value: int, **fields: object) -> scheduling_pb2.PriorityClass:
    pc = scheduling_pb2.PriorityClass(
        api_version="scheduling.k8s.io/v1", kind="PriorityClass", value=value, **fields
    )
    pc.metadata.name = name
    return pc


async def absent(client: Client, name: str, namespace: str) -> bool:
    try:
        await client.get(core_pb2.Pod, name, namespace=namespace)
    except NotFound:
        return True
    return False


async def test_priority_admission_and_the_built_in_classes(client: Client, namespace: str) -> None:
    await client.create(priority_class(f"{namespace}-gold", 1000, preemption_policy="Never"))
    p = pod("gold", namespace=namespace)
    p.spec.priority_class_name = f"{namespace}-gold"
    got = await client.create(p)
    assert (got.spec.priority, got.spec.preemption_policy) == (1000, "Never")
    plain = await client.create(pod("plain", namespace=namespace))
    assert (plain.spec.priority, plain.spec.preemption_policy) == (0, "PreemptLowerPriority")
    critical = pod("critical", namespace=namespace)
    critical.spec.priority_class_name = "system-node-critical"
    assert (await client.create(critical)).spec.priority == 2000001000
    await eventually(
        lambda: _has_class(client, "system-cluster-critical"), what="the built-in classes exist"
    )

    unknown = pod("unknown", namespace=namespace)
    unknown.spec.priority_class_name = "platinum"
    with pytest.raises(APIStatusError) as err:
        await client.create(unknown)
    assert err.value.message.endswith(
        'pods "unknown" is forbidden: no PriorityClass with name platinum was found'
    )
    forged = pod("forged", namespace=namespace)
    forged.spec.priority = 5
    with pytest.raises(APIStatusError, match=r"the integer value of priority \(5\) must not be"):
        await client.create(forged)
    for name in ("unknown", "forged"):
        assert await absent(client, name, namespace)


async def _created_with_priority(client: Client, namespace: str, value: int) -> bool:
    p = pod("", namespace=namespace)
    p.metadata.generate_name = "dflt-"
    return (await client.create(p)).spec.priority == value


async def _has_class(client: Client, name: str) -> bool:
    try:
        await client.get(scheduling_pb2.PriorityClass, name)
    except NotFound:
        return False
    return True


async def test_bad_priority_classes_and_spread_constraints_are_refused(
    client: Client, namespace: str
) -> None:
    for pc, message in (
        (priority_class(f"{namespace}-huge", 2_000_000_000),
         "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"),
        (priority_class("system-mine", 10),
         "priority class names with 'system-' prefix are reserved for system use only"),
        (priority_class(f"{namespace}-odd", 1, preemption_policy="Sometimes"),
         'preemptionPolicy: Unsupported value: "Sometimes"'),
    ):  # fmt: skip
        with pytest.raises(Invalid, match=message):
            await client.create(pc)
    await client.create(priority_class(f"{namespace}-default", 10, global_default=True))
    try:
        with pytest.raises(APIStatusError, match="is already marked as default"):
            await client.create(priority_class(f"{namespace}-second", 20, global_default=True))
        # A pod naming no class gets the global default's value (once the API server's
        # watch cache of classes has it, as Kubernetes' admission reads its informer).
        await eventually(
            lambda: _created_with_priority(client, namespace, 10), what="the default applies"
        )
    finally:
        await client.delete(scheduling_pb2.PriorityClass, f"{namespace}-default")

    def constraint(**fields: object) -> core_pb2.Pod:
        p = pod("spread", namespace=namespace)
        base: dict[str, object] = {
            "max_skew": 1,
            "topology_key": ZONE,
            "when_unsatisfiable": "DoNotSchedule",
        }
        p.spec.topology_spread_constraints.add(**{**base, **fields})
        return p

    where = "spec.topologySpreadConstraints[0]"
    for bad, message in (
        (constraint(max_skew=0), f"{where}.maxSkew: Invalid value: 0: must be greater than zero"),
        (constraint(topology_key=""), f"{where}.topologyKey: Required value: can not be empty"),
        (constraint(topology_key="bad key!"), f'{where}.topologyKey: Invalid value: "bad key!"'),
        (constraint(when_unsatisfiable="Maybe"),
         f'{where}.whenUnsatisfiable: Unsupported value: "Maybe": supported values:'
         ' "DoNotSchedule", "ScheduleAnyway"'),
        (constraint(when_unsatisfiable="ScheduleAnyway", min_domains=2),
         f"{where}.minDomains: Invalid value: 2: can only use minDomains if"),
    ):  # fmt: skip
        with pytest.raises(Invalid) as err:
            await client.create(bad)
        assert message in err.value.message
    assert await absent(client, "spread", namespace)


async def test_pods_land_as_affinity_and_spread_say(
    apiserver: APIServerProcess,
    client: Client,
    namespace: str,
    schedulers: list[SchedulerProcess],
    tmp_path: Path,
) -> None:
    tag = namespace[2:]
    names = [f"{tag}-{z}{i}" for z in "ab" for i in (1, 2)]
    try:
        for name in names:
            await client.create(node(name, labels={ZONE: f"{tag}-{name[-2]}"}))
        schedulers.append(SchedulerProcess(apiserver.address, tmp_path / "scheduler.log"))
        schedulers[0].wait_serving()
        docs = manifest.load_all(SPREAD.replace("NS", namespace), source="test")
        for doc in docs:
            await client.create(doc)

        async def placed() -> dict[str, str]:
            pods = await client.list_all(core_pb2.Pod, namespace=namespace)
            return {p.metadata.name: p.spec.node_name for p in pods.items}

        await eventually(lambda: _all_bound(placed, len(docs)), what="every pod bound", timeout=60)
        where = await placed()
        zones = Counter(where[f"web-{i}"][-2] for i in range(4))
        assert zones == {"a": 2, "b": 2}, where  # maxSkew 1 over two zones
        assert len({where[f"web-{i}"] for i in range(4)}) == 4  # anti-affinity per host
        assert where["cache"] in {where[f"web-{i}"] for i in range(4)}  # affinity to web
    finally:
        await delete_nodes(client, names)


async def _all_bound(placed: Callable[[], object], count: int) -> bool:
    where = await placed()  # type: ignore[misc]
    return len(where) == count and all(where.values())


WEB = """
apiVersion: v1
kind: Pod
metadata: {name: web-N, namespace: NS, labels: {app: web}}
spec:
  containers: [{name: c, image: web}]
  topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule,
     labelSelector: {matchLabels: {app: web}}}
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - {labelSelector: {matchLabels: {app: web}}, topologyKey: kubernetes.io/hostname}
"""
CACHE = """
apiVersion: v1
kind: Pod
metadata: {name: cache, namespace: NS, labels: {app: cache}}
spec:
  containers: [{name: c, image: cache}]
  affinity:
    podAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          labelSelector: {matchLabels: {app: web}}
          topologyKey: kubernetes.io/hostname
"""
SPREAD = "---".join([*(WEB.replace("web-N", f"web-{i}") for i in range(4)), CACHE])

VICTIMS = """
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: db, namespace: NS}
spec: {minAvailable: 1, selector: {matchLabels: {app: db}}}
---
apiVersion: v1
kind: Pod
metadata: {name: guarded, namespace: NS, labels: {app: db}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: db, command: [sleep, inf], resources: {requests: {cpu: "1"}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: free, namespace: NS, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: web, command: [sleep, inf], resources: {requests: {cpu: "1"}}}]
"""


async def test_preemption_evicts_the_unguarded_lower_pod_and_binds_the_high_one(
    apiserver: APIServerProcess,
    client: Client,
    namespace: str,
    schedulers: list[SchedulerProcess],
    kubelets: Callable[..., KubeletProcess],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Two one-cpu nodes, each full with a priority-0 pod; one of them is covered by a
    budget that allows no disruption (no disruption controller runs, so its status allows
    none). A pod of priority 1000 preempts the other, which is marked, evicted and gone;
    the high pod binds there."""
    capacity = ("--runtime", "simulated", "--listen-address", "127.0.0.1:0",
                "--capacity", "cpu=1,memory=4Gi,pods=20")  # fmt: skip
    for _ in range(2):
        kubelets(*capacity)
    schedulers.append(SchedulerProcess(apiserver.address, tmp_path / "scheduler.log"))
    schedulers[0].wait_serving()
    await client.create(priority_class(f"{namespace}-high", 1000))
    for doc in manifest.load_all(VICTIMS.replace("NS", namespace), source="test"):
        await client.create(doc)

    async def running(name: str) -> str:
        p = await client.get(core_pb2.Pod, name, namespace=namespace)
        return p.spec.node_name if p.status.phase == "Running" else ""

    await eventually(lambda: running("guarded"), what="guarded runs", timeout=60)
    await eventually(lambda: running("free"), what="free runs", timeout=60)
    target = await running("free")

    # What the scheduler wrote on the way, seen by a watch (the kubelet rewrites the status
    # of the pods it runs afterwards).
    seen: dict[str, set[str]] = defaultdict(set)

    # From a listed revision: a watch opened "from now" in a task may start after the
    # first writes below and miss them.
    since = (await client.list(core_pb2.Pod, namespace=namespace)).resource_version

    async def watch() -> None:
        async for event in client.watch(core_pb2.Pod, namespace=namespace, resource_version=since):
            p = event.object
            if p.status.nominated_node_name:
                seen["nominated"].add(p.status.nominated_node_name)
            for c in p.status.conditions:
                if c.type == "DisruptionTarget":
                    seen[p.metadata.name].add(f"{c.status} {c.reason}")

    watcher = asyncio.create_task(watch())
    try:
        urgent = pod("urgent", namespace=namespace, cpu="1")
        urgent.spec.containers[0].command.extend(["sleep", "inf"])
        urgent.spec.priority_class_name = f"{namespace}-high"
        await client.create(urgent)
        await eventually(lambda: absent(client, "free", namespace), what="the victim is gone",
                         timeout=60)  # fmt: skip
        await eventually(lambda: running("urgent"), what="urgent runs", timeout=60)
        await eventually(lambda: "nominated" in seen and "free" in seen, what="watch saw it")
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    got = await client.get(core_pb2.Pod, "urgent", namespace=namespace)
    assert got.spec.node_name == target
    assert seen["nominated"] == {target}
    assert not got.status.nominated_node_name  # the binding cleared it
    assert seen["free"] == {"True PreemptionByScheduler"}
    assert "guarded" not in seen
    guarded = await client.get(core_pb2.Pod, "guarded", namespace=namespace)
    assert not guarded.metadata.HasField("deletion_timestamp")

    async def preempted_event() -> bool:
        events = await client.list_all(core_pb2.Event, namespace=namespace)
        return any(
            e.reason == "Preempted" and e.involved_object.name == "free"
            and e.message.startswith(f"Preempted by pod {got.metadata.uid} on node {target}")
            for e in events.items
        )  # fmt: skip

    await eventually(preempted_event, what="the victim's Preempted event")
