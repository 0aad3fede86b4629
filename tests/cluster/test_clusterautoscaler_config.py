"""Autoscaled node pools in the cluster config and what the launcher makes of them: the
``autoscaling`` section (defaults, errors naming the field), the pools' slots (names, node IPs,
the pool label, address clashes), the plan (slots past the initial size planned, not started;
the controller manager's ``--node-pools``), and the supervisor starting and stopping slots as
the status ConfigMap's nodeGroups say, on small real processes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from k8semu.cli.controller_manager import _parser, config_from_args
from k8semu.cluster import config as cc
from k8semu.cluster.config.nodes import AutoscalingSpec
from k8semu.cluster.errors import ClusterConfigError
from k8semu.cluster.launcher import StopFlag
from k8semu.cluster.nodepools import PoolTargets
from k8semu.cluster.plan import plan_cluster
from k8semu.cluster.processes import free_loopback_ports
from k8semu.cluster.rolling import select
from k8semu.cluster.state import ClusterState, ComponentRecord
from k8semu.cluster.supervisor import Supervised, Supervisor

HEAD = "kind: ClusterConfig\nversion: v1alpha1\n"
COMMANDS = {"store", "apiserver", "scheduler", "controller-manager", "kubelet", "proxy"}
POOLS = """\
nodes:
  - name: w1
  - name: big
    nodeIP: 127.0.1.10
    capacity: {cpu: "8", memory: 16Gi, pods: "50"}
    autoscaling: {minNodes: 1, maxNodes: 3}
hollowNodes:
  - name: sim
    count: 1
    labels: {tier: batch}
    taints: [{key: batch, value: "yes", effect: NoSchedule}]
    autoscaling: {maxNodes: 2, scaleDownUtilization: 0.3, scaleDownUnneededTime: 30s}
