"""The cluster autoscaler end to end, as a user runs it: `k8semu up --detach` a cluster with one
small process node and a hollow pool (min 0, max 2) that starts empty; a Deployment whose pods
fit no running node makes a pool node start (the controller manager asks through the status
ConfigMap, the supervisor starts its kubelet) and the pods run there; scaled to 0 replicas,
the node is removed after its unneeded time (kubelet stopped, Node deleted). A pod whose node
selector no pool matches starts nothing and says why. Prints the time from the pods turning
unschedulable to the node Ready and to the pods Running."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from k8semu.client import Client, NotFound
from k8semu.cluster.processes import free_loopback_ports
from k8semu.cluster.state import read_state
from k8semu.controllers.clusterautoscaler import targets
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from k8semu.scheduler.framework import node_ready
from tests.support.cluster import (
    START_TIMEOUT_S,
    api_tls,
    by_name,
    everything,
    k8semu,
    status,
    user_env,
    wait_gone,
)
from tests.support.poll import Eventually

pytestmark = pytest.mark.slow

eventually = Eventually()


def _config(path: Path) -> tuple[Path, str]:
    """The config and its API server's address."""
    client, peer, api, sched, cm, kubelet, proxy = free_loopback_ports(7)
    path.write_text(
        "kind: ClusterConfig\nversion: v1alpha1\nname: cas\n"
        f"store: {{members: [{{name: s1, clientURL: 'http://127.0.0.1:{client}',"
        f" peerURL: 'http://127.0.0.1:{peer}'}}]}}\n"
        f"apiServer: {{instances: [{{port: {api}}}]}}\n"
        f"scheduler: {{instances: [{{port: {sched}}}]}}\n"
        f"controllerManager: {{instances: [{{port: {cm}}}]}}\n"
        "nodes:\n"
        f"  - {{name: w1, nodeIP: 127.0.1.1, kubeletPort: {kubelet}, proxyPort: {proxy},"
        " proxy: false, capacity: {cpu: '1', memory: 2Gi, pods: '20'}}\n"
        "hollowNodes:\n"
        "  - name: pool\n"
        "    nodeIP: 127.0.2.1\n"
        "    capacity: {cpu: '4', memory: 8Gi, pods: '20'}\n"
        "    autoscaling: {minNodes: 0, maxNodes: 2, scaleDownUnneededTime: 1s}\n"
        "addons: []\n"
        "launcher: {readyTimeout: 60s, restartBackoff: 200ms, stopGracePeriod: 5s}\n"
    )
    return path, f"127.0.0.1:{api}"


def _deployment(replicas: int) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name = "big"
    d.metadata.namespace = "default"
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = "big"
    d.spec.template.metadata.labels["app"] = "big"
    c = d.spec.template.spec.containers.add(name="app", image="busybox")
    c.command.extend(["sleep", "3600"])
    c.resources.requests["cpu"] = "1500m"  # w1 has 1 cpu; a pool node takes two of these
    return d


def _stray() -> core_pb2.Pod:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = "stray"
    pod.metadata.namespace = "default"
    pod.spec.node_selector["disktype"] = "ssd"  # no node nor pool has it
    pod.spec.containers.add(name="app", image="busybox", command=["sleep", "3600"])
    return pod


async def _pods(client: Client) -> list[core_pb2.Pod]:
    return [
        p
        for p in (await client.list(core_pb2.Pod, namespace="default")).items
        if p.metadata.labels.get("app") == "big"
    ]


def _unschedulable(pod: core_pb2.Pod) -> bool:
    return any(
        c.type == "PodScheduled" and c.reason == "Unschedulable" for c in pod.status.conditions
    )


async def _events(client: Client, reason: str) -> list[core_pb2.Event]:
    return [e for e in (await client.list(core_pb2.Event)).items if e.reason == reason]


