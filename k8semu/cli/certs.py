"""`k8semu certs`: the certificates of a cluster started with `up` (docs/security.md).

    k8semu certs [--state-dir DIR | --name NAME]          list them, with expiry
    k8semu certs renew [--state-dir DIR | --name NAME]    issue every one again (same names,
                                                          a new key, a new year; not the CAs)

Renewed certificates are read by a component when it starts: `k8semu restart` the cluster's
components (or `down` and `up`) afterwards.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Sequence

from k8semu import pki
from k8semu.cli._cluster import add_cluster_args
from k8semu.cluster.certs import PKIPaths
from k8semu.cluster.state import find_state_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu certs", description="List (or renew) a cluster's certificates."
    )
    p.add_argument("action", nargs="?", choices=["list", "renew"], default="list")
    add_cluster_args(p)
    return p


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    paths = PKIPaths(find_state_dir(ns.state_dir, ns.name, os.environ))
    if not (paths.root / "ca.crt").exists():
        print(f"k8semu certs: no certificates in {paths.root} (TLS off?)", file=sys.stderr)
        return 2
    try:
        if ns.action == "renew":
            for directory in (paths.root, paths.etcd):
                if (directory / "ca.crt").exists():
                    for name in pki.renew(directory):
                        print(f"renewed {directory.relative_to(paths.root.parent)}/{name}.crt")
            print("restart the components to use them (`k8semu restart`, or down and up)")
            return 0
        _print(paths)
    except pki.PKIError as exc:
        print(f"k8semu certs: {exc}", file=sys.stderr)
        return 1
    return 0


def _print(paths: PKIPaths) -> None:
    now = datetime.datetime.now(datetime.UTC)
    rows = [("CERTIFICATE", "SUBJECT", "EXPIRES", "RESIDUAL", "NAMES")]
    for prefix, directory in (("", paths.root), ("etcd/", paths.etcd)):
        if not directory.exists():
            continue
        for info in pki.list_certs(directory):
            left = info.not_after - now
            rows.append(
                (
                    prefix + info.name,
                    info.subject,
                    info.not_after.strftime("%Y-%m-%d %H:%M UTC"),
                    f"{left.days}d" if left.days >= 0 else "EXPIRED",
                    ",".join(info.hosts) or "-",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
