"""`k8semu up` / `status` / `down` end to end, as a user runs them: subprocesses on free loopback
ports, a real store and API server (and the scheduler, controller manager, kubelet and proxy
when this install has their commands), checked by pid and through their gRPC APIs."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from k8semu.cli.main import COMMANDS
from k8semu.cluster.processes import free_loopback_ports
from k8semu.cluster.state import is_same_process, process_start_time, read_state
from k8semu.kubelet import cgroups
from tests.support.cluster import (
    START_TIMEOUT_S,
    by_name,
    k8semu,
    port_taken,
    processes_under,
    status,
    until,
    until_recorded,
    until_status,
    user_env,
    wait_gone,
    write_config,
)

STOP_TIMEOUT_S = 30.0


def _config(path: Path, *, name: str = "e2e", workers: bool = True) -> Path:
    """One store replica, one API server, one scheduler, one controller manager and one worker
    (kubelet + proxy, process runtime), every port a free one; the DNS add-on."""
    return write_config(path, name=name, workers=workers)


def _wait_for_pod_processes(node_dir: Path, timeout: float) -> dict[int, int]:
    """The processes of the pods a kubelet runs (their working dirs are under its root dir),
    once there is one."""
    pods = node_dir / "pods"
    return until(
        f"a pod process under {node_dir}",
        lambda: processes_under(pods) if pods.exists() else {},
        timeout=timeout,
    )


class Up:
    """One foreground `k8semu up` subprocess whose output lines are collected as they come."""

    def __init__(self, env: dict[str, str], *args: str | Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "k8semu", "up", *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line from now on that matches ``pattern``; fails after ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                if time.monotonic() < end:
                    continue
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout} s; output:\n"
                    + "\n".join(self.lines)
                ) from None
            if line is None:
                raise AssertionError(
                    f"k8semu up exited ({self.proc.wait()}) before printing {pattern!r}; output:\n"
                    + "\n".join(self.lines)
                )
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def finish(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        while True:
            try:
                line = self._new.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return rc

    def close(self) -> None:
        """Kill the launcher by pid if it still runs (its components die with it through
        PR_SET_PDEATHSIG) and release the pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def ups() -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.close()


