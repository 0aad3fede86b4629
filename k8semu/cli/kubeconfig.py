"""`k8semu kubeconfig`: the kubeconfig of a cluster started with `k8semu up`, for kubectl.

    k8semu kubeconfig [--state-dir DIR | --name CLUSTER] [--merge]

Prints `<state-dir>/kubeconfig` (a real kubeconfig: its server is the first API server's REST
URL), so `k8semu kubeconfig > cfg && KUBECONFIG=cfg kubectl get pods` works. `--merge` adds
its cluster, user and context to kubectl's own config ($KUBECONFIG's first file, else
~/.kube/config) and makes that context current, as `kind` does. Exit status 2 when there is
no such cluster or its API servers serve no REST API.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from k8semu.cli._cluster import add_cluster_args
from k8semu.cluster import clientconfig
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.state import KUBECONFIG_FILE, find_state_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu kubeconfig",
        description="Print the kubeconfig kubectl uses for a cluster started with up.",
    )
    add_cluster_args(p)
    p.add_argument(
        "--merge",
        action="store_true",
        help="add the cluster to kubectl's config ($KUBECONFIG or ~/.kube/config), current",
    )
    return p


def kubectl_config_path(environ: Mapping[str, str]) -> Path:
    """kubectl's config: the first file of $KUBECONFIG, else ~/.kube/config."""
    first = environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if first:
        return Path(first)
    return Path(environ.get("HOME") or str(Path.home())) / ".kube" / "config"


def _merge(text: str, target: Path) -> str:
    """Merge the cluster of `text` (a kubeconfig `up` wrote) into `target`; its context."""
    data = yaml.safe_load(text)
    try:
        context = data["contexts"][0]
        name, servers = context["name"], tuple(context["servers"])
        cluster, user = data["clusters"][0]["cluster"], data["users"][0]["user"]
        rest = cluster["server"]
        creds = None
        if "certificate-authority-data" in cluster:  # TLS: the CA and the admin's certificate
            creds = clientconfig.Credentials(
                base64.b64decode(cluster["certificate-authority-data"]),
                base64.b64decode(user["client-certificate-data"]),
                base64.b64decode(user["client-key-data"]),
            )
    except (KeyError, IndexError, TypeError, ValueError):
        raise ClusterError("the cluster's kubeconfig names no REST API server") from None
    clientconfig.set_context(target, name, servers, rest, creds)
    return str(name)


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    state_dir = find_state_dir(ns.state_dir, ns.name, os.environ)
    path = state_dir / KUBECONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"k8semu kubeconfig: {path}: {exc.strerror} (is the cluster up?)", file=sys.stderr)
        return 2
    if not ns.merge:
        sys.stdout.write(text)
        return 0
    target = kubectl_config_path(os.environ)
    try:
        name = _merge(text, target)
    except ClusterError as exc:
        print(f"k8semu kubeconfig: {exc}", file=sys.stderr)
        return 2
    print(f'context "{name}" added to {target} and made current')
    return 0
