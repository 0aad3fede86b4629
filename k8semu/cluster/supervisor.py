"""Restart back-off for supervised processes: when to start a crashed process again, or not.

Pure bookkeeping, like Kubernetes' CrashLoopBackOff: a process that exits is started again after
a delay that doubles with each crash in a row, up to a cap; a process that ran long enough
without exiting starts from the first delay again; after too many crashes in a row the
supervisor gives up. The caller passes the (monotonic) time in, so tests drive it with numbers.
It must not start, signal or wait for anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from k8semu.cluster.config import LauncherSpec

__all__ = ["RestartTracker"]


@dataclass(slots=True)
class _History:
    started_at: float
    crashes: int = 0


class RestartTracker:
    """Back-off state per process name, under one ``LauncherSpec``'s limits.

    Invariant: a name's crash count is the number of exits in a row that each came less than
    ``backoff_reset_after`` after that run's start; it never exceeds ``max_restarts`` + 1.
    """

    def __init__(self, spec: LauncherSpec) -> None:
        self._first_s = spec.restart_backoff_ms / 1000
        self._max_s = spec.max_restart_backoff_ms / 1000
        self._reset_after_s = spec.backoff_reset_after_ms / 1000
        self._max_restarts = spec.max_restarts
        self._history: dict[str, _History] = {}

    def started(self, name: str, now: float) -> None:
        """``name`` (re)started at ``now``."""
        history = self._history.get(name)
        if history is None:
            self._history[name] = _History(started_at=now)
        else:
            history.started_at = now

    def exited(self, name: str, now: float) -> float | None:
        """``name`` exited at ``now``: seconds to wait before starting it again, or None to give
        up (it crashed more than ``max_restarts`` times in a row)."""
        history = self._history.setdefault(name, _History(started_at=now))
        if now - history.started_at >= self._reset_after_s:
            history.crashes = 0
        history.crashes += 1
        if history.crashes > self._max_restarts:
            return None
        doublings = min(history.crashes - 1, 32)  # the cap is reached long before; no overflow
        return float(min(self._first_s * 2**doublings, self._max_s))

    def crashes(self, name: str) -> int:
        """Crashes of ``name`` in a row, as counted by the last ``exited()``."""
        history = self._history.get(name)
        return 0 if history is None else history.crashes

    @property
    def max_restarts(self) -> int:
        return self._max_restarts
