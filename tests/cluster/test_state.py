"""The state directory, pid checks, stopping by pid and the CLI config the launcher writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from k8semu.cluster import clientconfig, component_log_path
from k8semu.cluster.state import (
    ClusterState,
    ComponentRecord,
    default_state_dir,
    find_state_dir,
    is_same_process,
    process_start_time,
    read_state,
    write_state,
)
from k8semu.cluster.stopping import terminate

IGNORES_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def _state(tmp_path: Path) -> ClusterState:
    return ClusterState(
        cluster="c1",
        host="",
        mode="detached",
        state_dir=str(tmp_path),
        components=[
            ComponentRecord(
                name="store-s1", kind="store", host="local", stage=0, command=["x"],
                log_path=str(tmp_path / "logs" / "store-s1.log"),
            ),
            ComponentRecord(
                name="kubelet-node-1", kind="kubelet", host="local", stage=3, command=["y"],
                log_path=str(tmp_path / "logs" / "kubelet-node-1.log"), nodes=["node-1"],
            ),
        ],
    )  # fmt: skip


def test_state_round_trips_and_log_paths_resolve_names_and_aliases(tmp_path: Path) -> None:
    state = _state(tmp_path)
    write_state(tmp_path, state)
    assert read_state(tmp_path) == state
    logs = tmp_path / "logs"
    assert component_log_path(tmp_path, "store-s1") == logs / "store-s1.log"
    assert component_log_path(tmp_path, "s1") == logs / "store-s1.log"
    assert component_log_path(tmp_path, "node-1") == logs / "kubelet-node-1.log"
    assert component_log_path(tmp_path, "apiserver-9") is None
    assert component_log_path(tmp_path / "nowhere", "s1") is None


def test_default_and_found_state_dirs(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert default_state_dir("a", env) == tmp_path / ".k8semu" / "clusters" / "a"
    assert default_state_dir("a", {**env, "XDG_STATE_HOME": "/x"}) == Path("/x/k8semu/clusters/a")
    assert find_state_dir(Path("/given"), "a", env) == Path("/given")
    assert find_state_dir(None, "a", env) == default_state_dir("a", env)
    assert find_state_dir(None, None, env) == default_state_dir("local", env)
    # The CLI's current context names the cluster when its state dir exists.
    clientconfig.set_context(clientconfig.user_config_path(env), "b", ("127.0.0.1:1",))
    (default_state_dir("b", env) / "state.json").parent.mkdir(parents=True)
    (default_state_dir("b", env) / "state.json").write_text("{}")
    assert find_state_dir(None, None, env) == default_state_dir("b", env)


def test_a_reused_pid_is_not_the_recorded_process_and_terminate_kills_what_ignores_sigterm() -> (
    None
):
    proc = subprocess.Popen(
        [sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        start = process_start_time(proc.pid)
        assert start is not None and is_same_process(proc.pid, start)
        assert not is_same_process(proc.pid, start + 1)  # same pid, another process
        # A wrong start time: never signalled.
        assert terminate({proc.pid: start + 1}, grace=0.1) == ([], [])
        assert proc.poll() is None
        killed, left = terminate({proc.pid: start}, grace=0.2, reap=lambda: proc.poll())
        assert (killed, left) == ([proc.pid], [])
        assert proc.wait(timeout=5) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_cli_config_context_is_added_made_current_and_removed_keeping_others(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config"
    path.write_text(
        "current-context: mine\ncontexts:\n  - {name: mine, servers: ['10.0.0.1:6443']}\n"
    )
    clientconfig.set_context(path, "local", ("127.0.0.1:6443", "127.0.0.1:6444"))
    data = yaml.safe_load(path.read_text())
    assert data["current-context"] == "local"
    assert data["contexts"] == [
        {"name": "mine", "servers": ["10.0.0.1:6443"]},
        {"name": "local", "servers": ["127.0.0.1:6443", "127.0.0.1:6444"], "namespace": "default"},
    ]
    assert clientconfig.remove_context(path, "local")
    data = yaml.safe_load(path.read_text())
    assert "current-context" not in data
    assert [c["name"] for c in data["contexts"]] == ["mine"]
    assert not clientconfig.remove_context(path, "local")
