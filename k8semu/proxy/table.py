"""The service table: what one node's proxy must listen on and forward to, computed from
Services and Endpoints. Pure: no sockets, no asyncio, no client.

A Service port becomes one `PortRule` with the addresses to listen on and the ready endpoints
(IP and the resolved port number) to forward to. Addresses:

- every ClusterIP (`spec.clusterIP`, `spec.clusterIPs`) on the port — shared by the proxies of
  all nodes on a host (SO_REUSEPORT); a headless Service (clusterIP "None") gets none;
- `spec.externalIPs` and LoadBalancer ingress IPs (`status.loadBalancer.ingress[].ip`) on the
  port — shared as well;
- the NodePort (NodePort and LoadBalancer Services) on this node's IP only — exclusive.

Shared addresses are listened on only while the rule has a ready endpoint (`rules_for`).

Endpoints are matched to a Service port by name, as Kubernetes does: the Endpoints object
already carries the resolved target port numbers (`subsets[].ports[].name == port.name`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from k8semu.pb.api.v1 import core_pb2

DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds: Kubernetes' sessionAffinityConfig default
AFFINITY_TIMEOUT_ANNOTATION = "proxy.k8semu.io/session-affinity-timeout-seconds"
LOCAL = "Local"  # the traffic policy value that keeps traffic on the node
EXTERNAL_SCOPE = "external"


@dataclass(frozen=True, slots=True)
class PortKey:
    """One Service port: the unit of load balancing and of metrics. `scope` is "" or, when a
    traffic policy gives the external addresses other endpoints, "external" for those."""

    namespace: str
    service: str
    port_name: str
    protocol: str  # TCP or UDP
    scope: str = ""

    def __str__(self) -> str:
        name = f"{self.namespace}/{self.service}"
        port = f":{self.port_name}" if self.port_name else ""
        text = f"{name}{port}/{self.protocol}"
        return f"{text} ({self.scope})" if self.scope else text


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A ready endpoint address; `node_name` (may be empty) says where the pod runs."""

    ip: str
    port: int
    node_name: str = ""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    protocol: str
    ip: str
    port: int
    shared: bool  # SO_REUSEPORT: ClusterIP / external / LoadBalancer; NodePort is not

    def __str__(self) -> str:
        return f"{self.protocol} {self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class PortRule:
    key: PortKey
    listen: tuple[ListenAddress, ...]
    endpoints: tuple[Endpoint, ...]
    affinity_timeout: float | None  # None: no session affinity


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def affinity_timeout(svc: core_pb2.Service) -> float | None:
    """Seconds of ClientIP stickiness, or None when the Service has no session affinity.

    `spec.sessionAffinityConfig.clientIP.timeoutSeconds` is read when the schema has it; the
    annotation `proxy.k8semu.io/session-affinity-timeout-seconds` stands in until then.
    """
    if svc.spec.session_affinity != "ClientIP":
        return None
    timeout = float(DEFAULT_AFFINITY_TIMEOUT)
    fields = svc.spec.DESCRIPTOR.fields_by_name
    if "session_affinity_config" in fields:
        config = getattr(svc.spec, "session_affinity_config", None)
        client_ip = getattr(config, "client_ip", None)
        seconds = getattr(client_ip, "timeout_seconds", 0)
        if isinstance(seconds, int) and seconds > 0:
            timeout = float(seconds)
    raw = svc.metadata.annotations.get(AFFINITY_TIMEOUT_ANNOTATION, "")
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if value > 0:
            timeout = value
    return timeout


def endpoints_for(
    port: core_pb2.ServicePort, eps: core_pb2.Endpoints | None, protocol: str
) -> tuple[Endpoint, ...]:
    """Ready addresses of `eps` for the Service port named like `port`, in a stable order."""
    if eps is None:
        return ()
    found: list[Endpoint] = []
    seen: set[tuple[str, int]] = set()
    for subset in eps.subsets:
        for ep_port in subset.ports:
            if ep_port.name != port.name or (ep_port.protocol or "TCP") != protocol:
                continue
            if not 0 < ep_port.port < 65536:
                continue
            for addr in subset.addresses:
                if not _is_ipv4(addr.ip) or (addr.ip, ep_port.port) in seen:
                    continue
                seen.add((addr.ip, ep_port.port))
                node = addr.node_name if addr.HasField("node_name") else ""
                found.append(Endpoint(addr.ip, ep_port.port, node))
    found.sort(key=lambda e: (ipaddress.IPv4Address(e.ip), e.port))
    return tuple(found)


