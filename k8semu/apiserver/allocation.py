"""Service address allocation: cluster IPs, node ports and load-balancer IPs.

Kubernetes allocates a Service's clusterIP and nodePorts in the API server; it leaves the
load-balancer address to a cloud controller. We allocate all three here, from three ranges
(`ServiceRanges`, the `--service-cluster-ip-range`, `--service-node-port-range` and
`--load-balancer-ip-pool` flags).

The allocation state lives in the store, one key per allocated value, whose value names the
holder (`<namespace>/<name>`):

    /registry/allocations/clusterips/<ip>
    /registry/allocations/nodeports/<port>
    /registry/allocations/loadbalancerips/<ip>

The servicer writes these keys in the SAME Txn as the Service (`create_revision == 0` on every
new key), and deletes them in the same Txn that deletes the Service or drops the value, so a
failed or crashed request never leaks an address and two API servers can never hand out the
same one. Automatic picks are random and need no read; when a pick loses (the Txn's compare
fails) the taken values are read and the pick is made again from what is free.

This module is pure: it decides what a Service holds and needs (`assign`), which keys those
are (`held`), and says why a request is wrong. No I/O.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import grpc

from k8semu.apiserver.errors import Invalid, StatusError
from k8semu.pb.api.v1 import core_pb2

CLUSTER_IP_PREFIX = b"/registry/allocations/clusterips/"
NODE_PORT_PREFIX = b"/registry/allocations/nodeports/"
LB_IP_PREFIX = b"/registry/allocations/loadbalancerips/"
PREFIXES = (CLUSTER_IP_PREFIX, NODE_PORT_PREFIX, LB_IP_PREFIX)
HEADLESS = "None"
_NEEDS_NODE_PORTS = ("NodePort", "LoadBalancer")


class RangeFull(StatusError):
    """RESOURCE_EXHAUSTED: no free address or port is left in a range."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def parse_cidr(text: str, *, flag: str) -> ipaddress.IPv4Network:
    """An IPv4 CIDR with room for at least one address besides network, .1 and broadcast."""
    try:
        net = ipaddress.IPv4Network(text.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{flag}: invalid IPv4 CIDR {text!r}: {exc}") from None
    if net.num_addresses < 8:
        raise ValueError(f"{flag}: {text} is too small (at least a /29)")
    return net


def parse_port_range(text: str, *, flag: str) -> tuple[int, int]:
    """`30000-32767` -> (30000, 32767), inclusive."""
    low, sep, high = text.strip().partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise ValueError(f"{flag}: invalid port range {text!r}: want FIRST-LAST") from None
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"{flag}: invalid port range {text!r}: want 1 <= FIRST <= LAST <= 65535")
    return first, last


_DEFAULT_CLUSTER_IPS = ipaddress.IPv4Network("127.96.0.0/16")
_DEFAULT_LB_IPS = ipaddress.IPv4Network("127.100.0.0/24")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRanges:
    cluster_ips: ipaddress.IPv4Network = _DEFAULT_CLUSTER_IPS
    node_ports: tuple[int, int] = (30000, 32767)
    load_balancer_ips: ipaddress.IPv4Network = _DEFAULT_LB_IPS

    @property
    def kubernetes_ip(self) -> str:
        """The first address of the range: the `kubernetes` Service's, never picked at random."""
        return str(self.cluster_ips.network_address + 1)

    def node_port_text(self) -> str:
        return f"{self.node_ports[0]}-{self.node_ports[1]}"


DEFAULT_RANGES = ServiceRanges()


class Claim(NamedTuple):
    """A value a Service takes in this write: its key must not exist yet."""

    key: bytes
    field: str  # where the value sits in the Service, for error messages
    value: str
    requested: bool  # asked for by the client (taken -> Invalid) or picked (taken -> pick again)

    def taken_error(self) -> str:
        what = "port" if self.key.startswith(NODE_PORT_PREFIX) else "IP"
        shown = self.value if what == "port" else f'"{self.value}"'
        return f"{self.field}: Invalid value: {shown}: provided {what} is already allocated"


@dataclass(slots=True)
class Taken:
    """Values known to be allocated (read after a pick lost a race), per key prefix."""

    values: dict[bytes, set[str]] = field(default_factory=dict)

    def of(self, prefix: bytes) -> set[str]:
        return self.values.setdefault(prefix, set())


class Assignment(NamedTuple):
    claims: list[Claim]  # new keys, created with the write
    releases: list[bytes]  # keys the write deletes (values the Service no longer holds)


def owner(namespace: str, name: str) -> bytes:
    return f"{namespace}/{name}".encode()


def ip_key(prefix: bytes, ip: str) -> bytes:
    return prefix + ip.encode()


def port_key(port: int) -> bytes:
    return NODE_PORT_PREFIX + str(port).encode()


def needs_cluster_ip(svc: core_pb2.Service) -> bool:
    return svc.spec.cluster_ip != HEADLESS


