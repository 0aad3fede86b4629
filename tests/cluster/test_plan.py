"""Plans: which processes one launch starts, with which command lines - from the config alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from k8semu.cluster import config as cc
from k8semu.cluster.errors import ClusterConfigError
from k8semu.cluster.plan import API, CONTROL, NODES, STORE, plan_cluster

REPO = Path(__file__).resolve().parents[2]
ALL = {"store", "apiserver", "scheduler", "controller-manager", "kubelet", "proxy"}
STATE = Path("/state")


def _flags(argv: tuple[str, ...]) -> dict[str, str]:
    """``--flag value`` pairs of an argv (a flag with no value maps to "")."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        if argv[i].startswith("--"):
            has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            out[argv[i]] = argv[i + 1] if has_value else ""
            i += 2 if has_value else 1
        else:
            i += 1
    return out


def test_default_plan_starts_every_component_in_dependency_stages() -> None:
    plan = plan_cluster(cc.load_config(), STATE, python="py", commands=ALL)
    assert [(c.name, c.stage) for c in plan.components] == [
        ("store-s1", STORE), ("store-s2", STORE), ("store-s3", STORE),
        ("apiserver-1", API),
        ("scheduler-1", CONTROL), ("controller-manager-1", CONTROL),
        ("kubelet-node-1", NODES), ("proxy-node-1", NODES),
        ("kubelet-node-2", NODES), ("proxy-node-2", NODES),
        ("kubelet-node-3", NODES), ("proxy-node-3", NODES),
    ]  # fmt: skip
    assert plan.node_names == ("node-1", "node-2", "node-3")
    assert plan.api_servers == ("127.0.0.1:6443",)
    byname = {c.name: c for c in plan.components}

    store = byname["store-s2"]
    assert store.argv[:4] == ("py", "-m", "k8semu", "store")
    f = _flags(store.argv)
    assert f["--data-dir"] == "/state/store/s2"
    # TLS by default (security.tls): etcd's URLs say https, and the flags name pki/ files.
    assert f["--listen-client-urls"] == "https://127.0.0.1:12379"
    assert f["--initial-cluster-token"] == "k8semu-local"
    assert f["--initial-cluster"].count("=https://") == 3
    assert f["--cert-file"] == "/state/pki/etcd/store-s2.crt"
    assert f["--peer-trusted-ca-file"] == "/state/pki/etcd/ca.crt"
    assert f["--client-cert-auth"] == f["--peer-client-cert-auth"] == ""
    assert (f["--heartbeat-interval"], f["--election-timeout"]) == ("50", "500")
    assert store.log_path == STATE / "logs" / "store-s2.log"

    f = _flags(byname["apiserver-1"].argv)
    assert f["--store-endpoints"] == "127.0.0.1:2379,127.0.0.1:12379,127.0.0.1:22379"
    assert f["--service-cluster-ip-range"] == "127.96.0.0/16"
    assert f["--service-node-port-range"] == "30000-32767"
    assert f["--load-balancer-ip-pool"] == "127.100.0.0/24"
    assert f["--etcd-compaction-interval"] == "1m"
    tls = ("--tls-cert-file", "--client-ca-file", "--etcd-certfile")
    pki = ("apiserver.crt", "ca.crt", "etcd/apiserver-etcd-client.crt")
    assert [f[k] for k in tls] == [f"/state/pki/{p}" for p in pki]

    f = _flags(byname["controller-manager-1"].argv)
    assert f["--server"] == "127.0.0.1:6443" and f["--listen-address"] == "127.0.0.1:10257"
    assert f["--leader-elect"] == "" and f["--leader-elect-lease-duration"] == "4s"
    assert f["--node-monitor-grace-period"] == "6s" and f["--pod-eviction-timeout"] == "5s"
    assert f["--cluster-cidr"] == "127.244.0.0/16" and f["--node-cidr-mask-size"] == "24"
    assert f["--controllers"] == "*"
    assert f["--kubeconfig"] == "/state/pki/kubeconfigs/controller-manager.conf"

    f = _flags(byname["kubelet-node-2"].argv)
    assert f["--node-ip"] == "127.0.1.2" and f["--listen-address"] == "127.0.1.2:10250"
    assert f["--runtime"] == "process" and f["--root-dir"] == "/state/nodes/node-2"
    assert f["--capacity"] == "cpu=4,memory=8Gi,pods=110"
    assert f["--node-lease-duration"] == "4s" and f["--node-lease-renew-interval"] == "1s"
    f = _flags(byname["proxy-node-3"].argv)
    assert f["--node-name"] == "node-3" and f["--listen-address"] == "127.0.1.3:10249"


