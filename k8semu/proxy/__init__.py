"""The userspace service proxy (`k8semu proxy`): ClusterIP, NodePort and LoadBalancer
addresses forwarded to ready endpoints, one process per node (design decision 7).

    table.py     pure: Services + Endpoints -> what to listen on and forward to
    datapath.py  Protocols: balancer, TCP splice, UDP relay, counters
    proxier.py   listening sockets for a table (`Proxier.apply`), sweeps, metrics snapshot
    tunnel.py    CONNECT tunnel between hosts: the serving end, and which endpoints go through one
    tunnelwire.py  pure: the tunnel's wire format (CONNECT line, OK/ERR answer, UDP frames)
    overlay.py   pure: pods of other hosts -> listeners on their pod IPs (through the tunnel)
    server.py    `ProxyServer`: informers -> table -> Proxier; Events; gRPC metrics

A Proxier can be fed a static table (`await proxier.apply_objects(services, endpoints)`)
without any API server: benchmarks and tests do. See docs/proxy.md.
"""

from k8semu.proxy.datapath import DEFAULT_DATA_PATH, DataPathConfig
from k8semu.proxy.proxier import PortSnapshot, Proxier
from k8semu.proxy.server import ProxyConfig, ProxyServer, get_metrics
from k8semu.proxy.table import Endpoint, ListenAddress, PortKey, PortRule, build_table

__all__ = [
    "DEFAULT_DATA_PATH",
    "DataPathConfig",
    "Endpoint",
    "ListenAddress",
    "PortKey",
    "PortRule",
    "PortSnapshot",
    "Proxier",
    "ProxyConfig",
    "ProxyServer",
    "build_table",
    "get_metrics",
]
