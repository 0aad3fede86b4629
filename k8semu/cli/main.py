"""Entry point of the `k8semu` command: dispatches to one module per command group."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from k8semu import __version__

# The kubectl-like verbs (k8semu.cli.kubectl.VERBS), listed here so `k8semu store` does not
# import the client to build its help.
KUBECTL_VERBS = (
    "apply", "create", "get", "describe", "delete", "patch", "scale", "label", "annotate",
    "rollout", "api-resources", "version",
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    # gRPC's C core logs connection churn (a peer restarting) at info level; only errors
    # belong on a component's stderr.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="k8semu",
        description="A Kubernetes emulator: every component is its own asyncio gRPC process.",
    )
    parser.add_argument("--version", action="version", version=f"k8semu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "store", help="run a store replica (etcd v3 API), or: store snapshot ...", add_help=False
    )
    sub.add_parser("bench", help="benchmarks: bench store ...", add_help=False)
    sub.add_parser("up", help="start a local cluster from a cluster config", add_help=False)
    sub.add_parser("apiserver", help="run an API server on a store", add_help=False)
    for verb in KUBECTL_VERBS:
        sub.add_parser(verb, help=f"kubectl-like: {verb} (see docs/cli.md)", add_help=False)
    if args and args[0] in KUBECTL_VERBS:
        from k8semu.cli import kubectl

        return kubectl.main(args)
    if not args or args[0] not in ("store", "bench", "up", "apiserver"):
        parser.parse_args(args)
        parser.print_help()
        return 2
    command, rest = args[0], args[1:]
    if command == "store":
        from k8semu.cli import store

        return store.main(rest)
    if command == "apiserver":
        from k8semu.cli import apiserver

        return apiserver.main(rest)
    if command == "bench":
        from k8semu.cli import bench

        return bench.main(rest)
    from k8semu.cli import up

    return up.main(rest)
