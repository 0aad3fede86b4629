"""`k8semu chaos` end to end, short and seeded: a real cluster (3 store replicas, API server,
scheduler, controller manager, 3 process-runtime workers with proxies) on free ports, faults
every ~2 s for 15 s (partitions among them where the machine can make them), then the
report's invariants and that no partition rule or cgroup is left; SIGTERM in the middle of a
partition heals it; `--cleanup` removes what a crashed run left and nothing of a live one;
and the CLI's refusals of bad options."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from k8semu.bench._clusterrun import ClusterLayout, bench_config
from k8semu.chaos import netfilter
from k8semu.chaos.netfilter import Partitions
from k8semu.cluster.state import read_state

WHY_NOT = netfilter.unsupported_reason()
needs_partitions = pytest.mark.skipif(WHY_NOT is not None, reason=f"partitions: {WHY_NOT}")


def _chaos_tables() -> list[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "k8semu_chaos_" in line]


def _chaos_cgroups() -> list[Path]:
    mount = netfilter.cgroup2_mount()
    top = mount / netfilter.CGROUP_TOP if mount else None
    return sorted(top.glob("chaos_*")) if top and top.is_dir() else []


def _leftovers_of(pid: int) -> list[str]:
    """Tables and cgroups named for the chaos process `pid`."""
    mark = f"chaos_{pid}_"
    return [t for t in _chaos_tables() if mark in t] + [
        str(c) for c in _chaos_cgroups() if c.name.startswith(mark)
    ]


def _chaos(*args: str | Path, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    run, _ = _chaos_with_pid(*args, timeout=timeout)
    return run


def _chaos_with_pid(
    *args: str | Path, timeout: float = 400
) -> tuple[subprocess.CompletedProcess[str], int]:
    argv = [sys.executable, "-m", "k8semu", "chaos", *map(str, args)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return subprocess.CompletedProcess(argv, proc.returncode, out, err), proc.pid


def _ci_config(tmp_path: Path, *, small: bool = False) -> Path:
    """The CI cluster; `small`: one simulated node, no proxy (for runs that end early)."""
    config = tmp_path / "cluster.yaml"
    layout = ClusterLayout(name="chaos", real_nodes=3, runtime="process", ready_timeout_s=180)
    if small:
        layout = ClusterLayout(
            name="chaos", real_nodes=1, runtime="simulated", proxies=False, ready_timeout_s=180
        )
    config.write_text(yaml.safe_dump(bench_config(layout)))
    return config


def test_seeded_chaos_run_keeps_the_invariants_and_cleans_up(tmp_path: Path) -> None:
    config = _ci_config(tmp_path)
    state_dir = tmp_path / "state"
    report_path = tmp_path / "report.json"
    # The default fault set: kill, pause, restart, and partition where the machine allows it
    # (seed 8 draws partitions of a store replica and of kubelets, both ways and one way).
    run, pid = _chaos_with_pid(
        "-f", config, "--duration", "15s", "--seed", "8", "--interval", "2s",
        "--state-dir", state_dir, "--report", report_path, "--converge-timeout", "60s",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verdict: OK" in run.stdout
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["seed"] == 8 and not report["violations"]
    injected = [f for f in report["faults"] if f["done"]]
    assert len(injected) >= 3, report["faults"]
    kinds = {f["fault"]["fault"] for f in injected}
    if WHY_NOT is None:
        assert "partition" in kinds, report["faults"]
        assert _leftovers_of(pid) == []
    else:
        assert kinds <= {"kill", "pause", "restart"}
    assert all(f["pid"] > 0 for f in injected)
    assert report["store"]["verdict"] == "linearizable"
    assert report["store"]["ops"] > 100
    assert report["convergence"]["seconds_after_last_fault"] is not None
    assert report["availability"]["requests"] > 100
    # The run stopped the cluster it started: no recorded process is left.
    state = read_state(state_dir)
    assert not state.launcher_alive()
    assert [c.name for c in state.components if c.alive()] == []


def test_bad_options_exit_2_naming_them(tmp_path: Path) -> None:
    run = _chaos("--faults", "kill,explode", timeout=60)
    assert run.returncode == 2 and "--faults: unknown explode" in run.stderr
    run = _chaos("--targets", "database", timeout=60)
    assert run.returncode == 2 and "--targets: unknown database" in run.stderr
    if WHY_NOT is not None:
        run = _chaos("--faults", "partition", timeout=60)
        assert run.returncode == 2 and "not possible on this machine" in run.stderr
    run = _chaos("--duration", "soon", timeout=60)
    assert run.returncode == 2 and "soon" in run.stderr


@needs_partitions
def test_sigterm_during_a_partition_heals_it_and_stops_the_cluster(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    argv = [
        sys.executable, "-m", "k8semu", "chaos", "-f", str(_ci_config(tmp_path, small=True)),
        "--faults", "partition", "--targets", "store", "--duration", "120s",
        "--interval", "1s", "--seed", "3", "--state-dir", str(state_dir),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 240
        # The run's table (not the support probe's, "..._probe") with a drop rule in it.
        table = re.compile(rf"^table inet k8semu_chaos_{proc.pid}_\d+ \{{$", re.MULTILINE)
        while time.monotonic() < end and proc.poll() is None:
            listed = subprocess.run(
                ["nft", "list", "ruleset"], capture_output=True, text=True
            ).stdout
            found = table.search(listed)
            ours = listed[found.end() :].split("\ntable ")[0] if found else ""
            if " drop" in ours:
                break  # a partition is in force right now
            time.sleep(0.2)
        else:
            pytest.fail(f"no partition seen; chaos exited {proc.returncode}: {proc.stderr}")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    assert "interrupted by SIGTERM" in err
    assert _leftovers_of(proc.pid) == []
    state = read_state(state_dir)
    assert not state.launcher_alive()
    assert [c.name for c in state.components if c.alive()] == []


@needs_partitions
def test_cleanup_removes_what_a_dead_run_left_and_nothing_of_a_live_one() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = Partitions(["a", "b"], name=f"chaos_{dead.pid}_1")
    live = Partitions(["a"], name=netfilter.run_name() + "_test")
    try:
        left.open()
        left.cut(["a"], ["b"])
        live.open()
        run = _chaos("--cleanup", timeout=60)
        assert run.returncode == 0, run.stderr
        assert f"removed nft table inet {left.table}" in run.stdout
        assert _leftovers_of(dead.pid) == []
        assert live.table in "\n".join(_chaos_tables())
        assert live.cgroup_parent.is_dir()
    finally:
        left.close()
        live.close()
    assert _leftovers_of(os.getpid()) == []


def test_a_cluster_that_fails_to_start_keeps_its_log(tmp_path: Path) -> None:
    # The config's API server port is taken: `k8semu up` refuses at once. Without --state-dir
    # the run used a temp dir; the up.log it points at must still be there.
    doc = yaml.safe_load(_ci_config(tmp_path).read_text())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", doc["apiServer"]["instances"][0]["port"]))
        taken.listen()
        run = _chaos("-f", tmp_path / "cluster.yaml", "--faults", "kill", timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    found = re.search(r"see (\S+/up\.log)", run.stderr)
    assert found, run.stderr
    log = Path(found.group(1))
    try:
        assert log.is_file() and "in use" in log.read_text(), log.read_text()
        assert f"state and logs kept in {log.parent}" in run.stderr
    finally:
        shutil.rmtree(log.parent)
