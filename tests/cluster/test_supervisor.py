"""Restart back-off: doubling, capped, reset after a stable run, and a limit on crashes in a
row; and the stop flag that signal handlers set."""

from __future__ import annotations

import signal
import time

from k8semu.cluster.config import LauncherSpec
from k8semu.cluster.launcher import StopFlag
from k8semu.cluster.supervisor import RestartTracker

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
