"""`k8semu status`: what runs of a cluster started with `k8semu up`, and who leads.

    k8semu status [--state-dir DIR | --name CLUSTER] [-o json]

One row per component: host, pid, alive (the recorded process, checked by pid and start time),
gRPC health, role (store leader/follower, the scheduler/controller manager holding its Lease,
a kubelet's nodes Ready), supervision (state running/backoff/failed, restarts, last exit), the
supervisor, the store's alarms and database size. Exit status 0 when every component is alive
and SERVING (and a detached cluster's supervisor runs), 1 when not, 2 for bad flags or no
cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from k8semu.cli._cluster import add_cluster_args
from k8semu.cluster import certs
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.state import find_state_dir, read_state
from k8semu.cluster.status import cluster_status, format_status


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu status", description="Show the processes of a cluster and who leads."
    )
    add_cluster_args(p)
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    return p


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    state_dir = find_state_dir(ns.state_dir, ns.name, os.environ)
    try:
        state = read_state(state_dir)
    except ClusterError as exc:
        print(f"k8semu status: {exc}", file=sys.stderr)
        return 2
    probes = certs.state_probes(state)
    try:
        status = cluster_status(state, probes)
    finally:
        probes.close()
    if ns.output == "json":
        print(json.dumps(status, indent=2))
    else:
        print(format_status(status))
    healthy = all(c["alive"] and c["health"] in ("SERVING", "n/a") for c in status["components"])
    supervised = status["mode"] != "detached" or status["supervisor"]["alive"]
    return 0 if healthy and supervised and status["components"] else 1
