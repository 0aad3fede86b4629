"""The service table (pure), the balancer and the tunnel's dialing decision."""

from __future__ import annotations

from typing import Any

from k8semu.api import manifest
from k8semu.client import Indexer
from k8semu.pb.api.v1 import core_pb2
from k8semu.proxy.datapath import Balancer
from k8semu.proxy.table import (
    AFFINITY_TIMEOUT_ANNOTATION,
    DEFAULT_AFFINITY_TIMEOUT,
    Endpoint,
    ListenAddress,
    PortKey,
    build_table,
    rules_for,
)
from k8semu.proxy.tunnel import TunnelDialer
from k8semu.proxy.tunnelwire import parse_connect


def _svc(spec: dict[str, Any], status: dict[str, Any] | None = None, **meta: Any) -> Any:
    return manifest.decode(
        {
            "metadata": {"name": "web", "namespace": "ns", **meta},
            "spec": spec,
            "status": status or {},
        },
        core_pb2.Service,
    )


def _eps(subsets: list[dict[str, Any]]) -> Any:
    return manifest.decode(
        {"metadata": {"name": "web", "namespace": "ns"}, "subsets": subsets}, core_pb2.Endpoints
    )


PORTS = [
    {"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080},
    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353, "nodePort": 30053},
]
SUBSETS = [
    {
        "addresses": [{"ip": "127.244.1.2", "nodeName": "n1"}, {"ip": "127.244.1.1"}],
        "notReadyAddresses": [{"ip": "127.244.1.9"}],
        "ports": [
            {"name": "http", "port": 8080},
            {"name": "dns", "port": 5353, "protocol": "UDP"},
        ],
    }
]


def test_cluster_ip_service_listens_on_cluster_ip_only() -> None:
    svc = _svc({"clusterIP": "127.96.0.10", "ports": PORTS})
    rules = {r.key.port_name: r for r in rules_for(svc, _eps(SUBSETS), node_ip="127.0.1.1")}
    assert rules["http"].listen == (ListenAddress("TCP", "127.96.0.10", 80, True),)
    assert rules["dns"].listen == (ListenAddress("UDP", "127.96.0.10", 53, True),)
    # Ready addresses only, matched by port name (and protocol), in address order.
    assert rules["http"].endpoints == (
        Endpoint("127.244.1.1", 8080),
        Endpoint("127.244.1.2", 8080, "n1"),
    )
    assert [e.port for e in rules["dns"].endpoints] == [5353, 5353]
    assert rules["http"].affinity_timeout is None


def test_node_port_binds_the_node_ip_and_load_balancer_its_ingress() -> None:
    svc = _svc(
        {"clusterIP": "127.96.0.10", "type": "LoadBalancer", "ports": PORTS[:1]},
        {"loadBalancer": {"ingress": [{"ip": "127.100.0.5"}, {"hostname": "lb.example"}]}},
    )
    (rule,) = rules_for(svc, _eps(SUBSETS), node_ip="127.0.1.2")
    assert set(rule.listen) == {
        ListenAddress("TCP", "127.96.0.10", 80, True),
        ListenAddress("TCP", "127.100.0.5", 80, True),
        ListenAddress("TCP", "127.0.1.2", 30080, False),
    }
    assert len(rule.endpoints) == 2


