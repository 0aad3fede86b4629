"""Hosts and placement: which machine runs what, and the control plane's instances.

``hosts`` lists the machines; every store member, API server, scheduler, controller manager and
node names one of them. The checks here are the ones that need the whole config: every named
host exists, no two processes listen on one address, names are unique.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from k8semu.cluster.config import defaults
from k8semu.cluster.config.nodes import NodeSpec
from k8semu.cluster.config.store import StoreSpec
from k8semu.cluster.config.values import bracketed, check_dns_label, is_ip, is_unspecified
from k8semu.cluster.errors import ClusterConfigError

__all__ = [
    "ControlPlaneSpec",
    "HostSpec",
    "InstanceSpec",
    "check_hosts",
    "check_placement",
    "default_instances",
    "placed_store",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSpec:
    """A machine that runs part of the cluster: ``k8semu up --host NAME`` starts its share.
    ``address`` is what the others reach it at, and what its control-plane processes bind."""

    name: str
    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSpec:
    """One API server, scheduler or controller manager: its name, host and port, the
    port of its Prometheus /metrics (0: none), and an API server's REST API port (0 for the
    others)."""

    name: str
    host: str
    port: int
    metrics_port: int = 0
    rest_port: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlPlaneSpec:
    """``apiServer``, ``scheduler`` or ``controllerManager``: ``replicas`` processes, each an
    ``InstanceSpec`` (given in ``instances``, or the default names and ports). Schedulers and
    controller managers elect a leader through a Lease; API servers are all active."""

    replicas: int
    instances: tuple[InstanceSpec, ...]


def default_instances(
    key: str, prefix: str, replicas: int, host: str, port: int, stride: int
) -> tuple[InstanceSpec, ...]:
    """``<prefix>-1``.. on ``host`` at ``port``, ``port + stride``, ..."""
    if replicas < 0:
        raise ClusterConfigError(f"{key}.replicas", "must be >= 0")
    if port + (replicas - 1) * stride > 65535:
        raise ClusterConfigError(
            f"{key}.replicas", f"{replicas} replicas do not fit the default ports; list instances"
        )
    return tuple(
        InstanceSpec(
            name=f"{prefix}-{i + 1}",
            host=host,
            port=port + i * stride,
            rest_port=default_rest_port(key, port + i * stride),
        )
        for i in range(replicas)
    )


def default_rest_port(key: str, port: int) -> int:
    """An API server's REST port when its config names none (0 for other components)."""
    if key != "apiServer":
        return 0
    rest = port + defaults.DEFAULT_REST_PORT_OFFSET
    if rest > 65535:
        raise ClusterConfigError(f"{key}.instances", f"port {port}: list a restPort")
    return rest


def check_hosts(hosts: tuple[HostSpec, ...]) -> None:
    """Names are DNS labels and unique; addresses are reachable ones and unique."""
    names: dict[str, int] = {}
    addresses: dict[str, int] = {}
    for i, h in enumerate(hosts):
        check_dns_label(h.name, f"hosts[{i}].name")
        if h.name in names:
            raise ClusterConfigError(
                f"hosts[{i}].name", f"{h.name!r} is also hosts[{names[h.name]}]"
            )
        names[h.name] = i
        if not h.address or (any(c in h.address for c in " /:") and not is_ip(h.address)):
            raise ClusterConfigError(f"hosts[{i}].address", f"{h.address!r} is not an address")
        if is_unspecified(h.address):
            raise ClusterConfigError(
                f"hosts[{i}].address", f"give the address others reach it at, not {h.address}"
            )
        if h.address in addresses:
            raise ClusterConfigError(
                f"hosts[{i}].address", f"{h.address} is also hosts[{addresses[h.address]}].address"
            )
        addresses[h.address] = i


