"""Every error the cluster package raises, in one place.

::

    ClusterError                a cluster operation failed
    +-- ClusterConfigError      a cluster config that cannot be used (also a ValueError); the
    |                           message starts with the field path: ``store.replicas: ...``
    +-- MemberExitedError       a member process exited while it should be running; the message
    |                           carries the tail of its log
    +-- ClusterNotReadyError    no agreed leader before the deadline (also a TimeoutError)
    +-- WaitCancelledError      a wait was cancelled because its owner is shutting down
    +-- ComponentStartError     a component subprocess (a benchmark's, a test's) exited or was
    |                           not serving in time; the message carries its log
    +-- LaunchError             the launcher cannot start or keep a cluster: data dir in use,
                                address in use, a member that keeps crashing
"""

from __future__ import annotations

import signal
from pathlib import Path

__all__ = [
    "ClusterConfigError",
    "ClusterError",
    "ClusterNotReadyError",
    "ComponentStartError",
    "LaunchError",
    "MemberExitedError",
    "WaitCancelledError",
]


class ClusterError(RuntimeError):
    """A cluster operation failed (bad member name, a process that would not start or stop)."""


class ClusterConfigError(ClusterError, ValueError):
    """A cluster config that cannot be used. ``path`` is the field (``store.replicas``), or ""
    when the whole document is wrong; the message is ``path: what is wrong``."""

    def __init__(self, path: str, message: str, *, source: str = "") -> None:
        where = f"{path}: " if path else ""
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{where}{message}")
        self.path = path
        self.source = source
        self.reason = message


class MemberExitedError(ClusterError):
    """A member process exited while it should have been running.

    ``name``, ``returncode`` and ``log_tail`` (the last lines of its log) say which and why.
    """

    def __init__(self, name: str, pid: int, returncode: int, log_path: Path, log_tail: str):
        self.name = name
        self.pid = pid
        self.returncode = returncode
        self.log_path = log_path
        self.log_tail = log_tail
        super().__init__(
            f"store member {name} (pid {pid}) {self.how}; last lines of {log_path}:\n{log_tail}"
        )

    @property
    def how(self) -> str:
        """``exited with code 1`` or ``was killed by signal SIGKILL``."""
        if self.returncode < 0:
            try:
                sig = signal.Signals(-self.returncode).name
            except ValueError:
                sig = str(-self.returncode)
            return f"was killed by signal {sig}"
        return f"exited with code {self.returncode}"


class ClusterNotReadyError(ClusterError, TimeoutError):
    """No leader that a quorum agrees on was found before the deadline."""


class WaitCancelledError(ClusterError):
    """A wait for the cluster was cancelled (its owner is shutting down)."""


class ComponentStartError(ClusterError):
    """A component started by `cluster.component` exited, or was not serving before its
    deadline; ``exited`` says which, the message carries the process's log."""

    def __init__(self, message: str, *, exited: bool = False) -> None:
        super().__init__(message)
        self.exited = exited


class LaunchError(ClusterError):
    """The launcher cannot start or keep a cluster; the message names the cause."""