def test_shared_addresses_only_with_a_ready_endpoint() -> None:
    """A proxy without a ready endpoint leaves the ClusterIP and load-balancer listeners
    (shared by the host's proxies) to those that have one; it keeps its own NodePort, and
    the rule (its counters, the ingress's Frontend)."""
    svc = _svc(
        {"clusterIP": "127.96.0.10", "type": "LoadBalancer", "ports": PORTS[:1]},
        {"loadBalancer": {"ingress": [{"ip": "127.100.0.5"}]}},
    )
    not_ready = [{**SUBSETS[0], "addresses": []}]
    for eps in (None, _eps([]), _eps(not_ready)):
        (rule,) = rules_for(svc, eps, node_ip="127.0.1.2")
        assert rule.endpoints == ()
        assert rule.listen == (ListenAddress("TCP", "127.0.1.2", 30080, False),)
    cluster_ip_only = _svc({"clusterIP": "127.96.0.10", "ports": PORTS})
    rules = rules_for(cluster_ip_only, None, node_ip="127.0.1.2")
    assert [(r.key.port_name, r.listen) for r in rules] == [("http", ()), ("dns", ())]
    # internalTrafficPolicy Local: only the proxies of nodes with an endpoint hold the
    # ClusterIP, so the kernel hands its connections to those.
    local = _svc({"clusterIP": "127.96.0.10", "ports": PORTS[:1], "internalTrafficPolicy": "Local"})
    (here,) = rules_for(local, _eps(SUBSETS), node_ip="127.0.1.1", node_name="n1")
    assert here.listen == (ListenAddress("TCP", "127.96.0.10", 80, True),)
    (elsewhere,) = rules_for(local, _eps(SUBSETS), node_ip="127.0.1.2", node_name="n2")
    assert elsewhere.listen == () and elsewhere.endpoints == ()


def test_headless_and_bad_values_get_no_listener() -> None:
    headless = _svc({"clusterIP": "None", "ports": PORTS})
    assert rules_for(headless, _eps(SUBSETS), node_ip="127.0.1.1") == []
    odd = _svc({"clusterIP": "not-an-ip", "ports": [{"name": "x", "port": 1, "protocol": "SCTP"}]})
    assert rules_for(odd, None, node_ip="127.0.1.1") == []


def test_endpoints_of_another_port_name_are_not_used() -> None:
    svc = _svc({"clusterIP": "127.96.0.10", "ports": [{"name": "metrics", "port": 9090}]})
    (rule,) = rules_for(svc, _eps(SUBSETS), node_ip="127.0.1.1")
    assert rule.endpoints == ()


def test_affinity_timeout_default_and_annotation() -> None:
    spec = {"clusterIP": "127.96.0.10", "ports": PORTS[:1], "sessionAffinity": "ClientIP"}
    (rule,) = rules_for(_svc(spec), None, node_ip="127.0.1.1")
    assert rule.affinity_timeout == DEFAULT_AFFINITY_TIMEOUT
    annotated = _svc(spec, annotations={AFFINITY_TIMEOUT_ANNOTATION: "30"})
    (rule,) = rules_for(annotated, None, node_ip="127.0.1.1")
    assert rule.affinity_timeout == 30.0


def test_build_table_pairs_services_with_their_endpoints() -> None:
    svc = _svc({"clusterIP": "127.96.0.10", "ports": PORTS})
    table = build_table([svc], {("ns", "web"): _eps(SUBSETS)}, node_ip="127.0.1.1")
    assert set(table) == {PortKey("ns", "web", "http", "TCP"), PortKey("ns", "web", "dns", "UDP")}
    assert all(len(rule.endpoints) == 2 for rule in table.values())


def test_balancer_round_robin_and_affinity() -> None:
    eps = tuple(Endpoint(f"127.244.0.{i}", 80) for i in range(1, 4))
    b = Balancer()
    b.update(eps, None)
    firsts = [b.candidates("127.0.0.1", 0.0)[0] for _ in range(6)]
    assert firsts == [*eps, *eps]
    # Every candidate list holds every endpoint once (fail-over tries them all).
    assert sorted(b.candidates("127.0.0.1", 0.0), key=lambda e: e.ip) == list(eps)

    b.update(eps, 10.0)
    first = b.candidates("127.0.0.7", 0.0)[0]
    other = next(e for e in eps if e != first)
    b.connected("127.0.0.7", other, 0.0)  # the first choice refused; `other` answered
    assert b.candidates("127.0.0.7", 5.0)[0] == other
    # Two balancers (two proxies) agree on a new client's first endpoint.
    b2 = Balancer()
    b2.update(eps, 10.0)
    assert b2.candidates("127.0.0.9", 0.0)[0] == b.candidates("127.0.0.9", 0.0)[0]
    # Expired, or its endpoint gone: chosen afresh.
    b.expire(20.0)
    assert b.candidates("127.0.0.7", 20.0)[0] == first
    b.connected("127.0.0.7", other, 20.0)
    b.update(tuple(e for e in eps if e != other), 10.0)
    assert b.candidates("127.0.0.7", 21.0)[0] != other


