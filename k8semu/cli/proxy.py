"""`k8semu proxy`: run one node's service proxy.

k8semu proxy --server 127.0.0.1:6443 --node-name node-1 --node-ip 127.0.1.1
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
from collections.abc import Sequence

from k8semu import durations
from k8semu import log as logging_setup
from k8semu.cli import _kubeconfig, _serving
from k8semu.proxy.datapath import DEFAULT_DATA_PATH, DataPathConfig
from k8semu.proxy.server import DEFAULT_METRICS_PORT, ProxyConfig, ProxyServer
from k8semu.proxy.tunnel import DEFAULT_TUNNEL_PORT
from k8semu.transport import AddressError

_D = DEFAULT_DATA_PATH


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu proxy",
        description="Run one node's userspace service proxy (ClusterIP, NodePort, LoadBalancer).",
    )
    p.add_argument("--server", default=None, help="API servers, HOST:PORT[,HOST:PORT]")
    p.add_argument("--kubeconfig", default=None, help="k8semu config file (servers)")
    p.add_argument("--node-name", default="", help="this node's name (default: host name)")
    p.add_argument("--node-ip", default="127.0.0.1", help="this node's IP: NodePorts bind here")
    p.add_argument(
        "--listen-address",
        default="",
        help=f"HOST:PORT of health and metrics gRPC (default NODE_IP:{DEFAULT_METRICS_PORT})",
    )
    p.add_argument(
        "--connect-timeout",
        type=durations.seconds_flag,
        default=_D.connect_timeout,
        help="per endpoint (500ms, 2s; a bare number is seconds)",
    )
    p.add_argument(
        "--udp-idle-timeout",
        type=durations.seconds_flag,
        default=_D.udp_idle_timeout,
        help="before an idle UDP session is forgotten (duration)",
    )
    p.add_argument(
        "--tcp-idle-timeout",
        type=durations.seconds_flag,
        default=_D.tcp_idle_timeout,
        help="before a TCP connection with no traffic is closed (duration)",
    )
    p.add_argument(
        "--tcp-half-open-timeout",
        type=durations.seconds_flag,
        default=_D.tcp_half_open_timeout,
        help="how long a half-closed TCP connection may stay (duration)",
    )
    p.add_argument(
        "--tunnel-port",
        type=int,
        default=0,
        help=f"cross-host tunnel on NODE_IP:PORT (0: off; conventionally {DEFAULT_TUNNEL_PORT})",
    )
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", default="console", choices=["console", "json"])
    return p


def _config(ns: argparse.Namespace) -> ProxyConfig:
    try:
        ipaddress.IPv4Address(ns.node_ip)
    except ValueError:
        raise ValueError(f"--node-ip: {ns.node_ip!r} is not an IPv4 address") from None
    if not 0 <= ns.tunnel_port < 65536:
        raise ValueError(f"--tunnel-port: {ns.tunnel_port} out of range")
    target = _kubeconfig.resolve(server=ns.server, kubeconfig=ns.kubeconfig)
    data_path = DataPathConfig(
        connect_timeout=ns.connect_timeout,
        udp_idle_timeout=ns.udp_idle_timeout,
        tcp_idle_timeout=ns.tcp_idle_timeout,
        tcp_half_open_timeout=ns.tcp_half_open_timeout,
    )
    return ProxyConfig(
        servers=target.servers,
        node_name=ns.node_name,
        node_ip=ns.node_ip,
        listen_address=ns.listen_address,
        tunnel_port=ns.tunnel_port,
        data_path=data_path,
    )


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        config = _config(ns)
        logging_setup.configure("proxy", node=ns.node_name, level=ns.log_level, fmt=ns.log_format)
    except (ValueError, AddressError) as exc:  # ConfigError is a ValueError
        print(f"k8semu proxy: {exc}", file=sys.stderr)
        return 2
    _serving.install_event_loop()
    try:
        asyncio.run(_serve(config))
    except (AddressError, OSError) as exc:
        print(f"k8semu proxy: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(config: ProxyConfig) -> None:
    server = ProxyServer(config)
    try:
        await server.start()
    except BaseException:
        await server.stop(0)
        raise
    await _serving.wait_for_signal()
    await server.stop()