def rules_for(
    svc: core_pb2.Service,
    eps: core_pb2.Endpoints | None,
    *,
    node_ip: str,
    node_name: str = "",
) -> list[PortRule]:
    """The rules of one Service on the node named `node_name` whose IP is `node_ip`.

    Traffic policies: with `internalTrafficPolicy: Local` the ClusterIPs forward only to
    endpoints on this node (Endpoints `nodeName`); with `externalTrafficPolicy: Local` the
    NodePort, external and load-balancer IPs do. When the two sets differ, the external
    addresses get a rule of their own (scope "external").

    A shared address (ClusterIP, external, load-balancer IP: one SO_REUSEPORT listener for
    all the host's proxies, the kernel handing each new connection to any of them) is only
    listened on by a proxy that has a ready endpoint for it; its rule is kept, with the
    NodePort only or no address at all. Otherwise a proxy that has not yet seen a new
    Service's Endpoints (or has no local one under a `Local` policy) takes some of the
    connections the others could serve and closes them: clients of a ready Service got
    resets. With no endpoint anywhere nothing listens and connections are refused, as
    kube-proxy's REJECT rule does. A NodePort is this node's alone: it stays bound (the
    port stays reserved, and a taken one is reported) and closes what it accepts.
    """
    spec = svc.spec
    cluster_ips = [ip for ip in (spec.cluster_ip, *spec.cluster_ips) if _is_ipv4(ip)]
    shared_ips = [ip for ip in spec.external_ips if _is_ipv4(ip)]
    if spec.type == "LoadBalancer":
        shared_ips += [i.ip for i in svc.status.load_balancer.ingress if _is_ipv4(i.ip)]
    node_ports = spec.type in ("NodePort", "LoadBalancer")
    internal_local = spec.internal_traffic_policy == LOCAL
    external_local = spec.external_traffic_policy == LOCAL
    timeout = affinity_timeout(svc)
    ns, name = svc.metadata.namespace, svc.metadata.name
    rules = []
    for port in spec.ports:
        protocol = port.protocol or "TCP"
        if protocol not in ("TCP", "UDP") or not 0 < port.port < 65536:
            continue
        every = endpoints_for(port, eps, protocol)
        local = tuple(e for e in every if node_name and e.node_name == node_name)
        internal_eps = local if internal_local else every
        external_eps = local if external_local else every
        internal: dict[tuple[str, int], ListenAddress] = {}
        for ip in dict.fromkeys(cluster_ips):
            internal[(ip, port.port)] = ListenAddress(protocol, ip, port.port, True)
        external: dict[tuple[str, int], ListenAddress] = {}
        for ip in dict.fromkeys(shared_ips):
            if (ip, port.port) not in internal:
                external[(ip, port.port)] = ListenAddress(protocol, ip, port.port, True)
        if node_ports and 0 < port.node_port < 65536 and _is_ipv4(node_ip):
            external[(node_ip, port.node_port)] = ListenAddress(
                protocol, node_ip, port.node_port, False
            )
        key = PortKey(ns, name, port.name, protocol)
        if internal_eps == external_eps:
            groups = [(key, {**internal, **external}, internal_eps)]
        else:
            groups = [
                (key, internal, internal_eps),
                (PortKey(ns, name, port.name, protocol, EXTERNAL_SCOPE), external, external_eps),
            ]
        for rule_key, listen, endpoints in groups:
            if listen:  # none for a headless Service: DNS only
                held = tuple(a for a in listen.values() if endpoints or not a.shared)
                rules.append(PortRule(rule_key, held, endpoints, timeout))
    return rules


def build_table(
    services: Iterable[core_pb2.Service],
    endpoints: Mapping[tuple[str, str], core_pb2.Endpoints],
    *,
    node_ip: str,
    node_name: str = "",
) -> dict[PortKey, PortRule]:
    """Every rule of every Service; `endpoints` maps (namespace, name) to the Endpoints."""
    table: dict[PortKey, PortRule] = {}
    for svc in services:
        eps = endpoints.get((svc.metadata.namespace, svc.metadata.name))
        for rule in rules_for(svc, eps, node_ip=node_ip, node_name=node_name):
            table[rule.key] = rule
    return table