def needs_node_ports(svc: core_pb2.Service) -> bool:
    return svc.spec.type in _NEEDS_NODE_PORTS


def is_load_balancer(svc: core_pb2.Service) -> bool:
    return svc.spec.type == "LoadBalancer"


def held(svc: core_pb2.Service) -> list[bytes]:
    """The allocation keys a stored Service holds (released when it is deleted)."""
    keys: list[bytes] = []
    if svc.spec.cluster_ip and svc.spec.cluster_ip != HEADLESS:
        keys.append(ip_key(CLUSTER_IP_PREFIX, svc.spec.cluster_ip))
    keys.extend(port_key(p.node_port) for p in svc.spec.ports if p.node_port)
    if is_load_balancer(svc):
        keys.extend(ip_key(LB_IP_PREFIX, i.ip) for i in svc.status.load_balancer.ingress if i.ip)
    return list(dict.fromkeys(keys))


def keep_allocated(new: core_pb2.Service, old: core_pb2.Service) -> None:
    """An update that leaves allocated values unset keeps the stored ones (Kubernetes'
    patchAllocatedValues), so `apply` with a manifest that never named them changes nothing.
    status.loadBalancer is the API server's: a client's write of it is replaced."""
    if needs_cluster_ip(new) and not new.spec.cluster_ip and not new.spec.cluster_ips:
        new.spec.cluster_ip = old.spec.cluster_ip
        new.spec.cluster_ips[:] = old.spec.cluster_ips
    if needs_node_ports(new) and needs_node_ports(old):
        for port in new.spec.ports:
            if port.node_port:
                continue
            for before in old.spec.ports:
                if (before.port, before.protocol) == (
                    port.port,
                    port.protocol,
                ) and before.node_port:
                    port.node_port = before.node_port
                    break
    new.status.ClearField("load_balancer")
    if is_load_balancer(new) and is_load_balancer(old):
        new.status.load_balancer.CopyFrom(old.status.load_balancer)


def _ip_problems(svc: core_pb2.Service, ranges: ServiceRanges) -> Iterator[str]:
    spec = svc.spec
    if len(spec.cluster_ips) > 1:
        yield (
            f"spec.clusterIPs: Too many: {len(spec.cluster_ips)}: must have at most 1 items"
            " (single-stack IPv4 only)"
        )
    if spec.cluster_ips and spec.cluster_ip and spec.cluster_ips[0] != spec.cluster_ip:
        yield (
            f'spec.clusterIPs[0]: Invalid value: "{spec.cluster_ips[0]}": must match `clusterIP`'
        )
    ip = spec.cluster_ip
    if ip == HEADLESS:
        if needs_node_ports(svc):
            yield (
                f"spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for"
                f" {spec.type} services"
            )
    elif ip:
        if (addr := _ipv4(ip)) is None:
            yield (
                f'spec.clusterIP: Invalid value: "{ip}": must be a valid IPv4 address'
                ' (e.g. 10.9.8.7) or "None"'
            )
        elif not _usable(addr, ranges.cluster_ips):
            yield (
                f'spec.clusterIP: Invalid value: "{ip}": provided IP is not in the valid'
                f" range. The range of valid IPs is {ranges.cluster_ips}"
            )
    if lb := spec.load_balancer_ip:
        if (addr := _ipv4(lb)) is None:
            yield f'spec.loadBalancerIP: Invalid value: "{lb}": must be a valid IPv4 address'
        elif not _usable(addr, ranges.load_balancer_ips):
            yield (
                f'spec.loadBalancerIP: Invalid value: "{lb}": provided IP is not in the'
                f" load-balancer pool {ranges.load_balancer_ips}"
            )


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def _usable(addr: ipaddress.IPv4Address, net: ipaddress.IPv4Network) -> bool:
    """In `net`, and neither its network nor its broadcast address."""
    return addr in net and addr not in (net.network_address, net.broadcast_address)


def _port_problems(svc: core_pb2.Service, ranges: ServiceRanges) -> Iterator[str]:
    first, last = ranges.node_ports
    seen: set[int] = set()
    for i, port in enumerate(svc.spec.ports):
        if not port.node_port:
            continue
        where = f"spec.ports[{i}].nodePort"
        if not needs_node_ports(svc):
            yield f"{where}: Forbidden: may not be used when `type` is '{svc.spec.type}'"
        elif not first <= port.node_port <= last:
            yield (
                f"{where}: Invalid value: {port.node_port}: provided port is not in the valid"
                f" range. The range of valid ports is {first}-{last}"
            )
        elif port.node_port in seen:
            yield f"{where}: Duplicate value: {port.node_port}"
        seen.add(port.node_port)


def check(svc: core_pb2.Service, ranges: ServiceRanges, *, described: str) -> None:
    """Invalid naming every requested value that cannot be had (before any store access)."""
    problems = [*_ip_problems(svc, ranges), *_port_problems(svc, ranges)]
    if problems:
        raise Invalid(f"{described}: {'; '.join(problems)}")


