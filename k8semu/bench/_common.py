"""What several benchmarks share, so each ``k8semu bench`` module holds only its workload.

The benchmarks' error (``BenchError``), their argument parser and argument types, and
``options_from_args`` (a benchmark's flags are named as its options' fields); percentiles and
the count/p50/p90/p99/max summary every report prints; CPU time, RSS and open fds of
processes, read from /proc; the event loop choice (uvloop when asked and installed) and
``cancel`` for background tasks; the facts about the machine a report ends with
(``environment``); the progress line on stderr; table cells; and where a run's figures go: a
JSON file, a plot, a run directory kept only after a failure.

It owns no workload, no cluster and no report layout: those belong to each benchmark and to
``_clusterrun``. Nothing here sends traffic or signals a process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc  # type: ignore[import-untyped, unused-ignore]

from k8semu.cluster.errors import MemberExitedError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    D = TypeVar("D", bound=DataclassInstance)

__all__ = [
    "BenchError",
    "CpuMeter",
    "Progress",
    "RunDir",
    "Stopwatch",
    "Summary",
    "argument_parser",
    "cancel",
    "check_endpoints",
    "cpu_seconds",
    "environment",
    "error_summary",
    "fd_count",
    "file_size",
    "non_negative_int",
    "options_from_args",
    "own_cpu_seconds",
    "percentile",
    "positive_float",
    "positive_int",
    "processes_cpu_seconds",
    "pyplot",
    "ratio",
    "require_matplotlib",
    "rss_bytes",
    "run_dir",
    "run_loop",
    "save_figure",
    "say",
    "summarize",
    "write_json",
    "yes",
]


class BenchError(RuntimeError):
    """The benchmark could not run (no endpoint accepts writes, bad endpoint list)."""


def say(message: str) -> None:
    """One line on stderr, at once: progress and diagnostics, never the report itself."""
    print(message, file=sys.stderr, flush=True)


# -- command-line argument types ----------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def argument_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A benchmark's argument parser; ``--help`` shows every default."""
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )


def options_from_args(cls: type[D], args: argparse.Namespace, **given: Any) -> D:
    """The options dataclass ``cls`` of a benchmark whose flags are named as its fields
    (``--write-rate`` -> ``write_rate``): each field from its argument, unless ``given``;
    fields without a flag keep their defaults."""
    taken = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if f.name not in given and hasattr(args, f.name)
    }
    return cls(**taken, **given)


def check_endpoints(text: str, allow_remote: bool) -> list[str]:
    """``host:port,...`` as a list; BenchError for a malformed one, or one off loopback
    unless ``allow_remote``."""
    endpoints = [e.strip().removeprefix("http://") for e in text.split(",") if e.strip()]
    if not endpoints:
        raise BenchError("--endpoints: empty list")
    for ep in endpoints:
        host, sep, port = ep.rpartition(":")
        if not sep or not port.isdigit():
            raise BenchError(f"--endpoints: {ep!r} is not host:port")
        if allow_remote:
            continue
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise BenchError(f"--endpoints: {ep} is not on loopback; pass --allow-remote to use it")
    return endpoints


# -- percentiles --------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """Nearest-rank percentiles of some samples, in the samples' unit; zeros when empty."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float


def summarize(values: Sequence[float]) -> Summary:
    """The summary of ``values``, in any order."""
    s = sorted(values)
    if not s:
        return Summary(0, 0.0, 0.0, 0.0, 0.0)
    return Summary(len(s), percentile(s, 50), percentile(s, 90), percentile(s, 99), s[-1])


# -- processes, from /proc -------------------------------------------------------------------


