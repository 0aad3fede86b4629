"""The cluster config: what ``k8semu up`` starts, as a small typed model read from YAML.

A config is a YAML document (``cluster_configs/*.yaml``; the default one ships inside the
package as ``k8semu/cluster/default.yaml``)::

    kind: ClusterConfig
    version: v1alpha1
    name: local
    store: {replicas: 3, heartbeatInterval: 50ms, electionTimeout: 500ms, snapshotCount: 10000,
            members: [{name: s1, clientURL: "http://127.0.0.1:2379", peerURL: ...}, ...]}
    launcher: {readyTimeout: 30s, stopGracePeriod: 5s, restartBackoff: 500ms, ...}
    backups: {interval: 10m, directory: /var/backups/k8semu, keep: 5}

Keys are camelCase, as in Kubernetes' own component configs; durations are strings with a unit
(``500ms``, ``2s``, ``1m30s``) and are held as whole milliseconds. Unknown keys, wrong types
and bad values are ClusterConfigError naming the field path (``store.replicas: must be >= 1``).

The package, one module per concern::

    defaults   every default, the components' own timings among them
    values     the checks fields share (names, ports, addresses, durations)
    store      the store section          network   address ranges
    nodes      worker nodes, hollow pools  timings   control-plane and launcher timings
    backups    scheduled backups
    autoscaling  the HorizontalPodAutoscaler's timings and tolerance
    hosts      hosts, control-plane instances, placement checks across sections
    cluster    ClusterConfig, the whole document
    reader     YAML -> ClusterConfig (parse_config, load_config)

Later sections are added as further optional top-level keys of the same document; ``version``
changes only for an incompatible change. This package reads and validates; it must not start
processes or touch the network. What callers use is re-exported here.
"""

from __future__ import annotations

from k8semu.cluster.config.autoscaling import HorizontalPodAutoscalerSpec
from k8semu.cluster.config.backups import BackupsSpec
from k8semu.cluster.config.cluster import ClusterConfig
from k8semu.cluster.config.defaults import (
    DEFAULT_APISERVER_PORT,
    DEFAULT_CAPACITY,
    DEFAULT_CONFIG_SOURCE,
    DEFAULT_KUBELET_PORT,
    DEFAULT_PROXY_PORT,
    DEFAULT_STOP_GRACE_MS,
    DEFAULT_STORE_HEARTBEAT_MS,
    DEFAULT_TUNNEL_PORT,
    KIND,
    RUNTIMES,
    VERSION,
    default_tunnel_port,
)
from k8semu.cluster.config.hosts import ControlPlaneSpec, HostSpec, InstanceSpec
from k8semu.cluster.config.network import NetworkSpec
from k8semu.cluster.config.nodes import NodeSpec, Taint
from k8semu.cluster.config.reader import default_config_text, load_config, parse_config
from k8semu.cluster.config.store import StoreMemberSpec, StoreSpec, default_store_members
from k8semu.cluster.config.timings import LauncherSpec, TimingsSpec
from k8semu.cluster.config.values import format_duration, parse_duration_ms

__all__ = [
    "DEFAULT_APISERVER_PORT",
    "DEFAULT_CAPACITY",
    "DEFAULT_CONFIG_SOURCE",
    "DEFAULT_KUBELET_PORT",
    "DEFAULT_PROXY_PORT",
    "DEFAULT_STOP_GRACE_MS",
    "DEFAULT_STORE_HEARTBEAT_MS",
    "DEFAULT_TUNNEL_PORT",
    "KIND",
    "RUNTIMES",
    "VERSION",
    "BackupsSpec",
    "ClusterConfig",
    "ControlPlaneSpec",
    "HorizontalPodAutoscalerSpec",
    "HostSpec",
    "InstanceSpec",
    "LauncherSpec",
    "NetworkSpec",
    "NodeSpec",
    "StoreMemberSpec",
    "StoreSpec",
    "Taint",
    "TimingsSpec",
    "default_config_text",
    "default_store_members",
    "default_tunnel_port",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration_ms",
]