async def test_pool_grows_for_unschedulable_pods_and_shrinks_when_they_are_gone(
    tmp_path: Path, cleanup: list[Path]
) -> None:
    env = user_env(tmp_path)
    config, api = _config(tmp_path / "cluster.yaml")
    state_dir = tmp_path / "state"
    cleanup.append(state_dir)
    up = k8semu(
        env, "up", "-f", config, "--state-dir", state_dir, "--detach", timeout=START_TIMEOUT_S
    )
    assert up.returncode == 0, up.stdout + up.stderr
    state = read_state(state_dir)
    slots = {c.name: c for c in state.components if c.pool == "pool"}
    assert set(slots) == {"kubelet-pool-0", "kubelet-pool-1"}
    assert all(c.state == "stopped" and c.pid == 0 for c in slots.values())

    async with Client([api], tls=api_tls(state_dir)) as client:
        await client.create(_stray())
        await client.create(_deployment(2))
        pods = await eventually(
            lambda: _all(client, _unschedulable, 2), what="2 unschedulable pods"
        )
        t_pending = time.monotonic()
        seen: dict[str, float] = {}

        async def progress() -> list[core_pb2.Pod] | None:
            """Both pods Running, noting when pool-0 was first seen Ready on the way."""
            if "ready" not in seen and await _ready_node(client, "pool-0"):
                seen["ready"] = time.monotonic()
            running = await _all(client, lambda p: p.status.phase == "Running", 2)
            if running and "ready" in seen:
                seen["running"] = time.monotonic()
            return running if "running" in seen else None

        running = await eventually(progress, what="pool-0 Ready and both pods Running")
        t_ready, t_running = seen["ready"], seen["running"]
        node = await client.get(core_pb2.Node, "pool-0")
        assert {p.spec.node_name for p in running} == {"pool-0"}  # packed on one new node
        assert node.metadata.labels["k8semu.io/node-pool"] == "pool"
        print(
            f"\ncluster autoscaler e2e: unschedulable -> node Ready {t_ready - t_pending:.2f}s,"
            f" -> pods Running {t_running - t_pending:.2f}s"
        )
        triggered = await eventually(lambda: _events(client, "TriggeredScaleUp"))
        assert {e.involved_object.name for e in triggered} <= {p.metadata.name for p in pods}
        assert "pod triggered scale-up: [{pool 0->1 (max: 2)}]" in {e.message for e in triggered}
        stray = await eventually(lambda: _events(client, "NotTriggerScaleUp"))
        assert stray[0].involved_object.name == "stray"
        assert "didn't match Pod's node affinity/selector" in stray[0].message
        cm = await client.get(core_pb2.ConfigMap, targets.STATUS_NAME, namespace="kube-system")
        assert targets.decode(cm.data[targets.NODE_GROUPS_KEY]) == {"pool": {"pool-0"}}
        assert "Name:        pool" in cm.data[targets.STATUS_KEY]
        rows = by_name(status(env, state_dir))
        assert rows["kubelet-pool-0"]["state"] == "running"
        assert rows["kubelet-pool-0"]["role"] == "node pool-0 Ready"
        assert rows["kubelet-pool-1"]["state"] == "stopped"
        assert rows["kubelet-pool-1"]["role"] == "node pool pool: slot not in use"

        await client.update_scale(apps_pb2.Deployment, "big", 0, namespace="default")
        t_zero = time.monotonic()
        await eventually(lambda: _gone(client, "pool-0"), what="Node pool-0 deleted")
        t_gone = time.monotonic()
        print(f"cluster autoscaler e2e: scaled to 0 -> Node deleted {t_gone - t_zero:.2f}s")
        record = read_state(state_dir).component("kubelet-pool-0")
        assert record is not None and record.state == "stopped" and record.pid == 0
        assert await _events(client, "ScaleDown")

    down = k8semu(env, "down", "--state-dir", state_dir, timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not wait_gone(everything(state_dir))


async def _all(
    client: Client, check: Callable[[core_pb2.Pod], bool], count: int
) -> list[core_pb2.Pod] | None:
    """The Deployment's pods when exactly ``count`` of them pass ``check``."""
    ok = [p for p in await _pods(client) if check(p)]
    return ok if len(ok) == count else None


async def _ready_node(client: Client, name: str) -> core_pb2.Node | None:
    try:
        node = await client.get(core_pb2.Node, name)
    except NotFound:
        return None
    return node if node_ready(node) else None


async def _gone(client: Client, name: str) -> bool:
    try:
        await client.get(core_pb2.Node, name)
    except NotFound:
        return True
    return False
