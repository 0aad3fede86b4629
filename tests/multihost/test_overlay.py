"""The pieces of the cross-host overlay that need no network: which pods get listeners on which
host, where a node's tunnel is, and what the config and the launcher give each proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from k8semu.api import manifest
from k8semu.client import Indexer
from k8semu.cluster import config as cc
from k8semu.cluster.errors import ClusterConfigError
from k8semu.cluster.plan import plan_cluster
from k8semu.pb.api.v1 import core_pb2
from k8semu.proxy.overlay import (
    POD_SCOPE,
    TUNNEL_ENDPOINT_ANNOTATION,
    parse_endpoint,
    pod_rules,
    tunnel_endpoint,
)
from k8semu.proxy.table import Endpoint, ListenAddress
from k8semu.proxy.tunnel import TunnelDialer

ALL = {"store", "apiserver", "scheduler", "controller-manager", "kubelet", "proxy"}


def _node(name: str, ip: str, cidr: str, tunnel: str = "") -> core_pb2.Node:
    node = core_pb2.Node()
    node.metadata.name = name
    if tunnel:
        node.metadata.annotations[TUNNEL_ENDPOINT_ANNOTATION] = tunnel
    node.spec.pod_cidr = cidr
    node.status.addresses.add(type="InternalIP", address=ip)
    return node


def _pod(name: str, node: str, ip: str, ports: list[dict[str, object]], **spec: object) -> Any:
    obj = manifest.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "image": "k8semu/echo", "ports": ports}],
                **spec,
            },
            "status": {"phase": "Running", "podIP": ip},
        }
    )
    assert isinstance(obj, core_pb2.Pod)
    return obj


NODES = {
    "here": _node("here", "10.0.0.1", "127.244.1.0/24"),
    "far": _node("far", "10.0.0.2", "127.244.2.0/24", tunnel="10.0.0.2:4000"),
}


def _remote(node: core_pb2.Node) -> bool:
    return node.metadata.name == "far"


def test_remote_pods_get_a_listener_per_declared_port_local_ones_none() -> None:
    pods = [
        _pod("web", "far", "127.244.2.5", [{"containerPort": 8080, "name": "http"},
                                          {"containerPort": 53, "protocol": "UDP"},
                                          {"containerPort": 9090},
                                          {"containerPort": 7, "protocol": "SCTP"}]),
        _pod("mine", "here", "127.244.1.5", [{"containerPort": 8080}]),
    ]  # fmt: skip
    table = pod_rules(pods, NODES, is_remote=_remote)
    assert sorted((k.service, k.port_name, k.protocol) for k in table) == [
        ("pod/web", "53", "UDP"),
        ("pod/web", "9090", "TCP"),
        ("pod/web", "http", "TCP"),
    ]
    rule = next(r for k, r in table.items() if k.port_name == "http")
    assert rule.key.scope == POD_SCOPE and rule.key.protocol == "TCP"
    # Shared (SO_REUSEPORT) like a ClusterIP: every proxy of the host may serve it.
    assert rule.listen == (ListenAddress("TCP", "127.244.2.5", 8080, True),)
    assert rule.endpoints == (Endpoint("127.244.2.5", 8080, "far"),)
    assert rule.affinity_timeout is None


@pytest.mark.parametrize(
    ("pod", "why"),
    [
        (_pod("p", "far", "", [{"containerPort": 80}]), "no IP yet"),
        (_pod("p", "", "127.244.2.5", [{"containerPort": 80}]), "not scheduled"),
        (_pod("p", "gone", "127.244.2.5", [{"containerPort": 80}]), "unknown node"),
        (_pod("p", "far", "10.0.0.2", [{"containerPort": 80}], hostNetwork=True), "hostNetwork"),
        (_pod("p", "far", "10.9.9.9", [{"containerPort": 80}]), "not a loopback pod IP"),
        (_pod("p", "far", "127.244.2.5", []), "no declared port"),
    ],
)
def test_pods_that_get_no_listener(pod: core_pb2.Pod, why: str) -> None:
    assert pod_rules([pod], NODES, is_remote=_remote) == {}, why


def test_finished_pods_lose_their_listeners() -> None:
    pod = _pod("p", "far", "127.244.2.5", [{"containerPort": 80}])
    assert pod_rules([pod], NODES, is_remote=_remote)
    pod.status.phase = "Succeeded"
    assert pod_rules([pod], NODES, is_remote=_remote) == {}


def test_where_a_nodes_tunnel_is() -> None:
    assert tunnel_endpoint(NODES["far"], 10262) == ("10.0.0.2", 4000)  # published
    assert tunnel_endpoint(NODES["here"], 10262) == ("10.0.0.1", 10262)  # InternalIP + own port
    assert tunnel_endpoint(NODES["here"], 0) is None
    garbled = _node("x", "10.0.0.3", "127.244.3.0/24", tunnel="nonsense")
    assert tunnel_endpoint(garbled, 10262) == ("10.0.0.3", 10262)
    assert parse_endpoint("10.0.0.3:0") is None and parse_endpoint("10.0.0.3") is None


def test_dialer_follows_the_published_tunnel_and_keeps_local_nodes_direct() -> None:
    nodes: Indexer[core_pb2.Node] = Indexer()
    nodes.put(_node("local", "127.0.1.1", "127.244.1.0/24"))
    nodes.put(_node("far", "192.0.2.7", "127.244.2.0/24", tunnel="192.0.2.7:4000"))
    nodes.put(_node("plain", "192.0.2.8", "127.244.3.0/24"))
    dial = TunnelDialer(nodes, tunnel_port=10262)
    assert dial(Endpoint("127.244.1.5", 80)) == ("127.244.1.5", 80, b"")
    assert dial(Endpoint("127.244.2.5", 80)) == ("192.0.2.7", 4000, b"CONNECT 127.244.2.5:80\n")
    assert dial(Endpoint("127.244.3.5", 80)) == ("192.0.2.8", 10262, b"CONNECT 127.244.3.5:80\n")
    by_name = {n.metadata.name: n for n in nodes.list()}
    assert not dial.is_remote(by_name["local"])
    assert dial.is_remote(by_name["far"]) and dial.is_remote(by_name["plain"])


HEAD = "kind: ClusterConfig\nversion: v1alpha1\n"


def _parse(body: str) -> cc.ClusterConfig:
    return cc.parse_config(HEAD + body, source="test.yaml")


def test_tunnel_port_defaults_on_only_for_nodes_other_hosts_can_reach() -> None:
    config = _parse(
        "hosts: [{name: a, address: 10.0.0.1}, {name: b, address: 10.0.0.2}]\n"
        "store: {members: [{clientURL: 'http://10.0.0.1:2379', peerURL: 'http://10.0.0.1:2380'}]}\n"
        "nodes:\n"
        "  - {name: n1, host: a, nodeIP: 10.0.0.1}\n"
        "  - {name: n2, host: b, nodeIP: 10.0.0.2, tunnelPort: 4000}\n"
        "  - {name: n3, host: a, nodeIP: 127.0.1.3}\n"
    )
    assert [n.tunnel_port for n in config.nodes or ()] == [10262, 4000, 0]
    assert all(n.tunnel_port == 0 for n in cc.load_config().nodes or ())  # one host: no tunnel

    plan = plan_cluster(config, Path("/state"), python="py", commands=ALL)
    proxies = {c.name: c for c in plan.components if c.kind == "proxy"}
    argv = proxies["proxy-n2"].argv
    assert argv[argv.index("--tunnel-port") + 1] == "4000"
    assert proxies["proxy-n2"].ports["tunnel"] == "10.0.0.2:4000"  # checked free before start
    assert proxies["proxy-n2"].origins["tunnel"] == "nodes[1].tunnelPort"
    assert "--tunnel-port" not in proxies["proxy-n3"].argv
    assert "tunnel" not in proxies["proxy-n3"].ports


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("nodes: [{nodeIP: 10.0.0.1, tunnelPort: 70000}]\n", "nodes[0].tunnelPort: must be 0"),
        (
            "nodes: [{nodeIP: 10.0.0.1, tunnelPort: 10250}]\n",
            "nodes[0].tunnelPort: 10.0.0.1:10250 is also nodes[0].kubeletPort",
        ),
    ],
)
def test_bad_tunnel_ports_name_the_field(body: str, message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _parse(body)
