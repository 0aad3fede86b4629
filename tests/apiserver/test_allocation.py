"""The pure parts of Service allocation and of the kubernetes Endpoints: no store, no server."""

from __future__ import annotations

import ipaddress
import random

import pytest

from k8semu.apiserver import allocation
from k8semu.apiserver.allocation import (
    Allocator,
    RangeFull,
    ServiceRanges,
    Taken,
    parse_cidr,
    parse_port_range,
)
from k8semu.apiserver.bootstrap import Address, endpoints_subsets, lease_name
from k8semu.apiserver.errors import Invalid
from k8semu.pb.api.v1 import core_pb2

SMALL = ServiceRanges(
    cluster_ips=ipaddress.IPv4Network("10.0.0.0/29"),  # .1 reserved, .2-.6 to pick
    node_ports=(30000, 30002),
    load_balancer_ips=ipaddress.IPv4Network("192.168.0.0/29"),
)


def _svc(type_: str = "ClusterIP", ports: int = 1) -> core_pb2.Service:
    svc = core_pb2.Service()
    svc.metadata.name, svc.metadata.namespace = "s", "default"
    svc.spec.type = type_
    for i in range(ports):
        svc.spec.ports.add(name=f"p{i}", port=80 + i, protocol="TCP")
    return svc


def test_flags_are_parsed_with_errors_naming_the_flag() -> None:
    assert parse_port_range("30000-32767", flag="--p") == (30000, 32767)
    assert str(parse_cidr("127.96.0.0/16", flag="--c")) == "127.96.0.0/16"
    with pytest.raises(ValueError, match=r"^--p: invalid port range '9-1'"):
        parse_port_range("9-1", flag="--p")
    with pytest.raises(ValueError, match=r"^--c: invalid IPv4 CIDR '127\.96\.0\.1/16'"):
        parse_cidr("127.96.0.1/16", flag="--c")  # host bits set
    with pytest.raises(ValueError, match="too small"):
        parse_cidr("10.0.0.0/30", flag="--c")


def test_picks_skip_network_broadcast_and_the_kubernetes_ip_until_the_range_is_full() -> None:
    allocator = Allocator(SMALL, random.Random(7))
    taken = Taken()
    got = set()
    for _ in range(5):
        svc = _svc()
        claims, releases = allocator.assign(svc, None, taken, described='services "s"')
        assert releases == [] and [c.field for c in claims] == ["spec.clusterIP"]
        assert not claims[0].requested
        got.add(svc.spec.cluster_ip)
        taken.of(allocation.CLUSTER_IP_PREFIX).add(svc.spec.cluster_ip)
    assert got == {f"10.0.0.{i}" for i in range(2, 7)}
    with pytest.raises(RangeFull, match=r'^services "s": failed to allocate a cluster IP: range'):
        allocator.assign(_svc(), None, taken, described='services "s"')


def test_node_ports_are_distinct_within_a_service_and_the_range_can_fill() -> None:
    allocator = Allocator(SMALL, random.Random(1))
    svc = _svc("NodePort", ports=3)
    claims, _ = allocator.assign(svc, None, Taken(), described='services "s"')
    assert sorted(p.node_port for p in svc.spec.ports) == [30000, 30001, 30002]
    assert [c.field for c in claims[1:]] == [f"spec.ports[{i}].nodePort" for i in range(3)]
    with pytest.raises(RangeFull, match="node port: range 30000-30002 is full"):
        allocator.assign(_svc("NodePort", ports=4), None, Taken(), described='services "s"')


def test_update_keeps_values_claims_only_new_ones_and_releases_dropped_ones() -> None:
    allocator = Allocator(SMALL, random.Random(3))
    old = _svc("LoadBalancer")
    allocator.assign(old, None, Taken(), described='services "s"')
    new = _svc("LoadBalancer", ports=2)  # a manifest that never named the allocated values
    allocation.keep_allocated(new, old)
    claims, releases = allocator.assign(new, old, Taken(), described='services "s"')
    assert new.spec.cluster_ip == old.spec.cluster_ip
    assert new.spec.ports[0].node_port == old.spec.ports[0].node_port
    assert new.status.load_balancer == old.status.load_balancer
    assert [c.field for c in claims] == ["spec.ports[1].nodePort"] and releases == []
    plain = _svc("ClusterIP", ports=2)
    allocation.keep_allocated(plain, new)
    claims, releases = allocator.assign(plain, new, Taken(), described='services "s"')
    assert claims == [] and plain.spec.cluster_ip == old.spec.cluster_ip
    assert sorted(releases) == sorted(k for k in allocation.held(new) if b"clusterips" not in k)


def test_a_requested_value_is_claimed_as_requested() -> None:
    svc = _svc("NodePort")
    svc.spec.cluster_ip = "10.0.0.3"
    svc.spec.ports[0].node_port = 30001
    claims, _ = Allocator(SMALL).assign(svc, None, Taken(), described='services "s"')
    assert [(c.value, c.requested) for c in claims] == [("10.0.0.3", True), ("30001", True)]
    assert claims[1].taken_error() == (
        "spec.ports[0].nodePort: Invalid value: 30001: provided port is already allocated"
    )


def test_every_bad_request_is_named_at_once() -> None:
    svc = _svc("NodePort", ports=2)
    svc.spec.cluster_ip = "10.0.0.7"  # the broadcast address
    svc.spec.ports[0].node_port = 29999
    svc.spec.cluster_ips.extend(["10.0.0.2", "10.0.0.3"])
    with pytest.raises(Invalid) as err:
        Allocator(SMALL).assign(svc, None, Taken(), described='services "s"')
    assert err.value.message == (
        'services "s": spec.clusterIPs: Too many: 2: must have at most 1 items (single-stack'
        ' IPv4 only); spec.clusterIPs[0]: Invalid value: "10.0.0.2": must match `clusterIP`;'
        ' spec.clusterIP: Invalid value: "10.0.0.7": provided IP is not in the valid range.'
        " The range of valid IPs is 10.0.0.0/29; spec.ports[0].nodePort: Invalid value: 29999:"
        " provided port is not in the valid range. The range of valid ports is 30000-30002"
    )


def test_kubernetes_endpoints_have_one_subset_per_port_sorted() -> None:
    subsets = endpoints_subsets(
        [Address("127.0.0.2", 6443), Address("127.0.0.1", 7000), Address("127.0.0.1", 6443)]
    )
    assert [([a.ip for a in s.addresses], [p.port for p in s.ports]) for s in subsets] == [
        (["127.0.0.1", "127.0.0.2"], [6443]),
        (["127.0.0.1"], [7000]),
    ]
    assert lease_name(Address("127.0.0.1", 6443)).startswith("apiserver-")
    assert Address.parse("127.0.0.1:6443") == Address("127.0.0.1", 6443)
    assert Address.parse("nonsense") is None
