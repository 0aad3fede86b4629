"""`k8semu scheduler`: run one scheduler (run several; the Lease picks the one that schedules).

k8semu scheduler --server 127.0.0.1:6443 --listen-address 127.0.0.1:10259
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from k8semu.cli import _flags, _kubeconfig, _serving
from k8semu.client import Client
from k8semu.scheduler import DEFAULT_SCHEDULER, Scheduler, SchedulerConfig

_LE = DEFAULT_SCHEDULER.leader_election
DEFAULT_LISTEN_ADDRESS = "127.0.0.1:10259"


def _parser() -> argparse.ArgumentParser:
    p = _flags.component_parser(
        "scheduler",
        "Bind pending pods to nodes (leader-elected; see docs/scheduler.md).",
    )
    _flags.add_api_servers(p)
    _flags.add_listen_address(
        p, DEFAULT_LISTEN_ADDRESS, "the gRPC health service (port 0: any free port)"
    )
    p.add_argument(
        "--scheduler-name",
        default=DEFAULT_SCHEDULER.scheduler_name,
        help="schedule pods whose spec.schedulerName is this",
    )
    _flags.add_serving_tls(p, "the gRPC health service")
    _flags.add_leader_election(p, _LE, "kube-system/kube-scheduler")
    p.add_argument(
        "--percentage-of-nodes-to-score",
        type=int,
        default=DEFAULT_SCHEDULER.percentage_of_nodes_to_score,
        help="share of nodes to find feasible before scoring, 0..100 (0: adaptive)",
    )
    p.add_argument(
        "--bind-concurrency",
        type=int,
        default=DEFAULT_SCHEDULER.bind_concurrency,
        help="binds in flight at once",
    )
    return p


def config_from_args(ns: argparse.Namespace) -> SchedulerConfig:
    """The SchedulerConfig the flags describe; ValueError naming the flag otherwise."""
    election = _flags.leader_election(ns, _LE)
    if not ns.scheduler_name:
        raise ValueError("--scheduler-name: must not be empty")
    values: dict[str, Any] = {
        "scheduler_name": ns.scheduler_name,
        "percentage_of_nodes_to_score": ns.percentage_of_nodes_to_score,
        "listen_address": ns.listen_address,
        "bind_concurrency": ns.bind_concurrency,
    }
    try:  # SchedulerConfig checks the values; its errors name fields, the user typed flags
        return SchedulerConfig(
            **values,
            leader_elect=ns.leader_elect,
            leader_election=election,
            tls=_flags.serving_tls(ns),
        )
    except ValueError as exc:
        raise _flags.named_as_flags(exc, _flags.flag_names(values)) from None


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        config = config_from_args(ns)
        servers = _flags.api_target(ns)
        metrics = _flags.metrics_address(ns)
        _flags.configure_logging(ns, "scheduler")
    except ValueError as exc:  # ConfigError and AddressError are ValueErrors
        return _serving.usage_error("scheduler", exc)
    return _serving.run("scheduler", lambda: _serve(servers, config, metrics))


async def _serve(servers: _kubeconfig.Target, config: SchedulerConfig, metrics: str) -> None:
    """Until SIGTERM/SIGINT - also while the start still waits for the API server."""
    async with Client(list(servers.servers), tls=servers.tls()) as client:
        await _serving.serve(Scheduler(client, config), grace=_serving.STOP_GRACE, metrics=metrics)