def test_tunnel_dialer_goes_direct_to_local_nodes_and_through_remote_ones() -> None:
    nodes: Indexer[core_pb2.Node] = Indexer()
    nodes_spec = (("local", "127.0.1.1", "127.244.1.0/24"), ("far", "192.0.2.7", "127.244.2.0/24"))
    for name, ip, cidr in nodes_spec:
        node = core_pb2.Node()
        node.metadata.name = name
        node.spec.pod_cidr = cidr
        node.status.addresses.add(type="InternalIP", address=ip)
        nodes.put(node)
    dial = TunnelDialer(nodes, tunnel_port=10262)
    assert dial(Endpoint("127.244.1.5", 80)) == ("127.244.1.5", 80, b"")
    assert dial(Endpoint("127.244.2.5", 80)) == ("192.0.2.7", 10262, b"CONNECT 127.244.2.5:80\n")
    assert dial(Endpoint("127.244.9.5", 80)) == ("127.244.9.5", 80, b"")  # unknown: direct


def test_parse_connect() -> None:
    assert parse_connect(b"CONNECT 127.244.1.5:8080\n") == ("127.244.1.5", 8080)
    for bad in (b"CONNECT 10.0.0.1:80", b"GET / HTTP/1.1", b"CONNECT 127.0.0.1:0", b"CONNECT x:1"):
        try:
            parse_connect(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


def test_traffic_policy_local() -> None:
    subsets = [
        {
            "addresses": [
                {"ip": "127.244.1.1", "nodeName": "n1"},
                {"ip": "127.244.2.1", "nodeName": "n2"},
            ],
            "ports": [{"name": "http", "port": 8080}],
        }
    ]
    spec = {
        "clusterIP": "127.96.0.10",
        "type": "LoadBalancer",
        "ports": PORTS[:1],
        "externalTrafficPolicy": "Local",
    }
    status = {"loadBalancer": {"ingress": [{"ip": "127.100.0.5"}]}}
    svc = _svc(spec, status)
    rules = {
        r.key.scope: r for r in rules_for(svc, _eps(subsets), node_ip="127.0.1.1", node_name="n1")
    }
    # The ClusterIP keeps every endpoint; the NodePort and the LB IP only this node's.
    assert [e.ip for e in rules[""].endpoints] == ["127.244.1.1", "127.244.2.1"]
    assert {a.ip for a in rules[""].listen} == {"127.96.0.10"}
    assert [e.ip for e in rules["external"].endpoints] == ["127.244.1.1"]
    assert {a.ip for a in rules["external"].listen} == {"127.0.1.1", "127.100.0.5"}
    # A node without a local endpoint keeps its NodePort (traffic to it is dropped, as in
    # Kubernetes) but does not take the load balancer's address.
    (none_here,) = [
        r for r in rules_for(svc, _eps(subsets), node_ip="127.0.1.3", node_name="n3") if r.key.scope
    ]
    assert none_here.endpoints == () and {a.ip for a in none_here.listen} == {"127.0.1.3"}
    # internalTrafficPolicy Local as well: one rule again, local endpoints everywhere.
    both = _svc({**spec, "internalTrafficPolicy": "Local"}, status)
    (rule,) = rules_for(both, _eps(subsets), node_ip="127.0.1.1", node_name="n1")
    assert rule.key.scope == "" and [e.ip for e in rule.endpoints] == ["127.244.1.1"]
    assert len(rule.listen) == 3
