"""`k8semu scheduler`: run one scheduler (run several; the Lease picks the one that schedules).

k8semu scheduler --server 127.0.0.1:6443 --listen-address 127.0.0.1:10259
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from k8semu import log as logging_setup
from k8semu.cli import _kubeconfig, _leaderelect, _serving
from k8semu.client import Client
from k8semu.scheduler import DEFAULT_SCHEDULER, Scheduler, SchedulerConfig
from k8semu.transport import AddressError

_LE = DEFAULT_SCHEDULER.leader_election
DEFAULT_LISTEN_ADDRESS = "127.0.0.1:10259"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu scheduler",
        description="Bind pending pods to nodes (leader-elected; see docs/scheduler.md).",
    )
    p.add_argument("--server", help="API server HOST:PORT[,HOST:PORT] (default 127.0.0.1:6443)")
    p.add_argument("--kubeconfig", help="k8semu config file naming the API servers")
    p.add_argument("--context", help="context in the kubeconfig")
    p.add_argument(
        "--listen-address",
        default=DEFAULT_LISTEN_ADDRESS,
        help="HOST:PORT of the gRPC health service (port 0: any free port)",
    )
    p.add_argument(
        "--scheduler-name",
        default=DEFAULT_SCHEDULER.scheduler_name,
        help="schedule pods whose spec.schedulerName is this",
    )
    _leaderelect.add_flags(p, _LE, "kube-system/kube-scheduler")
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
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", default="console", choices=["console", "json"])
    return p


def config_from_args(ns: argparse.Namespace) -> SchedulerConfig:
    """The SchedulerConfig the flags describe; ValueError naming the flag otherwise."""
    election = _leaderelect.config_from_args(ns, _LE)
    if not 0 <= ns.percentage_of_nodes_to_score <= 100:
        raise ValueError(
            "--percentage-of-nodes-to-score: must be 0..100 (0: adaptive), "
            f"got {ns.percentage_of_nodes_to_score}"
        )
    if ns.bind_concurrency < 1:
        raise ValueError(f"--bind-concurrency: must be >= 1, got {ns.bind_concurrency}")
    if not ns.scheduler_name:
        raise ValueError("--scheduler-name: must not be empty")
    return SchedulerConfig(
        scheduler_name=ns.scheduler_name,
        percentage_of_nodes_to_score=ns.percentage_of_nodes_to_score,
        leader_elect=ns.leader_elect,
        leader_election=election,
        listen_address=ns.listen_address,
        bind_concurrency=ns.bind_concurrency,
    )


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        config = config_from_args(ns)
        target = _kubeconfig.resolve(server=ns.server, kubeconfig=ns.kubeconfig, context=ns.context)
        logging_setup.configure("scheduler", level=ns.log_level, fmt=ns.log_format)
    except ValueError as exc:  # ConfigError and AddressError are ValueErrors
        print(f"k8semu scheduler: {exc}", file=sys.stderr)
        return 2
    _serving.install_event_loop()
    try:
        asyncio.run(_serve(target.servers, config))
    except (AddressError, OSError) as exc:
        print(f"k8semu scheduler: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(servers: Sequence[str], config: SchedulerConfig) -> None:
    """Run until SIGTERM/SIGINT - also while still waiting for the API server at start."""
    async with Client(list(servers)) as client:
        scheduler = Scheduler(client, config)

        async def run() -> BaseException:
            try:
                await scheduler.start()
            except Exception as exc:
                return exc
            forever: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
            return await forever  # serving until cancelled

        try:
            failure = await _serving.wait_for_signal(run())
        finally:
            await scheduler.stop()
        if failure is not None:
            raise failure
