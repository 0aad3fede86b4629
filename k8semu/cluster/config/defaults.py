"""Every default of the cluster config, in one place.

A field left out of the YAML takes the value here. Timings a component owns are not typed
again: the store's come from ``k8semu.store.config``, leader election's from
``k8semu.client``, the kubelet's from ``k8semu.kubelet.config`` and the controller manager's
from its ``ControllerManagerConfig``; this module only converts them to milliseconds.

Constants only (and the one rule that picks a default from another field): no validation, no
YAML.
"""

from __future__ import annotations

import ipaddress

from k8semu.client import DEFAULT_LEADER_ELECTION
from k8semu.controllers.context import ControllerManagerConfig
from k8semu.kubelet import config as kubelet_config
from k8semu.store import config as store_config

KIND = "ClusterConfig"
VERSION = "v1alpha1"
DEFAULT_CONFIG_RESOURCE = "default.yaml"
DEFAULT_CONFIG_SOURCE = "<built-in default config>"

DEFAULT_NAME = "local"
DEFAULT_STORE_REPLICAS = 3
# etcd's well-known ports for the first member; member i (from 0) adds i * the stride, which is
# the layout of etcd's own local-cluster examples: 2379/2380, 12379/12380, 22379/22380.
DEFAULT_STORE_HOST = "127.0.0.1"
DEFAULT_STORE_CLIENT_PORT = 2379
DEFAULT_STORE_PEER_PORT = 2380
DEFAULT_STORE_PORT_STRIDE = 10_000
DEFAULT_STORE_HEARTBEAT_MS = store_config.DEFAULT_HEARTBEAT_MS
DEFAULT_STORE_ELECTION_MS = store_config.DEFAULT_ELECTION_MS
DEFAULT_STORE_SNAPSHOT_COUNT = store_config.DEFAULT_SNAPSHOT_COUNT
# On by default in a cluster (the store's own flag default is etcd's: off): keep 10 minutes of
# history, a safety net behind the API server's own compaction every 5 minutes.
DEFAULT_STORE_AUTO_COMPACTION_MODE = "periodic"
DEFAULT_STORE_AUTO_COMPACTION_RETENTION = "10m"
DEFAULT_STORE_QUOTA_BACKEND_BYTES = store_config.DEFAULT_QUOTA_BACKEND_BYTES
# The store refuses an election timeout shorter than this many heartbeats.
STORE_MIN_ELECTION_HEARTBEATS = 5

STORE_BACKENDS = ("k8semu", "etcd")
DEFAULT_STORE_BACKEND = "k8semu"
DEFAULT_ETCD_BINARY = "/usr/bin/etcd"

# The one host of a config that lists no hosts: everything runs here.
DEFAULT_HOST_NAME = "local"
DEFAULT_HOST_ADDRESS = "127.0.0.1"

# Control-plane ports: Kubernetes' own (API 6443, scheduler 10259, controller manager 10257);
# replica i (from 0) adds i for the API servers and i * 100 for the others.
DEFAULT_APISERVER_PORT = 6443
DEFAULT_APISERVER_STRIDE = 1
# An API server's REST API (kubectl's) listens on its gRPC port plus this: 8443, 8444, ...
DEFAULT_REST_PORT_OFFSET = 2000
DEFAULT_SCHEDULER_PORT = 10259
DEFAULT_CONTROLLER_MANAGER_PORT = 10257
DEFAULT_CONTROL_PLANE_STRIDE = 100

# Worker nodes: node i (from 0) gets node IP 127.0.1.<i+1>; kubelet and proxy on Kubernetes'
# ports (kubelet API 10250, kube-proxy metrics 10249) of that IP.
DEFAULT_NODE_COUNT = 3
DEFAULT_NODE_IP_PREFIX = "127.0.1."
DEFAULT_HOLLOW_IP_PREFIX = "127.0.2."
DEFAULT_KUBELET_PORT = 10250
DEFAULT_PROXY_PORT = 10249
# The built-in ingress controller on each node IP (0 in a node's `ingressPort`: none).
DEFAULT_INGRESS_PORT = 80
DEFAULT_INGRESS_TLS_PORT = 443  # its HTTPS (the Ingresses' spec.tls); 0: none
# The proxy's cross-host tunnel (docs/multihost.md): on by default only for a node whose IP is
# not a loopback address (another host can reach only such a node), so single-host configs
# (and tests that pick free ports) bind nothing more.
DEFAULT_TUNNEL_PORT = 10262


def default_tunnel_port(node_ip: str) -> int:
    """10262 for a node IP other hosts can reach, 0 (no tunnel) for a loopback one."""
    try:
        loopback = ipaddress.ip_address(node_ip).is_loopback
    except ValueError:
        return 0
    return 0 if loopback else DEFAULT_TUNNEL_PORT


