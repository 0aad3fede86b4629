"""Component logs stay bounded: the supervisor rotates a real process's log (copy, then
truncate in place) while the process keeps appending to it, and `k8semu logs -f` follows a log
through its rotation."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from k8semu.cluster import logrotate
from k8semu.cluster.config import LauncherSpec
from k8semu.cluster.launcher import StopFlag
from k8semu.cluster.state import ClusterState, ComponentRecord, write_state
from k8semu.cluster.supervisor import Supervised, Supervisor
from tests.support.cluster import until

MB = 1024 * 1024
# 30 bursts of 1,000 lines (78 kB each), 50 ms apart: ~2.3 MB in ~2 s, then "done".
WRITER = (
    "import time\n"
    "for burst in range(30):\n"
    "    for i in range(1000):\n"
    "        print(f'line {burst:02d}-{i:04d} ' + 'x' * 64)\n"
    "    time.sleep(0.05)\n"
    "print('done', flush=True)\n"
    "time.sleep(60)\n"
)


def test_the_supervisor_rotates_a_growing_component_log_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logrotate, "CHECK_INTERVAL_S", 0.05)
    log = tmp_path / "logs" / "writer.log"
    unit = Supervised(
        record=ComponentRecord(
            name="writer",
            kind="test",
            host="local",
            stage=0,
            command=[sys.executable, "-c", WRITER],
            log_path=str(log),
        )
    )
    stop = StopFlag()
    sup = Supervisor(
        [unit],
        spec=LauncherSpec(log_max_size_mb=1, log_max_backups=2),
        state_dir=tmp_path,
        env=dict(os.environ),
        say=lambda line: None,
        stop=stop,
        write_state=lambda: None,
    )
    sup.spawn(unit)
    loop = threading.Thread(target=sup.run)
    loop.start()
    try:
        until("the writer done", lambda: log.exists() and log.read_bytes().endswith(b"done\n"))
        files = [log, log.with_name("writer.log.1"), log.with_name("writer.log.2")]
        assert all(f.exists() for f in files), sorted(p.name for p in log.parent.iterdir())
        assert not log.with_name("writer.log.3").exists()  # logMaxBackups: 2
        lines: list[str] = []
        for f in reversed(files):
            data = f.read_bytes()
            # Appends after the truncation start at offset 0: no hole of NULs before them.
            assert b"\0" not in data and len(data) < 2 * MB, (f.name, len(data))
            lines += [x for x in data.decode().splitlines() if x.startswith("line ")]
        # The newest lines, in order, across the files (a few may fall between copy and
        # truncation); the oldest were dropped with the third copy.
        assert lines == sorted(lines) and lines[-1] == "line 29-0999 " + "x" * 64
    finally:
        stop.set("test over")
        loop.join(timeout=10)
        assert unit.proc is not None
        unit.proc.kill()
        unit.proc.wait()


def _line(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> bytes:
    """The next line ``proc`` prints, or b"" when none comes within ``timeout``."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else b""


def test_logs_follow_reads_on_after_the_file_was_rotated(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text("before\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "k8semu", "logs", "-f", "--state-dir", str(tmp_path), "c"]
    record = ComponentRecord(
        name="c", kind="test", host="local", stage=0, command=["true"], log_path=str(log)
    )
    state = ClusterState(cluster="t", host="local", mode="stopped", state_dir=str(tmp_path))
    state.components.append(record)
    write_state(tmp_path, state)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, env=env) as follower:
        try:
            assert _line(follower) == b"before\n"
            assert logrotate.rotate(log, 0, 1)
            with log.open("ab") as f:
                f.write(b"after\n")
            assert _line(follower) == b"after\n"
        finally:
            follower.kill()
