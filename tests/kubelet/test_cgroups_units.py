"""cgroups without a kubelet: Kubernetes' conversions, discovery from mountinfo, the v1 and v2
file layouts (on a directory tree that stands in for cgroupfs: v2 is not mounted with
controllers on this machine kind), the join wrapper, usage rates and the simulated model."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
from google.protobuf import json_format

from k8semu.kubelet import cgroups as cg
from k8semu.kubelet.runtime import ContainerHandle, PodRuns, Resources, Usage
from k8semu.kubelet.simulated import CPU_ANNOTATION, MEMORY_ANNOTATION, SimulatedRuntime
from k8semu.kubelet.stats import Rates, Stats
from k8semu.pb.api.v1 import core_pb2

MI = 1 << 20


def test_kubernetes_conversions() -> None:
    assert cg.cpu_quota_us(200) == 20_000  # 200m: 20 ms per 100 ms
    assert cg.cpu_quota_us(1500) == 150_000
    assert cg.cpu_quota_us(1) == 1_000  # the kernel's minimum quota
    assert cg.cpu_quota_us(0) == 0  # no limit
    assert cg.cpu_shares(0) == 2
    assert cg.cpu_shares(1) == 2
    assert cg.cpu_shares(100) == 102
    assert cg.cpu_shares(1000) == 1024
    assert cg.cpu_shares(10**9) == 262_144
    assert cg.cpu_weight(2) == 1
    assert cg.cpu_weight(1024) == 39
    assert cg.cpu_weight(262_144) == 10_000


def test_resources_of_a_container_spec() -> None:
    c = core_pb2.Container(name="c")
    assert Resources.of(c) == Resources()
    c.resources.limits.update({"cpu": "500m", "memory": "64Mi"})
    assert Resources.of(c) == Resources(
        cpu_request_milli=500, cpu_limit_milli=500, memory_limit=64 * MI
    )  # a limit without a request is the request too
    c.resources.requests["cpu"] = "0.1"
    c.resources.limits["memory"] = "lots"
    assert Resources.of(c) == Resources(cpu_request_milli=100, cpu_limit_milli=500)


V1_MOUNTINFO = """\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
"""


def test_discover_v1_v2_and_none(tmp_path: Path) -> None:
    found, why = cg.discover(V1_MOUNTINFO)
    assert found is not None and found.version == 1 and not why
    assert found.mounts["cpu"] == found.mounts["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert found.mounts["freezer"] == Path("/sys/fs/cgroup/freezer")
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    v2 = f"31 30 0:27 / {tmp_path} rw - cgroup2 cgroup2 rw\n"
    found, why = cg.discover(v2)
    assert found is not None and found.version == 2 and found.mounts == {"": tmp_path}
    (tmp_path / "cgroup.controllers").write_text("cpuset io\n")
    found, why = cg.discover(v2)
    assert found is None and "missing (cpu, cpuacct, memory, pids)" in why
    found, why = cg.discover("22 1 0:21 / /proc rw - proc proc rw\n")
    assert found is None and why == "no cgroup file system is mounted"


def test_v2_layout_on_a_stand_in_tree(tmp_path: Path) -> None:
    groups = cg.Cgroups({"": tmp_path}, 2)
    node = cg.NodeCgroups(groups, cg.hierarchy_name("n1", tmp_path), pod_pids_limit=100)
    rel = cg.container_path(node.hierarchy, "u1", "main")
    resources = Resources(cpu_request_milli=250, cpu_limit_milli=200, memory_limit=64 * MI)
    procs = node.prepare("u1", "main", resources)
    d = tmp_path / rel
    assert procs == [d / "cgroup.procs"]
    assert (d / "cpu.max").read_text() == "20000 100000"
    assert (d / "cpu.weight").read_text() == str(cg.cpu_weight(256))
    assert (d / "memory.max").read_text() == str(64 * MI)
    assert not (d / "memory.swap.max").exists()  # written only where the kernel has it
    (d / "memory.swap.max").write_text("max")
    (d / "memory.oom.group").write_text("0")
    groups.set_limits(rel, resources)
    assert (d / "memory.swap.max").read_text() == "0"
    assert (d / "memory.oom.group").read_text() == "1"
    assert (d.parent / "pids.max").read_text() == "100"
    for level in (tmp_path, tmp_path / "k8semu", d.parent.parent, d.parent):
        assert (level / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert node.isolation == "cgroup-v2"
    (d / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    (d / "memory.current").write_text(str(10 * MI))
    (d / "memory.stat").write_text(f"anon 100\ninactive_file {MI}\n")
    (d / "memory.events").write_text("low 0\nmax 3\noom 1\noom_kill 1\n")
    assert node.container_usage("u1", "main") == Usage(1_500_000, 10 * MI, 9 * MI)
    assert groups.oom_kills(rel) == 1
    groups.set_limits(rel, Resources())
    assert (d / "cpu.max").read_text() == "max 100000"
    assert (d / "cpu.weight").read_text() == "1"


def test_v1_layout_on_a_stand_in_tree(tmp_path: Path) -> None:
    mounts = {c: tmp_path / c for c in ("cpu", "cpuacct", "memory", "pids")}
    groups = cg.Cgroups(mounts, 1)
    node = cg.NodeCgroups(groups, "k8semu/kubelet_n1_x", pod_pids_limit=-1)
    rel = cg.container_path(node.hierarchy, "u1", "main")
    (mounts["memory"] / rel).mkdir(parents=True)
    (mounts["memory"] / rel / "memory.memsw.limit_in_bytes").write_text("0")
    groups.make(rel)
    groups.set_limits(rel, Resources(cpu_limit_milli=1500, memory_limit=32 * MI))
    groups.set_pids_limit(cg.pod_path(node.hierarchy, "u1"), -1)
    cpu = mounts["cpu"] / rel
    assert (cpu / "cpu.cfs_quota_us").read_text() == "150000"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.shares").read_text() == "2"
    mem = mounts["memory"] / rel
    assert (mem / "memory.limit_in_bytes").read_text() == str(32 * MI)
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(32 * MI)
    assert (mounts["pids"] / rel).parent.joinpath("pids.max").read_text() == "max"
    assert groups.procs_files(rel) == [m / rel / "cgroup.procs" for m in sorted(mounts.values())]
    (mounts["cpuacct"] / rel / "cpuacct.usage").write_text("123456789\n")
    (mem / "memory.usage_in_bytes").write_text(str(50 * MI))
    (mem / "memory.stat").write_text(f"cache 5\ntotal_inactive_file {5 * MI}\n")
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert groups.usage(rel) == Usage(123456789, 50 * MI, 45 * MI)
    assert groups.oom_kills(rel) == 2
    assert groups.usage("k8semu/nothing") is None
    assert cg.stale_pods(groups, node.hierarchy, keep=["u2"]) == [f"{node.hierarchy}/podu1"]


def test_hierarchy_name_tells_two_clusters_apart(tmp_path: Path) -> None:
    a = cg.hierarchy_name("node-1", tmp_path / "a")
    assert a.startswith("k8semu/kubelet_node-1_") and len(a.rsplit("_", 1)[1]) == 8
    assert a == cg.hierarchy_name("node-1", tmp_path / "b" / ".." / "a")  # the same dir
    assert a != cg.hierarchy_name("node-1", tmp_path / "b")


def test_join_wrapper_writes_its_pid_then_execs_in_place(tmp_path: Path) -> None:
    procs = [tmp_path / "one", tmp_path / "two"]
    argv = cg.join_argv(procs, ["sh", "-c", 'echo "$$ $0 $1"', "x", "y z"])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    pid, rest = out.stdout.strip().split(" ", 1)
    assert rest == "x y z"
    assert [p.read_text().strip() for p in procs] == [pid, pid]  # same process: exec in place
    assert cg.join_argv([], ["a"]) == ["a"]
    bad = cg.join_argv([tmp_path / "missing" / "cgroup.procs"], ["true"])
    assert subprocess.run(bad, capture_output=True, timeout=30).returncode == 125


def test_rates_over_a_window() -> None:
    r = Rates(window=10, min_window=1)
    key = ("c", "u", "main", "process://1")
    assert r.needs_wait([key], 100.0) == 1.0
    assert r.record(key, 100.0, 0) is None
    assert r.needs_wait([key], 100.5) == 0.5
    assert r.record(key, 100.5, 10**8) is None  # too close for a rate
    assert r.record(key, 102.0, 4 * 10**8) == 2 * 10**8  # 0.2 cores since t=100
    assert r.record(key, 111.0, 22 * 10**8) == 2 * 10**8  # against t=100.5's (nearest 10 s)
    assert r.record(key, 112.0, 10**8) is None  # went backwards: a new run, history restarts
    r.keep_only([])
    assert r.needs_wait([key], 113.0) == 1.0


def _pod(annotations: dict[str, str], cpu_request: str = "") -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace, pod.metadata.uid = "web", "default", "u1"
    pod.metadata.annotations.update(annotations)
    c = pod.spec.containers.add(name="main", image="nginx")
    if cpu_request:
        c.resources.requests.update({"cpu": cpu_request, "memory": "100Mi"})
    return pod


async def test_simulated_runtime_reports_the_modelled_usage() -> None:
    runtime = SimulatedRuntime()
    pod = _pod({CPU_ANNOTATION: "250m", MEMORY_ANNOTATION: "64Mi"})
    handle = ContainerHandle(
        pod_uid="u1",
        name="main",
        restart=0,
        container_id="simulated://1",
        started_at=time.time(),
        exited=asyncio.get_running_loop().create_future(),
    )
    runs = [PodRuns(pod=pod, handles={"main": handle})]
    stats = Stats(
        runtime, "hollow-0", lambda: runs, own_process=False, rates=Rates(window=1, min_window=0.5)
    )
    summary = await stats.summary()  # no history: it samples twice, 0.5 s apart
    (pod_stats,) = summary.pods
    c = pod_stats.containers[0]
    assert c.name == "main" and pod_stats.pod_ref.uid == "u1"
    assert c.cpu.usage_nano_cores == pytest.approx(250_000_000, rel=0.1)
    assert c.memory.working_set_bytes == c.memory.usage_bytes == 64 * MI
    assert summary.node.cpu.usage_nano_cores == pytest.approx(250_000_000, rel=0.1)
    assert summary.node.memory.working_set_bytes == 64 * MI
    assert [s.name for s in summary.node.system_containers] == ["pods"]  # hollow: no kubelet
    as_json = json_format.MessageToDict(summary)["pods"][0]["containers"][0]  # Kubernetes' names
    assert {"usageNanoCores", "usageCoreNanoSeconds", "time"} <= as_json["cpu"].keys()
    assert {"workingSetBytes", "usageBytes", "time"} <= as_json["memory"].keys()
    # A percentage is of the container's request; an unreadable value is 0.
    runs[0] = PodRuns(pod=_pod({CPU_ANNOTATION: "50%"}, cpu_request="2"), handles={"main": handle})
    before = c.cpu.usage_core_nano_seconds
    # The sleeps below let modelled time pass (what is measured), they wait for no state.
    await asyncio.sleep(0.3)
    again = (await stats.summary()).pods[0].containers[0]
    assert again.cpu.usage_core_nano_seconds > before
    assert again.memory.working_set_bytes == 0
    await asyncio.sleep(1.1)
    later = (await stats.summary()).pods[0].containers[0]
    assert later.cpu.usage_nano_cores == pytest.approx(1_000_000_000, rel=0.1)
    runs[0] = PodRuns(pod=_pod({CPU_ANNOTATION: "a lot"}), handles={"main": handle})
    await asyncio.sleep(0.3)
    idle = (await stats.summary()).pods[0].containers[0]
    assert idle.cpu.usage_core_nano_seconds == later.cpu.usage_core_nano_seconds
    await runtime.stop(handle, 0)


def test_cgroup_flags_are_checked_and_off_means_off(tmp_path: Path) -> None:
    from k8semu.kubelet.config import ConfigError, KubeletConfig

    with pytest.raises(ConfigError, match="--cgroups: 'maybe': must be one of auto, on, off"):
        KubeletConfig(node_name="n", cgroups="maybe")
    for bad in (0, -2):
        with pytest.raises(ConfigError, match="--pod-pids-limit: must be > 0, or -1"):
            KubeletConfig(node_name="n", pod_pids_limit=bad)
    assert KubeletConfig(node_name="n").pod_pids_limit == 1024
    assert cg.for_node("n", tmp_path, mode="off", pod_pids_limit=5) == (
        None,
        "turned off (--cgroups=off)",
    )
