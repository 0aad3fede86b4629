"""The cluster config: what ``k8semu up`` starts, as a small typed model read from YAML.

A config is a YAML document (``cluster_configs/*.yaml``; the default one ships inside the
package as ``k8semu/cluster/default.yaml``)::

    kind: ClusterConfig
    version: v1alpha1
    name: local
    store: {replicas: 3, heartbeatInterval: 50ms, electionTimeout: 500ms, snapshotCount: 10000,
            members: [{name: s1, clientURL: "http://127.0.0.1:2379", peerURL: ...}, ...]}
    launcher: {readyTimeout: 30s, stopGracePeriod: 5s, restartBackoff: 500ms, ...}

Keys are camelCase, as in Kubernetes' own component configs; durations are strings with a unit
(``500ms``, ``2s``, ``1m30s``) and are held as whole milliseconds. Every default lives in the
constants below (the store's timings are the store's own defaults, from
``k8semu.store.config``), and a field left out of the YAML takes it. Unknown keys, wrong types
and bad values are ClusterConfigError naming the field path (``store.replicas: must be >= 1``).

Later sections (apiserver, scheduler, controllerManager, nodes) are added as further optional
top-level keys of the same document; ``version`` changes only for an incompatible change.

This module reads and validates; it must not start processes or touch the network.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import io
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from k8semu import durations
from k8semu.api import quantity
from k8semu.api.names import (
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_value,
    is_qualified_name,
)
from k8semu.client import DEFAULT_LEADER_ELECTION
from k8semu.cluster.errors import ClusterConfigError
from k8semu.controllers.context import ControllerManagerConfig
from k8semu.kubelet import config as kubelet_config
from k8semu.store import config as store_config
from k8semu.transport import AddressError, parse_url

__all__ = [
    "KIND",
    "VERSION",
    "ClusterConfig",
    "ControlPlaneSpec",
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
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration_ms",
]

KIND = "ClusterConfig"
VERSION = "v1alpha1"
DEFAULT_CONFIG_RESOURCE = "default.yaml"
DEFAULT_CONFIG_SOURCE = "<built-in default config>"

# -- defaults: the one place ------------------------------------------------------------------

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
KNOWN_ADDONS = ("dns",)
DEFAULT_ADDONS: tuple[str, ...] = ("dns",)


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
# The API servers compact the store's history to what it was one interval ago (kube-apiserver's
# --etcd-compaction-interval, 5m there): 1m here keeps an emulated cluster's database small
# while watchers and paginated lists still get a minute of history. 0 turns it off.
DEFAULT_ETCD_COMPACTION_INTERVAL_MS = 60_000
# Events expire this long after their last write (kube-apiserver's --event-ttl, 1h there): a
# busy emulated cluster writes an Event every few writes, and an hour of them would dominate
# its database; 10m keeps `k8semu get events` useful for what just happened. 0 keeps them.
DEFAULT_EVENT_TTL_MS = 600_000

DEFAULT_READY_TIMEOUT_MS = 60_000
DEFAULT_STOP_GRACE_MS = 5_000
DEFAULT_RESTART_BACKOFF_MS = 500
DEFAULT_MAX_RESTART_BACKOFF_MS = 10_000
DEFAULT_BACKOFF_RESET_AFTER_MS = 10_000
DEFAULT_MAX_RESTARTS = 5


# -- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreMemberSpec:
    """One store replica: its name and its client and peer URLs, ``http://HOST:PORT``."""

    name: str
    client_url: str
    peer_url: str
    #: The host (``hosts[].name``) that runs this replica.
    host: str = ""

    @property
    def client_address(self) -> str:
        """``HOST:PORT`` of the client URL (what etcdctl's ``--endpoints`` takes)."""
        return self.client_url.removeprefix("http://")

    @property
    def peer_address(self) -> str:
        """``HOST:PORT`` of the peer URL."""
        return self.peer_url.removeprefix("http://")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSpec:
    """The ``store`` section: a static cluster of ``replicas`` store processes.

    Invariants after construction: ``len(members) == replicas`` (an empty ``members`` becomes
    the default layout), member names and addresses are unique, URLs are ``http://HOST:PORT``
    with a non-zero port, and the timings are ones the store accepts.
    """

    replicas: int = DEFAULT_STORE_REPLICAS
    heartbeat_ms: int = DEFAULT_STORE_HEARTBEAT_MS
    election_ms: int = DEFAULT_STORE_ELECTION_MS
    snapshot_count: int = DEFAULT_STORE_SNAPSHOT_COUNT
    #: etcd's flags and units: ``periodic`` keeps a duration (``10m``, or a number of hours),
    #: ``revision`` a number of revisions; ``"0"`` turns auto-compaction off.
    auto_compaction_mode: str = DEFAULT_STORE_AUTO_COMPACTION_MODE
    auto_compaction_retention: str = DEFAULT_STORE_AUTO_COMPACTION_RETENTION
    #: Bytes a replica's database may reach before the NOSPACE alarm (etcd's flag; 0 = its
    #: default, negative = no quota).
    quota_backend_bytes: int = DEFAULT_STORE_QUOTA_BACKEND_BYTES
    members: tuple[StoreMemberSpec, ...] = ()
    #: ``k8semu`` (our store) or ``etcd`` (a real etcd: started by us from ``etcd_binary``, or
    #: an external cluster at ``endpoints``, of which nothing is started).
    backend: str = DEFAULT_STORE_BACKEND
    endpoints: tuple[str, ...] = ()
    etcd_binary: str = DEFAULT_ETCD_BINARY

    @property
    def external(self) -> bool:
        """An etcd cluster someone else runs: nothing of the store is started."""
        return bool(self.endpoints)

    @property
    def client_addresses(self) -> tuple[str, ...]:
        """What the API servers are given as ``--store-endpoints``."""
        if self.endpoints:
            return self.endpoints
        return tuple(m.client_address for m in self.members)

    def __post_init__(self) -> None:
        if self.backend not in STORE_BACKENDS:
            raise ClusterConfigError(
                "store.backend", f"must be one of {', '.join(STORE_BACKENDS)}, got {self.backend!r}"
            )
        if self.endpoints:
            if self.backend != "etcd":
                raise ClusterConfigError(
                    "store.endpoints",
                    "an external store is a real etcd: set store.backend: etcd, or leave "
                    "store.endpoints out to start our own store",
                )
            for i, endpoint in enumerate(self.endpoints):
                _check_host_port(endpoint, f"store.endpoints[{i}]")
            return
        if self.replicas < 1:
            raise ClusterConfigError("store.replicas", "must be >= 1")
        if self.heartbeat_ms < 1:
            raise ClusterConfigError("store.heartbeatInterval", "must be at least 1ms")
        if self.election_ms < STORE_MIN_ELECTION_HEARTBEATS * self.heartbeat_ms:
            raise ClusterConfigError(
                "store.electionTimeout",
                f"must be at least {STORE_MIN_ELECTION_HEARTBEATS}x store.heartbeatInterval "
                f"({format_duration(self.election_ms)} < {STORE_MIN_ELECTION_HEARTBEATS} x "
                f"{format_duration(self.heartbeat_ms)})",
            )
        if self.snapshot_count < 1:
            raise ClusterConfigError("store.snapshotCount", "must be >= 1")
        if self.auto_compaction_mode not in store_config.COMPACTION_MODES:
            raise ClusterConfigError(
                "store.autoCompactionMode",
                f"must be one of {', '.join(store_config.COMPACTION_MODES)}, "
                f"got {self.auto_compaction_mode!r}",
            )
        try:
            store_config.AutoCompaction.parse(
                self.auto_compaction_mode, self.auto_compaction_retention
            )
        except store_config.ConfigError as exc:
            reason = str(exc).removeprefix("--auto-compaction-retention: ")
            raise ClusterConfigError("store.autoCompactionRetention", reason) from None
        if not self.members:
            object.__setattr__(self, "members", default_store_members(self.replicas))
        elif len(self.members) != self.replicas:
            raise ClusterConfigError(
                "store.members",
                f"lists {len(self.members)} members but store.replicas is {self.replicas}; list "
                "one member per replica, or leave store.members out to use the default ports",
            )
        object.__setattr__(self, "members", tuple(_checked_members(self.members)))


