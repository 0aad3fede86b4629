"""``ClusterConfig``: a whole cluster config, every section filled in and placed on its hosts."""

from __future__ import annotations

from dataclasses import dataclass, field

from k8semu.cluster.config import defaults
from k8semu.cluster.config.autoscaling import HorizontalPodAutoscalerSpec
from k8semu.cluster.config.backups import BackupsSpec
from k8semu.cluster.config.hosts import (
    ControlPlaneSpec,
    HostSpec,
    InstanceSpec,
    check_hosts,
    check_placement,
    default_instances,
    placed_store,
)
from k8semu.cluster.config.network import NetworkSpec
from k8semu.cluster.config.nodes import NodeSpec, default_nodes
from k8semu.cluster.config.security import SecuritySpec
from k8semu.cluster.config.store import StoreSpec
from k8semu.cluster.config.timings import LauncherSpec, TimingsSpec
from k8semu.cluster.config.values import bracketed, check_dns_label
from k8semu.cluster.errors import ClusterConfigError

__all__ = ["CONTROL_PLANE", "ClusterConfig"]

#: (attribute, config key, instance name prefix, first port, port stride) of each control-plane
#: section, in start order.
CONTROL_PLANE = (
    ("api_server", "apiServer", "apiserver",
     defaults.DEFAULT_APISERVER_PORT, defaults.DEFAULT_APISERVER_STRIDE),
    ("scheduler", "scheduler", "scheduler",
     defaults.DEFAULT_SCHEDULER_PORT, defaults.DEFAULT_CONTROL_PLANE_STRIDE),
    ("controller_manager", "controllerManager", "controller-manager",
     defaults.DEFAULT_CONTROLLER_MANAGER_PORT, defaults.DEFAULT_CONTROL_PLANE_STRIDE),
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """A whole cluster config. ``name`` names the cluster: it picks the default state directory
    (``~/.k8semu/clusters/<name>``), the store's cluster token and the CLI context, so the same
    name finds the same data.

    Invariants after construction: every section is filled in (left-out ones take their
    defaults), every ``host`` a component names is one of ``hosts``, no two processes listen
    on the same address, and node names are unique.
    """

    name: str = defaults.DEFAULT_NAME
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
    backups: BackupsSpec = field(default_factory=BackupsSpec)
    security: SecuritySpec = field(default_factory=SecuritySpec)
    horizontal_pod_autoscaler: HorizontalPodAutoscalerSpec = field(
        default_factory=HorizontalPodAutoscalerSpec
    )
    #: Add-ons (k8semu/addons/*.yaml) the launcher applies once the cluster is up.
    addons: tuple[str, ...] = defaults.DEFAULT_ADDONS
    #: Where the config came from (a file name, or the built-in default), for messages.
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        check_dns_label(self.name, "name")
        if not self.hosts:
            object.__setattr__(
                self,
                "hosts",
                (HostSpec(name=defaults.DEFAULT_HOST_NAME, address=defaults.DEFAULT_HOST_ADDRESS),),
            )
        check_hosts(self.hosts)
        first = self.hosts[0]
        for attr, key, prefix, port, stride in CONTROL_PLANE:
            if getattr(self, attr) is None:
                instances = default_instances(key, prefix, 1, first.name, port, stride)
                object.__setattr__(self, attr, ControlPlaneSpec(replicas=1, instances=instances))
        if self.nodes is None:
            object.__setattr__(
                self, "nodes", default_nodes(defaults.DEFAULT_NODE_COUNT, first.name)
            )
        object.__setattr__(self, "store", placed_store(self.store, self.hosts))
        if self.backups.enabled and self.store.backend == "etcd":
            raise ClusterConfigError(
                "backups.interval",
                "scheduled backups need the k8semu store (store.backend: etcd is set); back an"
                " etcd up with `etcdctl snapshot save` or `k8semu backup export`",
            )
        check_placement(
            self.hosts,
            self.store,
            [(key, getattr(self, attr)) for attr, key, *_ in CONTROL_PLANE],
            self.node_members,
        )

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
        return f"{bracketed(self.host(instance.host).address)}:{instance.port}"

    @property
    def api_server_addresses(self) -> tuple[str, ...]:
        """Every API server's address: what clients, kubelets and proxies are given."""
        assert self.api_server is not None
        return tuple(self.address_of(i) for i in self.api_server.instances)

    @property
    def rest_urls(self) -> tuple[str, ...]:
        """Every API server's REST API URL (kubectl's server)."""
        assert self.api_server is not None
        scheme = "https" if self.security.tls else "http"
        return tuple(
            f"{scheme}://{bracketed(self.host(i.host).address)}:{i.rest_port}"
            for i in self.api_server.instances
            if i.rest_port
        )

    @property
    def all_nodes(self) -> tuple[NodeSpec, ...]:
        assert self.nodes is not None
        return self.nodes

    @property
    def node_members(self) -> tuple[NodeSpec, ...]:
        """Every node that may run: the nodes, and each slot of an autoscaled pool."""
        return tuple(m for n in self.all_nodes for m in n.members())

    @property
    def autoscaled_pools(self) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.all_nodes if n.autoscaling is not None)
