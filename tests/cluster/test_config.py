"""The cluster config: the shipped default, defaults for left-out fields, and errors that name
the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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


# Each a config body, the field its error must name, and words it must contain.
BAD_CONFIGS = yaml.safe_load(Path(__file__).with_name("bad_configs.yaml").read_text())


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=lambda case: case["path"])
def test_bad_values_name_the_field(case: dict[str, str]) -> None:
    err = _error(HEAD + case["body"])
    assert err.path == case["path"]
    assert str(err).startswith(f"test.yaml: {case['path']}: ")
    assert case["reason"] in str(err)


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
