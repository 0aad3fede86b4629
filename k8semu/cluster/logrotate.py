"""Size-bounded component logs: the supervisor rotates ``logs/<component>.log`` (and its own
``supervisor.log``) as logrotate's ``copytruncate`` does.

A component's stdout and stderr are a file descriptor the supervisor opened for it with
``O_APPEND`` (``k8semu.cluster.spawn``): the component cannot be asked to reopen its log, and a
renamed file would go on growing under its new name. So a log larger than the limit is copied
to ``<log>.1`` (older copies move to ``.2`` ... ``.N``, the oldest dropped) and then truncated
in place; since every write appends at the file's current end, the component's next line goes
to the start of the emptied file. A line written between the copy and the truncation is lost:
the price of not touching the component (logrotate documents the same). Kubernetes leaves its
components' logs to journald or logrotate; a cluster that runs for days here has neither, and
the controller manager under `k8semu bench soak`'s churn (50 writes/s) wrote about 65 kB a minute
(~90 MB a day).

One background thread checks every ``CHECK_INTERVAL_S``, so a copy (up to the limit's size)
never delays the supervision loop. The limits are the cluster config's
``launcher.logMaxSizeMB`` (0: never rotate) and ``launcher.logMaxBackups``, the units of the
API server's ``--audit-log-maxsize``/``--audit-log-maxbackup``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from k8semu.log import get_logger

__all__ = ["CHECK_INTERVAL_S", "LogRotator", "rotate"]

log = get_logger(__name__)

CHECK_INTERVAL_S = 10.0
MB = 1024 * 1024


def _numbered(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def rotate(path: Path, max_bytes: int, backups: int) -> bool:
    """When ``path`` is larger than ``max_bytes``: keep a copy as ``path.1`` (shifting older
    copies up to ``path.<backups>``; none kept when ``backups`` is 0) and empty ``path`` in
    place. Whether it rotated; OSError when the copy or truncation failed."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    if backups > 0:
        with contextlib.suppress(FileNotFoundError):
            _numbered(path, backups).unlink()
        for n in range(backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(_numbered(path, n), _numbered(path, n + 1))
        shutil.copyfile(path, _numbered(path, 1))
    os.truncate(path, 0)
    return True


class LogRotator:
    """Rotates the files ``paths()`` names (read on every check: components come and go) in a
    daemon thread, until ``close()``. ``max_mb`` 0 starts nothing."""

    def __init__(
        self,
        paths: Callable[[], Iterable[Path]],
        *,
        max_mb: int,
        backups: int,
        interval: float | None = None,
    ) -> None:
        self._paths = paths
        self._max_bytes = max_mb * MB
        self._backups = backups
        self._interval = CHECK_INTERVAL_S if interval is None else interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if max_mb > 0:
            self._thread = threading.Thread(target=self._run, name="log-rotation", daemon=True)
            self._thread.start()

    def check(self) -> list[Path]:
        """One round: the files rotated. A file that cannot be rotated is logged and skipped."""
        done = []
        for path in list(self._paths()):
            try:
                if rotate(path, self._max_bytes, self._backups):
                    done.append(path)
            except OSError as exc:
                log.warning("cannot rotate a log", path=str(path), error=str(exc))
        return done

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
