"""Containers in real cgroups (root, cgroup v1 or v2 on this host): a CPU limit holds a burner,
a memory hog is OOMKilled and restarted, a fork bomb stays inside its pod's pids limit, the
usage summary agrees with /proc, and with cgroups off the rlimits stay and the Node says so.
Every test removes every cgroup it made, also when it fails (the `kubelets` fixture and the
`finally` below)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from k8semu import transport
from k8semu.client import Client, NotFound
from k8semu.kubelet import cgroups as cg
from k8semu.kubelet import procfs
from k8semu.kubelet.containerlog import read_plain
from k8semu.kubelet.node import ISOLATION_ANNOTATION, ISOLATION_REASON_ANNOTATION
from k8semu.kubelet.runtime import Resources
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc
from tests.kubelet.conftest import KubeletProcess, eventually, node_cgroups
from tests.kubelet.test_e2e_process import get_pod, make_pod, running_pid, status_of

PY = sys.executable
MI = 1 << 20
MEASURE = 3.0  # seconds of CPU use measured (a measurement window, not a wait for a state)


def _unusable() -> str:
    if os.geteuid() != 0:
        return "needs root"
    found, why = cg.discover()
    return "" if found is not None else why


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(_unusable()), reason=f"no usable cgroups: {_unusable()}"),
]


async def _running(client: Client, namespace: str, name: str) -> core_pb2.Pod | None:
    pod = await get_pod(client, namespace, name)
    return pod if running_pid(pod) else None


async def _summary(k: KubeletProcess) -> kubelet_pb2.Summary:
    async with transport.channel(f"127.0.0.1:{k.port}") as channel:
        stub = kubelet_pb2_grpc.KubeletStub(channel)
        return await stub.Summary(kubelet_pb2.SummaryRequest(), timeout=30)


def _container(summary: kubelet_pb2.Summary, pod: str) -> kubelet_pb2.ContainerStats:
    (stats,) = [p for p in summary.pods if p.pod_ref.name == pod]
    (c,) = stats.containers
    return c


def _cgroups(k: KubeletProcess) -> tuple[cg.Cgroups, str]:
    found = node_cgroups(k.name, k.root)
    assert found is not None
    return found


def test_node_cgroups_hold_a_process_and_go(tmp_path: Path) -> None:
    groups, _ = cg.discover()
    assert groups is not None
    node = cg.NodeCgroups(groups, cg.hierarchy_name("unit", tmp_path), pod_pids_limit=32)
    rel = cg.container_path(node.hierarchy, "u1", "main")
    try:
        procs = node.prepare("u1", "main", Resources(cpu_limit_milli=100, memory_limit=64 * MI))
        proc = subprocess.Popen(cg.join_argv(procs, ["sleep", "60"]))
        deadline = time.monotonic() + 20
        while proc.pid not in groups.pids(rel) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.pid in groups.pids(rel)
        assert f":/{rel}\n" in Path(f"/proc/{proc.pid}/cgroup").read_text()
        assert node.sweep(keep=["u1"]) == []  # a pod that is kept keeps its cgroups
        assert proc.pid in groups.pids(rel)
        assert node.ended("u1", "main") == 0  # kills what is left, removes the cgroup
        assert proc.wait(timeout=20) == -9
        assert not any(d.exists() for d in groups.dirs(rel))
        # A pod cgroup no pod dir knows of (a kubelet's earlier run) is swept at start.
        stray = subprocess.Popen(
            cg.join_argv(node.prepare("u2", "main", Resources()), ["sleep", "60"])
        )
        while stray.pid not in groups.pids(node.hierarchy) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert node.sweep(keep=["u1"]) == [f"{node.hierarchy}/podu2"]
        assert stray.wait(timeout=20) == -9
        node.close()
        assert not any(d.exists() for d in groups.dirs(node.hierarchy))
    finally:
        groups.remove(node.hierarchy, kill=True)
        groups.remove_top_if_empty()


async def test_cpu_limit_holds_a_burner_near_its_limit(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets("--cgroups", "on")
    pod = make_pod(namespace, "burner", k.name, [PY, "-c", "while True: pass"])
    pod.spec.containers[0].resources.limits["cpu"] = "200m"
    await client.create(pod)
    pod = await eventually(lambda: _running(client, namespace, "burner"), what="running")
    groups, hierarchy = _cgroups(k)
    rel = cg.container_path(hierarchy, pod.metadata.uid, "main")
    if groups.version == 1:
        assert (groups.path_of("cpu", rel) / "cpu.cfs_quota_us").read_text().strip() == "20000"
        assert (groups.path_of("cpu", rel) / "cpu.shares").read_text().strip() == "204"
    else:
        assert (groups.path_of("cpu", rel) / "cpu.max").read_text().split() == ["20000", "100000"]
    node = await client.get(core_pb2.Node, k.name)
    assert node.metadata.annotations[ISOLATION_ANNOTATION] == f"cgroup-v{groups.version}"
    assert ISOLATION_REASON_ANNOTATION not in node.metadata.annotations
    first, t0 = groups.usage(rel), time.monotonic()
    await asyncio.sleep(MEASURE)
    last, t1 = groups.usage(rel), time.monotonic()
    assert first is not None and last is not None
    cores = (last.cpu_ns - first.cpu_ns) / 1e9 / (t1 - t0)
    print(f"burner with limit 200m used {cores:.3f} cores; load {os.getloadavg()}")
    # Never above its limit (a busy host may give it less: other work competes for the CPUs,
    # so the lower bound only says it runs: with load above 30 on two cores a busy loop gets
    # ~0.05 cores), and the quota is what holds it there.
    assert 0 < cores <= 0.26
    stat = groups.path_of("cpu", rel) / "cpu.stat"

    def throttled() -> bool:
        counts = dict(line.split() for line in stat.read_text().splitlines())
        return int(counts.get("nr_throttled", "0")) > 0

    await eventually(throttled, what="the CFS quota throttles it")
    c = _container(await _summary(k), "burner")
    assert 0 < c.cpu.usage_nano_cores <= 0.26e9


HOG = "chunks = []\nwhile True:\n    chunks.append(b'x' * (1 << 20))"


async def test_memory_hog_is_oomkilled_and_restarted(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets("--cgroups", "on")
    pod = make_pod(namespace, "hog", k.name, [PY, "-c", HOG], restart_policy="OnFailure")
    pod.spec.containers[0].resources.limits["memory"] = "48Mi"
    await client.create(pod)

    async def restarted() -> core_pb2.ContainerStatus | None:
        s = status_of(await get_pod(client, namespace, "hog"))
        ok = s is not None and s.restart_count >= 1 and s.last_state.HasField("terminated")
        return s if ok else None

    s = await eventually(restarted, what="ended and restarted")
    assert s.last_state.terminated.reason == "OOMKilled"
    assert s.last_state.terminated.exit_code == 137
    assert s.last_state.terminated.signal == 9


BOMB = "while :; do sleep 60 & done"


async def test_fork_bomb_stays_inside_its_pods_pids_limit(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets("--cgroups", "on", "--pod-pids-limit", "40")
    await client.create(make_pod(namespace, "bomb", k.name, ["sh", "-c", BOMB]))
    bomb = await eventually(lambda: get_pod(client, namespace, "bomb"), what="created")
    groups, hierarchy = _cgroups(k)
    pod_rel = cg.pod_path(hierarchy, bomb.metadata.uid)
    logs = k.root / "pods" / bomb.metadata.uid / "main"

    def refused() -> bool:  # the shell says the kernel refused a fork (then exits)
        return any(b"Cannot fork" in log.read_bytes() for log in logs.glob("*.log"))

    await eventually(refused, what="forks refused at the pod's pids limit")
    peak = groups.path_of("pids", pod_rel) / "pids.peak"  # kernels since 6.x
    assert not peak.exists() or int(peak.read_text()) <= 40
    assert int((groups.path_of("pids", pod_rel) / "pids.current").read_text()) <= 40
    assert (groups.path_of("pids", pod_rel) / "pids.max").read_text().strip() == "40"
    # The node keeps working: another pod starts and runs.
    await client.create(make_pod(namespace, "calm", k.name, ["sleep", "300"]))
    await eventually(lambda: _running(client, namespace, "calm"), what="another pod runs")
    members = groups.pids(pod_rel)
    await client.delete(core_pb2.Pod, "bomb", namespace=namespace, grace_period_seconds=0)

    async def gone() -> bool:
        try:
            await get_pod(client, namespace, "bomb")
        except NotFound:
            return not any(d.exists() for d in groups.dirs(pod_rel))
        return False

    await eventually(gone, what="pod and its cgroup gone")
    assert not [p for p in members if procfs.process_usage(p) is not None]


BALLAST = "ballast = b'x' * (150 << 20)\nwhile True: pass"


async def test_summary_agrees_with_proc(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets("--cgroups", "on")
    pod = make_pod(namespace, "ballast", k.name, [PY, "-c", BALLAST])
    pod.spec.containers[0].resources.limits["cpu"] = "500m"
    await client.create(pod)
    pod = await eventually(lambda: _running(client, namespace, "ballast"), what="running")
    pid = running_pid(pod)

    def proc() -> tuple[int, int]:
        used = procfs.process_usage(pid)
        assert used is not None
        return used.cpu_ns, used.memory_usage

    # Measured once it has used a second of CPU and holds its 150 MiB (tick rounding small):
    # 2 s alone, 20 s and more when the host's load leaves a busy loop a twentieth of a core.
    await eventually(
        lambda: proc()[0] >= 1e9 and proc()[1] >= 150 * MI, 180, "a CPU second and 150 MiB used"
    )
    before = proc()
    summary = await _summary(k)
    after = proc()
    c = _container(summary, "ballast")
    print(f"summary {c.cpu.usage_core_nano_seconds} ns, {c.memory.working_set_bytes} B;"
          f" /proc {before} .. {after}; load {os.getloadavg()}")  # fmt: skip
    assert before[0] * 0.9 <= c.cpu.usage_core_nano_seconds <= after[0] * 1.1
    assert c.memory.working_set_bytes == pytest.approx(after[1], rel=0.1)
    assert 0 < c.cpu.usage_nano_cores <= 0.6e9
    (stats,) = [p for p in summary.pods if p.pod_ref.name == "ballast"]
    assert stats.memory.working_set_bytes >= c.memory.working_set_bytes
    names = [s.name for s in summary.node.system_containers]
    assert names == ["kubelet", "pods"] and summary.node.node_name == k.name
    assert summary.node.memory.working_set_bytes >= stats.memory.working_set_bytes


async def test_without_cgroups_rlimits_stay_and_the_node_says_so(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets("--cgroups", "off")
    script = "ulimit -v; exec sleep 300"
    limited = make_pod(namespace, "limited", k.name, ["sh", "-c", script])
    limited.spec.containers[0].resources.limits["memory"] = "64Mi"
    await client.create(limited)
    pod = await eventually(lambda: _running(client, namespace, "limited"), what="running")
    node = await client.get(core_pb2.Node, k.name)
    assert node.metadata.annotations[ISOLATION_ANNOTATION] == "rlimits"
    assert "--cgroups=off" in node.metadata.annotations[ISOLATION_REASON_ANNOTATION]
    # The memory limit is the container's address-space limit (RLIMIT_AS, in KiB for ulimit).
    log = k.root / "pods" / pod.metadata.uid / "main" / "0.log"
    await eventually(lambda: log.exists() and read_plain(log) == b"65536\n", what="ulimit")
    groups, hierarchy = _cgroups(k)
    assert not any(d.exists() for d in groups.dirs(hierarchy))
    # Usage comes from /proc: the container's process tree.
    c = _container(await _summary(k), "limited")
    rss = procfs.process_usage(running_pid(pod))
    assert rss is not None
    assert c.memory.working_set_bytes == pytest.approx(rss.memory_usage, rel=0.1)