def _cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks; OSError, ValueError or IndexError if gone."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which may itself hold spaces and parentheses.
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far, None if it is gone."""
    try:
        return _cpu_ticks(pid) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def processes_cpu_seconds(pids: Sequence[int]) -> float | None:
    """User + system CPU seconds of ``pids`` together so far, None if one cannot be read."""
    try:
        total = sum(_cpu_ticks(pid) for pid in pids)
    except (OSError, ValueError, IndexError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (the benchmark's client)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds ``pids`` use between ``start()`` and ``stop()``: None when no pids are
    given or one could not be read at either end (a process that exited)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self._before: float | None = None

    def _now(self) -> float | None:
        return processes_cpu_seconds(self.pids) if self.pids else None

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> float | None:
        after = self._now()
        if after is None or self._before is None:
            return None
        return after - self._before


class Stopwatch:
    """Wall time, this process's CPU time and the CPU time of ``server_pids`` over one
    measured stretch of a run: ``start()`` ... ``stop()``, then ``seconds``,
    ``client_cpu_s`` and ``server_cpu_s`` (None as for ``CpuMeter``)."""

    def __init__(self, server_pids: Sequence[int] = ()) -> None:
        self._servers = CpuMeter(server_pids)
        self._cpu0 = 0.0
        self.started = 0.0
        self.seconds = 0.0
        self.client_cpu_s = 0.0
        self.server_cpu_s: float | None = None

    def start(self, *, delay: float = 0.0) -> float:
        """Take the CPU readings now; the wall clock starts ``delay`` seconds from now (a
        paced load's first due time). Returns that start, a ``time.perf_counter()`` time."""
        self._servers.start()
        self._cpu0 = own_cpu_seconds()
        self.started = time.perf_counter() + delay
        return self.started

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self.started
        self.client_cpu_s = own_cpu_seconds() - self._cpu0
        self.server_cpu_s = self._servers.stop()


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (VmRSS in /proc/<pid>/status), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def fd_count(pid: int) -> int | None:
    """Open file descriptors of ``pid`` (entries of /proc/<pid>/fd), None if it is gone or
    not ours to read."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def file_size(path: Path) -> int:
    """The size of ``path`` in bytes, 0 when it does not exist (yet)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


# -- the event loop and the machine -----------------------------------------------------------


def run_loop(coro: Coroutine[Any, Any, Any], use_uvloop: bool) -> tuple[Any, bool]:
    """Run ``coro`` on uvloop when asked and installed, else on asyncio's loop; returns its
    result and whether uvloop ran it."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro), True
    return asyncio.run(coro), False


async def cancel(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` (None skipped) and wait for each to end."""
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _filesystem(path: Path) -> str:
    best, fstype = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
    return fstype


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(workdir: Path | None, uvloop_used: bool) -> dict[str, Any]:
    """The facts a reader needs to judge the figures: machine, load, versions, disk."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "uvloop": uvloop_used,
        "filesystem": _filesystem(workdir) if workdir else "",
    }


# -- output -------------------------------------------------------------------------------------


class Progress:
    """One status line on stderr: rewritten in place (``\\r``) on a terminal, else printed
    at most every ``every`` seconds so a log file stays short."""

    def __init__(self, *, enabled: bool = True, every: float = 10.0) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.every = every
        self._last = 0.0
        self._shown = False
        self._t0 = time.monotonic()

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        line = f"{text}  {now - self._t0:6.1f} s"
        if self.tty:
            sys.stderr.write(f"\r{line}\x1b[K")
            sys.stderr.flush()
            self._shown = True
        elif now - self._last >= self.every:
            self._last = now
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._shown = False

    @contextlib.asynccontextmanager
    async def every_half_second(self, text: Callable[[], str]) -> AsyncIterator[None]:
        """Show ``text()`` twice a second while the block runs, and end the line after it."""

        async def show() -> None:
            while True:
                self.show(text())
                await asyncio.sleep(0.5)

        shower = asyncio.get_running_loop().create_task(show())
        try:
            yield
        finally:
            shower.cancel()
            self.done()


def print_results(
    env: dict[str, Any], opts: Any, results: Sequence[Any], text: str, *, as_json: bool
) -> None:
    """A benchmark's figures on stdout: JSON (environment, options, results as dicts) or its
    table `text` followed by the date, CPUs, load average and Python of the run."""
    if as_json:
        doc = {
            "environment": env,
            "options": dataclasses.asdict(opts),
            "results": [dataclasses.asdict(r) for r in results],
        }
        print(json.dumps(doc, indent=2))
        return
    print(text)
    print(
        f"\n{env['date']}, {env['cpus']} CPUs, load average "
        f"{', '.join(f'{x:.1f}' for x in env['load_average'])}, Python {env['python']}"
    )


def run_and_print(
    name: str,
    run: Callable[[Path], Coroutine[Any, Any, Sequence[Any]]],
    opts: Any,
    render: Callable[[Sequence[Any]], str],
    *,
    as_json: bool,
    keep: bool = False,
) -> int:
    """Run a benchmark (`run(workdir)` on uvloop) in a fresh work directory and print its
    figures (`print_results`); the exit status: 1 when it failed (the error and where its
    logs are on stderr). The work directory is removed unless `keep`."""
    workdir = Path(tempfile.mkdtemp(prefix=f"k8semu-bench-{name}-"))
    try:
        results, used_uvloop = run_loop(run(workdir), True)
    except (RuntimeError, OSError, TimeoutError) as exc:
        print(f"k8semu bench {name}: {exc} (logs in {workdir})", file=sys.stderr)
        return 1
    print_results(environment(None, used_uvloop), opts, results, render(results), as_json=as_json)
    if keep:
        say(f"logs and config in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def serve_as_proxy(main: Coroutine[Any, Any, None]) -> int:
    """A benchmark's server subprocess run as `k8semu proxy` runs: its event loop choice,
    warnings-only logs."""
    from k8semu import log as logging_setup
    from k8semu.cli._serving import install_event_loop

    logging_setup.configure("proxy", level="warning")
    install_event_loop()
    asyncio.run(main)
    return 0


def ratio(ours: float | None, theirs: float | None) -> str:
    """A comparison cell: ``1.23x``, or ``-`` when either side is missing or theirs is 0."""
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}x"


def yes(ok: bool | None) -> str:
    """A "met" cell: yes, **no** (bold, so a miss stands out), or - when not judged."""
    return "-" if ok is None else ("yes" if ok else "**no**")


def error_summary(exc: BaseException) -> str:
    """One line for a table: the message's first line, plus a dead member's last log line."""
    text = str(exc) or type(exc).__name__
    line = text.splitlines()[0].rstrip(":;")
    if isinstance(exc, MemberExitedError):
        last = [x for x in exc.log_tail.splitlines() if x.strip()]
        if last:
            line += f": {last[-1].strip()}"
    return line


def write_json(path: Path | None, doc: Any, *, what: str | None = "raw figures") -> None:
    """Write ``doc`` to ``path`` (nothing when None), indented; say so unless ``what`` is
    None. Values JSON does not know (paths, enums) are written as their text."""
    if path is None:
        return
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if what is not None:
        say(f"{what} written to {path}")


def require_matplotlib() -> bool:
    """Whether ``--plot`` can work; says what to install when it cannot."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        say("--plot needs matplotlib: pip install 'k8semu[bench]'")
        return False
    return True


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, *, title: str, fontsize: int, dpi: int) -> None:
    """Title ``fig``, lay it out, write it to ``path`` as a PNG and free it."""
    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


@dataclass
class RunDir:
    """A run's directory (see ``run_dir``); ``failed`` is True until the run clears it."""

    path: Path
    failed: bool = True


@contextlib.contextmanager
def run_dir(
    parent: Path | None, prefix: str, *, what: str = "cluster data and logs"
) -> Iterator[RunDir]:
    """A fresh directory for one run's cluster data and logs, under ``parent`` when given
    (created if needed), else under the system's temp dir. After the block it is removed when
    it is a temp dir of our own and the run did not fail; otherwise it stays, for the logs,
    and its place is said."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    # A fresh directory per run even under a given parent: the harness refuses stale data.
    run = RunDir(Path(tempfile.mkdtemp(prefix=prefix, dir=parent)))
    try:
        yield run
    finally:
        if parent is None and not run.failed:
            shutil.rmtree(run.path, ignore_errors=True)
        else:
            say(f"{what} are in {run.path}")
