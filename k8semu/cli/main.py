"""Entry point of the `k8semu` command: dispatches to one module per command group."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from k8semu import __version__, log
from k8semu.cli.verbs import VERBS

# Command groups: name -> (module under k8semu.cli with a `main(argv)`, one-line help). Each
# module is imported only when its command runs, so `k8semu store` stays light.
COMMANDS: dict[str, tuple[str, str]] = {
    "store": ("store", "run a store replica (etcd v3 API), or: store snapshot ..."),
    "apiserver": ("apiserver", "run an API server on a store"),
    "bench": ("bench", "benchmarks: bench store|api|proxy|pods|cluster|soak|ha"),
    "kubelet": ("kubelet", "run a node's kubelet, or N hollow nodes (--count N)"),
    "logs": ("logs", "print a container's log: logs POD [-c C] [-f] [--previous]"),
    "exec": ("exec", "run a command in a container: exec POD [-c C] -- CMD..."),
    "up": ("up", "start a cluster from a cluster config (-f FILE, --detach)"),
    "down": ("down", "stop every process of a cluster started with up"),
    "status": ("status", "the processes of a cluster started with up, and who leads"),
    "kubeconfig": ("kubeconfig", "print (or --merge) the kubeconfig kubectl uses for a cluster"),
    "certs": ("certs", "list (or renew) a cluster's certificates, with their expiry"),
    "restart": ("restart", "restart components of a running cluster: restart --rolling ..."),
    "backup": ("backup", "back up a cluster: backup [-o FILE] | list | verify | export | import"),
    "restore": ("restore", "restore a cluster from a backup file (a new store, pods adopted)"),
    "supervise": ("supervise", "supervise a detached cluster (up --detach starts it)"),
    "join": ("join", "start a kubelet and a proxy on this host against a running cluster"),
    "controller-manager": ("controller_manager", "run the controllers (leader-elected)"),
    "scheduler": ("scheduler", "run the scheduler (leader-elected)"),
    "proxy": ("proxy", "run one node's service proxy"),
    "chaos": ("chaos", "break a cluster at random (seeded) and check what must hold"),
    "auth": ("auth", "inspect authorization: auth can-i VERB RESOURCE [NAME] [-n NS] [--as U]"),
    "secrets": ("secrets", "secrets rewrite [-A]: write every Secret back (key rotation)"),
}


def _take_verbosity(args: list[str]) -> int:
    """Remove kubectl's ``-v N`` / ``-v=N`` / ``--v=N`` (bare ``-v``: 4) from a verb's args."""
    level = 0
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in ("-v", "--v"):
            nxt = next(it, None)
            if nxt is not None and nxt.isdigit():
                level = int(nxt)
            else:
                level = 4
                if nxt is not None:
                    rest.append(nxt)
        elif arg.startswith(("-v=", "--v=")) and arg.partition("=")[2].isdigit():
            level = int(arg.partition("=")[2])
        else:
            rest.append(arg)
    args[:] = rest
    return level


def main(argv: Sequence[str] | None = None) -> int:
    """The command; a closed output pipe (``k8semu status | head``) ends it quietly."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # Python's recommended way: point stdout at devnull so the interpreter's final flush
        # does not raise again, and exit as a command killed by SIGPIPE would (128 + 13).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _main(argv: Sequence[str] | None) -> int:
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
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    # The verbs' table is light (names, help, arguments; no client import), so `k8semu store`
    # lists them in its help and still starts fast; kubectl.py imports a verb's handler.
    for verb in VERBS.values():
        sub.add_parser(verb.name, help=f"kubectl-like: {verb.help}", add_help=False)
    if args and args[0] in VERBS:
        from k8semu.cli import kubectl

        # A CLI prints one clear message per failure; the client's retry and fail-over logs
        # are for -v (kubectl's -v=4 and up shows debug lines, -v=1..3 info).
        verbosity = _take_verbosity(args)
        log.configure(
            "k8semu",
            level="debug" if verbosity >= 4 else "info" if verbosity >= 1 else "warning",
        )

        return kubectl.main(args)
    if not args or args[0] not in COMMANDS:
        parser.parse_args(args)
        parser.print_help()
        return 2
    module = importlib.import_module(f"k8semu.cli.{COMMANDS[args[0]][0]}")
    return int(module.main(args[1:]))
