"""`k8semu down`: stop every process of a cluster started with `k8semu up`.

    k8semu down [--state-dir DIR | --name CLUSTER] [--grace-period DURATION]

A foreground `k8semu up` is asked to stop (SIGTERM; it stops its components in order); then
every component still alive - and every pod process of its kubelets - gets SIGTERM and, after
the grace period, SIGKILL, in reverse start order. Only processes recorded in state.json (pid
and start time) or started by those kubelets are signalled. Data is kept; the CLI context of
the cluster is removed. Exit status 0 when nothing is left, 1 otherwise, 2 for bad flags or no
cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from k8semu.cli._cluster import add_cluster_args, say
from k8semu.cluster import clientconfig
from k8semu.cluster.config import DEFAULT_STOP_GRACE_MS, format_duration, parse_duration_ms
from k8semu.cluster.errors import ClusterConfigError, ClusterError
from k8semu.cluster.state import find_state_dir
from k8semu.cluster.status import down


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu down", description="Stop every process of a k8semu cluster (data is kept)."
    )
    add_cluster_args(p)
    p.add_argument(
        "--grace-period",
        default=format_duration(DEFAULT_STOP_GRACE_MS),
        metavar="DURATION",
        help="SIGKILL what is still running this long after SIGTERM (default: %(default)s)",
    )
    return p


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        grace_ms = parse_duration_ms(ns.grace_period, "--grace-period")
    except ClusterConfigError as exc:
        print(f"k8semu down: {exc}", file=sys.stderr)
        return 2
    state_dir = find_state_dir(ns.state_dir, ns.name, os.environ)
    try:
        report = down(
            state_dir,
            grace=grace_ms / 1000,
            say=say,
            user_config=clientconfig.user_config_path(os.environ),
        )
    except ClusterError as exc:
        print(f"k8semu down: {exc}", file=sys.stderr)
        return 2
    if report.left:
        print(f"k8semu down: processes still alive after SIGKILL: {report.left}", file=sys.stderr)
        return 1
    pods = f" and {report.pods} pod processes" if report.pods else ""
    killed = f"; {len(report.killed)} needed SIGKILL" if report.killed else ""
    print(
        f"stopped {len(report.stopped)} components{pods}{killed}; no process of the cluster is"
        f" left. Data kept in {state_dir}"
    )
    return 0
