"""What the cluster verbs share (`up`, `join`, `supervise`, `status`, `down`, `restart`): how
they name a cluster on the command line, print progress, turn signals into a stop request and
run a launcher.

Plain functions over `k8semu.cluster`; no verb's own logic.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from k8semu.cluster.errors import ClusterError
from k8semu.cluster.launcher import Launcher, StopFlag

__all__ = [
    "add_cluster_args",
    "available_commands",
    "install_stop_handlers",
    "restore_handlers",
    "run_launcher",
    "say",
]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_Handler = Callable[[int, FrameType | None], object] | int | None


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    """``--state-dir DIR`` or ``--name CLUSTER``: which cluster a verb works on
    (``k8semu.cluster.state.find_state_dir`` picks the directory)."""
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="the cluster's state dir")
    p.add_argument(
        "--name",
        metavar="CLUSTER",
        help="the cluster's name (default: the CLI's current context, else local)",
    )


def say(line: str) -> None:
    """Print a progress line at once. Once nobody reads the output any more (a closed pipe),
    the lines go nowhere and the caller keeps going (a launcher keeps supervising)."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def install_stop_handlers(stop: StopFlag) -> dict[signal.Signals, _Handler]:
    """SIGINT, SIGTERM and SIGHUP set ``stop`` (named after the signal); the handlers they
    replace, for ``restore_handlers``."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set(signal.Signals(signum).name)

    previous: dict[signal.Signals, _Handler] = {}
    for sig in _STOP_SIGNALS:
        if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
            continue  # started under nohup: keep running when the terminal goes
        previous[sig] = signal.signal(sig, handler)
    return previous


def restore_handlers(previous: dict[signal.Signals, _Handler]) -> None:
    for sig, old in previous.items():
        with contextlib.suppress(TypeError, ValueError):
            signal.signal(sig, old)


def available_commands() -> set[str]:
    """The ``k8semu`` subcommands this install has (components land one by one)."""
    from k8semu.cli.main import COMMANDS

    return set(COMMANDS)


def run_launcher(launcher: Launcher, stop: StopFlag, prog: str) -> int:
    """Run ``launcher`` with the stop signals set to ``stop``: 0 when it ends (stopped, or
    detached), 1 with its error on stderr when the cluster cannot start or keep running."""
    previous = install_stop_handlers(stop)
    try:
        launcher.run()
    except (ClusterError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    finally:
        restore_handlers(previous)
        stop.close()
    return 0
