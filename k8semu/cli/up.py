"""`k8semu up`: start a local cluster from a cluster config and supervise it in the foreground.

    k8semu up [--config FILE] [--data-dir DIR]

Exit status: 0 after a stop by SIGINT/SIGTERM/SIGHUP, 1 when the cluster could not start or keep
running (the message names the cause), 2 for a bad config or bad flags.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from k8semu.cluster.config import default_config_text, load_config
from k8semu.cluster.errors import ClusterConfigError, ClusterError
from k8semu.cluster.launcher import Launcher, StopFlag

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_Handler = Callable[[int, FrameType | None], object] | int | None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu up",
        description="Start a local k8semu cluster (today: a replicated store) as one OS process"
        " per component, and supervise it until Ctrl-C. Data is kept between runs.",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="cluster config YAML (default: the built-in one, as in cluster_configs/local.yaml)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where the cluster keeps data and logs (default: .k8semu/<cluster name>)",
    )
    p.add_argument(
        "--print-default-config",
        action="store_true",
        help="print the built-in cluster config (a starting point for --config) and exit",
    )
    return p


def _say(line: str) -> None:
    try:
        print(line, flush=True)
    except BrokenPipeError:
        # Nobody reads our output any more; keep supervising, silently.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _install_stop_handlers(stop: StopFlag) -> dict[signal.Signals, _Handler]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set(signal.Signals(signum).name)

    previous: dict[signal.Signals, _Handler] = {}
    for sig in _STOP_SIGNALS:
        if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
            continue  # started under nohup: keep running when the terminal goes
        previous[sig] = signal.signal(sig, handler)
    return previous


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    if ns.print_default_config:
        sys.stdout.write(default_config_text())
        return 0
    try:
        config = load_config(ns.config)
    except ClusterConfigError as exc:
        print(f"k8semu up: bad cluster config: {exc}", file=sys.stderr)
        return 2
    stop = StopFlag()
    data_dir = ns.data_dir if ns.data_dir is not None else config.default_data_dir
    launcher = Launcher(config, data_dir, say=_say, stop=stop)
    previous = _install_stop_handlers(stop)
    try:
        launcher.run()
    except ClusterError as exc:
        print(f"k8semu up: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"k8semu up: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, old)
        stop.close()
    return 0
