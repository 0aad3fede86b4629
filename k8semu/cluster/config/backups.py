"""The ``backups`` section: scheduled backups, taken by the supervisor (k8semu.backup).

::

    backups: {interval: 10m, directory: /var/backups/k8semu, keep: 5}

``interval`` 0 (the default) means no scheduled backups; ``directory`` defaults to
``<state-dir>/backups``; ``keep`` is how many of the newest backups are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from k8semu.cluster.config import defaults
from k8semu.cluster.errors import ClusterConfigError

__all__ = ["BackupsSpec"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupsSpec:
    interval_ms: int = 0
    #: "" means ``<state-dir>/backups``.
    directory: str = ""
    keep: int = defaults.DEFAULT_BACKUPS_KEEP

    def __post_init__(self) -> None:
        if self.interval_ms and self.interval_ms < defaults.MIN_BACKUP_INTERVAL_MS:
            raise ClusterConfigError(
                "backups.interval", "must be 0 (no scheduled backups) or at least 1s"
            )
        if self.keep < 1:
            raise ClusterConfigError("backups.keep", "must be >= 1")

    @property
    def enabled(self) -> bool:
        return self.interval_ms > 0