def test_labels_taints_and_hollow_pools_reach_the_kubelet() -> None:
    config = cc.parse_config(
        "kind: ClusterConfig\nversion: v1alpha1\n"
        "nodes: [{name: gpu, labels: {accel: gpu, zone: a}, taints: [{key: gpu, value: 'yes',"
        " effect: NoSchedule}, {key: dedicated, effect: NoExecute}]}]\n"
        "hollowNodes: [{name: hollow, count: 50, capacity: {cpu: 8}}]\n"
    )
    plan = plan_cluster(config, STATE, python="py", commands=ALL)
    byname = {c.name: c for c in plan.components}
    f = _flags(byname["kubelet-gpu"].argv)
    assert f["--node-labels"] == "accel=gpu,zone=a"
    assert f["--register-with-taints"] == "gpu=yes:NoSchedule,dedicated:NoExecute"
    f = _flags(byname["kubelet-hollow"].argv)
    assert (f["--count"], f["--runtime"], f["--capacity"]) == ("50", "simulated", "cpu=8")
    assert "proxy-hollow" not in byname  # hollow nodes serve no NodePorts
    assert len(plan.node_names) == 51


def test_a_host_starts_only_its_share() -> None:
    config = cc.load_config(REPO / "cluster_configs" / "multihost.yaml")
    shares = {
        h.name: [c.name for c in plan_cluster(config, STATE, host=h.name, python="py",
                                               commands=ALL).components]
        for h in config.hosts
    }  # fmt: skip
    assert shares["host-c"] == ["store-s3", "scheduler-c", "kubelet-node-3", "proxy-node-3"]
    every = sorted(n for names in shares.values() for n in names)
    whole = plan_cluster(config, STATE, python="py", commands=ALL)
    assert every == sorted(c.name for c in whole.components)
    # Every share knows the whole store (for the leader check) and every API server.
    plan_b = plan_cluster(config, STATE, host="host-b", python="py", commands=ALL)
    assert [n for n, _ in plan_b.store_members] == ["s1", "s2", "s3"]
    assert plan_b.api_servers == ("127.0.0.1:6443", "127.0.0.2:6443")
    with pytest.raises(ClusterConfigError, match=r"^--host: 'host-d' is not a host"):
        plan_cluster(config, STATE, host="host-d", python="py", commands=ALL)


def test_components_whose_command_is_missing_are_skipped_with_a_reason() -> None:
    plan = plan_cluster(cc.load_config(), STATE, python="py", commands={"store", "apiserver"})
    assert [c.name for c in plan.components] == ["store-s1", "store-s2", "store-s3", "apiserver-1"]
    assert ("kubelet-node-1", "this install has no `k8semu kubelet` command yet") in plan.skipped


