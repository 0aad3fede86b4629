"""A DaemonSet on real processes: store, API server, a `k8semu scheduler` (which binds the
daemon pods through their node affinity and tolerations), hollow kubelets, and the daemonset
and garbage-collector controllers in a controller manager."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from k8semu.client import Client
from k8semu.controllers.daemonset import REVISION_HASH
from k8semu.controllers.manager import ControllerManager
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from tests.controllers.conftest import controller_manager
from tests.kubelet.conftest import KubeletProcess, kubelets  # noqa: F401
from tests.scheduler.conftest import SchedulerProcess
from tests.support.poll import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
async def manager(client: Client) -> AsyncIterator[ControllerManager]:
    async with controller_manager(client, "daemonset", "garbagecollector") as cm:
        yield cm


async def test_a_daemon_runs_on_every_untainted_node_and_rolls_to_a_new_image(
    client: Client,
    namespace: str,
    manager: ControllerManager,
    scheduler: SchedulerProcess,
    kubelets: Callable[..., KubeletProcess],  # noqa: F811
) -> None:
    pool = kubelets("--runtime", "simulated", "--count", "2", "--listen-address", "127.0.0.1:0")
    kubelets(
        "--runtime", "simulated", "--listen-address", "127.0.0.1:0",
        "--register-with-taints", "dedicated=db:NoSchedule",
    )  # fmt: skip
    eligible = {f"{pool.name}-0", f"{pool.name}-1"}
    ds = apps_pb2.DaemonSet(api_version="apps/v1", kind="DaemonSet")
    ds.metadata.name, ds.metadata.namespace = "agent", namespace
    ds.spec.selector.match_labels["app"] = "agent"
    ds.spec.template.metadata.labels["app"] = "agent"
    ds.spec.template.spec.containers.add(name="agent", image="agent:1", command=["sleep", "inf"])
    await client.create(ds)

    async def running(image: str) -> dict[str, str] | None:
        pods = (await client.list(core_pb2.Pod, namespace=namespace)).items
        live = [p for p in pods if not p.metadata.HasField("deletion_timestamp")]
        where = {p.spec.node_name: p.spec.containers[0].image for p in live}
        ok = (
            len(live) == len(eligible)
            and set(where) == eligible
            and all(p.status.phase == "Running" for p in live)
            and set(where.values()) == {image}
        )
        return where if ok else None

    await eventually(lambda: running("agent:1"), 60, "one Running daemon pod per eligible node")
    got = await client.get(apps_pb2.DaemonSet, "agent", namespace=namespace)
    assert got.status.desired_number_scheduled == 2

    # A patch, as `kubectl set image` sends: a read-modify-update raced the controller's own
    # status writes (Conflict at load 30, the status written after the test's read).
    image = [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "agent:2"}
    ]
    await client.patch(apps_pb2.DaemonSet, "agent", image, namespace=namespace, patch_type="json")
    await eventually(lambda: running("agent:2"), 90, "every node rolled to the new image")

    async def settled() -> apps_pb2.DaemonSet | None:
        d = await client.get(apps_pb2.DaemonSet, "agent", namespace=namespace)
        st = d.status
        ok = st.updated_number_scheduled == st.number_available == 2
        return d if ok and st.observed_generation == d.metadata.generation else None

    await eventually(settled, 60, "the status reports the rollout done")
    hashes = {
        p.metadata.labels[REVISION_HASH]
        for p in (await client.list(core_pb2.Pod, namespace=namespace)).items
        if not p.metadata.HasField("deletion_timestamp")
    }
    assert len(hashes) == 1

    await client.delete(apps_pb2.DaemonSet, "agent", namespace=namespace)

    async def no_pods() -> bool:
        return not (await client.list(core_pb2.Pod, namespace=namespace)).items

    await eventually(no_pods, 60, "the garbage collector removes the daemon pods")
