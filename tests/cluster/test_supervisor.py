"""Restart back-off: doubling, capped, reset after a stable run, and a limit on crashes in a
row; the stop flag that signal handlers set; and the supervision loop on small real processes
(a crash loop ends in "failed" while the others run; a restart request is a graceful stop and
an immediate start, not a crash)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from k8semu.cluster.config import LauncherSpec
from k8semu.cluster.launcher import StopFlag
from k8semu.cluster.supervisor import (
    RestartTracker,
    Supervised,
    Supervisor,
    add_request_path,
    restart_request_path,
    retire_request_path,
)

SPEC = LauncherSpec(
    restart_backoff_ms=500,
    max_restart_backoff_ms=3000,
    backoff_reset_after_ms=10_000,
    max_restarts=5,
)


def _crash_loop(tracker: RestartTracker, name: str, start: float, runs: int) -> list[float | None]:
    """``runs`` runs of one second each, every one ending in a crash."""
    delays: list[float | None] = []
    now = start
    tracker.started(name, now)
    for _ in range(runs):
        now += 1.0
        delay = tracker.exited(name, now)
        delays.append(delay)
        if delay is None:
            break
        now += delay
        tracker.started(name, now)
    return delays


def test_delay_doubles_up_to_the_cap_then_the_tracker_gives_up() -> None:
    tracker = RestartTracker(SPEC)
    assert _crash_loop(tracker, "s1", 0.0, 10) == [0.5, 1.0, 2.0, 3.0, 3.0, None]
    assert tracker.crashes("s1") == 6


def test_a_stable_run_resets_the_back_off_and_names_are_independent() -> None:
    tracker = RestartTracker(SPEC)
    assert _crash_loop(tracker, "s1", 0.0, 3) == [0.5, 1.0, 2.0]
    tracker.started("s1", 100.0)
    assert tracker.exited("s1", 100.0 + 10.0) == 0.5  # ran for backoffResetAfter: a fresh start
    assert tracker.crashes("s1") == 1
    assert _crash_loop(tracker, "s2", 0.0, 1) == [0.5]


def test_no_restarts_allowed_means_give_up_at_the_first_crash() -> None:
    tracker = RestartTracker(LauncherSpec(max_restarts=0))
    tracker.started("s1", 0.0)
    assert tracker.exited("s1", 1.0) is None


def test_stop_flag_set_by_a_signal_handler_ends_a_wait_at_once() -> None:
    flag = StopFlag()
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: flag.set("SIGALRM"))
    try:
        assert not flag.wait(0.01)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        start = time.monotonic()
        assert flag.wait(10.0)
        assert time.monotonic() - start < 5.0
        assert flag.reason == "SIGALRM"
        flag.set("later")  # the first reason stays
        assert flag.reason == "SIGALRM"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        flag.close()


# -- the supervision loop, on small real processes ---------------------------------------------


def _loop(tmp_path: Path, *commands: list[str], max_restarts: int = 2) -> Supervisor:
    from k8semu.cluster.state import ComponentRecord

    units = [
        Supervised(
            record=ComponentRecord(
                name=f"c{i}",
                kind="test",
                host="local",
                stage=0,
                command=command,
                log_path=str(tmp_path / f"c{i}.log"),
            )
        )
        for i, command in enumerate(commands)
    ]
    spec = LauncherSpec(
        restart_backoff_ms=10,
        max_restart_backoff_ms=20,
        backoff_reset_after_ms=10_000,
        max_restarts=max_restarts,
        stop_grace_ms=2_000,
    )
    writes: list[int] = []
    sup = Supervisor(
        units,
        spec=spec,
        state_dir=tmp_path,
        env=dict(os.environ),
        say=lambda line: None,
        stop=StopFlag(),
        write_state=lambda: writes.append(1),
    )
    for u in units:
        sup.spawn(u)
    return sup


def _run_until(sup: Supervisor, done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, [u.record for u in sup.units]
        sup.step(time.monotonic())
        time.sleep(0.01)


def test_a_crash_looping_process_is_marked_failed_and_the_others_keep_running(
    tmp_path: Path,
) -> None:
    sup = _loop(tmp_path, ["/bin/sh", "-c", "exit 3"], ["sleep", "60"])
    crashing, steady = sup.units
    try:
        _run_until(sup, lambda: crashing.record.state == "failed")
        assert crashing.record.restarts == 2 and crashing.record.last_exit_code == 3
        assert crashing.record.pid == 0 and crashing.record.last_exit_at
        # Left down: more rounds start nothing.
        for _ in range(5):
            sup.step(time.monotonic() + 60)
        assert crashing.record.pid == 0 and crashing.record.state == "failed"
        assert steady.record.state == "running" and steady.record.alive()
        assert "starting c0" in (tmp_path / "c0.log").read_text()
    finally:
        for u in sup.units:
            if u.proc is not None:
                u.proc.kill()
                u.proc.wait()


def test_a_restart_request_stops_gracefully_and_starts_again_at_once(tmp_path: Path) -> None:
    sup = _loop(tmp_path, ["sleep", "60"])
    (unit,) = sup.units
    old = unit.record.pid
    try:
        request = restart_request_path(tmp_path, "c0")
        request.parent.mkdir()
        request.write_text("req-1\n")
        _run_until(sup, lambda: unit.record.restart_request == "req-1")
        assert unit.record.pid != old and unit.record.alive()
        assert unit.record.last_exit_code == -signal.SIGTERM
        assert unit.record.restarts == 1 and unit.record.state == "running"
        assert not request.exists()
        assert sup.tracker.crashes("c0") == 0  # asked for: not a crash
    finally:
        if unit.proc is not None:
            unit.proc.kill()
            unit.proc.wait()


def test_add_and_retire_requests_change_the_supervised_set(tmp_path: Path) -> None:
    """`k8semu store scale`'s requests: an added record is started and supervised, a retired
    component stopped for good and forgotten; a request that is not a record is ignored."""
    from dataclasses import asdict, replace

    sup = _loop(tmp_path, ["sleep", "60"])
    (first,) = sup.units
    try:
        added = replace(first.record, name="c1", pid=0, start_time=0, log_path=str(tmp_path / "c1"))
        add_request_path(tmp_path, "c1").parent.mkdir()
        add_request_path(tmp_path, "c9").write_text("{not json")
        add_request_path(tmp_path, "c1").write_text(json.dumps(asdict(added)))
        _run_until(sup, lambda: [u.name for u in sup.units] == ["c0", "c1"])
        new = sup.units[1]
        assert new.record.alive() and new.record.state == "running"
        assert not list((tmp_path / "control").iterdir())
        retire_request_path(tmp_path, "c0").write_text("retire")
        _run_until(sup, lambda: [u.name for u in sup.units] == ["c1"])
        assert not first.record.alive() and first.record.state == "stopped"
    finally:
        for u in [first, *sup.units]:
            if u.proc is not None:
                u.proc.kill()
                u.proc.wait()


def test_the_store_members_follow_the_local_replicas() -> None:
    from k8semu.cli.supervise import store_members
    from k8semu.cluster.state import ComponentRecord

    def store(name: str) -> ComponentRecord:
        return ComponentRecord(
            name=f"store-{name}", kind="store", host="h", stage=0, command=[], address=name
        )

    seen = {"s1", "s2"}
    members = [["s1", "s1"], ["s2", "s2"], ["r1", "r1"]]  # r1: a replica of another host
    grown = store_members(members, [store("s1"), store("s2"), store("s4")], seen)
    assert grown == [["s1", "s1"], ["s2", "s2"], ["r1", "r1"], ["s4", "s4"]]
    shrunk = store_members(grown, [store("s1"), store("s4")], seen)
    assert shrunk == [["s1", "s1"], ["r1", "r1"], ["s4", "s4"]]
