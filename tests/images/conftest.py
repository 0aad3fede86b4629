"""Built-in images as real subprocesses: started with ``--listen HOST:0`` (or an explicit
port), their address read from the "listening on HOST:PORT" line they print, ended by pid."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

LISTENING = re.compile(r"listening on (\S+):(\d+)")
DEADLINE = 60.0  # a wait on real processes beside busy test workers (tests/support/poll.py)


class ImageProcess:
    """`python -m k8semu.images.<module> args`; stdout lines are collected in `lines`."""

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        full_env = dict(os.environ)
        full_env.pop("POD_IP", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"k8semu.images.{module}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, pattern: str | re.Pattern[str], timeout: float = DEADLINE) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        end = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    found = regex.search(line)
                    if found:
                        return found
                seen = len(self.lines)
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no line matching {regex.pattern!r} in {timeout}s; output:\n"
                        + "\n".join(self.lines)
                    )
                self._cond.wait(min(left, 0.2))

    def address(self) -> tuple[str, int]:
        found = self.wait_line(LISTENING)
        return found.group(1), int(found.group(2))

    def terminate(self, timeout: float = 5.0) -> int:
        """SIGTERM by pid; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(2)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def start_image() -> Iterator[Callable[..., ImageProcess]]:
    started: list[ImageProcess] = []

    def start(
        module: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ImageProcess:
        p = ImageProcess(module, args, env=env, cwd=cwd)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


def eventually(check: Callable[[], bool], timeout: float = DEADLINE, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"not true within {timeout}s: {what}")
        time.sleep(0.05)
