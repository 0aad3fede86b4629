"""Scheduled backups: a thread that takes a backup every interval and keeps the newest N.

The supervisor owns one (``start()`` with the supervision loop, ``close()`` when it ends);
the work runs on this thread with an event loop of its own, so a slow or stuck backup never
delays supervision. A backup that fails is reported through ``say`` and tried again at the
next interval; a failure never removes an older backup. Files are named
``<cluster>-<UTC time>.k8semu-backup``, so their names sort by age.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from k8semu import transport
from k8semu.backup import archive, take
from k8semu.backup.archive import SUFFIX, BackupError, Metadata

__all__ = ["BackupSchedule", "Listed", "backup_name", "list_backups", "prune"]

#: One backup may take at most this long (the stream's deadline).
BACKUP_TIMEOUT_S = 300.0
CLOSE_WAIT_S = 5.0


def backup_name(cluster: str, when: datetime.datetime | None = None) -> str:
    when = when or datetime.datetime.now(datetime.UTC)
    return f"{cluster}-{when.strftime('%Y%m%dT%H%M%S.%fZ')}{SUFFIX}"


@dataclass(frozen=True, slots=True)
class Listed:
    """One file of a backup directory: its metadata, or why it cannot be read."""

    path: Path
    size: int
    metadata: Metadata | None
    problem: str = ""


def list_backups(directory: Path, cluster: str | None = None) -> list[Listed]:
    """The backups in ``directory`` (of ``cluster`` only, when given), oldest first. Only the
    metadata is read (cheap); ``verify`` checks a file end to end."""
    if not directory.is_dir():
        return []
    pattern = f"{cluster}-*{SUFFIX}" if cluster else f"*{SUFFIX}"
    out = []
    for path in sorted(directory.glob(pattern)):
        try:
            meta: Metadata | None = archive.read_metadata(path)
            problem = ""
        except BackupError as exc:
            meta, problem = None, str(exc)
        out.append(Listed(path=path, size=path.stat().st_size, metadata=meta, problem=problem))
    return out


def prune(directory: Path, cluster: str, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` backups of ``cluster``; the paths removed."""
    files = sorted(directory.glob(f"{cluster}-*{SUFFIX}"))
    gone = files[: max(0, len(files) - keep)]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


@dataclass(eq=False, kw_only=True)
class BackupSchedule:
    """Every ``interval_s``, a backup of ``cluster``'s store (``endpoints``) into
    ``directory``, keeping the newest ``keep``. ``say`` reports each result."""

    cluster: str
    endpoints: Sequence[str]
    directory: Path
    interval_s: float
    keep: int
    say: Callable[[str], None]
    #: A TLS store's CA and a client certificate it admits (None: plain text).
    tls: transport.ClientTLS | None = None
    #: Backups taken and failures since start (for tests and status).
    taken: int = 0
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="backups", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # Bounded: a backup in flight ends with its daemon thread, never holding a stop.
            self._thread.join(timeout=CLOSE_WAIT_S)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_once()

    def run_once(self) -> Path | None:
        """Take one backup now and prune; the file written, or None after a failure."""
        dest = self.directory / backup_name(self.cluster)
        t0 = time.monotonic()
        try:
            meta = asyncio.run(
                take.take(
                    self.endpoints,
                    dest,
                    cluster=self.cluster,
                    timeout=BACKUP_TIMEOUT_S,
                    tls=self.tls,
                )
            )
            removed = prune(self.directory, self.cluster, self.keep)
        except (BackupError, OSError) as exc:
            self.failed += 1
            self.say(
                f"{_clock()} scheduled backup failed (next try in {self.interval_s:g}s): {exc}"
            )
            return None
        except Exception as exc:  # never let the schedule die: the next interval tries again
            self.failed += 1
            self.say(f"{_clock()} scheduled backup failed unexpectedly: {exc!r}")
            return None
        self.taken += 1
        pruned = f", removed {len(removed)} older" if removed else ""
        self.say(
            f"{_clock()} scheduled backup {dest.name}: revision {meta.revision},"
            f" {sum(meta.objects.values())} objects, {dest.stat().st_size} bytes in"
            f" {time.monotonic() - t0:.2f}s{pruned}"
        )
        return dest


def _clock() -> str:
    return time.strftime("%H:%M:%S")
