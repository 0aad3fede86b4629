"""`k8semu up`: start a cluster (or this host's share of one) from a cluster config.

    k8semu up [-f CONFIG] [--host NAME] [--state-dir DIR] [--detach] [--demo]

Foreground (the default) supervises until Ctrl-C and then stops everything; ``--detach``
returns once the cluster is healthy and leaves it running (``k8semu down`` stops it).
``--demo`` (what ``make run`` uses) also deploys the shipped echo app (examples/echo.yaml)
and prints how to reach it.

Exit status: 0 after a stop by SIGINT/SIGTERM/SIGHUP (or a detached start), 1 when the cluster
could not start or keep running (the message names the cause), 2 for a bad config or flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from k8semu import examples
from k8semu.cli._cluster import available_commands, run_launcher, say
from k8semu.cluster import clientconfig
from k8semu.cluster.backups import remembered_store_token
from k8semu.cluster.config import ClusterConfig, default_config_text, load_config
from k8semu.cluster.errors import ClusterConfigError
from k8semu.cluster.launcher import Launcher, StopFlag
from k8semu.cluster.plan import Plan, plan_cluster
from k8semu.cluster.state import default_state_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu up",
        description="Start a k8semu cluster - store, API servers, scheduler, controller manager,"
        " kubelets and proxies, each its own OS process - and supervise it until Ctrl-C"
        " (or leave it running with --detach). Data is kept between runs.",
    )
    p.add_argument(
        "-f",
        "--config",
        type=Path,
        metavar="FILE",
        help="cluster config YAML (default: the built-in one, as in cluster_configs/local.yaml)",
    )
    p.add_argument(
        "--host",
        metavar="NAME",
        help="start only this host's share of a multi-host config (hosts[].name)",
    )
    p.add_argument(
        "--state-dir",
        "--data-dir",
        dest="state_dir",
        type=Path,
        metavar="DIR",
        help="where the cluster keeps state.json, logs and data (default:"
        " $XDG_STATE_HOME/k8semu/clusters/<name>, else ~/.k8semu/clusters/<name>)",
    )
    p.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="return once healthy, leaving the processes running (no restarts after that)",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="also deploy the sample app (--demo-manifest) and print how to reach it",
    )
    p.add_argument(
        "--demo-manifest",
        type=Path,
        default=examples.ECHO,
        metavar="FILE",
        help="the sample app for --demo (default: the shipped echo app, examples/echo.yaml)",
    )
    p.add_argument(
        "--print-default-config",
        action="store_true",
        help="print the built-in cluster config (a starting point for -f) and exit",
    )
    return p


def resolve_state_dir(given: Path | None, config: ClusterConfig, host: str | None) -> Path:
    """``--state-dir``, else the cluster's default; one host's share of a multi-host cluster
    gets its own (``<name>-<host>``), so several hosts tried on one machine do not mix."""
    if given is not None:
        return given
    return default_state_dir(f"{config.name}-{host}" if host else config.name, os.environ)


INSECURE_WARNING = (
    "WARNING: security.tls is false: every port of this cluster (store, API servers) is plain"
    " text without credentials; anyone who can reach a port can read and write everything"
)


def _with_cluster_info(plan: Plan, state_dir: Path) -> Plan:
    """The plan with kube-public's cluster-info among its add-ons (kubeadm's discovery, for
    `k8semu join --token`), on the host that runs the first API server only, as add-ons."""
    from k8semu.cluster import clusterinfo

    first = plan.rest_servers[0].partition("://")[2] if plan.rest_servers else ""
    if not first or not any(c.ports.get("rest") == first for c in plan.components):
        return plan
    ca = (state_dir / "pki" / "ca.crt").read_bytes()
    text = clusterinfo.manifest(ca, plan.rest_servers[0], plan.api_servers)
    return dataclasses.replace(plan, addons=(*plan.addons, ("cluster-info", text)))


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    if ns.print_default_config:
        sys.stdout.write(default_config_text())
        return 0
    try:
        config = load_config(ns.config)
        state_dir = resolve_state_dir(ns.state_dir, config, ns.host)
        plan = plan_cluster(
            config,
            state_dir.resolve(),
            host=ns.host,
            python=sys.executable,
            commands=available_commands(),
            store_token=remembered_store_token(state_dir.resolve(), config),
        )
    except ClusterConfigError as exc:
        print(f"k8semu up: bad cluster config: {exc}", file=sys.stderr)
        return 2
    if not config.security.tls:
        say(INSECURE_WARNING)
    if ns.demo and ns.detach:
        print("k8semu up: --demo runs in the foreground; leave out --detach", file=sys.stderr)
        return 2
    if ns.demo and not ns.demo_manifest.is_file():
        print(f"k8semu up: --demo-manifest {ns.demo_manifest}: no such file", file=sys.stderr)
        return 2
    if config.security.tls:
        from k8semu import pki
        from k8semu.cluster import certs

        try:
            certs.ensure(config, state_dir.resolve())
        except (pki.PKIError, OSError) as exc:
            print(f"k8semu up: certificates: {exc}", file=sys.stderr)
            return 2
        plan = _with_cluster_info(plan, state_dir.resolve())
    stop = StopFlag()
    after_start = None
    if ns.demo:
        from k8semu.cluster.demo import Demo

        after_start = Demo(ns.demo_manifest, state_dir.resolve(), plan, say=say, stop=stop).run
    launcher = Launcher(
        plan,
        state_dir,
        say=say,
        stop=stop,
        detach=ns.detach,
        user_config=clientconfig.user_config_path(os.environ),
        config_source=config.source,
        after_start=after_start,
    )
    return run_launcher(launcher, stop, "k8semu up")