def test_store_compaction_and_quota_flags_reach_both_backends() -> None:
    """On by default: 10 minutes of history, etcd's 2 GiB quota; etcd takes the same flags."""
    for body, mode, retention, quota in (
        ("", "periodic", "10m", "2147483648"),
        (
            "store: {backend: etcd, autoCompactionMode: revision, autoCompactionRetention: 1000,"
            " quotaBackendBytes: -1}\n",
            "revision",
            "1000",
            "-1",
        ),
    ):
        config = cc.parse_config("kind: ClusterConfig\nversion: v1alpha1\n" + body)
        flags = _flags(plan_cluster(config, STATE, python="py", commands=ALL).stage(STORE)[0].argv)
        assert flags["--auto-compaction-mode"] == mode
        assert flags["--auto-compaction-retention"] == retention
        assert flags["--quota-backend-bytes"] == quota


def test_etcd_backends() -> None:
    ours = cc.parse_config("kind: ClusterConfig\nversion: v1alpha1\nstore: {backend: etcd}\n")
    plan = plan_cluster(ours, STATE, python="py", commands=ALL)
    etcd = plan.stage(STORE)
    assert [c.kind for c in etcd] == ["etcd"] * 3
    assert etcd[0].argv[0] == "/usr/bin/etcd"
    external = cc.parse_config(
        "kind: ClusterConfig\nversion: v1alpha1\n"
        "store: {backend: etcd, endpoints: ['10.0.0.1:2379', 'http://10.0.0.2:2379']}\n"
    )
    plan = plan_cluster(external, STATE, python="py", commands=ALL)
    assert plan.stage(STORE) == []
    assert plan.store_external == ("10.0.0.1:2379", "10.0.0.2:2379")
    assert _flags(plan.stage(API)[0].argv)["--store-endpoints"] == "10.0.0.1:2379,10.0.0.2:2379"


def test_cluster_dns_reaches_kubelets_and_the_dns_add_on_is_planned_once() -> None:
    config = cc.load_config()
    plan = plan_cluster(config, STATE, python="py", commands=ALL)
    kubelet = next(c for c in plan.components if c.kind == "kubelet")
    argv = list(kubelet.argv)
    assert argv[argv.index("--cluster-dns") + 1] == "127.96.0.10"
    assert argv[argv.index("--cluster-domain") + 1] == "cluster.local"
    assert [name for name, _ in plan.addons] == ["dns", "storage", "ingress"]
    assert "clusterIP: 127.96.0.10" in plan.addons[0][1]
    # Another service range moves the DNS address with it, and the add-on's Service too.
    moved = cc.parse_config(
        cc.default_config_text().replace("127.96.0.0/16", "127.97.0.0/16"), source="t.yaml"
    )
    plan = plan_cluster(moved, STATE, python="py", commands=ALL)
    assert "clusterIP: 127.97.0.10" in plan.addons[0][1]
    none = cc.parse_config(
        cc.default_config_text().replace("addons: [dns, storage, ingress]", "addons: []"),
        source="t.yaml",
    )
    assert plan_cluster(none, STATE, python="py", commands=ALL).addons == ()


def test_bad_dns_settings_and_add_ons_name_the_field() -> None:
    text = cc.default_config_text()
    with pytest.raises(ClusterConfigError, match=r"network\.clusterDNS.*not in network"):
        cc.parse_config(
            text.replace("  # clusterDNS: 127.96.0.10", "  clusterDNS: 127.5.0.10"), source="t"
        )
    with pytest.raises(ClusterConfigError, match=r"addons\[1\].*unknown add-on 'gateway'"):
        cc.parse_config(
            text.replace("addons: [dns, storage, ingress]", "addons: [dns, gateway]"), source="t"
        )


def test_api_server_compaction_interval_from_the_config() -> None:
    for value, flag in (("30s", "30s"), ("0", "0"), ("5m", "5m")):
        config = cc.parse_config(
            "kind: ClusterConfig\nversion: v1alpha1\n"
            f"timings: {{etcdCompactionInterval: {value!r}}}\n"
        )
        plan = plan_cluster(config, STATE, python="py", commands={"store", "apiserver"})
        api = next(c for c in plan.components if c.kind == "apiserver")
        assert _flags(api.argv)["--etcd-compaction-interval"] == flag
