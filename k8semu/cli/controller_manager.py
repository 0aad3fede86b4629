"""`k8semu controller-manager`: run the controllers (run several; the Lease
kube-system/kube-controller-manager picks the one whose controllers act).

    k8semu controller-manager --server 127.0.0.1:6443 --listen-address 127.0.0.1:10257
    k8semu controller-manager --controllers replicaset,deployment --no-leader-elect
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from k8semu import transport
from k8semu.cli import _flags, _kubeconfig, _serving
from k8semu.client import Client
from k8semu.controllers.clusterautoscaler.pools import parse_node_pools
from k8semu.controllers.context import DEFAULT_CONTROLLER_MANAGER, ControllerManagerConfig
from k8semu.controllers.manager import (
    DEFAULT_LISTEN_ADDRESS,
    ControllerManager,
    resolve_controllers,
)
from k8semu.controllers.podautoscaler import flags as hpa_flags

if TYPE_CHECKING:
    from k8semu.transport import ServerTLS

_D = DEFAULT_CONTROLLER_MANAGER
_LE = _D.leader_election
# kube-controller-manager's names for the HorizontalPodAutoscaler's settings.
_HPA_DURATIONS = hpa_flags.DURATION_FLAGS
_HPA_TOLERANCE = hpa_flags.TOLERANCE_FLAG


def _parser() -> argparse.ArgumentParser:
    p = _flags.component_parser(
        "controller-manager",
        "Run the controllers: ReplicaSet, Deployment and the others registered "
        "(leader-elected; see docs/controllers.md). Durations: 500ms, 2s, 1m30s.",
    )
    _flags.add_api_servers(p)
    _flags.add_listen_address(
        p, DEFAULT_LISTEN_ADDRESS, "the gRPC health service (port 0: any free port)"
    )
    p.add_argument(
        "--controllers",
        default="*",
        help='comma list of controllers; "*" is all, "-name" drops one (default *)',
    )
    p.add_argument("--workers", type=int, default=_D.workers, help="reconciles per controller")
    _flags.add_serving_tls(p, "the gRPC health service")
    _flags.add_leader_election(p, _LE, "kube-system/kube-controller-manager")
    text = _flags.duration_text
    p.add_argument("--node-monitor-period", default=text(_D.node_monitor_period))
    p.add_argument("--node-monitor-grace-period", default=text(_D.node_monitor_grace_period))
    p.add_argument("--pod-eviction-timeout", default=text(_D.pod_eviction_timeout))
    p.add_argument("--cluster-cidr", default=_D.cluster_cidr, help="pod network (node IPAM)")
    p.add_argument(
        "--node-cidr-mask-size", type=int, default=_D.node_cidr_mask_size, help="per-node prefix"
    )
    p.add_argument("--service-cidr", default=_D.service_cidr)
    p.add_argument("--gc-interval", default=text(_D.gc_interval), help="garbage collector rescan")
    hpa_help = "HorizontalPodAutoscaler (default %(default)s)"
    for field, flag in _HPA_DURATIONS.items():
        p.add_argument(flag, default=text(getattr(_D, field)), metavar="DURATION", help=hpa_help)
    p.add_argument(_HPA_TOLERANCE, type=float, default=_D.hpa_tolerance, help=hpa_help)
    p.add_argument(
        "--node-pools",
        default="",
        metavar="JSON",
        help="the autoscaled node pools the cluster autoscaler sizes (the launcher gives them"
        " from the cluster config; docs/controllers.md)",
    )
    p.add_argument("--root-ca-file", default="", metavar="PEM",
                   help="the cluster CA, published in every namespace's kube-root-ca.crt"
                   " ConfigMap (the ServiceAccount volume's ca.crt)")  # fmt: skip
    p.add_argument(
        "--cluster-signing-cert-file",
        default="",
        metavar="PEM",
        help="the CA that signs approved CertificateSigningRequests (csrsigning)",
    )
    p.add_argument("--cluster-signing-key-file", default="", metavar="PEM",
                   help="its private key (EC)")  # fmt: skip
    _flags.add_duration(
        p, "--scan-interval", _D.scan_interval, "how often the cluster autoscaler looks (1s)"
    )
    return p


def _cidr(text: str, flag: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def _read_pem(path: str, flag: str, what: str = "CERTIFICATE") -> str:
    if not path:
        return ""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{flag}: cannot read {path}: {exc}") from None
    if f" {what}-----" not in text:
        raise ValueError(f"{flag}: {path} holds no PEM {what.lower()}")
    return text


def _signing(ns: argparse.Namespace) -> tuple[str, str]:
    """The signing CA's certificate and key (both or neither), checked to be a pair."""
    cert_flag, key_flag = "--cluster-signing-cert-file", "--cluster-signing-key-file"
    cert = _read_pem(ns.cluster_signing_cert_file, cert_flag)
    key = _read_pem(ns.cluster_signing_key_file, key_flag, "PRIVATE KEY")
    if bool(cert) != bool(key):
        raise ValueError(f"{cert_flag} and {key_flag}: give both or neither")
    if cert:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        loaded = serialization.load_pem_private_key(key.encode(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_flag}: expected an EC private key")
        if x509.load_pem_x509_certificate(cert.encode()).public_key() != loaded.public_key():
            raise ValueError(f"{key_flag}: not the key of {cert_flag}")
    return cert, key


def config_from_args(ns: argparse.Namespace) -> ControllerManagerConfig:
    """The config the flags describe; ValueError naming the flag otherwise."""
    election = _flags.leader_election(ns, _LE)
    controllers = tuple(c.strip() for c in ns.controllers.split(",") if c.strip())
    if not controllers:
        raise ValueError('--controllers: name at least one controller (or "*")')
    values = {
        "workers": ns.workers,
        "node_monitor_period": _flags.seconds(ns.node_monitor_period, "--node-monitor-period"),
        "node_monitor_grace_period": _flags.seconds(
            ns.node_monitor_grace_period, "--node-monitor-grace-period"
        ),
        "pod_eviction_timeout": _flags.seconds(ns.pod_eviction_timeout, "--pod-eviction-timeout"),
        "cluster_cidr": _cidr(ns.cluster_cidr, "--cluster-cidr"),
        "node_cidr_mask_size": ns.node_cidr_mask_size,
        "service_cidr": _cidr(ns.service_cidr, "--service-cidr"),
        "gc_interval": _flags.seconds(ns.gc_interval, "--gc-interval"),
        "hpa_tolerance": ns.horizontal_pod_autoscaler_tolerance,
        "node_pools": parse_node_pools(ns.node_pools),
        "scan_interval": ns.scan_interval,
    }
    for field, flag in _HPA_DURATIONS.items():
        values[field] = _flags.seconds(getattr(ns, flag[2:].replace("-", "_")), flag)
    try:
        config = ControllerManagerConfig(
            **values,
            controllers=controllers,
            leader_election=election,
        )
    except ValueError as exc:
        flags = _flags.flag_names(values) | _HPA_DURATIONS | {"hpa_tolerance": _HPA_TOLERANCE}
        raise _flags.named_as_flags(exc, flags) from None
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
        # The CA file is read here, not in config_from_args: a plan's flags parse without it.
        root_ca = _read_pem(ns.root_ca_file, "--root-ca-file")
        cert, key = _signing(ns)
        config = dataclasses.replace(
            config_from_args(ns), root_ca=root_ca, signing_cert=cert, signing_key=key
        )
        check_address(ns.listen_address, "--listen-address")
        servers = _flags.api_target(ns)
        tls = _flags.serving_tls(ns)
        metrics = _flags.metrics_address(ns)
        _flags.configure_logging(ns, "controller-manager")
    except ValueError as exc:  # ConfigError, AddressError, UnknownController are ValueErrors
        return _serving.usage_error("controller-manager", exc)
    return _serving.run(
        "controller-manager",
        lambda: _serve(servers, config, ns.leader_elect, ns.listen_address, tls, metrics),
    )


async def _serve(
    servers: _kubeconfig.Target,
    config: ControllerManagerConfig,
    leader_elect: bool,
    listen_address: str,
    tls: ServerTLS | None,
    metrics: str,
) -> None:
    async with Client(
        list(servers.servers),
        channel_factory=transport.named_channels("kube-controller-manager", servers.tls()),
        # client.tls is also what the HPA dials the kubelets' Summary with (their listeners
        # take only the cluster CA's certificates): without it the dial was plain text and
        # every HPA of an `up` cluster said "Socket closed".
        tls=servers.tls(),
    ) as client:
        manager = ControllerManager(
            config, client, leader_elect=leader_elect, listen_address=listen_address, tls=tls
        )
        await _serving.serve(manager, grace=_serving.STOP_GRACE, metrics=metrics)
