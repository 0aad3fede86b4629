"""Metrics ports in the cluster config: each reaches its component's flag and the plan's
ports (so `k8semu up` checks them free and `k8semu status` lists them). No processes: the
plan is pure. Bad ones, each an error naming the field: tests/cluster/bad_configs.yaml."""

from __future__ import annotations

from pathlib import Path

from k8semu.cluster import config as cc
from k8semu.cluster.plan import METRICS, plan_cluster

ALL = frozenset({"store", "apiserver", "scheduler", "controller-manager", "kubelet", "proxy"})
CONFIG = """
kind: ClusterConfig
version: v1alpha1
name: m
store:
  replicas: 1
  members:
    - {name: s1, clientURL: http://127.0.0.1:2379, peerURL: http://127.0.0.1:2380,
       metricsURL: http://127.0.0.1:2381}
apiServer:
  instances: [{name: apiserver-1, port: 6443, metricsPort: 16443}]
scheduler:
  instances: [{name: scheduler-1, port: 10259, metricsPort: 20259}]
controllerManager:
  instances: [{name: controller-manager-1, port: 10257}]
nodes:
  - {name: node-1, nodeIP: 127.0.1.1, kubeletMetricsPort: 10255, proxyMetricsPort: 10256}
hollowNodes:
  - {name: pool, count: 3, kubeletMetricsPort: 10299}
"""


def _flag(argv: tuple[str, ...], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_metrics_ports_reach_flags_and_plan() -> None:
    plan = plan_cluster(cc.parse_config(CONFIG), Path("/state"), python="py", commands=ALL)
    by_name = {c.name: c for c in plan.components}
    want = {
        "store-s1": ("--listen-metrics-urls", "http://127.0.0.1:2381", "127.0.0.1:2381"),
        "apiserver-1": ("--metrics-address", "127.0.0.1:16443", "127.0.0.1:16443"),
        "scheduler-1": ("--metrics-address", "127.0.0.1:20259", "127.0.0.1:20259"),
        "kubelet-node-1": ("--metrics-address", "127.0.1.1:10255", "127.0.1.1:10255"),
        "proxy-node-1": ("--metrics-address", "127.0.1.1:10256", "127.0.1.1:10256"),
        "kubelet-pool": ("--metrics-address", "127.0.2.1:10299", "127.0.2.1:10299"),
    }
    for name, (flag, value, address) in want.items():
        component = by_name[name]
        assert _flag(component.argv, flag) == value, name
        assert component.ports[METRICS] == address, name
    # Left out: no listener, no flag.
    cm = by_name["controller-manager-1"]
    assert METRICS not in cm.ports
    assert "--metrics-address" not in cm.argv
