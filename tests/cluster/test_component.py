"""`cluster.component`: a component subprocess that cannot come up is a ComponentStartError
carrying its log (not an AssertionError), and it is ended by the pid it started."""

from __future__ import annotations

from pathlib import Path

import pytest

from k8semu.cluster.component import ComponentProcess, SchedulerProcess
from k8semu.cluster.errors import ClusterError, ComponentStartError
from k8semu.cluster.processes import free_loopback_ports


def test_a_component_that_exits_is_a_component_start_error_with_its_log(tmp_path: Path) -> None:
    proc = ComponentProcess("scheduler", ["--no-such-flag"], tmp_path / "bad.log").start()
    try:
        with pytest.raises(ComponentStartError) as err:
            proc.wait_serving(timeout=60)
        assert err.value.exited
        assert isinstance(err.value, ClusterError)
        assert "--no-such-flag" in str(err.value)  # argparse's complaint, from the log
    finally:
        proc.close()


def test_a_component_not_serving_in_time_is_a_component_start_error(tmp_path: Path) -> None:
    # A scheduler with no API server to talk to keeps running but never says SERVING.
    nobody = f"127.0.0.1:{free_loopback_ports(1)[0]}"
    proc = SchedulerProcess([nobody], tmp_path / "sched.log", ["--no-leader-elect"])
    try:
        with pytest.raises(ComponentStartError) as err:
            proc.wait_serving(timeout=1.0)
        assert not err.value.exited
        assert "not serving in 1.0s" in str(err.value)
    finally:
        proc.close()
    assert not proc.running


def test_wait_serving_before_start_is_a_component_start_error(tmp_path: Path) -> None:
    proc = ComponentProcess("scheduler", [], tmp_path / "never.log")
    with pytest.raises(ComponentStartError, match="never started"):
        proc.wait_serving(timeout=1.0)
