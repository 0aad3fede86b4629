"""`k8semu logs COMPONENT`: the log file of a component of a cluster started with `up`,
found through the cluster's state.json; pods still go to their kubelet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from k8semu.cluster.state import ClusterState, ComponentRecord, write_state


def _logs(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k8semu", "logs", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _cluster(tmp_path: Path) -> Path:
    state_dir = tmp_path / "state"
    (state_dir / "logs").mkdir(parents=True)
    log = state_dir / "logs" / "apiserver-1.log"
    log.write_text("one\ntwo\nthree\n")
    record = ComponentRecord(
        name="apiserver-1", kind="apiserver", host="local", stage=1, command=[],
        log_path=str(log),
    )  # fmt: skip
    state = ClusterState(
        cluster="t", host="local", mode="detached", state_dir=str(state_dir), components=[record]
    )
    write_state(state_dir, state)
    return state_dir


def test_a_component_name_prints_its_log_file(tmp_path: Path) -> None:
    state_dir = _cluster(tmp_path)
    run = _logs("apiserver-1", "--state-dir", state_dir)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "one\ntwo\nthree\n"
    run = _logs("component/apiserver-1", "--state-dir", state_dir, "--tail", "2")
    assert run.returncode == 0 and run.stdout == "two\nthree\n"


def test_an_unknown_component_is_an_error_naming_it(tmp_path: Path) -> None:
    state_dir = _cluster(tmp_path)
    run = _logs("component/scheduler-9", "--state-dir", state_dir)
    assert run.returncode == 1
    assert "no component 'scheduler-9'" in run.stderr


def test_a_name_that_is_no_component_is_looked_up_as_a_pod(tmp_path: Path) -> None:
    state_dir = _cluster(tmp_path)
    run = _logs("web-1", "--state-dir", state_dir, "--server", "127.0.0.1:1")
    assert run.returncode == 1
    assert "error:" in run.stderr and "apiserver-1" not in run.stdout
