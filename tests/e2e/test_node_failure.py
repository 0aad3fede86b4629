"""Issue 4 end to end: a real 3-node cluster (`k8semu up`, process runtime) heals when a
kubelet is SIGKILLed: its node goes NotReady (Unknown) after the grace period, its pods are
evicted after the toleration time and the ReplicaSet recreates them on the other nodes;
restarting that kubelet cleans up the evicted pods' processes and duplicates nothing.
Timings are shortened in the config (lease 2 s, grace 3 s, eviction 2 s) so this takes seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from k8semu.api import manifest
from k8semu.bench._clusterrun import BenchCluster, ClusterLayout, bench_config
from k8semu.client import Client
from k8semu.cluster.state import ComponentRecord
from k8semu.pb.api.v1 import apps_pb2, core_pb2

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: echo
          image: k8semu/echo
          ports: [{containerPort: 8080}]
          readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 1}
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[BenchCluster]:
    doc = bench_config(ClusterLayout(name="heal", real_nodes=3, runtime="process"))
    doc["timings"].update(
        {
            "nodeLeaseRenewInterval": "500ms",
            "nodeLeaseDuration": "2s",
            "nodeStatusUpdateFrequency": "1s",
            "nodeMonitorGracePeriod": "3s",
            "podEvictionTimeout": "2s",
        }
    )
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc))
    c = BenchCluster(config=path, say=lambda _line: None)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _pid(pod: core_pb2.Pod) -> int:
    cid = pod.status.container_statuses[0].container_id if pod.status.container_statuses else ""
    return int(cid.removeprefix("process://")) if cid.startswith("process://") else 0


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def _until(check: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while True:
        if await check():  # type: ignore[operator]
            return
        if time.monotonic() > end:
            raise AssertionError(f"not true within {timeout}s: {what}")
        await asyncio.sleep(0.2)


def _ready(obj: core_pb2.Node | core_pb2.Pod) -> str:
    return next((c.status for c in obj.status.conditions if c.type == "Ready"), "")


def test_killed_kubelet_node_goes_not_ready_pods_move_and_restart_leaves_no_duplicate(
    cluster: BenchCluster, tmp_path: Path
) -> None:
    kubelets = {c.nodes[0]: c for c in cluster.components if c.kind == "kubelet"}
    restarted: list[subprocess.Popen[bytes]] = []

    async def scenario() -> None:
        async with Client(cluster.api_servers) as client:
            for obj in manifest.load_all(APP, source="app"):
                await client.create(obj)

            async def pods() -> list[core_pb2.Pod]:
                items = (await client.list(core_pb2.Pod, label_selector="app=web")).items
                return list(items)

            async def three_ready() -> bool:
                d = await client.get(apps_pb2.Deployment, "web")
                return d.status.ready_replicas == 3

            await _until(three_ready, 90, "3 ready echo pods")
            victim_pod = (await pods())[0]
            node = victim_pod.spec.node_name
            old = [p for p in await pods() if p.spec.node_name == node]
            old_pids = [_pid(p) for p in old]
            assert all(old_pids) and all(_alive(p) for p in old_pids)
            kubelet: ComponentRecord = kubelets[node]
            assert kubelet.alive()
            # A node that stays down: the detached supervisor would restart its kubelet within
            # a second (tests/cluster/test_supervise.py covers that), so it goes first.
            state = cluster.state
            assert state is not None and state.supervisor_alive()
            os.kill(state.supervisor_pid, signal.SIGKILL)
            os.kill(kubelet.pid, signal.SIGKILL)

            async def node_not_ready() -> bool:
                return _ready(await client.get(core_pb2.Node, node)) == "Unknown"

            await _until(node_not_ready, 30, f"node {node} NotReady/Unknown")

            async def moved() -> bool:
                live = [p for p in await pods() if not p.metadata.HasField("deletion_timestamp")]
                return (
                    len(live) == 3
                    and all(p.spec.node_name != node for p in live)
                    and all(_ready(p) == "True" for p in live)
                )

            await _until(moved, 60, f"3 ready pods on the nodes other than {node}")
            # The dead kubelet's containers still run (processes outlive their kubelet) ...
            assert all(_alive(p) for p in old_pids)
            # ... until it comes back: it finishes the evictions and starts nothing twice.
            with (tmp_path / "kubelet-again.log").open("ab") as log:
                restarted.append(
                    subprocess.Popen(  # noqa: ASYNC220 (starting it is instant; ended by pid below)
                        kubelet.command, stdout=log, stderr=subprocess.STDOUT, env=cluster.env
                    )
                )

            async def back() -> bool:
                n = await client.get(core_pb2.Node, node)
                gone = not any(_alive(p) for p in old_pids)
                return _ready(n) == "True" and gone

            await _until(back, 60, f"node {node} Ready again and its evicted pods' processes gone")

            async def settled() -> bool:
                everything = await pods()
                return len(everything) == 3 and all(
                    _ready(p) == "True" and _alive(_pid(p)) for p in everything
                )

            await _until(settled, 60, "exactly the 3 replacement pods, each with its process")

    try:
        asyncio.run(scenario())
    finally:
        for proc in restarted:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