@dataclass(frozen=True, slots=True, kw_only=True)
class LauncherSpec:
    """The ``launcher`` section: how ``k8semu up`` waits for, restarts and stops processes.

    A process that exits unexpectedly is started again after ``restart_backoff_ms``, doubling
    per crash up to ``max_restart_backoff_ms``; one that ran ``backoff_reset_after_ms`` without
    exiting starts from the first delay again. After ``max_restarts`` restarts in a row that
    each crashed sooner than that, the supervisor gives up on it: it is marked failed and left
    down while the rest of the cluster keeps running (``k8semu restart NAME`` starts it again).
    """

    ready_timeout_ms: int = DEFAULT_READY_TIMEOUT_MS
    stop_grace_ms: int = DEFAULT_STOP_GRACE_MS
    restart_backoff_ms: int = DEFAULT_RESTART_BACKOFF_MS
    max_restart_backoff_ms: int = DEFAULT_MAX_RESTART_BACKOFF_MS
    backoff_reset_after_ms: int = DEFAULT_BACKOFF_RESET_AFTER_MS
    max_restarts: int = DEFAULT_MAX_RESTARTS

    def __post_init__(self) -> None:
        if self.ready_timeout_ms < 1:
            raise ClusterConfigError("launcher.readyTimeout", "must be at least 1ms")
        if self.stop_grace_ms < 0:
            raise ClusterConfigError("launcher.stopGracePeriod", "must be >= 0")
        if self.restart_backoff_ms < 1:
            raise ClusterConfigError("launcher.restartBackoff", "must be at least 1ms")
        if self.max_restart_backoff_ms < self.restart_backoff_ms:
            raise ClusterConfigError(
                "launcher.maxRestartBackoff",
                f"must be >= launcher.restartBackoff ({format_duration(self.restart_backoff_ms)})",
            )
        if self.backoff_reset_after_ms < 1:
            raise ClusterConfigError("launcher.backoffResetAfter", "must be at least 1ms")
        if self.max_restarts < 0:
            raise ClusterConfigError("launcher.maxRestarts", "must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSpec:
    """A machine that runs part of the cluster: ``k8semu up --host NAME`` starts its share.
    ``address`` is what the others reach it at, and what its control-plane processes bind."""

    name: str
    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSpec:
    """One API server, scheduler or controller manager: its name, host and port."""

    name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlPlaneSpec:
    """``apiServer``, ``scheduler`` or ``controllerManager``: ``replicas`` processes, each an
    ``InstanceSpec`` (given in ``instances``, or the default names and ports). Schedulers and
    controller managers elect a leader through a Lease; API servers are all active."""

    replicas: int
    instances: tuple[InstanceSpec, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Taint:
    key: str
    value: str
    effect: str

    def flag(self) -> str:
        """``key=value:Effect``, as ``--register-with-taints`` takes it."""
        return (
            f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    """A worker node: one kubelet process (and, unless ``proxy`` is off, one proxy process).

    A hollow-node pool (``count`` > 0) is one kubelet process with the ``simulated`` runtime
    that registers ``count`` nodes named ``<name>-0``.. ``<name>-<count-1>``; it has no proxy.
    """

    name: str
    host: str
    node_ip: str
    runtime: str = DEFAULT_RUNTIME
    capacity: tuple[tuple[str, str], ...] = DEFAULT_CAPACITY
    labels: tuple[tuple[str, str], ...] = ()
    taints: tuple[Taint, ...] = ()
    kubelet_port: int = DEFAULT_KUBELET_PORT
    proxy_port: int = DEFAULT_PROXY_PORT
    #: The proxy's tunnel port on ``node_ip``; 0: no tunnel (a node on a single-host cluster).
    tunnel_port: int = 0
    proxy: bool = True
    count: int = 0
    #: Position in ``nodes`` (or ``hollowNodes``), for error messages.
    index: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        path = self.path
        if not is_dns1123_label(self.name):
            raise ClusterConfigError(
                f"{path}.name",
                f"{self.name!r} must be 1-63 lowercase letters, digits and '-', starting and "
                "ending with a letter or digit",
            )
        if not _is_ip(self.node_ip):
            raise ClusterConfigError(f"{path}.nodeIP", f"{self.node_ip!r} is not an IP address")
        if self.runtime not in RUNTIMES:
            raise ClusterConfigError(
                f"{path}.runtime", f"must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}"
            )
        for key, port in (("kubeletPort", self.kubelet_port), ("proxyPort", self.proxy_port)):
            if not 0 < port <= 65535:
                raise ClusterConfigError(f"{path}.{key}", f"must be 1-65535, got {port}")
        if not 0 <= self.tunnel_port <= 65535:
            raise ClusterConfigError(
                f"{path}.tunnelPort", f"must be 0 (off) or 1-65535, got {self.tunnel_port}"
            )
        if self.count < 0:
            raise ClusterConfigError(f"{path}.count", "must be >= 1")
        for resource, value in self.capacity:
            try:
                quantity.parse_quantity(value)
            except ValueError as exc:
                raise ClusterConfigError(f"{path}.capacity.{resource}", str(exc)) from None
        for key, value in self.labels:
            if not is_qualified_name(key):
                raise ClusterConfigError(f"{path}.labels", f"{key!r} is not a label key")
            if not is_label_value(value):
                raise ClusterConfigError(f"{path}.labels.{key}", f"{value!r} is not a label value")
        for i, t in enumerate(self.taints):
            if not is_qualified_name(t.key):
                raise ClusterConfigError(f"{path}.taints[{i}].key", f"{t.key!r} is not a key")
            if not is_label_value(t.value):
                raise ClusterConfigError(f"{path}.taints[{i}].value", f"{t.value!r} is not a value")
            if t.effect not in TAINT_EFFECTS:
                raise ClusterConfigError(
                    f"{path}.taints[{i}].effect",
                    f"must be one of {', '.join(TAINT_EFFECTS)}, got {t.effect!r}",
                )

    @property
    def path(self) -> str:
        """``nodes[i]`` or ``hollowNodes[i]``: where the node is in the config."""
        return f"{'hollowNodes' if self.hollow else 'nodes'}[{self.index}]"

    @property
    def hollow(self) -> bool:
        return self.count > 0

    @property
    def node_names(self) -> tuple[str, ...]:
        """The Node objects this kubelet registers."""
        if self.hollow:
            return tuple(f"{self.name}-{i}" for i in range(self.count))
        return (self.name,)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkSpec:
    """Address ranges (design decision 7): pod IPs (``clusterCIDR``, one /``nodeCIDRMaskSize`` per
    node), ClusterIPs (``serviceCIDR``), NodePorts, LoadBalancer IPs."""

    cluster_cidr: str = DEFAULT_CLUSTER_CIDR
    node_cidr_mask_size: int = DEFAULT_NODE_CIDR_MASK_SIZE
    service_cidr: str = DEFAULT_SERVICE_CIDR
    node_port_range: str = DEFAULT_NODE_PORT_RANGE
    load_balancer_pool: str = DEFAULT_LOAD_BALANCER_POOL
    #: The cluster DNS Service's ClusterIP ("" = the 10th address of serviceCIDR, as
    #: kubeadm picks) and domain; kubelets hand them to pods, the dns add-on serves them.
    cluster_dns: str = ""
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN

    @property
    def dns_ip(self) -> str:
        if self.cluster_dns:
            return self.cluster_dns
        return str(ipaddress.ip_network(self.service_cidr)[10])

    def __post_init__(self) -> None:
        nets = {}
        for key, value in (
            ("clusterCIDR", self.cluster_cidr),
            ("serviceCIDR", self.service_cidr),
            ("loadBalancerPool", self.load_balancer_pool),
        ):
            try:
                nets[key] = ipaddress.ip_network(value, strict=True)
            except ValueError as exc:
                raise ClusterConfigError(
                    f"network.{key}", f"{value!r} is not a CIDR: {exc}"
                ) from None
        mask = self.node_cidr_mask_size
        if not nets["clusterCIDR"].prefixlen <= mask <= nets["clusterCIDR"].max_prefixlen - 2:
            raise ClusterConfigError(
                "network.nodeCIDRMaskSize",
                f"must be between network.clusterCIDR's prefix length "
                f"({nets['clusterCIDR'].prefixlen}) and {nets['clusterCIDR'].max_prefixlen - 2}",
            )
        keys = list(nets)
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                if nets[a].overlaps(nets[b]):
                    raise ClusterConfigError(f"network.{b}", f"overlaps network.{a} ({nets[a]})")
        if self.cluster_dns:
            try:
                dns = ipaddress.ip_address(self.cluster_dns)
            except ValueError:
                raise ClusterConfigError(
                    "network.clusterDNS", f"{self.cluster_dns!r} is not an IP address"
                ) from None
            if dns not in nets["serviceCIDR"]:
                raise ClusterConfigError(
                    "network.clusterDNS", f"{dns} is not in network.serviceCIDR"
                )
        if not is_dns1123_subdomain(self.cluster_domain):
            raise ClusterConfigError(
                "network.clusterDomain", f"{self.cluster_domain!r} is not a DNS domain"
            )
        lo, sep, hi = self.node_port_range.partition("-")
        if not (sep and lo.isdigit() and hi.isdigit() and 0 < int(lo) <= int(hi) <= 65535):
            raise ClusterConfigError(
                "network.nodePortRange",
                f"{self.node_port_range!r} must be LOW-HIGH with 1 <= LOW <= HIGH <= 65535",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class TimingsSpec:
    """Every control-plane timing that is not the store's or the launcher's (design decision 6)."""

    leader_elect_lease_ms: int = DEFAULT_LEADER_ELECT_LEASE_MS
    leader_elect_renew_ms: int = DEFAULT_LEADER_ELECT_RENEW_MS
    leader_elect_retry_ms: int = DEFAULT_LEADER_ELECT_RETRY_MS
    node_lease_ms: int = DEFAULT_NODE_LEASE_MS
    node_lease_renew_ms: int = DEFAULT_NODE_LEASE_RENEW_MS
    node_status_update_ms: int = DEFAULT_NODE_STATUS_UPDATE_MS
    node_monitor_period_ms: int = DEFAULT_NODE_MONITOR_PERIOD_MS
    node_monitor_grace_ms: int = DEFAULT_NODE_MONITOR_GRACE_MS
    pod_eviction_ms: int = DEFAULT_POD_EVICTION_MS
    etcd_compaction_interval_ms: int = DEFAULT_ETCD_COMPACTION_INTERVAL_MS  # 0: off
    event_ttl_ms: int = DEFAULT_EVENT_TTL_MS  # 0: Events never expire

    def __post_init__(self) -> None:
        for attr, key in _TIMING_KEYS:
            if getattr(self, attr) < 1:
                raise ClusterConfigError(f"timings.{key}", "must be at least 1ms")
        if self.etcd_compaction_interval_ms < 0:
            raise ClusterConfigError(
                "timings.etcdCompactionInterval", "must be a duration, or 0 to turn it off"
            )
        if self.event_ttl_ms < 0:
            raise ClusterConfigError("timings.eventTTL", "must be a duration, or 0 to keep Events")
        if self.leader_elect_lease_ms < 1000:
            raise ClusterConfigError(
                "timings.leaderElectLeaseDuration", "must be at least 1s (a Lease holds seconds)"
            )
        if self.leader_elect_renew_ms >= self.leader_elect_lease_ms:
            raise ClusterConfigError(
                "timings.leaderElectRenewDeadline",
                f"must be shorter than timings.leaderElectLeaseDuration "
                f"({format_duration(self.leader_elect_lease_ms)})",
            )
        if self.leader_elect_retry_ms >= self.leader_elect_renew_ms:
            raise ClusterConfigError(
                "timings.leaderElectRetryPeriod",
                f"must be shorter than timings.leaderElectRenewDeadline "
                f"({format_duration(self.leader_elect_renew_ms)})",
            )
        if self.node_lease_renew_ms >= self.node_lease_ms:
            raise ClusterConfigError(
                "timings.nodeLeaseRenewInterval",
                f"must be shorter than timings.nodeLeaseDuration "
                f"({format_duration(self.node_lease_ms)})",
            )
        if self.node_monitor_grace_ms <= self.node_monitor_period_ms:
            raise ClusterConfigError(
                "timings.nodeMonitorGracePeriod",
                f"must be longer than timings.nodeMonitorPeriod "
                f"({format_duration(self.node_monitor_period_ms)})",
            )


# (attribute, YAML key) of every timing, in the order of the README's table.
_TIMING_KEYS = (
    ("leader_elect_lease_ms", "leaderElectLeaseDuration"),
    ("leader_elect_renew_ms", "leaderElectRenewDeadline"),
    ("leader_elect_retry_ms", "leaderElectRetryPeriod"),
    ("node_lease_ms", "nodeLeaseDuration"),
    ("node_lease_renew_ms", "nodeLeaseRenewInterval"),
    ("node_status_update_ms", "nodeStatusUpdateFrequency"),
    ("node_monitor_period_ms", "nodeMonitorPeriod"),
    ("node_monitor_grace_ms", "nodeMonitorGracePeriod"),
    ("pod_eviction_ms", "podEvictionTimeout"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """A whole cluster config. ``name`` names the cluster: it picks the default state directory
    (``~/.k8semu/clusters/<name>``), the store's cluster token and the CLI context, so the same
    name finds the same data.

    Invariants after construction: every section is filled in (left-out ones take their
    defaults), every ``host`` a component names is one of ``hosts``, no two processes listen
    on the same address, and node names are unique.
    """

    name: str = DEFAULT_NAME
    hosts: tuple[HostSpec, ...] = ()
    store: StoreSpec = field(default_factory=StoreSpec)
    api_server: ControlPlaneSpec | None = None
    scheduler: ControlPlaneSpec | None = None
    controller_manager: ControlPlaneSpec | None = None
    #: Worker nodes and hollow-node pools; None means the default three workers.
    nodes: tuple[NodeSpec, ...] | None = None
    network: NetworkSpec = field(default_factory=NetworkSpec)
    timings: TimingsSpec = field(default_factory=TimingsSpec)
    launcher: LauncherSpec = field(default_factory=LauncherSpec)
    #: Add-ons (k8semu/addons/*.yaml) the launcher applies once the cluster is up.
    addons: tuple[str, ...] = ("dns",)
    #: Where the config came from (a file name, or the built-in default), for messages.
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not is_dns1123_label(self.name):
            raise ClusterConfigError(
                "name",
                f"{self.name!r} must be 1-63 lowercase letters, digits and '-', starting and "
                "ending with a letter or digit",
            )
        if not self.hosts:
            object.__setattr__(
                self, "hosts", (HostSpec(name=DEFAULT_HOST_NAME, address=DEFAULT_HOST_ADDRESS),)
            )
        _check_hosts(self.hosts)
        first = self.hosts[0]
        defaults = (
            ("api_server", "apiServer", "apiserver", 1, DEFAULT_APISERVER_PORT,
             DEFAULT_APISERVER_STRIDE),
            ("scheduler", "scheduler", "scheduler", 1, DEFAULT_SCHEDULER_PORT,
             DEFAULT_CONTROL_PLANE_STRIDE),
            ("controller_manager", "controllerManager", "controller-manager", 1,
             DEFAULT_CONTROLLER_MANAGER_PORT, DEFAULT_CONTROL_PLANE_STRIDE),
        )  # fmt: skip
        for attr, key, prefix, replicas, port, stride in defaults:
            if getattr(self, attr) is None:
                instances = default_instances(key, prefix, replicas, first.name, port, stride)
                object.__setattr__(
                    self, attr, ControlPlaneSpec(replicas=replicas, instances=instances)
                )
        if self.nodes is None:
            object.__setattr__(self, "nodes", default_nodes(DEFAULT_NODE_COUNT, first.name))
        object.__setattr__(self, "store", _placed_store(self.store, self.hosts))
        _check_placement(self)

    @property
    def store_token(self) -> str:
        """The store's ``--initial-cluster-token``; a data dir remembers it."""
        return f"k8semu-{self.name}"

    def host(self, name: str) -> HostSpec:
        """The host called ``name`` (ClusterConfigError naming ``--host`` when none is)."""
        for h in self.hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts)
        raise ClusterConfigError("--host", f"{name!r} is not a host of this config ({known})")

    def address_of(self, instance: InstanceSpec) -> str:
        """``HOST:PORT`` an API server, scheduler or controller manager listens on."""
        return f"{_bracketed(self.host(instance.host).address)}:{instance.port}"

    @property
    def api_server_addresses(self) -> tuple[str, ...]:
        """Every API server's address: what clients, kubelets and proxies are given."""
        assert self.api_server is not None
        return tuple(self.address_of(i) for i in self.api_server.instances)

    @property
    def all_nodes(self) -> tuple[NodeSpec, ...]:
        assert self.nodes is not None
        return self.nodes


def default_instances(
    key: str, prefix: str, replicas: int, host: str, port: int, stride: int
) -> tuple[InstanceSpec, ...]:
    """``<prefix>-1``.. on ``host`` at ``port``, ``port + stride``, ..."""
    if replicas < 0:
        raise ClusterConfigError(f"{key}.replicas", "must be >= 0")
    if port + (replicas - 1) * stride > 65535:
        raise ClusterConfigError(
            f"{key}.replicas", f"{replicas} replicas do not fit the default ports; list instances"
        )
    return tuple(
        InstanceSpec(name=f"{prefix}-{i + 1}", host=host, port=port + i * stride)
        for i in range(replicas)
    )


def default_nodes(count: int, host: str) -> tuple[NodeSpec, ...]:
    """``node-1``.. at node IPs 127.0.1.1.., each with a kubelet (process runtime) and a proxy."""
    return tuple(
        NodeSpec(name=f"node-{i + 1}", host=host, node_ip=f"{DEFAULT_NODE_IP_PREFIX}{i + 1}")
        for i in range(count)
    )


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check_host_port(value: str, path: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ClusterConfigError(path, f"{value!r} must be HOST:PORT with a port 1-65535")


def _check_hosts(hosts: tuple[HostSpec, ...]) -> None:
    names: dict[str, int] = {}
    addresses: dict[str, int] = {}
    for i, h in enumerate(hosts):
        if not is_dns1123_label(h.name):
            raise ClusterConfigError(
                f"hosts[{i}].name",
                f"{h.name!r} must be 1-63 lowercase letters, digits and '-', starting and ending "
                "with a letter or digit",
            )
        if h.name in names:
            raise ClusterConfigError(
                f"hosts[{i}].name", f"{h.name!r} is also hosts[{names[h.name]}]"
            )
        names[h.name] = i
        if not h.address or (any(c in h.address for c in " /:") and not _is_ip(h.address)):
            raise ClusterConfigError(f"hosts[{i}].address", f"{h.address!r} is not an address")
        if _is_unspecified(h.address):
            raise ClusterConfigError(
                f"hosts[{i}].address", f"give the address others reach it at, not {h.address}"
            )
        if h.address in addresses:
            raise ClusterConfigError(
                f"hosts[{i}].address", f"{h.address} is also hosts[{addresses[h.address]}].address"
            )
        addresses[h.address] = i


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _placed_store(store: StoreSpec, hosts: tuple[HostSpec, ...]) -> StoreSpec:
    """The store with every member's ``host`` set: given, or the host whose address its
    clientURL has, or the only host."""
    by_address = {h.address: h.name for h in hosts}
    names = {h.name for h in hosts}
    placed = []
    for i, m in enumerate(store.members):
        host = m.host
        if host:
            if host not in names:
                raise ClusterConfigError(
                    f"store.members[{i}].host",
                    f"{host!r} is not a host ({', '.join(h.name for h in hosts)})",
                )
        else:
            address = m.client_address.rpartition(":")[0].strip("[]")
            host = by_address.get(address, hosts[0].name if len(hosts) == 1 else "")
            if not host:
                raise ClusterConfigError(
                    f"store.members[{i}].host",
                    f"required: no host in hosts has the address of its clientURL ({address})",
                )
        placed.append(dataclasses.replace(m, host=host))
    return dataclasses.replace(store, members=tuple(placed))


def _check_placement(config: ClusterConfig) -> None:
    """Every named host exists, no two processes listen on one address, node names are unique."""
    hosts = {h.name: h for h in config.hosts}
    known = ", ".join(hosts)
    listeners: dict[str, str] = {}

    def listen(address: str, path: str) -> None:
        if address in listeners:
            raise ClusterConfigError(path, f"{address} is also {listeners[address]}")
        listeners[address] = path

    def placed(host: str, path: str) -> HostSpec:
        if host not in hosts:
            raise ClusterConfigError(path, f"{host!r} is not a host ({known})")
        return hosts[host]

    for i, m in enumerate(config.store.members):
        listen(m.client_address, f"store.members[{i}].clientURL")
        listen(m.peer_address, f"store.members[{i}].peerURL")
    sections = (
        ("apiServer", config.api_server),
        ("scheduler", config.scheduler),
        ("controllerManager", config.controller_manager),
    )
    names: dict[str, str] = {}
    for key, spec in sections:
        assert spec is not None
        for i, inst in enumerate(spec.instances):
            path = f"{key}.instances[{i}]"
            host = placed(inst.host, f"{path}.host")
            listen(f"{_bracketed(host.address)}:{inst.port}", f"{path}.port")
            if inst.name in names:
                raise ClusterConfigError(
                    f"{path}.name", f"{inst.name!r} is also {names[inst.name]}"
                )
            names[inst.name] = f"{path}.name"
    assert config.api_server is not None
    if not config.api_server.instances and not config.store.external and config.nodes:
        raise ClusterConfigError("apiServer.replicas", "must be >= 1 (the nodes need one)")
    node_names: dict[str, str] = {}
    for n in config.all_nodes:
        path = n.path
        placed(n.host, f"{path}.host")
        ip = _bracketed(n.node_ip)
        if not n.hollow:  # a hollow pool's kubelet serves nothing
            listen(f"{ip}:{n.kubelet_port}", f"{path}.kubeletPort")
        if n.proxy and not n.hollow:
            listen(f"{ip}:{n.proxy_port}", f"{path}.proxyPort")
            if n.tunnel_port:
                listen(f"{ip}:{n.tunnel_port}", f"{path}.tunnelPort")
        for node in n.node_names:
            if node in node_names:
                raise ClusterConfigError(
                    f"{path}.name", f"node {node!r} is also {node_names[node]}"
                )
            node_names[node] = f"{path}.name"


def default_store_members(replicas: int) -> tuple[StoreMemberSpec, ...]:
    """``s1``..``sN`` on 127.0.0.1 at 2379/2380, 12379/12380, 22379/22380, ..."""
    last_port = DEFAULT_STORE_PEER_PORT + (replicas - 1) * DEFAULT_STORE_PORT_STRIDE
    if last_port > 65535:
        raise ClusterConfigError(
            "store.replicas",
            f"{replicas} replicas do not fit the default ports (2379/2380 + "
            f"{DEFAULT_STORE_PORT_STRIDE} per replica); list store.members with their URLs",
        )
    return tuple(
        StoreMemberSpec(
            name=f"s{i + 1}",
            client_url=f"http://{DEFAULT_STORE_HOST}:"
            f"{DEFAULT_STORE_CLIENT_PORT + i * DEFAULT_STORE_PORT_STRIDE}",
            peer_url=f"http://{DEFAULT_STORE_HOST}:"
            f"{DEFAULT_STORE_PEER_PORT + i * DEFAULT_STORE_PORT_STRIDE}",
        )
        for i in range(replicas)
    )


def _checked_members(members: tuple[StoreMemberSpec, ...]) -> Iterator[StoreMemberSpec]:
    """Each member with normalized URLs; errors name ``store.members[i].<field>``."""
    names: dict[str, int] = {}
    addresses: dict[str, str] = {}
    for i, m in enumerate(members):
        path = f"store.members[{i}]"
        if not is_dns1123_label(m.name):
            raise ClusterConfigError(
                f"{path}.name",
                f"{m.name!r} must be 1-63 lowercase letters, digits and '-', starting and ending "
                "with a letter or digit",
            )
        if m.name in names:
            raise ClusterConfigError(
                f"{path}.name", f"{m.name!r} is already the name of store.members[{names[m.name]}]"
            )
        names[m.name] = i
        urls = {}
        for key, url in (("clientURL", m.client_url), ("peerURL", m.peer_url)):
            where = f"{path}.{key}"
            try:
                address = parse_url(url, flag=where)
            except AddressError as exc:
                raise ClusterConfigError(where, str(exc).removeprefix(f"{where}: ")) from exc
            host, _, port = address.rpartition(":")
            if int(port) == 0:
                raise ClusterConfigError(
                    where, f"{url!r}: port 0 is not allowed (peers and clients need a fixed port)"
                )
            if _is_unspecified(host):
                raise ClusterConfigError(
                    where, f"{url!r}: give the address to listen on and advertise, not {host}"
                )
            if address in addresses:
                raise ClusterConfigError(where, f"{address} is also {addresses[address]}")
            addresses[address] = where
            urls[key] = f"http://{address}"
        yield StoreMemberSpec(
            name=m.name, client_url=urls["clientURL"], peer_url=urls["peerURL"], host=m.host
        )


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


# -- durations ----------------------------------------------------------------------------------


def parse_duration_ms(value: object, path: str) -> int:
    """``"500ms"``, ``"1.5s"``, ``"1m30s"`` -> whole milliseconds; errors name ``path``."""
    if not isinstance(value, str):
        raise ClusterConfigError(
            path, f"expected a duration such as 500ms or 2s, got {_describe(value)}"
        )
    try:
        return durations.parse_ms(value)
    except ValueError as exc:
        raise ClusterConfigError(path, str(exc)) from None


format_duration = durations.format_ms


# -- reading YAML -------------------------------------------------------------------------------


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key_node.value!r} is given twice", key_node.start_mark
                )
            seen.add(key_node.value)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Fields:
    """One YAML mapping being read at ``path``; a key never read is an unknown field."""

    def __init__(self, raw: object, path: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ClusterConfigError(path, f"expected a mapping, got {_describe(raw)}")
        for key in raw:
            if not isinstance(key, str):
                raise ClusterConfigError(path, f"keys must be strings, got {_describe(key)}")
        self.raw: dict[str, object] = raw
        self.path = path
        self._read: list[str] = []

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> object:
        """The raw value, or None when absent (an explicit null counts as absent)."""
        self._read.append(key)
        return self.raw.get(key)

    def integer(self, key: str, default: int) -> int:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ClusterConfigError(
                self.where(key), f"expected an integer, got {_describe(value)}"
            )
        return value

    def string(self, key: str, default: str) -> str:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ClusterConfigError(self.where(key), f"expected a string, got {_describe(value)}")
        return value

    def duration_ms(self, key: str, default: int) -> int:
        value = self.get(key)
        return default if value is None else parse_duration_ms(value, self.where(key))

    def section(self, key: str) -> _Fields:
        return _Fields(self.get(key), self.where(key))

    def items(self, key: str) -> list[tuple[str, object]] | None:
        """The list at ``key`` as (path, item) pairs, or None when absent."""
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise ClusterConfigError(self.where(key), f"expected a list, got {_describe(value)}")
        return [(f"{self.where(key)}[{i}]", item) for i, item in enumerate(value)]

    def finish(self) -> None:
        """Raise for the first key that was never read."""
        for key in self.raw:
            if key not in self._read:
                known = sorted(set(self._read))
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise ClusterConfigError(
                    self.where(key), f"unknown field ({hint}known: {', '.join(known)})"
                )


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value)
    )
    if kind is not None:
        return f"{kind} ({value!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _read_store(f: _Fields) -> StoreSpec:
    replicas = f.get("replicas")
    heartbeat_ms = f.duration_ms("heartbeatInterval", DEFAULT_STORE_HEARTBEAT_MS)
    election_ms = f.duration_ms("electionTimeout", DEFAULT_STORE_ELECTION_MS)
    snapshot_count = f.integer("snapshotCount", DEFAULT_STORE_SNAPSHOT_COUNT)
    compaction_mode = f.string("autoCompactionMode", DEFAULT_STORE_AUTO_COMPACTION_MODE)
    retention = f.get("autoCompactionRetention")
    if retention is None:
        retention = DEFAULT_STORE_AUTO_COMPACTION_RETENTION
    elif isinstance(retention, bool) or not isinstance(retention, int | str):
        raise ClusterConfigError(
            f.where("autoCompactionRetention"),
            f"expected a duration (10m) or a number, got {_describe(retention)}",
        )
    quota = f.integer("quotaBackendBytes", DEFAULT_STORE_QUOTA_BACKEND_BYTES)
    members: list[StoreMemberSpec] = []
    for i, (path, item) in enumerate(f.items("members") or ()):
        m = _Fields(item, path)
        members.append(
            StoreMemberSpec(
                name=m.string("name", f"s{i + 1}"),
                client_url=_required_str(m, "clientURL"),
                peer_url=_required_str(m, "peerURL"),
                host=m.string("host", ""),
            )
        )
        m.finish()
    if f.get("members") is not None and not members:
        raise ClusterConfigError(f.where("members"), "must list at least one member")
    backend = f.string("backend", DEFAULT_STORE_BACKEND)
    binary = f.string("etcdBinary", DEFAULT_ETCD_BINARY)
    endpoints: list[str] = []
    for path, item in f.items("endpoints") or ():
        if not isinstance(item, str):
            raise ClusterConfigError(path, f"expected HOST:PORT, got {_describe(item)}")
        endpoints.append(item.removeprefix("http://"))
    f.finish()
    if endpoints:
        for key in ("members", "replicas"):
            if f.raw.get(key) is not None:
                raise ClusterConfigError(
                    f.where(key),
                    "not with store.endpoints (an external etcd: nothing of the store is started)",
                )
        return StoreSpec(backend=backend, endpoints=tuple(endpoints), etcd_binary=binary)
    if f.raw.get("endpoints") is not None:
        raise ClusterConfigError(f.where("endpoints"), "must list at least one HOST:PORT")
    if replicas is None:
        count = len(members) or DEFAULT_STORE_REPLICAS
    elif isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ClusterConfigError(
            f.where("replicas"), f"expected an integer, got {_describe(replicas)}"
        )
    else:
        count = replicas
    return StoreSpec(
        replicas=count,
        heartbeat_ms=heartbeat_ms,
        election_ms=election_ms,
        snapshot_count=snapshot_count,
        auto_compaction_mode=compaction_mode,
        auto_compaction_retention=str(retention),
        quota_backend_bytes=quota,
        members=tuple(members),
        backend=backend,
        etcd_binary=binary,
    )


def _read_launcher(f: _Fields) -> LauncherSpec:
    spec = LauncherSpec(
        ready_timeout_ms=f.duration_ms("readyTimeout", DEFAULT_READY_TIMEOUT_MS),
        stop_grace_ms=f.duration_ms("stopGracePeriod", DEFAULT_STOP_GRACE_MS),
        restart_backoff_ms=f.duration_ms("restartBackoff", DEFAULT_RESTART_BACKOFF_MS),
        max_restart_backoff_ms=f.duration_ms("maxRestartBackoff", DEFAULT_MAX_RESTART_BACKOFF_MS),
        backoff_reset_after_ms=f.duration_ms("backoffResetAfter", DEFAULT_BACKOFF_RESET_AFTER_MS),
        max_restarts=f.integer("maxRestarts", DEFAULT_MAX_RESTARTS),
    )
    f.finish()
    return spec


def _read_hosts(f: _Fields) -> tuple[HostSpec, ...]:
    hosts = []
    items = f.items("hosts")
    if items is not None and not items:
        raise ClusterConfigError(f.where("hosts"), "must list at least one host")
    for path, item in items or ():
        h = _Fields(item, path)
        hosts.append(HostSpec(name=_required_str(h, "name"), address=_required_str(h, "address")))
        h.finish()
    return tuple(hosts)


def _read_control_plane(
    f: _Fields, key: str, prefix: str, port: int, stride: int, first_host: str
) -> ControlPlaneSpec:
    replicas_raw = f.get("replicas")
    items = f.items("instances")
    f.finish()
    if replicas_raw is not None and (
        isinstance(replicas_raw, bool) or not isinstance(replicas_raw, int)
    ):
        raise ClusterConfigError(
            f.where("replicas"), f"expected an integer, got {_describe(replicas_raw)}"
        )
    if items is None:
        replicas = 1 if replicas_raw is None else replicas_raw
        if replicas < 0:
            raise ClusterConfigError(f.where("replicas"), "must be >= 0")
        return ControlPlaneSpec(
            replicas=replicas,
            instances=default_instances(key, prefix, replicas, first_host, port, stride),
        )
    instances = []
    for i, (path, item) in enumerate(items):
        g = _Fields(item, path)
        inst = InstanceSpec(
            name=g.string("name", f"{prefix}-{i + 1}"),
            host=g.string("host", first_host),
            port=g.integer("port", port + i * stride),
        )
        g.finish()
        if not is_dns1123_label(inst.name):
            raise ClusterConfigError(f"{path}.name", f"{inst.name!r} must be a DNS label")
        if not 0 < inst.port <= 65535:
            raise ClusterConfigError(f"{path}.port", f"must be 1-65535, got {inst.port}")
        instances.append(inst)
    if replicas_raw is not None and replicas_raw != len(instances):
        raise ClusterConfigError(
            f.where("instances"),
            f"lists {len(instances)} instances but {f.where('replicas')} is {replicas_raw}",
        )
    return ControlPlaneSpec(replicas=len(instances), instances=tuple(instances))


def _read_mapping(f: _Fields, key: str) -> tuple[tuple[str, str], ...] | None:
    """A mapping of strings (numbers are taken as their text: ``cpu: 4``)."""
    value = f.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ClusterConfigError(f.where(key), f"expected a mapping, got {_describe(value)}")
    out = []
    for k, v in value.items():
        if not isinstance(k, str):
            raise ClusterConfigError(f.where(key), f"keys must be strings, got {_describe(k)}")
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ClusterConfigError(
                f"{f.where(key)}.{k}", f"expected a string or a number, got {_describe(v)}"
            )
        out.append((k, str(v)))
    return tuple(out)


def _read_taints(f: _Fields) -> tuple[Taint, ...]:
    taints = []
    for path, item in f.items("taints") or ():
        t = _Fields(item, path)
        taints.append(
            Taint(key=_required_str(t, "key"), value=t.string("value", ""),
                  effect=_required_str(t, "effect"))
        )  # fmt: skip
        t.finish()
    return tuple(taints)


def _boolean(f: _Fields, key: str, default: bool) -> bool:
    value = f.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ClusterConfigError(f.where(key), f"expected true or false, got {_describe(value)}")
    return value


def _read_nodes(top: _Fields, first_host: str) -> tuple[NodeSpec, ...] | None:
    items = top.items("nodes")
    pools = top.items("hollowNodes")
    if items is None and pools is None:
        return None
    nodes = []
    for i, (path, item) in enumerate(items or ()):
        n = _Fields(item, path)
        nodes.append(
            NodeSpec(
                name=n.string("name", f"node-{i + 1}"),
                host=n.string("host", first_host),
                node_ip=(node_ip := n.string("nodeIP", f"{DEFAULT_NODE_IP_PREFIX}{i + 1}")),
                runtime=n.string("runtime", DEFAULT_RUNTIME),
                capacity=_read_mapping(n, "capacity") or DEFAULT_CAPACITY,
                labels=_read_mapping(n, "labels") or (),
                taints=_read_taints(n),
                kubelet_port=n.integer("kubeletPort", DEFAULT_KUBELET_PORT),
                proxy_port=n.integer("proxyPort", DEFAULT_PROXY_PORT),
                tunnel_port=n.integer("tunnelPort", default_tunnel_port(node_ip)),
                proxy=_boolean(n, "proxy", True),
                index=i,
            )
        )
        n.finish()
    for i, (path, item) in enumerate(pools or ()):
        n = _Fields(item, path)
        count = n.integer("count", 0)
        if count < 1:
            raise ClusterConfigError(n.where("count"), "required, and must be >= 1")
        nodes.append(
            NodeSpec(
                name=n.string("name", f"hollow-{i + 1}"),
                host=n.string("host", first_host),
                node_ip=n.string("nodeIP", f"{DEFAULT_HOLLOW_IP_PREFIX}{i + 1}"),
                runtime="simulated",
                capacity=_read_mapping(n, "capacity") or DEFAULT_CAPACITY,
                labels=_read_mapping(n, "labels") or (),
                taints=_read_taints(n),
                proxy=False,
                count=count,
                index=i,
            )
        )
        n.finish()
    return tuple(nodes)


def _read_network(f: _Fields) -> NetworkSpec:
    spec = NetworkSpec(
        cluster_cidr=f.string("clusterCIDR", DEFAULT_CLUSTER_CIDR),
        node_cidr_mask_size=f.integer("nodeCIDRMaskSize", DEFAULT_NODE_CIDR_MASK_SIZE),
        service_cidr=f.string("serviceCIDR", DEFAULT_SERVICE_CIDR),
        node_port_range=f.string("nodePortRange", DEFAULT_NODE_PORT_RANGE),
        load_balancer_pool=f.string("loadBalancerPool", DEFAULT_LOAD_BALANCER_POOL),
        cluster_dns=f.string("clusterDNS", ""),
        cluster_domain=f.string("clusterDomain", DEFAULT_CLUSTER_DOMAIN),
    )
    f.finish()
    return spec


def _read_addons(f: _Fields) -> tuple[str, ...]:
    items = f.items("addons")
    if items is None:
        return DEFAULT_ADDONS
    names = []
    for where, item in items:
        if item not in KNOWN_ADDONS:
            raise ClusterConfigError(
                where, f"unknown add-on {item!r} (known: {', '.join(KNOWN_ADDONS)})"
            )
        names.append(str(item))
    return tuple(names)


def _read_timings(f: _Fields) -> TimingsSpec:
    defaults = TimingsSpec()
    values = {attr: f.duration_ms(key, getattr(defaults, attr)) for attr, key in _TIMING_KEYS}
    key = "etcdCompactionInterval"
    raw = f.get(key)
    # `0` turns it off, as for kube-apiserver (Go's durations accept a bare 0).
    values["etcd_compaction_interval_ms"] = (
        0
        if raw == "0" or (type(raw) is int and raw == 0)
        else f.duration_ms(key, defaults.etcd_compaction_interval_ms)
    )
    raw = f.get("eventTTL")
    values["event_ttl_ms"] = (
        0
        if raw == "0" or (type(raw) is int and raw == 0)
        else f.duration_ms("eventTTL", defaults.event_ttl_ms)
    )
    f.finish()
    return TimingsSpec(**values)


def _required_str(f: _Fields, key: str) -> str:
    if f.get(key) is None:
        raise ClusterConfigError(f.where(key), "required")
    return f.string(key, "")


def _read_document(raw: object) -> ClusterConfig:
    if raw is None:
        raise ClusterConfigError("", f"empty document; a config starts with kind: {KIND}")
    top = _Fields(raw, "")
    for key, want in (("kind", KIND), ("version", VERSION)):
        value = top.get(key)
        if value is None:
            raise ClusterConfigError(key, f"required; must be {want}")
        if value != want:
            raise ClusterConfigError(key, f"must be {want}, got {value!r}")
    name = top.string("name", DEFAULT_NAME)
    hosts = _read_hosts(top)
    first = hosts[0].name if hosts else DEFAULT_HOST_NAME
    store = _read_store(top.section("store"))
    sections = {}
    for key, prefix, port, stride in (
        ("apiServer", "apiserver", DEFAULT_APISERVER_PORT, DEFAULT_APISERVER_STRIDE),
        ("scheduler", "scheduler", DEFAULT_SCHEDULER_PORT, DEFAULT_CONTROL_PLANE_STRIDE),
        ("controllerManager", "controller-manager", DEFAULT_CONTROLLER_MANAGER_PORT,
         DEFAULT_CONTROL_PLANE_STRIDE),
    ):  # fmt: skip
        sections[key] = _read_control_plane(top.section(key), key, prefix, port, stride, first)
    nodes = _read_nodes(top, first)
    network = _read_network(top.section("network"))
    timings = _read_timings(top.section("timings"))
    launcher = _read_launcher(top.section("launcher"))
    addons = _read_addons(top)
    top.finish()
    return ClusterConfig(
        name=name,
        hosts=hosts,
        store=store,
        api_server=sections["apiServer"],
        scheduler=sections["scheduler"],
        controller_manager=sections["controllerManager"],
        nodes=nodes,
        network=network,
        timings=timings,
        launcher=launcher,
        addons=addons,
    )


def parse_config(text: str, *, source: str = "<string>") -> ClusterConfig:
    """Read a config from YAML text. Errors are ClusterConfigError naming ``source`` and the
    field path."""
    try:
        stream = io.StringIO(text)
        stream.name = source  # PyYAML names the stream in its errors
        raw = yaml.load(stream, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ClusterConfigError("", f"not valid YAML: {exc}", source=source) from exc
    try:
        config = _read_document(raw)
    except ClusterConfigError as exc:
        raise ClusterConfigError(exc.path, exc.reason, source=source) from None
    return dataclasses.replace(config, source=source)


def default_config_text() -> str:
    """The built-in default config (``k8semu/cluster/default.yaml``) as YAML text."""
    resource = importlib.resources.files("k8semu.cluster").joinpath(DEFAULT_CONFIG_RESOURCE)
    return resource.read_text(encoding="utf-8")


def load_config(path: Path | None = None) -> ClusterConfig:
    """The config in the file at ``path``, or the built-in default when ``path`` is None."""
    if path is None:
        return parse_config(default_config_text(), source=DEFAULT_CONFIG_SOURCE)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ClusterConfigError("", f"cannot read: {exc.strerror}", source=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ClusterConfigError("", f"not UTF-8 text: {exc}", source=str(path)) from exc
    return parse_config(text, source=str(path))
