"""What the benchmarks share (``k8semu.bench._common``): percentiles, /proc readings of a real
process, the endpoint check, the run directory and the JSON file."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from k8semu.bench._common import (
    BenchError,
    CpuMeter,
    Stopwatch,
    cancel,
    check_endpoints,
    cpu_seconds,
    fd_count,
    options_from_args,
    percentile,
    processes_cpu_seconds,
    rss_bytes,
    run_dir,
    summarize,
    write_json,
)


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile([], 99) == 0.0
    s = summarize([3.0, 1.0, 2.0])
    assert (s.count, s.p50, s.p90, s.p99, s.max) == (3, 2.0, 3.0, 3.0, 3.0)
    assert summarize([]).count == 0


def test_proc_readings_of_a_real_process() -> None:
    # A child that burns a little CPU and then waits to be ended.
    with subprocess.Popen(
        [sys.executable, "-c", "import sys,time\nt=time.process_time()\n"
         "while time.process_time()-t<0.2: pass\nprint('go', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as child:  # fmt: skip
        try:
            meter = CpuMeter([child.pid, os.getpid()])
            meter.start()
            assert child.stdout is not None and child.stdout.readline() == "go\n"
            used = meter.stop()
            assert used is not None and used > 0
            assert (cpu_seconds(child.pid) or 0) > 0
            assert (rss_bytes(child.pid) or 0) > 0 and (fd_count(child.pid) or 0) >= 3
        finally:
            child.kill()
            child.wait()
    assert cpu_seconds(child.pid) is None and processes_cpu_seconds([child.pid]) is None
    assert CpuMeter([]).stop() is None
    watch = Stopwatch([child.pid])  # gone: no server figure, the client's is still there
    watch.start()
    watch.stop()
    assert watch.server_cpu_s is None and watch.seconds >= 0 and watch.client_cpu_s >= 0


def test_endpoints_must_be_host_port_on_loopback_unless_allowed() -> None:
    assert check_endpoints("127.0.0.1:2379, http://localhost:1", False) == [
        "127.0.0.1:2379",
        "localhost:1",
    ]
    for bad, words in (("", "empty"), ("10.0.0.1", "not host:port"), ("10.0.0.1:2379", "loop")):
        with pytest.raises(BenchError, match=words):
            check_endpoints(bad, False)
    assert check_endpoints("10.0.0.1:2379", True) == ["10.0.0.1:2379"]


def test_run_dir_is_kept_after_a_failure_or_when_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with run_dir(None, "k8semu-test-") as clean:
        clean.failed = False
    assert not clean.path.exists()
    with run_dir(None, "k8semu-test-") as failed:
        pass
    assert failed.path.is_dir()
    assert f"cluster data and logs are in {failed.path}" in capsys.readouterr().err
    failed.path.rmdir()
    with run_dir(tmp_path / "w", "x-", what="logs") as given:
        given.failed = False
    assert given.path.parent == tmp_path / "w" and given.path.is_dir()
    assert f"logs are in {given.path}" in capsys.readouterr().err


def test_write_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_json(None, {"a": 1})
    write_json(tmp_path / "a.json", {"path": tmp_path}, what="figures")
    assert json.loads((tmp_path / "a.json").read_text()) == {"path": str(tmp_path)}
    assert f"figures written to {tmp_path / 'a.json'}" in capsys.readouterr().err
    write_json(tmp_path / "b.json", [1], what=None)
    assert capsys.readouterr().err == ""


def test_options_from_args_takes_the_flags_named_as_fields() -> None:
    @dataclass(frozen=True)
    class Options:
        rate: float = 1.0
        writers: int = 2
        progress: bool = True
        unflagged: str = "default"

    args = argparse.Namespace(rate=5.0, writers=3, no_progress=True, json=None)
    opts = options_from_args(Options, args, progress=not args.no_progress)
    assert opts == Options(rate=5.0, writers=3, progress=False, unflagged="default")


async def test_cancel_ends_tasks_and_skips_none() -> None:
    task = asyncio.get_running_loop().create_task(asyncio.sleep(60))
    await cancel(task, None)
    assert task.cancelled()
