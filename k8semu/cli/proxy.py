"""`k8semu proxy`: run one node's service proxy.

k8semu proxy --server 127.0.0.1:6443 --node-name node-1 --node-ip 127.0.1.1
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence

from k8semu.cli import _flags, _serving
from k8semu.proxy.datapath import DEFAULT_DATA_PATH, DataPathConfig
from k8semu.proxy.server import DEFAULT_METRICS_PORT, ProxyConfig, ProxyServer
from k8semu.proxy.tunnel import DEFAULT_TUNNEL_PORT

_D = DEFAULT_DATA_PATH


def _parser() -> argparse.ArgumentParser:
    p = _flags.component_parser(
        "proxy",
        "Run one node's userspace service proxy (ClusterIP, NodePort, LoadBalancer)."
        " Durations: 500ms, 2s, 1m (a bare number is seconds).",
    )
    _flags.add_api_servers(p)
    _flags.add_node(p, ip_help="this node's IP: NodePorts bind here")
    _flags.add_listen_address(
        p, "", f"health and metrics gRPC (default NODE_IP:{DEFAULT_METRICS_PORT})"
    )
    _flags.add_serving_tls(p, "the health/metrics gRPC service and the tunnel")
    _flags.add_duration(
        p,
        "--connect-timeout",
        _D.connect_timeout,
        "per endpoint",
    )
    _flags.add_duration(
        p,
        "--udp-idle-timeout",
        _D.udp_idle_timeout,
        "before an idle UDP session is forgotten (duration)",
    )
    _flags.add_duration(
        p,
        "--tcp-idle-timeout",
        _D.tcp_idle_timeout,
        "before a TCP connection with no traffic is closed (duration)",
    )
    _flags.add_duration(
        p,
        "--tcp-half-open-timeout",
        _D.tcp_half_open_timeout,
        "how long a half-closed TCP connection may stay (duration)",
    )
    p.add_argument(
        "--tunnel-port",
        type=int,
        default=0,
        help=f"cross-host tunnel on NODE_IP:PORT (0: off; conventionally {DEFAULT_TUNNEL_PORT})",
    )
    return p


def _config(ns: argparse.Namespace) -> ProxyConfig:
    try:
        ipaddress.IPv4Address(ns.node_ip)
    except ValueError:
        raise ValueError(f"--node-ip: {ns.node_ip!r} is not an IPv4 address") from None
    if not 0 <= ns.tunnel_port < 65536:
        raise ValueError(f"--tunnel-port: {ns.tunnel_port} out of range")
    data_path = DataPathConfig(
        connect_timeout=ns.connect_timeout,
        udp_idle_timeout=ns.udp_idle_timeout,
        tcp_idle_timeout=ns.tcp_idle_timeout,
        tcp_half_open_timeout=ns.tcp_half_open_timeout,
    )
    target = _flags.api_target(ns)
    config = ProxyConfig(
        servers=target.servers,
        tls=target.tls(),
        serving_tls=_flags.serving_tls(ns),
        node_name=ns.node_name,
        node_ip=ns.node_ip,
        listen_address=ns.listen_address,
        tunnel_port=ns.tunnel_port,
        data_path=data_path,
    )
    client = config.tls
    if ns.tunnel_port and config.serving_tls and (client is None or client.cert_file is None):
        raise ValueError(
            "--tunnel-port: a tunnel serving TLS (--client-ca-file) dials the other nodes'"
            " tunnels with the kubeconfig's client certificate: --kubeconfig has none"
        )
    return config


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        config = _config(ns)
        metrics = _flags.metrics_address(ns)
        _flags.configure_logging(ns, "proxy", node=ns.node_name)
    except ValueError as exc:  # ConfigError and AddressError are ValueErrors
        return _serving.usage_error("proxy", exc)
    return _serving.run("proxy", lambda: _serve(config, metrics))


async def _serve(config: ProxyConfig, metrics: str) -> None:
    await _serving.serve(ProxyServer(config), grace=_serving.STOP_GRACE, metrics=metrics)
