"""`k8semu store scale --replicas N` and `k8semu store remove NAME`: grow or shrink a running
cluster's store, online, one member at a time.

    k8semu store scale --replicas N [--state-dir DIR | --name CLUSTER] [--timeout DURATION]
    k8semu store remove NAME [--state-dir DIR | --name CLUSTER] [--timeout DURATION]

Growing adds each member as a learner, has the supervisor start it (``--initial-cluster-state
existing``), promotes it once in sync and waits until it caught up; shrinking stops a follower
(``scale`` picks the newest; ``remove`` refuses the leader and a removal that could lose
quorum) and removes it. ``state.json``, ``cluster.json`` and the cluster config follow
(``k8semu.cluster.scale``).

Exit status: 0 done; 1 a step failed or was refused (the message says which; nothing of that
step was written); 2 bad flags or no such cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from k8semu.cli._cluster import add_cluster_args, say
from k8semu.cli.store_replace import DEFAULT_TIMEOUT_MS, _seconds
from k8semu.cluster.config import format_duration
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.state import find_state_dir

_TIMEOUT = "give up when a step has not finished by then (default: %(default)s)"


def _parser(verb: str) -> argparse.ArgumentParser:
    summary = (__doc__ or "").splitlines()[0].partition(": ")[2]
    p = argparse.ArgumentParser(prog=f"k8semu store {verb}", description=summary)
    if verb == "scale":
        p.add_argument(
            "--replicas", type=int, required=True, metavar="N", help="the store's size: 1, 3, 5, 7"
        )
    else:
        p.add_argument("member", metavar="NAME", help="the store member to remove")
    timeout = format_duration(DEFAULT_TIMEOUT_MS)
    p.add_argument("--timeout", type=_seconds, default=timeout, metavar="DURATION", help=_TIMEOUT)
    add_cluster_args(p)
    return p


def main(verb: str, argv: Sequence[str]) -> int:
    from k8semu.cluster import scale

    ns = _parser(verb).parse_args(list(argv))
    if verb == "scale":
        try:
            scale.check_target(ns.replicas)
        except ClusterError as exc:
            print(f"k8semu store scale: {exc}", file=sys.stderr)
            return 2
    where = find_state_dir(ns.state_dir, ns.name, os.environ)
    try:
        if verb == "scale":
            steps = scale.scale_store(where, ns.replicas, timeout=ns.timeout, say=say)
        else:
            steps = [scale.remove_member(where, ns.member, timeout=ns.timeout, say=say)]
    except ClusterError as exc:
        sys.exit(f"k8semu store {verb}: {exc}")
    for step in steps:
        print(f"{step.action} store member {step.name} ({step.member_id:x}) in {step.seconds:.1f}s")
    if not steps:
        print(f"the store already has {ns.replicas} members")
    return 0
