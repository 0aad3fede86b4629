"""`k8semu controller-manager`: run the controllers (run several; the Lease
kube-system/kube-controller-manager picks the one whose controllers act).

    k8semu controller-manager --server 127.0.0.1:6443 --listen-address 127.0.0.1:10257
    k8semu controller-manager --controllers replicaset,deployment --no-leader-elect
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
from collections.abc import Sequence

from k8semu import durations
from k8semu import log as logging_setup
from k8semu.cli import _kubeconfig, _leaderelect, _serving
from k8semu.client import Client
from k8semu.controllers.context import DEFAULT_CONTROLLER_MANAGER, ControllerManagerConfig
from k8semu.controllers.manager import (
    DEFAULT_LISTEN_ADDRESS,
    ControllerManager,
    resolve_controllers,
)
from k8semu.transport import AddressError

_D = DEFAULT_CONTROLLER_MANAGER
_LE = _D.leader_election


def _ms(seconds: float) -> str:
    return durations.format_ms(round(seconds * 1000))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu controller-manager",
        description="Run the controllers: ReplicaSet, Deployment and the others registered "
        "(leader-elected; see docs/controllers.md). Durations: 500ms, 2s, 1m30s.",
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
        "--controllers",
        default="*",
        help='comma list of controllers; "*" is all, "-name" drops one (default *)',
    )
    p.add_argument("--workers", type=int, default=_D.workers, help="reconciles per controller")
    _leaderelect.add_flags(p, _LE, "kube-system/kube-controller-manager")
    p.add_argument("--node-monitor-period", default=_ms(_D.node_monitor_period))
    p.add_argument("--node-monitor-grace-period", default=_ms(_D.node_monitor_grace_period))
    p.add_argument("--pod-eviction-timeout", default=_ms(_D.pod_eviction_timeout))
    p.add_argument("--cluster-cidr", default=_D.cluster_cidr, help="pod network (node IPAM)")
    p.add_argument(
        "--node-cidr-mask-size", type=int, default=_D.node_cidr_mask_size, help="per-node prefix"
    )
    p.add_argument("--service-cidr", default=_D.service_cidr)
    p.add_argument("--gc-interval", default=_ms(_D.gc_interval), help="garbage collector rescan")
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", default="console", choices=["console", "json"])
    return p


def _cidr(text: str, flag: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def config_from_args(ns: argparse.Namespace) -> ControllerManagerConfig:
    """The config the flags describe; ValueError naming the flag otherwise."""
    election = _leaderelect.config_from_args(ns, _LE)
    controllers = tuple(c.strip() for c in ns.controllers.split(",") if c.strip())
    if not controllers:
        raise ValueError('--controllers: name at least one controller (or "*")')
    values = {
        "workers": ns.workers,
        "node_monitor_period": _leaderelect.seconds(
            ns.node_monitor_period, "--node-monitor-period"
        ),
        "node_monitor_grace_period": _leaderelect.seconds(
            ns.node_monitor_grace_period, "--node-monitor-grace-period"
        ),
        "pod_eviction_timeout": _leaderelect.seconds(
            ns.pod_eviction_timeout, "--pod-eviction-timeout"
        ),
        "cluster_cidr": _cidr(ns.cluster_cidr, "--cluster-cidr"),
        "node_cidr_mask_size": ns.node_cidr_mask_size,
        "service_cidr": _cidr(ns.service_cidr, "--service-cidr"),
        "gc_interval": _leaderelect.seconds(ns.gc_interval, "--gc-interval"),
    }
    try:
        config = ControllerManagerConfig(
            **values,
            controllers=controllers,
            leader_election=election,
        )
    except ValueError as exc:
        # The config names fields (node_monitor_period: ...); the user typed flags.
        text = str(exc)
        for name in values:
            if text.startswith(f"{name}:"):
                text = "--" + name.replace("_", "-") + text[len(name) :]
        raise ValueError(text) from None
    resolve_controllers(controllers)  # unknown names: an error now, not after start
    return config


def check_address(text: str, flag: str) -> str:
    """HOST:PORT with a port 0..65535; ValueError naming the flag otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{flag}: expected HOST:PORT (port 0..65535), got {text!r}")
    return text


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        config = config_from_args(ns)
        check_address(ns.listen_address, "--listen-address")
        target = _kubeconfig.resolve(server=ns.server, kubeconfig=ns.kubeconfig, context=ns.context)
        logging_setup.configure("controller-manager", level=ns.log_level, fmt=ns.log_format)
    except ValueError as exc:  # ConfigError, AddressError, UnknownController are ValueErrors
        print(f"k8semu controller-manager: {exc}", file=sys.stderr)
        return 2
    _serving.install_event_loop()
    try:
        asyncio.run(_serve(target.servers, config, ns.leader_elect, ns.listen_address))
    except (AddressError, OSError) as exc:
        print(f"k8semu controller-manager: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(
    servers: Sequence[str],
    config: ControllerManagerConfig,
    leader_elect: bool,
    listen_address: str,
) -> None:
    async with Client(list(servers)) as client:
        manager = ControllerManager(
            config, client, leader_elect=leader_elect, listen_address=listen_address
        )
        try:
            await manager.start()
            await _serving.wait_for_signal()
        finally:
            await manager.stop()
