"""`k8semu store replace NAME`: replace a store replica whose data is lost, online.

    k8semu store replace NAME [--state-dir DIR | --name CLUSTER] [--timeout DURATION]

Moves what is left of the replica's data dir aside, removes the old member, adds a new one
with the same peer URL, has the supervisor start the replica on an empty data dir as a member
joining the running cluster, and waits until it caught up (``k8semu.cluster.replace``).

Exit status: 0 replaced and caught up; 1 a step failed (the message says which; running the
command again carries on); 2 bad flags or no such cluster or replica.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from k8semu.cli._cluster import add_cluster_args, say
from k8semu.cluster.config import format_duration, parse_duration_ms
from k8semu.cluster.errors import ClusterConfigError, ClusterError
from k8semu.cluster.state import find_state_dir

DEFAULT_TIMEOUT_MS = 120_000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu store replace",
        description="Replace a store replica whose data is lost: remove its member, add a"
        " new one at the same addresses, start it empty, wait until it caught up.",
    )
    p.add_argument("member", metavar="NAME", help="the store member (store.members[].name)")
    add_cluster_args(p)
    p.add_argument(
        "--timeout",
        default=format_duration(DEFAULT_TIMEOUT_MS),
        metavar="DURATION",
        help="give up when the replica has not caught up this long after the start"
        " (default: %(default)s)",
    )
    return p


def main(argv: Sequence[str]) -> int:
    from k8semu.cluster.replace import replace_replica

    ns = _parser().parse_args(list(argv))
    try:
        timeout_ms = parse_duration_ms(ns.timeout, "--timeout")
    except ClusterConfigError as exc:
        print(f"k8semu store replace: {exc}", file=sys.stderr)
        return 2
    state_dir = find_state_dir(ns.state_dir, ns.name, os.environ)
    try:
        done = replace_replica(state_dir, ns.member, timeout=timeout_ms / 1000, say=say)
    except ClusterError as exc:
        print(f"k8semu store replace: {exc}", file=sys.stderr)
        return 1
    print(
        f"replaced store member {done.name}: {done.old_id:x} -> {done.new_id:x}, caught up"
        f" {done.restart.seconds:.1f}s after its start"
    )
    return 0
