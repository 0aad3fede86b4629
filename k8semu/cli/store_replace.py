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


def _seconds(text: str) -> float:
    try:
        return parse_duration_ms(text, "--timeout") / 1000
    except ClusterConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    summary = (__doc__ or "").splitlines()[0].partition(": ")[2]
    p = argparse.ArgumentParser(prog="k8semu store replace", description=summary)
    p.add_argument("member", metavar="NAME", help="the store member (store.members[].name)")
    timeout = format_duration(DEFAULT_TIMEOUT_MS)
    p.add_argument("--timeout", type=_seconds, default=timeout, metavar="DURATION", help=_TIMEOUT)
    add_cluster_args(p)
    return p


_TIMEOUT = "give up when it has not caught up by then (default: %(default)s)"


def main(argv: Sequence[str]) -> int:
    from k8semu.cluster.replace import replace_replica

    ns = _parser().parse_args(list(argv))
    where = find_state_dir(ns.state_dir, ns.name, os.environ)
    try:
        done = replace_replica(where, ns.member, timeout=ns.timeout, say=say)
    except ClusterError as exc:
        sys.exit(f"k8semu store replace: {exc}")
    r = done.restart
    print(f"replaced store member {done.name}: {done.old_id:x} -> {done.new_id:x}, caught up")
    print(f"  {r.seconds:.1f}s after its start (pid {r.new_pid})")
    return 0
