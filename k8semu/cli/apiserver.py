"""`k8semu apiserver`: run one API server (stateless; run as many as you like on one store).

    k8semu apiserver --listen-address 127.0.0.1:6443 \\
        --store-endpoints 127.0.0.1:2379,127.0.0.1:12379,127.0.0.1:22379
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence

from k8semu import transport
from k8semu.apiserver import encryption
from k8semu.apiserver.allocation import ServiceRanges, parse_cidr, parse_port_range
from k8semu.apiserver.encryption import Transformer
from k8semu.apiserver.server import APIServer, APIServerConfig, parse_endpoints
from k8semu.cli import _authflags, _flags, _serving

_DEFAULTS = APIServerConfig()


def _parser() -> argparse.ArgumentParser:
    p = _flags.component_parser(
        "apiserver",
        "Run an API server on a store (k8semu store or etcd, etcd v3 API)."
        " Durations: 500ms, 2s, 5m.",
    )
    _flags.add_listen_address(p, _DEFAULTS.listen_address, "the API (gRPC)")
    p.add_argument(
        "--rest-address",
        default=_DEFAULTS.rest_address,
        help="HOST:PORT of Kubernetes' REST API (kubectl, client libraries) beside the gRPC"
        " one; port 0 picks a free port (logged); empty serves none",
    )
    p.add_argument(
        "--store-endpoints",
        default=",".join(_DEFAULTS.store_endpoints),
        help="HOST:PORT,... of the store's client URLs (round-robin with fail-over)",
    )
    _flags.add_duration(
        p, "--store-deadline", _DEFAULTS.store_deadline, "per store call (duration: 500ms, 2s)"
    )
    _flags.add_duration(
        p, "--bookmark-interval", _DEFAULTS.bookmark_interval, "between watch bookmarks (duration)"
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
    _flags.add_duration(
        p,
        "--endpoint-lease-seconds",
        _DEFAULTS.lease_seconds,
        "an API server not renewing its Lease this long leaves the kubernetes Endpoints",
    )
    _add_durations(p)
    _authflags.add(p)
    _add_tls(p)
    return p


def _add_tls(p: argparse.ArgumentParser) -> None:
    """kube-apiserver's TLS flags (none given: plain text, for tests and benchmarks)."""
    g = p.add_argument_group("security (kube-apiserver's flags)")
    g.add_argument("--tls-cert-file", default="", help="certificate of the gRPC and REST ports")
    g.add_argument("--tls-private-key-file", default="", help="its key")
    g.add_argument(
        "--client-ca-file",
        default="",
        help="CA of client certificates (CN: user, O: groups); gRPC clients must present one",
    )
    g.add_argument("--etcd-cafile", default="", help="CA of the store's certificates")
    g.add_argument("--etcd-certfile", default="", help="client certificate to the store")
    g.add_argument("--etcd-keyfile", default="", help="its key")
    g.add_argument(
        "--kubelet-certificate-authority", default="", help="CA of the kubelets' certificates"
    )
    g.add_argument(
        "--kubelet-client-certificate",
        default="",
        help="client certificate to the kubelets (the only one they take for logs/exec)",
    )
    g.add_argument("--kubelet-client-key", default="", help="its key")
    g.add_argument(
        "--encryption-provider-config",
        default="",
        help="EncryptionConfiguration (apiserver.config.k8s.io/v1) file: the resources"
        " encrypted at rest and their providers (aesgcm, secretbox, identity)",
    )


def tls_from_args(
    ns: argparse.Namespace,
) -> tuple[transport.ServerTLS | None, transport.ClientTLS | None]:
    """The listeners' and the store client's TLS; ValueError naming the flag otherwise."""
    serving = _flags.serving_tls(ns)
    store = _client_tls(ns, "--etcd-cafile", "--etcd-certfile", "--etcd-keyfile")
    return serving, store


def _client_tls(
    ns: argparse.Namespace, ca_flag: str, cert_flag: str, key_flag: str
) -> transport.ClientTLS | None:
    """A client's TLS from its CA, certificate and key flags (none: plain text)."""
    ca = _flags.pem_file(getattr(ns, ca_flag[2:].replace("-", "_")), ca_flag)
    pair = _flags.cert_and_key(ns, cert_flag, key_flag)
    if pair is not None and ca is None:
        raise ValueError(f"{ca_flag}: needed with {cert_flag}")
    if ca is None:
        return None
    cert, key = pair or (None, None)
    return transport.ClientTLS(ca_file=ca, cert_file=cert, key_file=key)


