"""The pod overlay: what one host's proxy listens on so that pod IPs of *other* hosts answer
here. Pure: no sockets, no asyncio, no client.

Pod IPs are loopback addresses, so a process on host B that connects to 127.244.2.5:8080 (a pod
of a node on host C) would reach nothing: the address is B's own loopback. For every running
pod of a remote node, the proxies of B listen on that pod IP and each `containerPort` it
declares (TCP or UDP) and forward through the tunnel of the pod's node (`k8semu.proxy.tunnel`;
UDP as framed datagrams). Those
listeners are ordinary `PortRule`s of the proxier's table, shared between the proxies of one
host with SO_REUSEPORT like ClusterIPs, keyed `(namespace, "pod/<name>", port, protocol,
"pod")`:
a Service cannot be named "pod/..." so they never mix with Service ports in the metrics.

Where a node's tunnel is: the Node annotation `k8semu.io/tunnel-endpoint: <ip>:<port>`, which
each proxy started with a tunnel port writes on its own Node; without one, the node's
InternalIP and this proxy's own tunnel port. "Remote" means that address is not one of this
host's (the caller decides, see `TunnelDialer.is_remote`), so a cluster whose nodes are all on
this host gets no overlay rule at all.

Not covered: SCTP, ports a pod does not declare, hostNetwork pods (their IP is their node's).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping

from k8semu.pb.api.v1 import core_pb2
from k8semu.proxy.table import Endpoint, ListenAddress, PortKey, PortRule

TUNNEL_ENDPOINT_ANNOTATION = "k8semu.io/tunnel-endpoint"
POD_SCOPE = "pod"
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_DONE_PHASES = frozenset(("Succeeded", "Failed"))


def internal_ip(node: core_pb2.Node) -> str:
    for a in node.status.addresses:
        if a.type == "InternalIP":
            return a.address
    return ""


def parse_endpoint(text: str) -> tuple[str, int] | None:
    """`10.0.0.2:10262` -> ("10.0.0.2", 10262); None when it is not IPv4:port."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        return None
    try:
        ip = ipaddress.IPv4Address(host)
        port = int(port_text)
    except ValueError:
        return None
    if not 0 < port < 65536:
        return None
    return str(ip), port


def tunnel_endpoint(node: core_pb2.Node, default_port: int) -> tuple[str, int] | None:
    """Where `node`'s tunnel listens: its annotation, else InternalIP:`default_port`; None
    when neither is known."""
    published = node.metadata.annotations.get(TUNNEL_ENDPOINT_ANNOTATION, "")
    if published:
        found = parse_endpoint(published)
        if found is not None:
            return found
    ip = internal_ip(node)
    if ip and default_port:
        return ip, default_port
    return None


def _pod_ip(pod: core_pb2.Pod) -> str:
    text = pod.status.pod_ip
    try:
        ip = ipaddress.IPv4Address(text)
    except ValueError:
        return ""
    return text if ip in _LOOPBACK else ""


def pod_rules(
    pods: Iterable[core_pb2.Pod],
    nodes: Mapping[str, core_pb2.Node],
    *,
    is_remote: Callable[[core_pb2.Node], bool],
) -> dict[PortKey, PortRule]:
    """One rule per declared TCP or UDP port of every running pod whose node `is_remote`. A
    pod without an IP yet, finished, on an unknown node or on a hostNetwork gets none."""
    table: dict[PortKey, PortRule] = {}
    seen: set[tuple[str, str, int]] = set()
    for pod in pods:
        spec = pod.spec
        if not spec.node_name or spec.host_network or pod.status.phase in _DONE_PHASES:
            continue
        ip = _pod_ip(pod)
        node = nodes.get(spec.node_name)
        if not ip or node is None or not is_remote(node):
            continue
        for container in spec.containers:
            for port in container.ports:
                number = port.container_port
                protocol = port.protocol or "TCP"
                if protocol not in ("TCP", "UDP") or not 0 < number < 65536:
                    continue
                if (protocol, ip, number) in seen:
                    continue
                seen.add((protocol, ip, number))
                key = PortKey(
                    pod.metadata.namespace,
                    f"pod/{pod.metadata.name}",
                    port.name or str(number),
                    protocol,
                    POD_SCOPE,
                )
                table[key] = PortRule(
                    key,
                    (ListenAddress(protocol, ip, number, True),),
                    (Endpoint(ip, number, spec.node_name),),
                    None,
                )
    return table
