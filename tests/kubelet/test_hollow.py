"""Hollow nodes: `k8semu kubelet --runtime simulated --count N` in one process."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from k8semu.client import Client
from k8semu.pb.api.v1 import coordination_pb2, core_pb2
from tests.kubelet.conftest import KubeletProcess, eventually
from tests.kubelet.test_e2e_process import get_pod, make_pod

pytestmark = pytest.mark.slow


async def test_hollow_kubelet_registers_50_ready_nodes_and_runs_pods(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets("--runtime", "simulated", "--count", "50", "--node-lease-renew-interval", "2",
                 "--node-lease-duration", "10", "--node-status-update-frequency", "5")  # fmt: skip
    names = {f"{k.name}-{i}" for i in range(50)}

    async def ready_nodes() -> set[str]:
        nodes = await client.list_all(core_pb2.Node)
        return {
            n.metadata.name
            for n in nodes.items
            if n.metadata.name in names
            and any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
        }

    await eventually(lambda: _eq(ready_nodes(), names), what="50 Ready nodes")

    async def leases() -> set[str]:
        items = await client.list_all(coordination_pb2.Lease, namespace="kube-node-lease")
        return {lease.metadata.name for lease in items.items} & names

    await eventually(lambda: _eq(leases(), names), what="50 leases")
    # A pod bound to one hollow node runs there (simulated): Running and Ready.
    pod = make_pod(namespace, "hollow-pod", f"{k.name}-7", ["serve"])
    await client.create(pod)

    async def running() -> bool:
        p = await get_pod(client, namespace, "hollow-pod")
        return p.status.phase == "Running" and any(
            c.type == "Ready" and c.status == "True" for c in p.status.conditions
        )

    await eventually(running, what="simulated pod Running and Ready")
    p = await get_pod(client, namespace, "hollow-pod")
    assert p.status.container_statuses[0].container_id.startswith("simulated://")
    # Deleting it finishes through the hollow kubelet (grace > 0 needs a kubelet).
    await client.delete(core_pb2.Pod, "hollow-pod", namespace=namespace)

    async def gone() -> bool:
        pods = await client.list_all(core_pb2.Pod, namespace=namespace)
        return not pods.items

    await eventually(gone, what="pod deleted by the hollow kubelet")


async def _eq(result: object, want: set[str]) -> bool:
    return await result == want  # type: ignore[misc]
