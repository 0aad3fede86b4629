"""`k8semu drain` on real processes: store, API server, scheduler, two hollow kubelets, and the
replicaset, deployment, disruption and garbage-collector controllers. A Deployment of 3 with
a PodDisruptionBudget of minAvailable 2: draining a node never takes the ready pods below 2,
and every pod leaves the node."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import pytest

from k8semu.api import manifest
from k8semu.client import Client, ResourceExhausted, evict
from k8semu.controllers.manager import ControllerManager
from k8semu.pb.api.v1 import core_pb2, policy_pb2
from tests.controllers.conftest import controller_manager
from tests.kubelet.conftest import KubeletProcess, kubelets  # noqa: F401
from tests.scheduler.conftest import SchedulerProcess
from tests.support.apiserver import APIServerProcess
from tests.support.poll import eventually

pytestmark = pytest.mark.slow

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: NS}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web:1, command: [sleep, inf]}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: NS}
spec: {minAvailable: 2, selector: {matchLabels: {app: web}}}
"""


@pytest.fixture
async def manager(client: Client) -> AsyncIterator[ControllerManager]:
    async with controller_manager(
        client, "replicaset", "deployment", "disruption", "garbagecollector"
    ) as cm:
        yield cm


def ready(pods: list[core_pb2.Pod]) -> list[core_pb2.Pod]:
    return [
        p
        for p in pods
        if not p.metadata.HasField("deletion_timestamp")
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)
    ]


async def test_drain_honours_the_disruption_budget(
    apiserver: APIServerProcess,
    client: Client,
    namespace: str,
    manager: ControllerManager,
    scheduler: SchedulerProcess,
    kubelets: Callable[..., KubeletProcess],  # noqa: F811
) -> None:
    a = kubelets("--runtime", "simulated", "--listen-address", "127.0.0.1:0")
    b = kubelets("--runtime", "simulated", "--listen-address", "127.0.0.1:0")
    for doc in manifest.load_all(APP.replace("NS", namespace), source="app"):
        await client.create(doc)

    async def pods() -> list[core_pb2.Pod]:
        return list((await client.list(core_pb2.Pod, namespace=namespace)).items)

    async def settled() -> bool:
        pdb = await client.get(policy_pb2.PodDisruptionBudget, "web", namespace=namespace)
        return len(ready(await pods())) == 3 and pdb.status.disruptions_allowed == 1

    await eventually(settled, 60, "3 ready pods, one disruption allowed")
    # A second eviction while the first one's pod is still counted as disrupted: refused.
    victims = [p for p in await pods() if p.spec.node_name == a.name] or await pods()
    first = victims[0]
    await evict(client, first.metadata.name, namespace=namespace, uid=first.metadata.uid)
    others = [p for p in ready(await pods()) if p.metadata.name != first.metadata.name]
    with pytest.raises(ResourceExhausted, match="violate the pod's disruption budget"):
        await evict(client, others[0].metadata.name, namespace=namespace)
    await eventually(settled, 60, "the evicted pod replaced")

    lowest: list[int] = []
    stop = asyncio.Event()

    async def watch_ready() -> None:
        while not stop.is_set():
            lowest.append(len(ready(await pods())))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(watch_ready())
    drain = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "k8semu", "drain", a.name, "--timeout", "90s",
         "--server", apiserver.address],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    stop.set()
    await sampler
    assert drain.returncode == 0, drain.stdout + drain.stderr
    assert f"node/{a.name} cordoned" in drain.stdout and f"node/{a.name} drained" in drain.stdout
    assert min(lowest) >= 2, lowest  # the budget held throughout
    node = await client.get(core_pb2.Node, a.name)
    assert node.spec.unschedulable
    await eventually(settled, 60, "3 ready pods again, all on the other node")
    assert {p.spec.node_name for p in await pods()} == {b.name}

    # A pod no controller owns is refused without --force, and nothing is evicted.
    lone = core_pb2.Pod(api_version="v1", kind="Pod")
    lone.metadata.name, lone.metadata.namespace = "lone", namespace
    lone.spec.node_name = b.name
    lone.spec.containers.add(name="c", image="x", command=["sleep", "inf"])
    await client.create(lone)
    refused = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "k8semu", "drain", b.name, "--server", apiserver.address],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "cannot delete Pods that declare no controller (use --force to override)" in (
        refused.stderr
    ), refused.stderr
    assert len(await pods()) == 4
