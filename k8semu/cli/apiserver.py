"""`k8semu apiserver`: run one API server (stateless; run as many as you like on one store).

    k8semu apiserver --listen-address 127.0.0.1:6443 \\
        --store-endpoints 127.0.0.1:2379,127.0.0.1:12379,127.0.0.1:22379
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
from collections.abc import Sequence

from k8semu import durations
from k8semu import log as logging_setup
from k8semu.apiserver.allocation import ServiceRanges, parse_cidr, parse_port_range
from k8semu.apiserver.server import APIServer, APIServerConfig, parse_endpoints
from k8semu.cli import _serving
from k8semu.durations import format_ms, parse_ms
from k8semu.transport import AddressError

_DEFAULTS = APIServerConfig()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu apiserver",
        description="Run an API server on a store (k8semu store or etcd, etcd v3 API).",
    )
    p.add_argument("--listen-address", default=_DEFAULTS.listen_address, help="HOST:PORT")
    p.add_argument(
        "--store-endpoints",
        default=",".join(_DEFAULTS.store_endpoints),
        help="HOST:PORT,... of the store's client URLs (round-robin with fail-over)",
    )
    p.add_argument(
        "--store-deadline",
        type=durations.seconds_flag,
        default=_DEFAULTS.store_deadline,
        help="per store call (duration: 500ms, 2s)",
    )
    p.add_argument(
        "--bookmark-interval",
        type=durations.seconds_flag,
        default=_DEFAULTS.bookmark_interval,
        help="between watch bookmarks (duration)",
    )
    p.add_argument(
        "--watch-cache-capacity",
        type=int,
        default=_DEFAULTS.watch_cache_capacity,
        help="recent events kept per resource, to serve watches from a recent resourceVersion",
    )
    p.add_argument(
        "--watch-max-pending",
        type=int,
        default=_DEFAULTS.watch_max_pending,
        help="events a client watch may fall behind before it is cut off (RESOURCE_EXHAUSTED)",
    )
    ranges = _DEFAULTS.service_ranges
    p.add_argument(
        "--service-cluster-ip-range",
        default=str(ranges.cluster_ips),
        help="IPv4 CIDR that Services' clusterIPs come from (its first IP: the kubernetes Service)",
    )
    p.add_argument(
        "--service-node-port-range",
        default=ranges.node_port_text(),
        help="FIRST-LAST: NodePort and LoadBalancer Services' nodePorts",
    )
    p.add_argument(
        "--load-balancer-ip-pool",
        default=str(ranges.load_balancer_ips),
        help="IPv4 CIDR of LoadBalancer Services' ingress IPs",
    )
    p.add_argument(
        "--advertise-address",
        default="",
        help="IP put in the kubernetes Endpoints (default: the --listen-address host)",
    )
    p.add_argument(
        "--endpoint-lease-seconds",
        type=durations.seconds_flag,
        default=_DEFAULTS.lease_seconds,
        help="an API server not renewing its Lease this long leaves the kubernetes Endpoints",
    )
    p.add_argument(
        "--etcd-compaction-interval",
        default=format_ms(int(_DEFAULTS.compaction_interval * 1000)),
        help="how often the store's history is compacted to what it was one interval ago"
        " (kube-apiserver's flag; one API server per interval does it); 0 turns it off",
    )
    p.add_argument(
        "--event-ttl",
        default=format_ms(int(_DEFAULTS.event_ttl * 1000)),
        help="Events are deleted this long after their last write (kube-apiserver's flag,"
        " through etcd leases); 0 keeps them forever",
    )
    p.add_argument(
        "--shutdown-grace-period",
        default=format_ms(int(_DEFAULTS.shutdown_grace * 1000)),
        help="on SIGTERM, calls in flight get this long to finish before they are cancelled",
    )
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", default="console", choices=["console", "json"])
    return p


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        if ns.store_deadline <= 0 or ns.bookmark_interval <= 0:
            raise ValueError("--store-deadline and --bookmark-interval must be > 0")
        if ns.watch_cache_capacity < 1 or ns.watch_max_pending < 1:
            raise ValueError("--watch-cache-capacity and --watch-max-pending must be >= 1")
        if ns.endpoint_lease_seconds <= 0:
            raise ValueError("--endpoint-lease-seconds must be > 0")
        if ns.advertise_address:
            try:
                ipaddress.IPv4Address(ns.advertise_address)
            except ValueError as exc:
                raise ValueError(f"--advertise-address: {exc}") from None
        compaction_interval = _duration(
            ns.etcd_compaction_interval, "--etcd-compaction-interval", zero_ok=True
        )
        event_ttl = _duration(ns.event_ttl, "--event-ttl", zero_ok=True)
        shutdown_grace = _duration(
            ns.shutdown_grace_period, "--shutdown-grace-period", zero_ok=True
        )
        ranges = ServiceRanges(
            cluster_ips=parse_cidr(ns.service_cluster_ip_range, flag="--service-cluster-ip-range"),
            node_ports=parse_port_range(
                ns.service_node_port_range, flag="--service-node-port-range"
            ),
            load_balancer_ips=parse_cidr(ns.load_balancer_ip_pool, flag="--load-balancer-ip-pool"),
        )
        config = APIServerConfig(
            listen_address=ns.listen_address,
            store_endpoints=parse_endpoints(ns.store_endpoints),
            store_deadline=ns.store_deadline,
            bookmark_interval=ns.bookmark_interval,
            watch_cache_capacity=ns.watch_cache_capacity,
            watch_max_pending=ns.watch_max_pending,
            service_ranges=ranges,
            advertise_address=ns.advertise_address,
            lease_seconds=ns.endpoint_lease_seconds,
            compaction_interval=compaction_interval,
            shutdown_grace=shutdown_grace,
            event_ttl=event_ttl,
        )
        logging_setup.configure("apiserver", level=ns.log_level, fmt=ns.log_format)
    except (AddressError, ValueError) as exc:
        print(f"k8semu apiserver: {exc}", file=sys.stderr)
        return 2
    _serving.install_event_loop()
    try:
        asyncio.run(_serve(config))
    except (AddressError, OSError) as exc:
        print(f"k8semu apiserver: {exc}", file=sys.stderr)
        return 1
    return 0


def _duration(text: str, flag: str, *, zero_ok: bool) -> float:
    """Seconds of a duration flag (`5m`, `500ms`; `0` as in Go when `zero_ok`)."""
    if zero_ok and text.strip() == "0":
        return 0.0
    try:
        ms = parse_ms(text)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None
    if ms == 0 and not zero_ok:
        raise ValueError(f"{flag}: must be > 0")
    return ms / 1000


async def _serve(config: APIServerConfig) -> None:
    server = APIServer(config)
    try:
        await server.start()
    except BaseException:
        await server.stop(0)
        raise
    await _serving.wait_for_signal()
    await server.stop()