def _expected(names: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(components this install can start, those it must report as skipped)."""
    have = [name for name, command in names if command in COMMANDS]
    skipped = [name for name, command in names if command not in COMMANDS]
    return have, skipped


_ALL = [
    ("store-s1", "store"),
    ("apiserver-1", "apiserver"),
    ("scheduler-1", "scheduler"),
    ("controller-manager-1", "controller-manager"),
    ("kubelet-w1", "kubelet"),
    ("proxy-w1", "proxy"),
]


@pytest.mark.slow
# Its hang guard: a cluster up, a join, a pod, a store restart and down, each a CLI run; it
# took 269 s of pytest-timeout's default 300 beside three busy workers (load 30).
@pytest.mark.timeout(600)
def test_detached_cluster_survives_up_reports_status_and_down_leaves_no_process(
    tmp_path: Path, cleanup: list[Path]
) -> None:
    env = user_env(tmp_path)
    config = _config(tmp_path / "cluster.yaml")
    state_dir = tmp_path / "state"
    cleanup.append(state_dir)
    have, skipped = _expected(_ALL)

    up = k8semu(
        env, "up", "-f", config, "--state-dir", state_dir, "--detach", timeout=START_TIMEOUT_S
    )
    assert up.returncode == 0, up.stdout + up.stderr
    for name in have:  # a progress line per component as it turns healthy
        assert re.search(rf"^  {name}\s+(healthy|answers)\s+pid \d+", up.stdout, re.M), up.stdout
    for name in skipped:
        assert f"skipped {name}: this install has no `k8semu" in up.stdout
    if "kubelet-w1" in have:
        assert re.search(r"^  node w1\s+Ready", up.stdout, re.M), up.stdout
    assert "cluster 'e2e' is up" in up.stdout

    # The `up` process has exited; every component it recorded still runs.
    state = read_state(state_dir)
    assert state.mode == "detached" and state.launcher_pid == 0
    assert [c.name for c in state.components] == have
    pids = {c.pid: c.start_time for c in state.components}
    assert all(is_same_process(pid, st) for pid, st in pids.items())
    for c in state.components:
        assert Path(c.log_path).is_file() and c.command[0]

    # The CLI config now points at the cluster: `k8semu get` needs no --server.
    got = k8semu(env, "get", "namespaces")
    assert got.returncode == 0 and "kube-system" in got.stdout, got.stdout + got.stderr

    # status -o json: every component alive and SERVING, the store leader, the lease holders.
    deadline = time.monotonic() + 90
    while True:
        run = k8semu(env, "status", "--state-dir", state_dir, "-o", "json")
        got_status = json.loads(run.stdout)
        rows = by_name(got_status)
        leases_held = all(
            rows[n]["role"].startswith("leader (lease ")
            for n in ("scheduler-1", "controller-manager-1")
            if n in rows
        )
        if (run.returncode == 0 and leases_held) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert run.returncode == 0, run.stdout
    assert got_status["storeLeader"] == "s1"
    assert rows["store-s1"]["role"] == "leader"
    assert all(r["alive"] and r["health"] == "SERVING" for r in rows.values()), rows
    if "scheduler-1" in rows:
        assert rows["scheduler-1"]["role"] == "leader (lease kube-scheduler)", rows
    if "controller-manager-1" in rows:
        assert rows["controller-manager-1"]["role"] == "leader (lease kube-controller-manager)"
    table = k8semu(env, "status", "--state-dir", state_dir)
    assert re.search(
        r"^store-s1\s+store\s+local\s+\d+\s+yes\s+running\s+0\s+-\s+SERVING", table.stdout, re.M
    ), table.stdout
    assert "supervised by k8semu supervise pid" in table.stdout

    # `join` adds a worker from "another host" against the running control plane.
    if {"kubelet", "proxy"} <= set(COMMANDS):
        kubelet_port, proxy_port = free_loopback_ports(2)
        join_dir = tmp_path / "join"
        cleanup.append(join_dir)
        joined = k8semu(
            env, "join", "--server", state.api_servers[0], "--node-name", "j1",
            "--node-ip", "127.0.1.2", "--runtime", "simulated", "--kubelet-port", kubelet_port,
            "--proxy-port", proxy_port, "--state-dir", join_dir, "--detach",
            "--ca-dir", state_dir / "pki",
            timeout=START_TIMEOUT_S,
        )  # fmt: skip
        assert joined.returncode == 0, joined.stdout + joined.stderr
        assert re.search(r"^  node j1\s+Ready", joined.stdout, re.M), joined.stdout
        nodes = k8semu(env, "get", "nodes")
        assert re.search(r"^j1\s+Ready", nodes.stdout, re.M), nodes.stdout
        join_pids = {c.pid: c.start_time for c in read_state(join_dir).components}
        assert len(join_pids) == 2
        left = k8semu(env, "down", "--state-dir", join_dir)
        assert left.returncode == 0, left.stdout + left.stderr
        assert wait_gone(join_pids, timeout=1) == []

    # A pod on the worker: a real process in its own session, which `down` must end too.
    pod_pids: dict[int, int] = {}
    if "kubelet-w1" in have:
        manifest = tmp_path / "pod.yaml"
        manifest.write_text(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: echo}\n"
            "spec:\n  nodeName: w1\n  containers: [{name: echo, image: k8semu/echo}]\n"
        )
        created = k8semu(env, "apply", "-f", manifest)
        assert created.returncode == 0, created.stdout + created.stderr
        pod_pids = _wait_for_pod_processes(state_dir / "nodes" / "w1", timeout=60)

    # A second `up` of a running cluster is refused; nothing more starts.
    again = k8semu(env, "up", "-f", config, "--state-dir", state_dir, "--detach")
    assert again.returncode == 1
    assert f"cluster 'e2e' already runs from {state_dir.resolve()}" in again.stderr

    # A crashed component of a detached cluster is started again by its supervisor
    # (tests/cluster/test_supervise.py covers more).
    store_pid = rows["store-s1"]["pid"]
    os.kill(store_pid, signal.SIGKILL)
    assert wait_gone({store_pid: pids[store_pid]}) == []
    rows = until_status(
        env,
        state_dir,
        "store-s1 started again",
        lambda r: r["store-s1"]["alive"] and r["store-s1"]["restarts"] == 1,
        timeout=60,
    )
    supervisor = read_state(state_dir).supervisor_pid
    assert supervisor and rows["store-s1"]["pid"] != store_pid
    pids[rows["store-s1"]["pid"]] = read_state(state_dir).component("store-s1").start_time  # type: ignore[union-attr]
    pids[supervisor] = read_state(state_dir).supervisor_start_time

    down = k8semu(env, "down", "--state-dir", state_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "no process of the cluster is left" in down.stdout
    assert wait_gone(pids, timeout=1) == []
    assert wait_gone(pod_pids, timeout=1) == []
    assert processes_under(state_dir) == {}
    # ... and the kubelet's cgroups, empty once its pods are gone (where it made any).
    found, _ = cgroups.discover()
    if found is not None and os.geteuid() == 0:
        mine = cgroups.hierarchy_name("w1", state_dir / "nodes" / "w1")
        assert not [d for d in found.dirs(mine) if d.exists()]
    after = status(env, state_dir)
    assert not any(c["alive"] for c in after["components"])
    assert "e2e" not in Path(env["K8SEMU_CONFIG"]).read_text()


@pytest.mark.slow
def test_foreground_up_restarts_a_killed_component_and_down_stops_it(
    tmp_path: Path, ups: list[Up], cleanup: list[Path]
) -> None:
    env = user_env(tmp_path)
    config = _config(tmp_path / "cluster.yaml", name="fg", workers=False)
    state_dir = tmp_path / "state"
    cleanup.append(state_dir)
    up = Up(env, "-f", config, "--state-dir", state_dir)
    ups.append(up)
    up.wait_for(r"^Supervising", START_TIMEOUT_S)
    state = read_state(state_dir)
    assert state.mode == "foreground" and state.launcher_pid == up.proc.pid
    seen = {c.pid: c.start_time for c in state.components}

    # A component killed behind the launcher's back is reported and started again.
    api = state.component("apiserver-1")
    assert api is not None
    os.kill(api.pid, signal.SIGKILL)
    up.wait_for(rf"apiserver-1 \(pid {api.pid}\) was killed by signal SIGKILL", 60)
    new_pid = int(up.wait_for(r"apiserver-1 started again: pid (\d+)", 60).group(1))
    assert new_pid != api.pid
    start = process_start_time(new_pid)
    assert start is not None
    seen[new_pid] = start
    until_recorded(
        state_dir, "apiserver-1", "state.json records the new pid", lambda c: c.pid == new_pid
    )

    # A component that keeps crashing (its port taken) is marked failed and left down; the
    # launcher and the rest of the cluster keep running.
    cm = read_state(state_dir).component("controller-manager-1")
    assert cm is not None
    os.kill(cm.pid, signal.SIGKILL)
    up.wait_for(rf"controller-manager-1 \(pid {cm.pid}\) was killed by signal SIGKILL", 60)
    with port_taken(cm.address):
        up.wait_for(r"FAILED: controller-manager-1 .* exited with code 1", 60)
        assert up.proc.poll() is None, "\n".join(up.lines)
        failed = until_recorded(
            state_dir,
            "controller-manager-1",
            "state.json records the failure",
            lambda c: c.state == "failed",
        )
        assert failed.last_exit_code == 1 and failed.pid == 0
        state = read_state(state_dir)
        assert all(c.alive() for c in state.components if c.name != "controller-manager-1")
        seen |= {c.pid: c.start_time for c in state.components if c.pid}

    # `down` asks the foreground launcher to stop; it stops everything and exits 0.
    down = k8semu(env, "down", "--state-dir", state_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"stopping the foreground `k8semu up` (pid {up.proc.pid})" in down.stdout
    assert up.finish(STOP_TIMEOUT_S) == 0, "\n".join(up.lines)
    assert any(line.startswith("SIGTERM: stopping") for line in up.lines)
    assert wait_gone(seen, timeout=1) == []


def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("kind: ClusterConfig\nversion: v1alpha1\nnodes: [{name: n1, runtime: vm}]\n")
    run = k8semu(user_env(tmp_path), "up", "-f", config, "--state-dir", tmp_path / "state")
    assert run.returncode == 2
    assert "bad.yaml: nodes[0].runtime: must be one of process, simulated, got 'vm'" in run.stderr
    assert not (tmp_path / "state").exists()


def test_unknown_host_exits_2(tmp_path: Path) -> None:
    run = k8semu(user_env(tmp_path), "up", "--host", "nowhere", "--state-dir", tmp_path / "s")
    assert run.returncode == 2
    assert "--host: 'nowhere' is not a host of this config (local)" in run.stderr


def test_address_in_use_exits_1_naming_the_field_and_starts_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path / "cluster.yaml", workers=False)
    port = int(re.search(r"apiServer: \{instances: \[\{port: (\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        run = k8semu(user_env(tmp_path), "up", "-f", config, "--state-dir", tmp_path / "state")
    assert run.returncode == 1
    assert f"apiServer.instances[0].port: 127.0.0.1:{port} is already in use" in run.stderr
    assert not (tmp_path / "state" / "state.json").exists()  # nothing was started


def test_component_that_exits_at_start_fails_the_launch_with_its_log(
    tmp_path: Path, cleanup: list[Path]
) -> None:
    config = _config(tmp_path / "cluster.yaml", workers=False)
    state_dir = tmp_path / "state"
    cleanup.append(state_dir)
    (state_dir / "store").mkdir(parents=True)
    (state_dir / "store" / "s1").write_text("not a directory")  # s1 cannot open its data dir
    run = k8semu(user_env(tmp_path), "up", "-f", config, "--state-dir", state_dir, "--detach")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "store-s1 (pid" in run.stderr and "while starting" in run.stderr
    assert "k8semu store:" in run.stderr  # the replica's own complaint, from its log
    state = read_state(state_dir)
    assert state.mode == "stopped"
    assert all(c.pid == 0 for c in state.components)  # nothing half-started is left


def test_down_and_status_without_a_cluster_exit_2(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    for verb in ("down", "status"):
        run = k8semu(env, verb, "--state-dir", tmp_path / "none")
        assert run.returncode == 2
        assert f"no cluster in {tmp_path / 'none'}" in run.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--server", "nope"], "--server: 'nope': expected HOST:PORT[,HOST:PORT]"),
        (["--node-ip", "1.2.3"], "--node-ip: '1.2.3' is not an IP address"),
        (["--capacity", "cpu=lots"], "--capacity.cpu: quantity 'lots'"),
        (["--node-name", "Bad_Name"], "--node-name: 'Bad_Name' must be 1-63 lowercase"),
    ],
)
def test_join_refuses_bad_flags_naming_them(tmp_path: Path, flags: list[str], message: str) -> None:
    args = ["--server", "127.0.0.1:1", *flags, "--state-dir", str(tmp_path / "state")]
    run = k8semu(user_env(tmp_path), "join", *args)
    assert run.returncode == 2
    assert message in run.stderr
    assert not (tmp_path / "state").exists()


def test_demo_app_is_found_outside_a_checkout(tmp_path: Path) -> None:
    """`k8semu up --demo` from any directory: the sample app ships in the package (a missing
    default manifest would fail `make run` for anyone not at the repository's root)."""
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from k8semu.cli import up; print(up._parser().parse_args([]).demo_manifest)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    manifest = Path(run.stdout.strip())
    assert manifest.is_absolute() and manifest.is_file()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(manifest.read_text())}
    assert {("Deployment", "echo"), ("Service", "echo")} <= kinds
    # The repository's examples/echo.yaml is the same file, not a copy that could drift.
    repo_copy = Path(__file__).resolve().parents[2] / "examples" / "echo.yaml"
    assert repo_copy.resolve() == manifest.resolve()