def placed_store(store: StoreSpec, hosts: tuple[HostSpec, ...]) -> StoreSpec:
    """The store with every member's ``host`` set: given, or the host whose address its
    clientURL has, or the only host."""
    by_address = {h.address: h.name for h in hosts}
    names = {h.name for h in hosts}
    placed = []
    for i, m in enumerate(store.members):
        host = m.host
        if host:
            if host not in names:
                raise ClusterConfigError(
                    f"store.members[{i}].host",
                    f"{host!r} is not a host ({', '.join(h.name for h in hosts)})",
                )
        else:
            address = m.client_address.rpartition(":")[0].strip("[]")
            host = by_address.get(address, hosts[0].name if len(hosts) == 1 else "")
            if not host:
                raise ClusterConfigError(
                    f"store.members[{i}].host",
                    f"required: no host in hosts has the address of its clientURL ({address})",
                )
        placed.append(dataclasses.replace(m, host=host))
    return dataclasses.replace(store, members=tuple(placed))


class _Placement:
    """What the placement checks have seen so far: listen addresses and names, each with the
    config field that claimed it first."""

    def __init__(self, hosts: tuple[HostSpec, ...]) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.listeners: dict[str, str] = {}
        self.names: dict[str, str] = {}

    def listen(self, address: str, path: str) -> None:
        if address in self.listeners:
            raise ClusterConfigError(path, f"{address} is also {self.listeners[address]}")
        self.listeners[address] = path

    def host(self, name: str, path: str) -> HostSpec:
        if name not in self.hosts:
            raise ClusterConfigError(path, f"{name!r} is not a host ({', '.join(self.hosts)})")
        return self.hosts[name]

    def name(self, name: str, path: str, what: str = "") -> None:
        if name in self.names:
            raise ClusterConfigError(path, f"{what}{name!r} is also {self.names[name]}")
        self.names[name] = path


def check_placement(
    hosts: tuple[HostSpec, ...],
    store: StoreSpec,
    control_plane: Sequence[tuple[str, ControlPlaneSpec]],
    nodes: tuple[NodeSpec, ...],
) -> None:
    """Every named host exists, no two processes listen on one address, and the names of the
    control-plane instances and of the nodes are unique. ``control_plane`` is (config key,
    section) of the API servers, schedulers and controller managers."""
    seen = _Placement(hosts)
    for i, m in enumerate(store.members):
        seen.listen(m.client_address, f"store.members[{i}].clientURL")
        seen.listen(m.peer_address, f"store.members[{i}].peerURL")
        if m.metrics_url:
            seen.listen(m.metrics_address, f"store.members[{i}].metricsURL")
    for key, spec in control_plane:
        for i, inst in enumerate(spec.instances):
            path = f"{key}.instances[{i}]"
            host = seen.host(inst.host, f"{path}.host")
            seen.listen(f"{bracketed(host.address)}:{inst.port}", f"{path}.port")
            if inst.metrics_port:
                where = f"{bracketed(host.address)}:{inst.metrics_port}"
                seen.listen(where, f"{path}.metricsPort")
            if inst.rest_port:
                seen.listen(f"{bracketed(host.address)}:{inst.rest_port}", f"{path}.restPort")
            seen.name(inst.name, f"{path}.name")
    api = dict(control_plane).get("apiServer")
    if api is not None and not api.instances and not store.external and nodes:
        raise ClusterConfigError("apiServer.replicas", "must be >= 1 (the nodes need one)")
    node_names = _Placement(hosts)
    for n in nodes:
        path = n.path
        seen.host(n.host, f"{path}.host")
        ip = bracketed(n.node_ip)
        if not n.hollow:  # a hollow pool's kubelet serves nothing
            seen.listen(f"{ip}:{n.kubelet_port}", f"{path}.kubeletPort")
        if n.kubelet_metrics_port:
            seen.listen(f"{ip}:{n.kubelet_metrics_port}", f"{path}.kubeletMetricsPort")
        if n.proxy and not n.hollow and n.proxy_metrics_port:
            seen.listen(f"{ip}:{n.proxy_metrics_port}", f"{path}.proxyMetricsPort")
        if n.proxy and not n.hollow:
            seen.listen(f"{ip}:{n.proxy_port}", f"{path}.proxyPort")
            if n.tunnel_port:
                seen.listen(f"{ip}:{n.tunnel_port}", f"{path}.tunnelPort")
            if n.ingress_port:
                seen.listen(f"{ip}:{n.ingress_port}", f"{path}.ingressPort")
                if n.ingress_tls_port:
                    seen.listen(f"{ip}:{n.ingress_tls_port}", f"{path}.ingressTLSPort")
        for node in n.node_names:
            node_names.name(node, f"{path}.name", "node ")
