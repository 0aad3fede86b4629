"""Self-healing of a detached cluster, with real processes: the `k8semu supervise` process that
`up --detach` leaves running restarts SIGKILLed components (store replica, API server, kubelet),
gives up on one that keeps crashing (marked failed, left down, reported in status, its log and
an Event) while the rest keeps serving, is itself brought back by `up --detach`, is stopped by
`down` before anything else; and `k8semu restart --rolling` restarts every control-plane
process one at a time."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from k8semu.cluster.state import is_same_process, read_state
from tests.support.cluster import (
    DEFAULT_LAUNCHER,
    by_name,
    everything,
    k8semu,
    port_taken,
    processes_under,
    status,
    until,
    until_status,
    up_detached,
    user_env,
    wait_gone,
    write_config,
)

# Launchers: one that gives up after two quick restarts in a row; one with a generous grace
# period (on a loaded machine a graceful stop can take seconds, and a test checks that SIGTERM
# was enough).
GIVE_UP = "restartBackoff: 100ms, maxRestarts: 2, stopGracePeriod: 5s"
PATIENT = "restartBackoff: 200ms, stopGracePeriod: 30s"


def _started(
    tmp_path: Path,
    cleanup: list[Path],
    *,
    name: str,
    stores: int = 1,
    workers: bool = True,
    launcher: str = DEFAULT_LAUNCHER,
) -> tuple[dict[str, str], Path, Path]:
    """A detached cluster (``stores`` store replicas, the control plane, with ``workers`` one
    simulated worker; no add-ons): its environment, config and state dir."""
    env = user_env(tmp_path)
    config = write_config(
        tmp_path / "cluster.yaml",
        name=name,
        stores=stores,
        workers=workers,
        runtime="simulated",
        addons=False,
        launcher=launcher,
    )
    state_dir = tmp_path / "state"
    cleanup.append(state_dir)
    up_detached(env, config, state_dir)
    return env, config, state_dir


@pytest.mark.slow
def test_supervisor_restarts_killed_components_comes_back_and_down_stops_it(
    tmp_path: Path, cleanup: list[Path]
) -> None:
    env, config, state_dir = _started(tmp_path, cleanup, name="heal")
    state = read_state(state_dir)
    assert state.mode == "detached" and state.supervisor_alive()
    seen = everything(state_dir)

    # SIGKILL a store replica, the API server and the kubelet at once: all three come back.
    victims = ("store-s1", "apiserver-1", "kubelet-w1")
    old = {n: state.component(n).pid for n in victims}  # type: ignore[union-attr]
    for pid in old.values():
        os.kill(pid, signal.SIGKILL)

    def back(rows: dict[str, dict[str, Any]]) -> bool:
        return all(
            rows[n]["alive"]
            and rows[n]["health"] == "SERVING"
            and rows[n]["restarts"] >= 1
            and rows[n]["pid"] != old[n]
            and rows[n]["state"] == "running"
            for n in victims
        )

    rows = until_status(env, state_dir, "the killed components serving again", back)
    assert all(r["alive"] for r in rows.values()), rows
    assert rows["scheduler-1"]["restarts"] == 0
    seen |= everything(state_dir)
    log = (state_dir / "logs" / "supervisor.log").read_text()
    for n in victims:
        assert f"{n} (pid {old[n]}) exited" in log and f"{n} started again" in log
    got = k8semu(env, "get", "nodes")
    assert got.returncode == 0 and "w1" in got.stdout, got.stdout + got.stderr

    # The supervisor killed: status says so; `up --detach` starts only the supervisor.
    before = read_state(state_dir)
    os.kill(before.supervisor_pid, signal.SIGKILL)
    assert wait_gone({before.supervisor_pid: before.supervisor_start_time}) == []
    table = k8semu(env, "status", "--state-dir", state_dir)
    assert "SUPERVISOR NOT RUNNING" in table.stdout, table.stdout
    assert status(env, state_dir)["supervisor"]["alive"] is False
    again = k8semu(env, "up", "-f", config, "--state-dir", state_dir, "--detach")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "starting only the supervisor" in again.stdout
    after = read_state(state_dir)
    assert after.supervisor_alive() and after.supervisor_pid != before.supervisor_pid
    assert {c.name: c.pid for c in after.components} == {c.name: c.pid for c in before.components}
    seen |= everything(state_dir)

    # down stops the supervisor first, then everything: nothing is left, nothing restarted.
    down = k8semu(env, "down", "--state-dir", state_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.splitlines()[0].startswith("stopping the supervisor")
    assert wait_gone(seen, timeout=1) == []
    assert processes_under(state_dir) == {}
    final = read_state(state_dir)
    assert final.mode == "stopped" and not final.supervisor_pid
    assert not any(c.pid for c in final.components)


@pytest.mark.slow
def test_crash_looping_component_is_marked_failed_and_left_down_while_the_rest_serves(
    tmp_path: Path, cleanup: list[Path]
) -> None:
    env, _, state_dir = _started(tmp_path, cleanup, name="loop", workers=False, launcher=GIVE_UP)
    sched = read_state(state_dir).component("scheduler-1")
    assert sched is not None

    # Kill the scheduler and take its listen port: every restart exits at once (code 1).
    os.kill(sched.pid, signal.SIGKILL)
    assert wait_gone({sched.pid: sched.start_time}) == []
    with port_taken(sched.address):
        rows = until_status(
            env,
            state_dir,
            "scheduler-1 marked failed",
            lambda r: r["scheduler-1"]["state"] == "failed",
        )
        failed = rows["scheduler-1"]
        assert failed["alive"] is False and failed["last_exit_code"] == 1, failed
        assert failed["restarts"] == 2 and failed["last_exit_at"], failed
        # Everything else keeps running and serving; the API answers.
        for name, row in rows.items():
            if name != "scheduler-1":
                assert row["alive"] and row["health"] == "SERVING", row
        table = k8semu(env, "status", "--state-dir", state_dir)
        assert table.returncode == 1
        assert "FAILED (crashed too often, left down): scheduler-1" in table.stdout
        log = (state_dir / "logs" / "supervisor.log").read_text()
        assert "FAILED: scheduler-1" in log and "launcher.maxRestarts is 2" in log

        def event() -> bool:
            got = k8semu(env, "get", "events", "-n", "kube-system", "-o", "json")
            return got.returncode == 0 and "ComponentFailed" in got.stdout

        until("the ComponentFailed Event", event, timeout=60)
        assert read_state(state_dir).component("scheduler-1").pid == 0  # type: ignore[union-attr]

    # Port free again: `k8semu restart` starts the failed component with a fresh budget.
    restarted = k8semu(env, "restart", "scheduler-1", "--state-dir", state_dir, "--timeout", "30s")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    row = by_name(status(env, state_dir))["scheduler-1"]
    assert row["alive"] and row["state"] == "running" and row["restarts"] == 3, row
    seen = everything(state_dir)
    down = k8semu(env, "down", "--state-dir", state_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert wait_gone(seen, timeout=1) == []


@pytest.mark.slow
def test_rolling_restart_brings_every_control_plane_process_back_one_at_a_time(
    tmp_path: Path, cleanup: list[Path]
) -> None:
    env, _, state_dir = _started(
        tmp_path, cleanup, name="roll", stores=3, workers=False, launcher=PATIENT
    )
    before = read_state(state_dir)

    run = k8semu(env, "restart", "--rolling", "--state-dir", state_dir, "-o", "json", timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    done = json.loads(run.stdout)
    order = [r["name"] for r in done]
    assert sorted(order) == sorted(c.name for c in before.components)
    # Store replicas first (the leader last among them: looked up before each, so a leader
    # change under load changes the order; tests/cluster/test_rolling.py checks the rule), then
    # API server, scheduler, controller manager.
    assert sorted(order[:3]) == ["store-s1", "store-s2", "store-s3"]
    assert order[3:] == ["apiserver-1", "scheduler-1", "controller-manager-1"]
    for r in done:
        assert r["new_pid"] != r["old_pid"]
        # (exit code unknown: these processes were started by `up`, not by the supervisor)
        assert r["exit_code"] in (0, None), r
    # A graceful stop: SIGTERM was enough for every one.
    assert "SIGKILL" not in (state_dir / "logs" / "supervisor.log").read_text()

    rows = by_name(status(env, state_dir))
    assert all(r["alive"] and r["health"] == "SERVING" for r in rows.values()), rows
    assert all(r["restarts"] >= 1 for r in rows.values()), rows
    table = k8semu(env, "status", "--state-dir", state_dir)
    assert table.returncode == 0, table.stdout
    got = k8semu(env, "get", "namespaces")
    assert got.returncode == 0 and "kube-system" in got.stdout

    seen = everything(state_dir) | {c.pid: c.start_time for c in before.components}
    down = k8semu(env, "down", "--state-dir", state_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert wait_gone(seen, timeout=1) == []
    assert not any(is_same_process(p, s) for p, s in seen.items())


def test_restart_refuses_bad_input_naming_it(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    none = k8semu(env, "restart", "--state-dir", tmp_path / "nothing", "--rolling")
    assert none.returncode == 2 and "no cluster in" in none.stderr
    bare = k8semu(env, "restart", "--state-dir", tmp_path)
    assert bare.returncode == 2 and "--rolling" in bare.stderr
    bad = k8semu(env, "restart", "--rolling", "--timeout", "soon", "--state-dir", tmp_path)
    assert bad.returncode == 2 and "--timeout" in bad.stderr
