"""`k8semu restart`: restart components of a running cluster, one at a time.

    k8semu restart [--state-dir DIR | --name CLUSTER] [--rolling] [--nodes]
                   [--timeout DURATION] [--min-ready DURATION] [COMPONENT-SELECTOR...]

A selector is a component name (``apiserver-1``), a kind (``store``, ``apiserver``,
``scheduler``, ``controller-manager``, ``kubelet``, ``proxy``) or a shell pattern
(``'store-*'``). ``--rolling`` with no selector restarts every control-plane process (with
``--nodes`` also every kubelet and proxy) in a safe order: store followers, the store leader,
API servers, schedulers and controller managers (Lease holders last). Each component is stopped
gracefully (SIGTERM, SIGKILL after the cluster's stop grace period) and started again by the
cluster's supervisor; the next one goes only once it is healthy again (a store replica: caught
up with the leader). A failed component (crashed too often) is started again with a fresh
restart budget. See docs/operations.md.

Exit status: 0 when every component came back healthy, 1 when one did not (or the cluster has
no supervisor running), 2 for bad flags, an unknown selector or no cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from k8semu.cli._cluster import add_cluster_args
from k8semu.cluster.config import format_duration, parse_duration_ms
from k8semu.cluster.errors import ClusterConfigError, ClusterError
from k8semu.cluster.rolling import restart_components, select
from k8semu.cluster.state import find_state_dir, read_state

DEFAULT_TIMEOUT_MS = 120_000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu restart",
        description="Restart components of a running cluster one at a time, each only once the"
        " one before is healthy again (the cluster's supervisor does the stopping and starting).",
    )
    p.add_argument("selectors", nargs="*", metavar="COMPONENT-SELECTOR")
    add_cluster_args(p)
    p.add_argument(
        "--rolling",
        action="store_true",
        help="restart every control-plane process (or those selected) in a safe order",
    )
    p.add_argument(
        "--nodes", action="store_true", help="with --rolling: the kubelets and proxies too"
    )
    p.add_argument(
        "--timeout",
        default=format_duration(DEFAULT_TIMEOUT_MS),
        metavar="DURATION",
        help="give up when a component is not healthy this long after its restart"
        " (default: %(default)s)",
    )
    p.add_argument(
        "--min-ready",
        default="0s",
        metavar="DURATION",
        help="a component must stay healthy this long before the next one goes (default:"
        " %(default)s)",
    )
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    return p


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        timeout_ms = parse_duration_ms(ns.timeout, "--timeout")
        min_ready_ms = parse_duration_ms(ns.min_ready, "--min-ready")
    except ClusterConfigError as exc:
        print(f"k8semu restart: {exc}", file=sys.stderr)
        return 2
    if not ns.selectors and not ns.rolling:
        print(
            "k8semu restart: name the components to restart, or give --rolling for every"
            " control-plane process",
            file=sys.stderr,
        )
        return 2
    state_dir = find_state_dir(ns.state_dir, ns.name, os.environ)
    try:
        state = read_state(state_dir)
        chosen = select(state, ns.selectors, nodes=ns.nodes)
    except ClusterError as exc:
        print(f"k8semu restart: {exc}", file=sys.stderr)
        return 2
    if not chosen:
        print("k8semu restart: nothing to restart", file=sys.stderr)
        return 2
    say = (lambda line: print(line, flush=True)) if ns.output == "text" else (lambda line: None)
    try:
        done = restart_components(
            state_dir,
            [c.name for c in chosen],
            timeout=timeout_ms / 1000,
            say=say,
            min_ready=min_ready_ms / 1000,
        )
    except ClusterError as exc:
        print(f"k8semu restart: {exc}", file=sys.stderr)
        return 1
    if ns.output == "json":
        print(json.dumps([_row(r) for r in done]))
    else:
        total = sum(r.seconds for r in done)
        print(f"restarted {len(done)} components one at a time in {total:.1f}s; all healthy")
    return 0


def _row(r: object) -> dict[str, object]:
    from dataclasses import asdict, is_dataclass

    assert is_dataclass(r) and not isinstance(r, type)
    return asdict(r)
