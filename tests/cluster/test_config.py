"""The cluster config: the shipped default, defaults for left-out fields, and errors that name
the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from k8semu.cluster import config as cc
from k8semu.cluster.errors import ClusterConfigError

REPO = Path(__file__).resolve().parents[2]
HEAD = "kind: ClusterConfig\nversion: v1alpha1\n"


def _parse(body: str) -> cc.ClusterConfig:
    return cc.parse_config(HEAD + body, source="test.yaml")


def _error(text: str) -> ClusterConfigError:
    with pytest.raises(ClusterConfigError) as info:
        cc.parse_config(text, source="test.yaml")
    return info.value


def test_shipped_default_is_the_all_defaults_config_and_matches_the_copy_for_users() -> None:
    default = cc.load_config()
    assert default == cc.ClusterConfig()
    assert default.source == cc.DEFAULT_CONFIG_SOURCE
    assert (REPO / "cluster_configs" / "local.yaml").read_text() == cc.default_config_text()
    store = default.store
    assert (store.replicas, store.heartbeat_ms, store.election_ms, store.snapshot_count) == (
        3,
        50,
        500,
        10_000,
    )
    assert [(m.name, m.client_address, m.peer_address) for m in store.members] == [
        ("s1", "127.0.0.1:2379", "127.0.0.1:2380"),
        ("s2", "127.0.0.1:12379", "127.0.0.1:12380"),
        ("s3", "127.0.0.1:22379", "127.0.0.1:22380"),
    ]
    assert default.name == "local"
    assert default.store_token == "k8semu-local"
    assert [h.name for h in default.hosts] == ["local"]
    assert default.api_server_addresses == ("127.0.0.1:6443",)
    assert default.scheduler is not None and default.controller_manager is not None
    assert [i.port for i in default.scheduler.instances] == [10259]
    assert [i.port for i in default.controller_manager.instances] == [10257]
    assert [(n.name, n.node_ip, n.runtime, n.proxy) for n in default.all_nodes] == [
        ("node-1", "127.0.1.1", "process", True),
        ("node-2", "127.0.1.2", "process", True),
        ("node-3", "127.0.1.3", "process", True),
    ]
    assert default.network == cc.NetworkSpec()
    assert default.timings == cc.TimingsSpec()


@pytest.mark.parametrize("path", sorted((REPO / "cluster_configs").glob("*.yaml")), ids=str)
def test_every_shipped_config_loads(path: Path) -> None:
    config = cc.load_config(path)
    assert config.name == path.stem.replace("multihost", "multi").replace("local", "local")


def test_shipped_configs_say_what_they_promise() -> None:
    ha = cc.load_config(REPO / "cluster_configs" / "ha.yaml")
    assert ha.api_server is not None and ha.scheduler is not None
    assert ha.controller_manager is not None
    assert (ha.store.replicas, ha.api_server.replicas, ha.scheduler.replicas) == (3, 2, 2)
    assert ha.controller_manager.replicas == 2
    scale = cc.load_config(REPO / "cluster_configs" / "scale.yaml")
    pools = [n for n in scale.all_nodes if n.hollow]
    assert [(p.count, p.runtime) for p in pools] == [(100, "simulated")]
    assert pools[0].node_names[:2] == ("hollow-0", "hollow-1")
    multi = cc.load_config(REPO / "cluster_configs" / "multihost.yaml")
    assert [h.name for h in multi.hosts] == ["host-a", "host-b", "host-c"]
    assert [m.host for m in multi.store.members] == ["host-a", "host-b", "host-c"]


def test_left_out_fields_take_the_defaults() -> None:
    assert _parse("") == cc.ClusterConfig()
    assert _parse("store:\nlauncher: {}\n") == cc.ClusterConfig()
    five = _parse("name: big\nstore: {replicas: 5, electionTimeout: 1s}\n")
    assert five.name == "big"
    assert five.store.election_ms == 1000
    assert five.store.heartbeat_ms == cc.DEFAULT_STORE_HEARTBEAT_MS
    assert [m.client_address for m in five.store.members][3:] == [
        "127.0.0.1:32379",
        "127.0.0.1:42379",
    ]
    assert five.launcher == cc.LauncherSpec()


def test_members_alone_set_the_replica_count_and_names_default_to_position() -> None:
    config = _parse(
        "store:\n  members:\n"
        "    - {clientURL: '127.0.0.1:7001', peerURL: 'http://127.0.0.1:7002'}\n"
        "    - {name: b, clientURL: 'http://127.0.0.1:7003', peerURL: 'http://127.0.0.1:7004'}\n"
    )
    assert config.store.replicas == 2
    assert [(m.name, m.client_url) for m in config.store.members] == [
        ("s1", "http://127.0.0.1:7001"),  # normalized to a URL
        ("b", "http://127.0.0.1:7003"),
    ]


@pytest.mark.parametrize(
    ("text", "ms"),
    [("500ms", 500), ("2s", 2000), ("1.5s", 1500), ("1m30s", 90_000), ("1h", 3_600_000)],
)
def test_durations(text: str, ms: int) -> None:
    assert cc.parse_duration_ms(text, "x") == ms
    assert cc.parse_duration_ms(cc.format_duration(ms), "x") == ms


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("stor: {}\n", "stor: unknown field (did you mean store? known: "),
        (
            "store: {heartbeat: 1s}\n",
            "store.heartbeat: unknown field (did you mean heartbeatInterval",
        ),
        (
            "store:\n  members:\n    - {clientURL: 'http://127.0.0.1:1', peerURL:"
            " 'http://127.0.0.1:2', clientUrl: x}\n",
            "store.members[0].clientUrl: unknown field",
        ),
        ("launcher: {restartDelay: 1s}\n", "launcher.restartDelay: unknown field"),
        ("nodes: [{name: n1, nodeIp: 127.0.1.1}]\n", "nodes[0].nodeIp: unknown field (did you"),
        ("hollowNodes: [{count: 3, runtime: process}]\n", "hollowNodes[0].runtime: unknown"),
        ("timings: {nodeGracePeriod: 1s}\n", "timings.nodeGracePeriod: unknown field"),
        ("apiServer: {instances: [{port: 1, addr: x}]}\n", "apiServer.instances[0].addr: unk"),
        ("network: {podCIDR: 10.0.0.0/8}\n", "network.podCIDR: unknown field"),
        ("hosts: [{name: a, address: 1.2.3.4, ip: x}]\n", "hosts[0].ip: unknown field"),
    ],
)
def test_unknown_fields_are_rejected_with_their_path(body: str, message: str) -> None:
    err = _error(HEAD + body)
    assert str(err).startswith(f"test.yaml: {message}")
    assert err.path == message.split(":")[0]


@pytest.mark.parametrize(
    ("body", "path", "reason"),
    [
        ("store: {replicas: 0}\n", "store.replicas", "must be >= 1"),
        ("store: {replicas: three}\n", "store.replicas", "expected an integer, got a string"),
        ("store: {replicas: true}\n", "store.replicas", "expected an integer, got a boolean"),
        ("store: {replicas: 8}\n", "store.replicas", "do not fit the default ports"),
        ("store: {snapshotCount: 0}\n", "store.snapshotCount", "must be >= 1"),
        ("store: {autoCompactionMode: hourly}\n", "store.autoCompactionMode", "must be one of"),
        (
            "store: {autoCompactionRetention: 5 minutes}\n",
            "store.autoCompactionRetention",
            "is not a duration",
        ),
        (
            "store: {autoCompactionMode: revision, autoCompactionRetention: 5m}\n",
            "store.autoCompactionRetention",
            "revision mode keeps a number of revisions",
        ),
        ("store: {autoCompactionRetention: [1]}\n", "store.autoCompactionRetention", "got a list"),
        ("store: {heartbeatInterval: 0s}\n", "store.heartbeatInterval", "at least 1ms"),
        ("store: {heartbeatInterval: 50}\n", "store.heartbeatInterval", "expected a duration"),
        ("store: {heartbeatInterval: 5 s}\n", "store.heartbeatInterval", "is not a duration"),
        ("store: {heartbeatInterval: 0.5ms}\n", "store.heartbeatInterval", "whole number"),
        (
            "store: {heartbeatInterval: 100ms, electionTimeout: 400ms}\n",
            "store.electionTimeout",
            "must be at least 5x store.heartbeatInterval (400ms < 5 x 100ms)",
        ),
        ("store: {members: []}\n", "store.members", "at least one member"),
        ("store: {members: {}}\n", "store.members", "expected a list"),
        ("store: [1]\n", "store", "expected a mapping, got a list"),
        (
            "store: {replicas: 2, members: [{clientURL: 'http://127.0.0.1:1',"
            " peerURL: 'http://127.0.0.1:2'}]}\n",
            "store.members",
            "lists 1 members but store.replicas is 2",
        ),
        (
            "store: {members: [{peerURL: 'http://127.0.0.1:2'}]}\n",
            "store.members[0].clientURL",
            "required",
        ),
        (
            "store: {members: [{clientURL: 'https://127.0.0.1:1', peerURL: 'http://127.0.0.1:2'}]}\n",
            "store.members[0].clientURL",
            "only http:// URLs",
        ),
        (
            "store: {members: [{clientURL: 'http://127.0.0.1:0', peerURL: 'http://127.0.0.1:2'}]}\n",
            "store.members[0].clientURL",
            "port 0 is not allowed",
        ),
        (
            "store: {members: [{clientURL: 'http://0.0.0.0:1', peerURL: 'http://127.0.0.1:2'}]}\n",
            "store.members[0].clientURL",
            "not 0.0.0.0",
        ),
        (
            "store: {members: [{clientURL: 'http://127.0.0.1:1', peerURL: 'http://127.0.0.1:2'},"
            " {clientURL: 'http://127.0.0.1:3', peerURL: 'http://127.0.0.1:1'}]}\n",
            "store.members[1].peerURL",
            "127.0.0.1:1 is also store.members[0].clientURL",
        ),
        (
            "store: {members: [{name: a, clientURL: 'http://127.0.0.1:1', peerURL: "
            "'http://127.0.0.1:2'}, {name: a, clientURL: 'http://127.0.0.1:3', peerURL:"
            " 'http://127.0.0.1:4'}]}\n",
            "store.members[1].name",
            "'a' is already the name of store.members[0]",
        ),
        (
            "store: {members: [{name: S_1, clientURL: 'http://127.0.0.1:1', peerURL: "
            "'http://127.0.0.1:2'}]}\n",
            "store.members[0].name",
            "lowercase letters",
        ),
        ("name: My Cluster\n", "name", "lowercase letters"),
        ("launcher: {maxRestarts: -1}\n", "launcher.maxRestarts", "must be >= 0"),
        ("store: {backend: consul}\n", "store.backend", "must be one of k8semu, etcd"),
        ("store: {endpoints: ['127.0.0.1:2379']}\n", "store.endpoints", "store.backend: etcd"),
        (
            "store: {backend: etcd, endpoints: ['127.0.0.1:2379'], replicas: 3}\n",
            "store.replicas",
            "not with store.endpoints",
        ),
        ("store: {backend: etcd, endpoints: [localhost]}\n", "store.endpoints[0]", "HOST:PORT"),
        ("apiServer: {replicas: -1}\n", "apiServer.replicas", "must be >= 0"),
        (
            "scheduler: {replicas: 3, instances: [{port: 7000}]}\n",
            "scheduler.instances",
            "lists 1 instances but scheduler.replicas is 3",
        ),
        (
            "apiServer: {instances: [{port: 7000}, {port: 7000}]}\n",
            "apiServer.instances[1].port",
            "127.0.0.1:7000 is also apiServer.instances[0].port",
        ),
        (
            "controllerManager: {instances: [{port: 2379}]}\n",
            "controllerManager.instances[0].port",
            "127.0.0.1:2379 is also store.members[0].clientURL",
        ),
        ("scheduler: {instances: [{host: b}]}\n", "scheduler.instances[0].host", "'b' is not a"),
        ("apiServer: {instances: [{port: 70000}]}\n", "apiServer.instances[0].port", "1-65535"),
        ("nodes: [{name: Node1}]\n", "nodes[0].name", "lowercase letters"),
        ("nodes: [{name: n, nodeIP: 127.0.1}]\n", "nodes[0].nodeIP", "not an IP address"),
        ("nodes: [{name: n, runtime: docker}]\n", "nodes[0].runtime", "process, simulated"),
        ("nodes: [{name: n, capacity: {cpu: lots}}]\n", "nodes[0].capacity.cpu", "quantity"),
        ("nodes: [{name: n, capacity: {cpu: [1]}}]\n", "nodes[0].capacity.cpu", "a list"),
        ("nodes: [{name: n, labels: {'a b': x}}]\n", "nodes[0].labels", "not a label key"),
        ("nodes: [{name: n, labels: {a: 'x y'}}]\n", "nodes[0].labels.a", "not a label value"),
        ("nodes: [{name: n, proxy: yes please}]\n", "nodes[0].proxy", "expected true or false"),
        (
            "nodes: [{name: n, taints: [{key: k, effect: Never}]}]\n",
            "nodes[0].taints[0].effect",
            "NoSchedule, PreferNoSchedule, NoExecute",
        ),
        ("nodes: [{name: n, taints: [{key: k}]}]\n", "nodes[0].taints[0].effect", "required"),
        (
            "nodes: [{name: a, nodeIP: 127.0.1.1}, {name: b, nodeIP: 127.0.1.1}]\n",
            "nodes[1].kubeletPort",
            "127.0.1.1:10250 is also nodes[0].kubeletPort",
        ),
        (
            "nodes: [{name: a}, {name: a, nodeIP: 127.0.1.9}]\n",
            "nodes[1].name",
            "node 'a' is also nodes[0].name",
        ),
        (
            "nodes: [{name: h-0}]\nhollowNodes: [{name: h, count: 2}]\n",
            "hollowNodes[0].name",
            "node 'h-0' is also nodes[0].name",
        ),
        ("hollowNodes: [{name: h}]\n", "hollowNodes[0].count", "required, and must be >= 1"),
        ("nodes: [{name: n, host: elsewhere}]\n", "nodes[0].host", "'elsewhere' is not a host"),
        ("hosts: []\n", "hosts", "at least one host"),
        (
            "hosts: [{name: a, address: 127.0.0.1}, {name: a, address: 127.0.0.2}]\n",
            "hosts[1].name",
            "'a' is also hosts[0]",
        ),
        ("hosts: [{name: a, address: 0.0.0.0}]\n", "hosts[0].address", "not 0.0.0.0"),
        ("hosts: [{name: a}]\n", "hosts[0].address", "required"),
        (
            "hosts: [{name: a, address: 127.0.0.1}, {name: b, address: 127.0.0.2}]\n"
            "store: {members: [{clientURL: 'http://127.0.0.9:1', peerURL: 'http://127.0.0.9:2'}]}\n",
            "store.members[0].host",
            "no host in hosts has the address of its clientURL (127.0.0.9)",
        ),
        ("network: {clusterCIDR: 127.244.0.0/33}\n", "network.clusterCIDR", "not a CIDR"),
        ("network: {clusterCIDR: 127.244.0.1/16}\n", "network.clusterCIDR", "host bits set"),
        (
            "network: {serviceCIDR: 127.244.1.0/24}\n",
            "network.serviceCIDR",
            "overlaps network.clusterCIDR (127.244.0.0/16)",
        ),
        ("network: {nodeCIDRMaskSize: 8}\n", "network.nodeCIDRMaskSize", "between"),
        ("network: {nodePortRange: '30000'}\n", "network.nodePortRange", "LOW-HIGH"),
        ("network: {nodePortRange: 9-2}\n", "network.nodePortRange", "LOW <= HIGH"),
        (
            "timings: {leaderElectRenewDeadline: 5s}\n",
            "timings.leaderElectRenewDeadline",
            "shorter than timings.leaderElectLeaseDuration (4s)",
        ),
        (
            "timings: {nodeLeaseRenewInterval: 4s}\n",
            "timings.nodeLeaseRenewInterval",
            "shorter than timings.nodeLeaseDuration",
        ),
        (
            "timings: {nodeMonitorGracePeriod: 100ms}\n",
            "timings.nodeMonitorGracePeriod",
            "longer than timings.nodeMonitorPeriod",
        ),
        ("timings: {podEvictionTimeout: 0s}\n", "timings.podEvictionTimeout", "at least 1ms"),
        ("timings: {nodeLeaseDuration: 40}\n", "timings.nodeLeaseDuration", "a duration"),
        (
            "launcher: {restartBackoff: 2s, maxRestartBackoff: 1s}\n",
            "launcher.maxRestartBackoff",
            "must be >= launcher.restartBackoff (2s)",
        ),
    ],
)
def test_bad_values_name_the_field(body: str, path: str, reason: str) -> None:
    err = _error(HEAD + body)
    assert err.path == path
    assert str(err).startswith(f"test.yaml: {path}: ")
    assert reason in str(err)


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        ("", "", "empty document"),
        ("- 1\n", "", "expected a mapping, got a list"),
        ("version: v1alpha1\n", "kind", "required; must be ClusterConfig"),
        ("kind: Pod\nversion: v1alpha1\n", "kind", "must be ClusterConfig, got 'Pod'"),
        ("kind: ClusterConfig\nversion: v2\n", "version", "must be v1alpha1, got 'v2'"),
        (HEAD + "store: [\n", "", "not valid YAML"),
        (HEAD + "store:\n  replicas: 1\n  replicas: 2\n", "", "key 'replicas' is given twice"),
    ],
)
def test_bad_documents(text: str, path: str, reason: str) -> None:
    err = _error(text)
    assert err.path == path
    assert reason in str(err)


def test_programmatic_configs_are_validated_too() -> None:
    with pytest.raises(ClusterConfigError, match=r"^store\.replicas: must be >= 1$"):
        cc.StoreSpec(replicas=0)
    with pytest.raises(ClusterConfigError, match=r"^launcher\.readyTimeout: "):
        cc.LauncherSpec(ready_timeout_ms=0)


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(HEAD + "store: {replicas: 0}\n")
    with pytest.raises(ClusterConfigError, match=r"mine\.yaml: store\.replicas: must be >= 1"):
        cc.load_config(path)
    with pytest.raises(ClusterConfigError, match=r"missing\.yaml: cannot read"):
        cc.load_config(tmp_path / "missing.yaml")
    assert cc.load_config(None) == cc.ClusterConfig()
