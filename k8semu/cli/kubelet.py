"""`k8semu kubelet`: run the kubelet of one node, or N hollow (simulated) nodes in one process.

k8semu kubelet --node-name n1 --node-ip 127.0.1.1 --server 127.0.0.1:6443
k8semu kubelet --runtime simulated --count 1000 --node-name hollow
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from k8semu import transport
from k8semu.cli import _flags, _kubeconfig, _serving
from k8semu.client import Client
from k8semu.kubelet import config as cfg
from k8semu.kubelet.kubelet import Kubelet

if TYPE_CHECKING:
    from k8semu.transport import ServerTLS

MAX_COUNT = 100_000


def _parser() -> argparse.ArgumentParser:
    p = _flags.component_parser(
        "kubelet",
        "Run a kubelet: register a Node, renew its Lease, run the pods bound to it."
        " Durations: 500ms, 2s, 1m (a bare number is seconds).",
    )
    _flags.add_api_servers(p)
    _flags.add_node(p, ip_help="the node's InternalIP")
    _flags.add_listen_address(
        p,
        "",
        "the logs/exec/summary service (default <node-ip>:10250, any free port for a hollow"
        " pool; 'none': no server)",
    )
    _flags.add_serving_tls(p, "the logs/exec/summary service")
    p.add_argument("--runtime", default="process", choices=cfg.RUNTIMES)
    p.add_argument("--root-dir", default="", help="default .k8semu/kubelet/<node>")
    p.add_argument("--capacity", default=cfg.DEFAULT_CAPACITY, help="cpu=4,memory=8Gi,pods=110")
    p.add_argument("--reserved", default="", help="subtracted from capacity: cpu=500m,...")
    p.add_argument("--node-labels", default="", help="k=v,k=v")
    p.add_argument("--register-with-taints", default="", help="key=value:Effect,...")
    _flags.add_duration(p, "--node-lease-duration", cfg.DEFAULT_LEASE_DURATION)
    _flags.add_duration(p, "--node-lease-renew-interval", cfg.DEFAULT_LEASE_RENEW_INTERVAL)
    _flags.add_duration(p, "--node-status-update-frequency", cfg.DEFAULT_STATUS_UPDATE_FREQUENCY)
    _flags.add_duration(p, "--max-container-backoff", cfg.DEFAULT_MAX_CONTAINER_BACKOFF)
    _flags.add_duration(
        p,
        "--sync-frequency",
        cfg.DEFAULT_SYNC_FREQUENCY,
        "the most a change of a ConfigMap or Secret waits before a running pod's volume shows it",
    )
    _flags.add_duration(p, "--simulated-start-delay", 0.0)
    p.add_argument("--pod-cidr", default="", help="used when the Node gets no spec.podCIDR")
    _flags.add_duration(
        p,
        "--pod-cidr-wait",
        cfg.DEFAULT_POD_CIDR_WAIT,
        "how long to wait for spec.podCIDR before --pod-cidr (or 127.0.0.1 for all pods)",
    )
    p.add_argument(
        "--cluster-dns",
        default="",
        help="IP of the cluster DNS Service, given to pods as K8SEMU_DNS_SERVER (none if empty)",
    )
    p.add_argument("--cluster-domain", default="cluster.local", help="the cluster's DNS domain")
    p.add_argument("--cgroups", default="auto", choices=cfg.CGROUP_MODES, help="off: rlimits")
    p.add_argument(
        "--pod-pids-limit", type=int, default=cfg.DEFAULT_POD_PIDS_LIMIT, help="-1: none"
    )
    p.add_argument(
        "--pod-user-range",
        default=cfg.DEFAULT_POD_USER_RANGE,
        help="FIRST-LAST: the uids given to pods, one each (as root; FIRST-1 is their shared"
        ' group); "": pods run as the kubelet\'s user',
    )
    # A container's log is rotated past the size (a quantity), keeping that many files per
    # run, the current one included (at least 2), as the kubelet's containerLogMax* settings.
    p.add_argument("--container-log-max-size", default=cfg.DEFAULT_CONTAINER_LOG_MAX_SIZE)
    p.add_argument(
        "--container-log-max-files", type=int, default=cfg.DEFAULT_CONTAINER_LOG_MAX_FILES
    )
    p.add_argument(
        "--count",
        type=int,
        default=None,
        help="a pool of hollow nodes <node-name>-0..N-1 (without it: one node, <node-name>)",
    )
    return p


def _ip_or_empty(text: str, flag: str) -> str:
    if not text:
        return ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise cfg.ConfigError(f"{flag}: {text!r} is not an IP address") from None


def build_configs(ns: argparse.Namespace) -> list[cfg.KubeletConfig]:
    """One config per node from the flags; ConfigError names the bad flag."""
    if ns.count is not None and not 1 <= ns.count <= MAX_COUNT:
        raise cfg.ConfigError(f"--count: must be between 1 and {MAX_COUNT}, got {ns.count}")
    if ns.count is not None and ns.runtime != "simulated":
        raise cfg.ConfigError("--count (a pool of hollow nodes) needs --runtime simulated")
    base = ns.node_name or socket.gethostname().lower()
    capacity = cfg.parse_resources(ns.capacity, flag="--capacity")
    reserved = cfg.parse_resources(ns.reserved, flag="--reserved")
    unknown = sorted(set(reserved) - set(capacity))
    if unknown:
        raise cfg.ConfigError(f"--reserved: {', '.join(unknown)}: not in --capacity")
    common: dict[str, Any] = dict(
        node_ip=ns.node_ip,
        runtime=ns.runtime,
        capacity=capacity,
        reserved=reserved,
        node_labels=cfg.parse_labels(ns.node_labels),
        taints=cfg.parse_taints(ns.register_with_taints),
        lease_duration=ns.node_lease_duration,
        lease_renew_interval=ns.node_lease_renew_interval,
        status_update_frequency=ns.node_status_update_frequency,
        max_container_backoff=ns.max_container_backoff,
        sync_frequency=ns.sync_frequency,
        simulated_start_delay=ns.simulated_start_delay,
        pod_cidr=ns.pod_cidr,
        pod_cidr_wait=ns.pod_cidr_wait,
        cluster_dns=_ip_or_empty(ns.cluster_dns, "--cluster-dns"),
        cluster_domain=ns.cluster_domain,
        cgroups=ns.cgroups,
        pod_pids_limit=ns.pod_pids_limit,
        pod_user_range=ns.pod_user_range,
        container_log_max_size=ns.container_log_max_size,
        container_log_max_files=ns.container_log_max_files,
    )
    if ns.count is None:  # one node under its own name; a pool of 1 is <name>-0, as in the config
        return [
            cfg.KubeletConfig(
                node_name=base, listen_address=ns.listen_address, root_dir=ns.root_dir, **common
            )
        ]
    # A hollow pool's one server (its nodes' usage summaries) takes any free port by default:
    # its Nodes' endpoint annotation names it, and pools must not fight over 10250.
    address = ns.listen_address or f"{ns.node_ip}:0"
    return [
        cfg.KubeletConfig(node_name=f"{base}-{i}", listen_address=address, **common)
        for i in range(ns.count)
    ]


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        configs = build_configs(ns)
        servers = _flags.api_target(ns)
        tls = _flags.serving_tls(ns)
        metrics = _flags.metrics_address(ns)
        node = configs[0].node_name if len(configs) == 1 else f"{ns.node_name}-*"
        _flags.configure_logging(ns, "kubelet", node=node)
    except ValueError as exc:  # both ConfigErrors are ValueErrors
        return _serving.usage_error("kubelet", exc)
    # Not for the process runtime: measured here, uvloop's process spawning in a process with
    # busy gRPC threads segfaults the child before exec in about 1 of 15 spawns (39 of 600);
    # asyncio's own subprocess support had none in the same test.
    uvloop = configs[0].runtime == "simulated"
    return _serving.run("kubelet", lambda: _serve(configs, servers, tls, metrics), uvloop=uvloop)


async def _serve(
    configs: list[cfg.KubeletConfig],
    servers: _kubeconfig.Target,
    tls: ServerTLS | None,
    metrics: str,
) -> None:
    async with Client(
        list(servers.servers), channel_factory=transport.named_channels("kubelet", servers.tls())
    ) as client:
        kubelet = Kubelet(configs, client, tls=tls)
        await _serving.serve(kubelet, grace=_serving.STOP_GRACE, metrics=metrics)