RUNTIMES = ("process", "simulated")
DEFAULT_RUNTIME = "process"
DEFAULT_CAPACITY = (("cpu", "4"), ("memory", "8Gi"), ("pods", "110"))
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

DEFAULT_CLUSTER_CIDR = "127.244.0.0/16"
DEFAULT_NODE_CIDR_MASK_SIZE = 24
DEFAULT_SERVICE_CIDR = "127.96.0.0/16"
DEFAULT_NODE_PORT_RANGE = "30000-32767"
DEFAULT_LOAD_BALANCER_POOL = "127.100.0.0/24"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
KNOWN_ADDONS = ("dns", "storage", "ingress")
DEFAULT_ADDONS: tuple[str, ...] = ("dns", "storage", "ingress")


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


# Emulator timings (design 6): fast, so a demo shows failover; Kubernetes' are in comments of
# cluster_configs/README.md. Each is defined once, by the component it times.
_CM = ControllerManagerConfig()
DEFAULT_LEADER_ELECT_LEASE_MS = _ms(DEFAULT_LEADER_ELECTION.lease_duration)
DEFAULT_LEADER_ELECT_RENEW_MS = _ms(DEFAULT_LEADER_ELECTION.renew_deadline)
DEFAULT_LEADER_ELECT_RETRY_MS = _ms(DEFAULT_LEADER_ELECTION.retry_period)
DEFAULT_NODE_LEASE_MS = _ms(kubelet_config.DEFAULT_LEASE_DURATION)
DEFAULT_NODE_LEASE_RENEW_MS = _ms(kubelet_config.DEFAULT_LEASE_RENEW_INTERVAL)
DEFAULT_NODE_STATUS_UPDATE_MS = _ms(kubelet_config.DEFAULT_STATUS_UPDATE_FREQUENCY)
DEFAULT_NODE_MONITOR_PERIOD_MS = _ms(_CM.node_monitor_period)
DEFAULT_NODE_MONITOR_GRACE_MS = _ms(_CM.node_monitor_grace_period)
DEFAULT_POD_EVICTION_MS = _ms(_CM.pod_eviction_timeout)
# The HorizontalPodAutoscaler's (Kubernetes' own: the walkthroughs behave as documented).
DEFAULT_HPA_SYNC_PERIOD_MS = _ms(_CM.hpa_sync_period)
DEFAULT_HPA_TOLERANCE = _CM.hpa_tolerance
DEFAULT_HPA_DOWNSCALE_STABILIZATION_MS = _ms(_CM.hpa_downscale_stabilization)
DEFAULT_HPA_CPU_INITIALIZATION_PERIOD_MS = _ms(_CM.hpa_cpu_initialization_period)
DEFAULT_HPA_INITIAL_READINESS_DELAY_MS = _ms(_CM.hpa_initial_readiness_delay)
# The API servers compact the store's history to what it was one interval ago (kube-apiserver's
# --etcd-compaction-interval, 5m there): 1m here keeps an emulated cluster's database small
# while watchers and paginated lists still get a minute of history. 0 turns it off.
DEFAULT_ETCD_COMPACTION_INTERVAL_MS = 60_000
# Events expire this long after their last write (kube-apiserver's --event-ttl, 1h there): a
# busy emulated cluster writes an Event every few writes, and an hour of them would dominate
# its database; 10m keeps `k8semu get events` useful for what just happened. 0 keeps them.
DEFAULT_EVENT_TTL_MS = 600_000
# The API servers scrape the kubelets for NodeMetrics/PodMetrics this often (metrics-server's
# --metric-resolution, 15s there too). 0 serves no resource metrics.
DEFAULT_METRIC_RESOLUTION_MS = 15_000

DEFAULT_READY_TIMEOUT_MS = 60_000
DEFAULT_STOP_GRACE_MS = 5_000
DEFAULT_RESTART_BACKOFF_MS = 500
DEFAULT_MAX_RESTART_BACKOFF_MS = 10_000
DEFAULT_BACKOFF_RESET_AFTER_MS = 10_000
DEFAULT_MAX_RESTARTS = 5
# Component logs (logs/<component>.log) are rotated past this size, this many copies kept
# (k8semu.cluster.logrotate): at most ~120 MB per component, where they grew forever before.
DEFAULT_LOG_MAX_SIZE_MB = 20
DEFAULT_LOG_MAX_BACKUPS = 5

# Scheduled backups (the ``backups`` section): off unless an interval is given.
DEFAULT_BACKUPS_KEEP = 5
MIN_BACKUP_INTERVAL_MS = 1_000
