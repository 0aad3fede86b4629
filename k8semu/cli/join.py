"""`k8semu join`: add this host to a running cluster as a worker node (a kubelet and a proxy).

    k8semu join --server HOST:PORT[,HOST:PORT] [--node-name N] [--node-ip IP] [--detach] ...

The kubelet registers Node N with the API servers given; the proxy serves that node's
NodePorts on its IP and, with the tunnel on (--tunnel-port, default 10262 unless the node IP
is a loopback one), carries pod traffic to and from the other hosts (docs/multihost.md).
Like `k8semu up`, it waits until the Node is Ready, then supervises in the
foreground (Ctrl-C stops both, and the node's pods) or, with --detach, leaves them running;
`k8semu status/down --state-dir DIR` work on it (default state dir: that of cluster
`join-<node name>`). Exit status as `k8semu up`'s.

    k8semu join --server HOST:HTTPS_PORT --token ID.SECRET
                --discovery-token-ca-cert-hash sha256:HEX ...

is kubeadm's discovery and TLS bootstrap (`k8semu token create --print-join-command` prints
it): the API servers and the CA come from kube-public/cluster-info, read with the token and
checked against the pinned CA hash (k8semu/cluster/clusterinfo.py), and the node's
certificates from CertificateSigningRequests (k8semu/cluster/joincerts.py); nothing is
written when either fails.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from k8semu import pki
from k8semu.cli._cluster import available_commands, run_launcher, say
from k8semu.cluster.config import (
    DEFAULT_CAPACITY,
    DEFAULT_KUBELET_PORT,
    DEFAULT_PROXY_PORT,
    DEFAULT_TUNNEL_PORT,
    RUNTIMES,
    LauncherSpec,
    NodeSpec,
    TimingsSpec,
    default_tunnel_port,
    parse_config,
)
from k8semu.cluster.errors import ClusterConfigError
from k8semu.cluster.joincerts import JoinError
from k8semu.cluster.launcher import Launcher, StopFlag
from k8semu.cluster.plan import NodeContext, Plan, plan_node, secured
from k8semu.cluster.state import default_state_dir

if TYPE_CHECKING:
    from k8semu.cluster.certs import PKIPaths
    from k8semu.cluster.clusterinfo import ClusterInfo

#: How long join waits for its CertificateSigningRequests to be approved and signed.
CSR_TIMEOUT_S = 60.0

_CA_DIR_HELP = (
    "a copy of the cluster CA (ca.crt and ca.key from <state-dir>/pki of the host that ran"
    " `k8semu up`): this node's certificates are signed with it (a TLS cluster needs it;"
    " without it the node talks plain text)"
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu join",
        description="Start a kubelet and a proxy on this host against a running control plane.",
    )
    p.add_argument(
        "--server",
        required=True,
        help="API servers, HOST:PORT[,HOST:PORT]; with --token: one API server's HTTPS (REST)"
        " address, the others are discovered",
    )
    p.add_argument("--ca-dir", type=Path, help=_CA_DIR_HELP)
    p.add_argument(
        "--token",
        help="a bootstrap token ID.SECRET (`k8semu token create`): discovery reads the cluster"
        " CA and API servers with it (kubeadm's); needs --discovery-token-ca-cert-hash",
    )
    p.add_argument(
        "--discovery-token-ca-cert-hash",
        metavar="sha256:HEX",
        help="the cluster CA's public key hash (`k8semu token create --print-join-command`"
        " prints it): discovery stops unless the server's CA has it",
    )
    p.add_argument("--node-name", help="the Node's name (default: this host's name)")
    p.add_argument(
        "--node-ip",
        help="this node's IP: the kubelet, NodePorts and pods bind it (default: the address"
        " this host reaches the first API server from)",
    )
    p.add_argument("--runtime", choices=RUNTIMES, default="process")
    p.add_argument(
        "--capacity",
        default=",".join(f"{k}={v}" for k, v in DEFAULT_CAPACITY),
        help="NAME=QUANTITY,... (default: %(default)s)",
    )
    p.add_argument("--node-labels", default="", help="k=v,... labels of the Node")
    p.add_argument("--kubelet-port", type=int, default=DEFAULT_KUBELET_PORT)
    p.add_argument("--proxy-port", type=int, default=DEFAULT_PROXY_PORT)
    p.add_argument(
        "--tunnel-port",
        type=int,
        help="the proxy's cross-host tunnel on NODE_IP:PORT; 0 turns it off (default:"
        f" {DEFAULT_TUNNEL_PORT}, or 0 for a loopback node IP; see docs/multihost.md)",
    )
    p.add_argument("--no-proxy", action="store_true", help="start the kubelet only")
    p.add_argument(
        "-f",
        "--config",
        type=Path,
        metavar="FILE",
        help="take the timings (node lease, status updates) and launcher settings from this"
        " cluster config",
    )
    p.add_argument("--state-dir", type=Path, metavar="DIR")
    p.add_argument("-d", "--detach", action="store_true", help="return once the node is Ready")
    return p


def _pairs(text: str, flag: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ClusterConfigError(flag, f"{part!r}: expected KEY=VALUE")
        out.append((key, value))
    return tuple(out)


# Config field (of the one node join builds) -> the flag it came from, for error messages.
_FLAGS = {
    "nodes[0].name": "--node-name",
    "nodes[0].nodeIP": "--node-ip",
    "nodes[0].runtime": "--runtime",
    "nodes[0].capacity": "--capacity",
    "nodes[0].labels": "--node-labels",
    "nodes[0].kubeletPort": "--kubelet-port",
    "nodes[0].proxyPort": "--proxy-port",
    "nodes[0].tunnelPort": "--tunnel-port",
}


def _as_flags(message: str) -> str:
    for field, flag in _FLAGS.items():
        message = message.replace(field, flag)
    return message


def _local_address(server: str) -> str:
    """The address this host uses to reach ``server`` (no packet is sent: a UDP connect only
    picks the route)."""
    host, _, port = server.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host.strip("[]"), int(port)))
        return str(s.getsockname()[0])


def _discover(ns: argparse.Namespace, servers: tuple[str, ...]) -> ClusterInfo | None:
    """With --token: the cluster-info of the one HTTPS address given, whose CA has the
    pinned hash (and is --ca-dir's, when given); None without --token."""
    from k8semu.apiserver.auth import bootstrap
    from k8semu.cluster import clusterinfo

    if ns.token is None:
        if ns.discovery_token_ca_cert_hash is not None:
            raise ClusterConfigError(clusterinfo.PIN_FLAG, "given without --token")
        return None
    if not bootstrap.TOKEN.fullmatch(ns.token):
        raise ClusterConfigError("--token", "expected ID.SECRET ([a-z0-9]{6}.[a-z0-9]{16})")
    if ns.discovery_token_ca_cert_hash is None:
        raise ClusterConfigError(clusterinfo.PIN_FLAG, "required with --token")
    if len(servers) != 1:
        raise ClusterConfigError("--server", "with --token: one API server's HTTPS address")
    try:
        pin = clusterinfo.parse_pin(ns.discovery_token_ca_cert_hash)
        info = clusterinfo.discover(servers[0], ns.token, pin)
    except (ValueError, clusterinfo.DiscoveryError) as exc:
        raise ClusterConfigError("discovery", str(exc)) from None
    if ns.ca_dir is not None and pki.pem_bytes(ns.ca_dir / "ca.crt") != info.ca:
        raise ClusterConfigError("--ca-dir", "its ca.crt is not the discovered cluster CA")
    return info


def _certificates(
    ns: argparse.Namespace, info: ClusterInfo | None, state_dir: Path, node: NodeSpec,
    servers: tuple[str, ...],
) -> PKIPaths | None:  # fmt: skip
    """The node's certificates: signed with --ca-dir's CA, or by CertificateSigningRequests
    (--token); None for a plain cluster (neither flag)."""
    from k8semu.cluster import certs, joincerts

    if ns.ca_dir is not None:
        return certs.ensure_node(ns.ca_dir, state_dir, node.name, node.node_ip, servers)
    if info is None:
        return None
    return joincerts.request_node(info, ns.token, state_dir, node.name, node.node_ip, CSR_TIMEOUT_S)


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    servers = tuple(s.strip() for s in ns.server.split(",") if s.strip())
    try:
        if not servers or any(not re.fullmatch(r"[^\s:]+:\d+", s) for s in servers):
            raise ClusterConfigError("--server", f"{ns.server!r}: expected HOST:PORT[,HOST:PORT]")
        info = _discover(ns, servers)
        servers = info.servers if info is not None else servers
        timings, launcher_spec = TimingsSpec(), LauncherSpec()
        if ns.config is not None:
            config = parse_config(ns.config.read_text(encoding="utf-8"), source=str(ns.config))
            timings, launcher_spec = config.timings, config.launcher
        name = ns.node_name or re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower())
        node_ip = ns.node_ip or _local_address(servers[0])
        node = NodeSpec(
            name=name,
            host="",
            node_ip=node_ip,
            runtime=ns.runtime,
            capacity=_pairs(ns.capacity, "--capacity"),
            labels=_pairs(ns.node_labels, "--node-labels"),
            kubelet_port=ns.kubelet_port,
            proxy_port=ns.proxy_port,
            tunnel_port=default_tunnel_port(node_ip) if ns.tunnel_port is None else ns.tunnel_port,
            proxy=not ns.no_proxy,
        )
    except ClusterConfigError as exc:
        print(f"k8semu join: {_as_flags(str(exc))}", file=sys.stderr)
        return 2
    except (OSError, pki.PKIError) as exc:
        print(f"k8semu join: {exc}", file=sys.stderr)
        return 2
    cluster = f"join-{node.name}"
    state_dir = (ns.state_dir or default_state_dir(cluster, os.environ)).resolve()
    context = NodeContext(servers=servers, timings=timings)
    components = plan_node(node, context, state_dir, sys.executable)
    try:
        paths = _certificates(ns, info, state_dir, node, servers)
    except (pki.PKIError, OSError) as exc:
        print(f"k8semu join: {'--ca-dir: ' if ns.ca_dir else ''}{exc}", file=sys.stderr)
        return 2
    except JoinError as exc:
        print(f"k8semu join: {exc}", file=sys.stderr)
        return 1
    if paths is not None:
        components = [secured(c, paths) for c in components]
    commands = available_commands()
    missing = sorted({c.command for c in components if c.command not in commands})
    if missing:
        print(
            f"k8semu join: this install has no `k8semu {missing[0]}` command yet", file=sys.stderr
        )
        return 1
    plan = Plan(
        cluster=cluster,
        host="",
        components=tuple(components),
        api_servers=servers,
        launcher=launcher_spec,
        tls=paths is not None,
    )
    stop = StopFlag()
    launcher = Launcher(plan, state_dir, say=say, stop=stop, detach=ns.detach)
    return run_launcher(launcher, stop, "k8semu join")
