"""Stopping processes by pid, safely: SIGTERM, a grace period, SIGKILL to what is left.

Every pid comes with the start time recorded when it was started (``state.process_start_time``);
a signal goes only to a process that still has that start time, so a pid reused by some
unrelated process is never touched. Used by the launcher (for the processes it started) and by
``k8semu down`` (for the ones a state file records).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping

from k8semu.cluster.state import is_same_process

__all__ = ["terminate"]

POLL_S = 0.02
# After SIGKILL the kernel needs a moment; a process still there after this is reported.
KILL_WAIT_S = 5.0


def terminate(
    pids: Mapping[int, int],
    grace: float,
    *,
    reap: Callable[[], None] = lambda: None,
) -> tuple[list[int], list[int]]:
    """Stop every process of ``pids`` (pid -> start time): SIGTERM now, SIGKILL after ``grace``
    seconds to any still running. ``reap`` is called while waiting (a parent must reap its
    children for them to vanish). Returns (killed with SIGKILL, still alive after that)."""
    live = {pid: st for pid, st in pids.items() if is_same_process(pid, st)}
    for pid, st in live.items():
        _signal(pid, st, signal.SIGTERM)
        _signal(pid, st, signal.SIGCONT)  # a stopped (paused) process acts on SIGTERM only now
    left = _wait(live, grace, reap)
    for pid, st in left.items():
        _signal(pid, st, signal.SIGKILL)
    still = _wait(left, KILL_WAIT_S, reap)
    return sorted(left), sorted(still)


def _signal(pid: int, start_time: int, sig: signal.Signals) -> None:
    if is_same_process(pid, start_time):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait(live: Mapping[int, int], timeout: float, reap: Callable[[], None]) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        reap()
        left = {pid: st for pid, st in live.items() if is_same_process(pid, st)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL_S)