def _add_durations(p: argparse.ArgumentParser) -> None:
    """kube-apiserver's duration flags (checked in `config_from_args`; 0 turns one off)."""
    text = _flags.duration_text
    p.add_argument(
        "--etcd-compaction-interval",
        default=text(_DEFAULTS.compaction_interval),
        help="how often the store's history is compacted to what it was one interval ago"
        " (kube-apiserver's flag; one API server per interval does it); 0 turns it off",
    )
    p.add_argument(
        "--event-ttl",
        default=text(_DEFAULTS.event_ttl),
        help="Events are deleted this long after their last write (kube-apiserver's flag,"
        " through etcd leases); 0 keeps them forever",
    )
    p.add_argument(
        "--metric-resolution",
        default=text(_DEFAULTS.metric_resolution),
        help="how often the kubelets are scraped for the metrics.k8s.io NodeMetrics and"
        " PodMetrics (metrics-server's flag); 0 serves no resource metrics",
    )
    p.add_argument(
        "--shutdown-grace-period",
        default=text(_DEFAULTS.shutdown_grace),
        help="on SIGTERM, calls in flight get this long to finish before they are cancelled",
    )


def config_from_args(ns: argparse.Namespace) -> APIServerConfig:
    """The APIServerConfig the flags describe; ValueError naming the flag otherwise."""
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
    ranges = ServiceRanges(
        cluster_ips=parse_cidr(ns.service_cluster_ip_range, flag="--service-cluster-ip-range"),
        node_ports=parse_port_range(ns.service_node_port_range, flag="--service-node-port-range"),
        load_balancer_ips=parse_cidr(ns.load_balancer_ip_pool, flag="--load-balancer-ip-pool"),
    )
    tls, store_tls = tls_from_args(ns)
    return APIServerConfig(
        tls=tls,
        store_tls=store_tls,
        kubelet_tls=_client_tls(
            ns,
            "--kubelet-certificate-authority",
            "--kubelet-client-certificate",
            "--kubelet-client-key",
        ),
        listen_address=ns.listen_address,
        rest_address=_rest_address(ns.rest_address),
        store_endpoints=parse_endpoints(ns.store_endpoints),
        store_deadline=ns.store_deadline,
        bookmark_interval=ns.bookmark_interval,
        watch_cache_capacity=ns.watch_cache_capacity,
        watch_max_pending=ns.watch_max_pending,
        service_ranges=ranges,
        advertise_address=ns.advertise_address,
        lease_seconds=ns.endpoint_lease_seconds,
        compaction_interval=_flags.seconds(
            ns.etcd_compaction_interval, "--etcd-compaction-interval"
        ),
        shutdown_grace=_flags.seconds(ns.shutdown_grace_period, "--shutdown-grace-period"),
        event_ttl=_flags.seconds(ns.event_ttl, "--event-ttl"),
        metric_resolution=_flags.seconds(ns.metric_resolution, "--metric-resolution"),
        auth=_authflags.config(ns),
        encryption=_encryption(ns.encryption_provider_config),
    )


def _encryption(path: str) -> Transformer | None:
    if not path:
        return None
    try:
        return encryption.load(path)
    except encryption.EncryptionConfigError as exc:
        raise ValueError(f"--encryption-provider-config: {exc}") from None


def _rest_address(text: str) -> str:
    """--rest-address as HOST:PORT ("" when none); AddressError naming the flag."""
    return transport.parse_url(text, flag="--rest-address") if text.strip() else ""


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        config = config_from_args(ns)
        metrics = _flags.metrics_address(ns)
        _flags.configure_logging(ns, "apiserver")
    except ValueError as exc:  # AddressError is a ValueError
        return _serving.usage_error("apiserver", exc)
    return _serving.run("apiserver", lambda: _serve(config, metrics))


async def _serve(config: APIServerConfig, metrics: str) -> None:
    await _serving.serve(APIServer(config), grace=config.shutdown_grace, metrics=metrics)
