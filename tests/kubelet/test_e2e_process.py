"""End to end: a real store, API server and `k8semu kubelet` (process runtime); pods are
created with spec.nodeName set (no scheduler)."""

from __future__ import annotations

import asyncio
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from k8semu.client import Client
from k8semu.kubelet.node import ENDPOINT_ANNOTATION
from k8semu.pb.api.v1 import coordination_pb2, core_pb2
from tests.kubelet.conftest import KubeletProcess, eventually

pytestmark = pytest.mark.slow

PY = sys.executable


def make_pod(namespace: str, name: str, node: str, command: list[str], **spec: Any) -> core_pb2.Pod:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = name
    pod.metadata.namespace = namespace
    pod.spec.node_name = node
    c = pod.spec.containers.add(name="main", image="k8semu-test/python", command=command)
    for key, value in spec.items():
        if key == "container":
            value(c)
        elif key == "grace":
            pod.spec.termination_grace_period_seconds = value
        else:
            setattr(pod.spec, key, value)
    return pod


def status_of(pod: core_pb2.Pod, container: str = "main") -> core_pb2.ContainerStatus | None:
    for s in pod.status.container_statuses:
        if s.name == container:
            return s
    return None


def running_pid(pod: core_pb2.Pod) -> int:
    s = status_of(pod)
    if s is None or not s.state.HasField("running"):
        return 0
    return int(s.container_id.removeprefix("process://"))


def is_ready(pod: core_pb2.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def get_pod(client: Client, ns: str, name: str) -> core_pb2.Pod:
    return await client.get(core_pb2.Pod, name, namespace=ns)


HTTP_SERVER = [PY, "-m", "http.server", "--bind", "$(POD_IP)", "8080"]


async def test_node_registers_with_lease_and_ready_condition(
    client: Client, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets(
        "--node-labels",
        "zone=a,tier=web",
        "--register-with-taints",
        "dedicated=x:NoSchedule",
        "--capacity",
        "cpu=8,memory=16Gi,pods=50",
        "--reserved",
        "cpu=500m,memory=1Gi",
    )
    node = await eventually(lambda: client.get(core_pb2.Node, k.name), what="node registered")
    assert node.metadata.labels["kubernetes.io/hostname"] == k.name
    assert node.metadata.labels["kubernetes.io/os"] == "linux"
    assert node.metadata.labels["zone"] == "a"
    assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [
        ("dedicated", "x", "NoSchedule")
    ]
    assert node.status.capacity["cpu"] == "8"
    assert node.status.allocatable["cpu"] == "7500m"
    assert node.status.allocatable["memory"] == "15Gi"
    assert node.status.addresses[0].type == "InternalIP"
    assert node.status.node_info.kubelet_version
    assert node.metadata.annotations[ENDPOINT_ANNOTATION] == f"127.0.0.1:{k.port}"
    conds = {c.type: c for c in node.status.conditions}
    assert conds["Ready"].status == "True" and conds["Ready"].reason == "KubeletReady"
    for t in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        assert conds[t].status == "False"
    lease = await eventually(
        lambda: client.get(coordination_pb2.Lease, k.name, namespace="kube-node-lease"),
        what="lease",
    )
    first = lease.spec.renew_time.ToNanoseconds()

    async def renewed() -> bool:
        again = await client.get(coordination_pb2.Lease, k.name, namespace="kube-node-lease")
        return again.spec.renew_time.ToNanoseconds() > first

    await eventually(renewed, what="lease renewed")
    beat = conds["Ready"].last_heartbeat_time.ToSeconds()

    async def heartbeat() -> bool:
        n = await client.get(core_pb2.Node, k.name)
        c = {c.type: c for c in n.status.conditions}["Ready"]
        return c.last_heartbeat_time.ToSeconds() > beat and (
            c.last_transition_time == conds["Ready"].last_transition_time
        )

    await eventually(heartbeat, what="status heartbeat, transition time unchanged")
    # A deleted Node is registered again.
    await client.delete(core_pb2.Node, k.name)

    async def recreated() -> bool:
        n = await client.get(core_pb2.Node, k.name)
        return n.metadata.uid != node.metadata.uid

    await eventually(recreated, what="node registered again after deletion")


async def test_http_pod_runs_ready_and_serves_on_pod_ip(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets()
    await eventually(lambda: client.get(core_pb2.Node, k.name), what="node")

    def probe(c: core_pb2.Container) -> None:
        c.ports.add(container_port=8080)
        c.readiness_probe.http_get.path = "/"
        c.readiness_probe.http_get.port.int_val = 8080
        c.readiness_probe.period_seconds = 1

    await client.create(make_pod(namespace, "web", k.name, HTTP_SERVER, container=probe))

    async def ready() -> core_pb2.Pod | None:
        pod = await get_pod(client, namespace, "web")
        return pod if pod.status.phase == "Running" and is_ready(pod) else None

    pod = await eventually(ready, what="pod Running and Ready")
    ip = pod.status.pod_ip
    assert ip.startswith("127.244.77.") and ip not in ("127.244.77.0", "127.244.77.1")
    assert pod.status.host_ip == "127.0.0.1"
    assert [p.ip for p in pod.status.pod_ips] == [ip]
    types = {c.type: c.status for c in pod.status.conditions}
    assert types == {"Initialized": "True", "Ready": "True", "ContainersReady": "True",
                     "PodScheduled": "True"}  # fmt: skip
    s = status_of(pod)
    assert s is not None and s.ready and s.started and s.restart_count == 0
    assert s.container_id.startswith("process://")

    def fetch() -> int:
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as resp:
            return int(resp.status)

    assert await asyncio.to_thread(fetch) == 200