class Allocator:
    """Picks values for a Service. `rng` is injectable so tests can be deterministic."""

    def __init__(self, ranges: ServiceRanges, rng: random.Random | None = None) -> None:
        self.ranges = ranges
        self.rng = rng or random.Random()

    def _pick_ip(
        self, net: ipaddress.IPv4Network, taken: set[str], reserved: int, what: str
    ) -> str:
        """A random free address of `net`, skipping the network address, the first `reserved`
        hosts after it and the broadcast address."""
        base = int(net.network_address)
        low, high = base + 1 + reserved, int(net.broadcast_address) - 1
        size = high - low + 1
        if len(taken) < size // 2:
            for _ in range(64):
                ip = str(ipaddress.IPv4Address(self.rng.randint(low, high)))
                if ip not in taken:
                    return ip
        free = [n for n in range(low, high + 1) if str(ipaddress.IPv4Address(n)) not in taken]
        if not free:
            raise RangeFull(f"failed to allocate {what}: range {net} is full")
        return str(ipaddress.IPv4Address(self.rng.choice(free)))

    def _pick_port(self, taken: set[str]) -> int:
        first, last = self.ranges.node_ports
        size = last - first + 1
        if len(taken) < size // 2:
            for _ in range(64):
                port = self.rng.randint(first, last)
                if str(port) not in taken:
                    return port
        free = [p for p in range(first, last + 1) if str(p) not in taken]
        if not free:
            raise RangeFull(f"failed to allocate a node port: range {first}-{last} is full")
        return self.rng.choice(free)

    def assign(
        self,
        svc: core_pb2.Service,
        old: core_pb2.Service | None,
        taken: Taken,
        *,
        described: str,
    ) -> Assignment:
        """Fill in `svc`'s clusterIP, nodePorts and load-balancer ingress IP (in place) and
        say which keys the write creates and deletes. `old` is the stored Service on update
        (its values, kept by `keep_allocated`, are not claimed again)."""
        check(svc, self.ranges, described=described)
        before = set(held(old)) if old is not None else set()
        claims: list[Claim] = []
        spec = svc.spec
        try:
            if not spec.cluster_ip and spec.cluster_ips:
                spec.cluster_ip = spec.cluster_ips[0]
            if not spec.cluster_ip:
                spec.cluster_ip = self._pick_ip(
                    self.ranges.cluster_ips, taken.of(CLUSTER_IP_PREFIX), 1, "a cluster IP"
                )
                claims.append(
                    Claim(
                        ip_key(CLUSTER_IP_PREFIX, spec.cluster_ip),
                        "spec.clusterIP",
                        spec.cluster_ip,
                        False,
                    )
                )
            elif spec.cluster_ip != HEADLESS:
                k = ip_key(CLUSTER_IP_PREFIX, spec.cluster_ip)
                if k not in before:
                    claims.append(Claim(k, "spec.clusterIP", spec.cluster_ip, True))
            spec.cluster_ips[:] = [spec.cluster_ip]
            if needs_node_ports(svc):
                used = taken.of(NODE_PORT_PREFIX)
                mine = {str(p.node_port) for p in spec.ports if p.node_port}
                for i, port in enumerate(spec.ports):
                    where = f"spec.ports[{i}].nodePort"
                    if port.node_port:
                        k = port_key(port.node_port)
                        if k not in before:
                            claims.append(Claim(k, where, str(port.node_port), True))
                        continue
                    port.node_port = self._pick_port(used | mine)
                    mine.add(str(port.node_port))
                    claims.append(
                        Claim(port_key(port.node_port), where, str(port.node_port), False)
                    )
            if is_load_balancer(svc):
                ingress = svc.status.load_balancer.ingress
                want = spec.load_balancer_ip
                if ingress and ingress[0].ip and (not want or ingress[0].ip == want):
                    pass  # kept from the stored Service
                else:
                    svc.status.load_balancer.ClearField("ingress")
                    requested = bool(want)
                    ip = want or self._pick_ip(
                        self.ranges.load_balancer_ips,
                        taken.of(LB_IP_PREFIX),
                        0,
                        "a load-balancer IP",
                    )
                    svc.status.load_balancer.ingress.add(ip=ip)
                    k = ip_key(LB_IP_PREFIX, ip)
                    if k not in before:
                        field_name = (
                            "spec.loadBalancerIP"
                            if requested
                            else "status.loadBalancer.ingress[0].ip"
                        )
                        claims.append(Claim(k, field_name, ip, requested))
            else:
                svc.status.ClearField("load_balancer")
        except RangeFull as exc:
            raise RangeFull(f"{described}: {exc.message}") from None
        after = set(held(svc))
        releases = [k for k in (held(old) if old is not None else []) if k not in after]
        return Assignment(claims, releases)