"""


def _parse(body: str) -> cc.ClusterConfig:
    return cc.parse_config(HEAD + body, source="test.yaml")


def test_pools_have_max_nodes_slots_with_their_own_names_ips_and_label() -> None:
    config = _parse(POOLS)
    big, sim = config.autoscaled_pools
    assert big.autoscaling == AutoscalingSpec(min_nodes=1, max_nodes=3, initial_nodes=1)
    assert sim.autoscaling is not None and sim.count == 2  # its slots
    assert (sim.autoscaling.initial_nodes, sim.autoscaling.scale_down_unneeded_ms) == (1, 30_000)
    assert sim.autoscaling.scale_down_utilization == 0.3
    members = {m.name: m for m in config.node_members}
    assert list(members) == ["w1", "big-0", "big-1", "big-2", "sim-0", "sim-1"]
    assert [members[f"big-{i}"].node_ip for i in range(3)] == [
        "127.0.1.10",
        "127.0.1.11",
        "127.0.1.12",
    ]
    assert members["sim-1"].node_ip == sim.node_ip and members["sim-1"].node_names == ("sim-1",)
    assert dict(members["sim-0"].labels) == {"tier": "batch", "k8semu.io/node-pool": "sim"}
    assert members["w1"].pool == "" and members["big-2"].pool == "big"


def test_plan_starts_the_initial_slots_and_gives_the_controller_manager_the_pools(
    tmp_path: Path,
) -> None:
    plan = plan_cluster(_parse(POOLS), tmp_path, python="python", commands=COMMANDS)
    nodes = {c.name: c for c in plan.components if c.stage == 3}
    started = sorted(n for n, c in nodes.items() if c.autostart)
    assert started == ["kubelet-big-0", "kubelet-sim-0", "kubelet-w1", "proxy-big-0", "proxy-w1"]
    assert (nodes["proxy-big-2"].pool, nodes["proxy-big-2"].pool_node) == ("big", "big-2")
    assert not nodes["kubelet-sim-1"].health_check  # a hollow slot's kubelet picks its port
    argv = nodes["kubelet-sim-1"].argv
    assert "--count" not in argv and argv[argv.index("--node-name") + 1] == "sim-1"
    assert argv[argv.index("--runtime") + 1] == "simulated" and "--node-labels" in argv
    assert plan.node_names == ("w1", "big-0", "sim-0")
    (cm,) = [c for c in plan.components if c.kind == "controller-manager"]
    config = config_from_args(_parser().parse_args(list(cm.argv[4:])))
    big, sim = config.node_pools
    assert (big.name, big.min_nodes, big.max_nodes, big.hollow) == ("big", 1, 3, False)
    assert (sim.hollow, sim.scale_down_unneeded_time, sim.taints) == (
        True,
        30.0,
        (("batch", "yes", "NoSchedule"),),
    )
    assert dict(sim.labels)["k8semu.io/node-pool"] == "sim"


@pytest.mark.parametrize(
    ("body", "path", "reason"),
    [
        ("hollowNodes: [{autoscaling: {minNodes: 3, maxNodes: 2}}]",
         "hollowNodes[0].autoscaling.minNodes", "3 is more than"),
        ("hollowNodes: [{autoscaling: {maxNodes: 0}}]",
         "hollowNodes[0].autoscaling.maxNodes", "must be 1-100"),
        ("hollowNodes: [{count: 3, autoscaling: {maxNodes: 2}}]",
         "hollowNodes[0].count", "between hollowNodes[0].autoscaling.minNodes"),
        ("hollowNodes: [{count: 1, autoscaling: {maxNodes: 2, initialNodes: 1}}]",
         "hollowNodes[0].autoscaling.initialNodes", "hollowNodes[0].count is also given"),
        ("hollowNodes: [{autoscaling: {maxNodes: 2, scaleDownUtilization: 2}}]",
         "hollowNodes[0].autoscaling.scaleDownUtilization", "fraction"),
        ("hollowNodes: [{autoscaling: {maxNodes: 2, scaleDownUtilization: lots}}]",
         "hollowNodes[0].autoscaling.scaleDownUtilization", "expected a number"),
        ("hollowNodes: [{autoscaling: {maxNodes: 2, scaleDownUnneededTime: 10}}]",
         "hollowNodes[0].autoscaling.scaleDownUnneededTime", "duration"),
        ("hollowNodes: [{autoscaling: {maxNodes: 2, maxnodes: 3}}]",
         "hollowNodes[0].autoscaling.maxnodes", "did you mean maxNodes"),
        ("nodes: [{name: p, nodeIP: 127.0.1.1, autoscaling: {maxNodes: 2}}, {name: q,"
         " nodeIP: 127.0.1.2}]", "nodes[1].kubeletPort", "also nodes[0].kubeletPort"),
        ("nodes: [{name: p, nodeIP: 255.255.255.255, autoscaling: {maxNodes: 2}}]",
         "nodes[0].autoscaling.maxNodes", "is not an IP address"),
        ("nodes: [{name: p, autoscaling: {maxNodes: 2}}, {name: p-1, nodeIP: 127.0.1.9}]",
         "nodes[1].name", "p-1"),
        ("hollowNodes: [{kubeletMetricsPort: 9100, autoscaling: {maxNodes: 2}}]",
         "hollowNodes[0].kubeletMetricsPort", "share one node IP"),
    ],
)  # fmt: skip
def test_bad_autoscaling_names_the_field(body: str, path: str, reason: str) -> None:
    with pytest.raises(ClusterConfigError) as info:
        _parse(body + "\n")
    assert info.value.path == path, str(info.value)
    assert reason in str(info.value)


# -- the supervisor, on small real processes ------------------------------------------------


def _pool_supervisor(tmp_path: Path) -> Supervisor:
    units = [
        Supervised(
            record=ComponentRecord(
                name=f"kubelet-p-{i}",
                kind="kubelet",
                host="local",
                stage=3,
                command=["sleep", "60"],
                log_path=str(tmp_path / f"p-{i}.log"),
                pool="p",
                pool_node=f"p-{i}",
                state="running" if i == 0 else "stopped",
            )
        )
        for i in range(2)
    ]
    sup = Supervisor(
        units,
        spec=cc.LauncherSpec(stop_grace_ms=2_000),
        state_dir=tmp_path,
        env=dict(os.environ),
        say=lambda line: None,
        stop=StopFlag(),
        write_state=lambda: None,
    )
    sup.spawn(units[0])
    return sup


def _until(sup: Supervisor, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20.0
    while not done():
        assert time.monotonic() < deadline, [u.record for u in sup.units]
        sup.step(time.monotonic())
        time.sleep(0.01)


def test_supervisor_starts_and_stops_slots_as_node_groups_say(tmp_path: Path) -> None:
    sup = _pool_supervisor(tmp_path)
    first, second = sup.units
    try:
        assert sup.pool_targets is not None  # it has pool slots to watch for
        assert not sup.scale_pools({"other": frozenset({"p-1"})}, time.monotonic())
        assert second.record.state == "stopped" and second.record.pid == 0
        assert sup.scale_pools({"p": frozenset({"p-0", "p-1"})}, time.monotonic())
        assert second.record.state == "running" and second.record.alive()
        assert first.record.alive()
        pid = first.record.pid
        assert sup.scale_pools({"p": frozenset({"p-1"})}, time.monotonic())
        _until(sup, lambda: first.record.state == "stopped")
        assert first.record.pid == 0 and first.record.restarts == 0  # stopped, not restarted
        assert not first.record.alive() and pid > 0
        for _ in range(3):  # and left down
            sup.step(time.monotonic() + 60)
        assert first.record.state == "stopped" and second.record.alive()
        sup.adopt()  # a supervisor taking over leaves a stopped slot stopped
        assert first.due is None and first.record.state == "stopped"
    finally:
        for u in sup.units:
            if u.proc is not None:
                u.proc.kill()
                u.proc.wait()


def test_a_rolling_restart_leaves_scaled_down_slots_alone() -> None:
    def record(name: str, kind: str, pool: str = "", state: str = "running") -> ComponentRecord:
        return ComponentRecord(
            name=name, kind=kind, host="local", stage=3, command=[], pool=pool, state=state
        )

    state = ClusterState(
        cluster="c",
        host="",
        mode="detached",
        state_dir="/nowhere",
        components=[
            record("kubelet-w1", "kubelet"),
            record("kubelet-p-0", "kubelet", "p"),
            record("kubelet-p-1", "kubelet", "p", "stopped"),
        ],
    )
    chosen = [c.name for c in select(state, (), nodes=True)]
    assert chosen == ["kubelet-w1", "kubelet-p-0"]
    assert [c.name for c in select(state, ["kubelet-p-1"], nodes=True)] == ["kubelet-p-1"]


def test_pool_targets_without_an_api_say_nothing_and_close_promptly() -> None:
    (port,) = free_loopback_ports(1)
    reader = PoolTargets([f"127.0.0.1:{port}"])  # nobody listens there
    try:
        deadline = time.monotonic() + 20.0
        while not reader.error:
            assert reader.poll() is None  # no opinion: nothing is to start or stop
            assert time.monotonic() < deadline, "no error reported"
            time.sleep(0.05)
        assert reader.poll() is None
    finally:
        began = time.monotonic()
        reader.close()
        assert time.monotonic() - began < 5.0
