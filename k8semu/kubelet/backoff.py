"""Restart back-off of one container (Kubernetes' CrashLoopBackOff timing).

The first restart after a failure waits `initial` seconds, each next one twice as long, at
most `maximum`. A container that ran for at least `reset_after` (default: twice the maximum)
before failing starts over at `initial`, as Kubernetes forgets a back-off entry after twice
its maximum. Pure: the caller passes the times.
"""

from __future__ import annotations


class Backoff:
    def __init__(self, *, initial: float = 1.0, maximum: float = 20.0, reset_after: float = 0.0):
        if not 0 < initial <= maximum:
            raise ValueError(f"back-off: need 0 < initial ({initial}) <= maximum ({maximum})")
        self.initial = initial
        self.maximum = maximum
        self.reset_after = reset_after or 2 * maximum
        self._current = 0.0

    @property
    def current(self) -> float:
        """The last delay handed out (0 before the first failure)."""
        return self._current

    def next_delay(self, ran_for: float) -> float:
        """The wait before restarting a container that just ended after `ran_for` seconds."""
        if ran_for >= self.reset_after or self._current == 0:
            self._current = self.initial
        else:
            self._current = min(self._current * 2, self.maximum)
        return self._current

    def reset(self) -> None:
        self._current = 0.0
