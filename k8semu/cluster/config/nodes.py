"""The ``nodes`` and ``hollowNodes`` sections: worker nodes, each a kubelet (and a proxy).

Errors name ``nodes[i].<field>`` or ``hollowNodes[i].<field>``; label keys and values, taint
effects and capacities are checked as the API server would check the Node they register.

A node or pool with ``autoscaling`` is a node pool the cluster autoscaler sizes between
``minNodes`` and ``maxNodes``: it has ``maxNodes`` node slots ``<name>-0``..``<name>-<max-1>``
(``members()``), each its own kubelet process (and proxy, for process nodes), of which the
first ``initialNodes`` start with the cluster; the supervisor starts and stops the others as
the autoscaler asks (docs/controllers.md, "Cluster autoscaler").
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field

from k8semu.api import quantity
from k8semu.api.names import is_label_value, is_qualified_name
from k8semu.cluster.config import defaults
from k8semu.cluster.config.values import (
    check_choice,
    check_dns_label,
    check_optional_port,
    check_port,
    is_ip,
)
from k8semu.cluster.errors import ClusterConfigError

__all__ = ["POOL_LABEL", "AutoscalingSpec", "NodeSpec", "Taint", "default_nodes"]

#: The label every node of an autoscaled pool registers with: its pool's name (as GKE's
#: cloud.google.com/gke-nodepool or EKS's eks.amazonaws.com/nodegroup).
POOL_LABEL = "k8semu.io/node-pool"
DEFAULT_SCALE_DOWN_UTILIZATION = 0.5
DEFAULT_SCALE_DOWN_UNNEEDED_MS = 600_000  # cluster-autoscaler's --scale-down-unneeded-time


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

    def check(self, path: str) -> None:
        """Errors name ``path`` (``nodes[0].taints[1]``) and the field."""
        if not is_qualified_name(self.key):
            raise ClusterConfigError(f"{path}.key", f"{self.key!r} is not a key")
        if not is_label_value(self.value):
            raise ClusterConfigError(f"{path}.value", f"{self.value!r} is not a value")
        check_choice(self.effect, defaults.TAINT_EFFECTS, f"{path}.effect")


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoscalingSpec:
    """A pool's ``autoscaling`` section. ``initial_nodes`` start with the cluster."""

    min_nodes: int = 0
    max_nodes: int = 1
    initial_nodes: int = 0
    #: A node whose pods request less than this fraction of its allocatable cpu and memory is
    #: unneeded (cluster-autoscaler's --scale-down-utilization-threshold).
    scale_down_utilization: float = DEFAULT_SCALE_DOWN_UTILIZATION
    #: ... and is removed once it stayed unneeded this long.
    scale_down_unneeded_ms: int = DEFAULT_SCALE_DOWN_UNNEEDED_MS

    def check(self, path: str) -> None:
        if self.min_nodes < 0:
            raise ClusterConfigError(f"{path}.minNodes", f"must be >= 0, got {self.min_nodes}")
        if not 1 <= self.max_nodes <= MAX_POOL_NODES:
            raise ClusterConfigError(
                f"{path}.maxNodes", f"must be 1-{MAX_POOL_NODES}, got {self.max_nodes}"
            )
        if self.min_nodes > self.max_nodes:
            raise ClusterConfigError(
                f"{path}.minNodes",
                f"{self.min_nodes} is more than {path}.maxNodes ({self.max_nodes})",
            )
        if not self.min_nodes <= self.initial_nodes <= self.max_nodes:
            raise ClusterConfigError(
                f"{path}.initialNodes",
                f"must be between minNodes ({self.min_nodes}) and maxNodes ({self.max_nodes}),"
                f" got {self.initial_nodes}",
            )
        if not 0 < self.scale_down_utilization <= 1:
            raise ClusterConfigError(
                f"{path}.scaleDownUtilization",
                f"must be a fraction in (0, 1], got {self.scale_down_utilization}",
            )
        if self.scale_down_unneeded_ms < 0:
            raise ClusterConfigError(f"{path}.scaleDownUnneededTime", "must be >= 0")


#: Node slots of one pool at most: each is a process of its own on this machine.
MAX_POOL_NODES = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    """A worker node: one kubelet process (and, unless ``proxy`` is off, one proxy process).

    A hollow-node pool (``count`` > 0) is one kubelet process with the ``simulated`` runtime
    that registers ``count`` nodes named ``<name>-0``.. ``<name>-<count-1>``; it has no proxy.
    """

    name: str
    host: str
    node_ip: str
    runtime: str = defaults.DEFAULT_RUNTIME
    capacity: tuple[tuple[str, str], ...] = defaults.DEFAULT_CAPACITY
    labels: tuple[tuple[str, str], ...] = ()
    taints: tuple[Taint, ...] = ()
    kubelet_port: int = defaults.DEFAULT_KUBELET_PORT
    proxy_port: int = defaults.DEFAULT_PROXY_PORT
    #: The proxy's tunnel port on ``node_ip``; 0: no tunnel (a node on a single-host cluster).
    tunnel_port: int = 0
    #: The built-in ingress controller's HTTP port on ``node_ip`` (in the proxy); 0: none.
    ingress_port: int = defaults.DEFAULT_INGRESS_PORT
    ingress_tls_port: int = defaults.DEFAULT_INGRESS_TLS_PORT
    #: Prometheus /metrics of the kubelet and the proxy on ``node_ip``; 0: none.
    kubelet_metrics_port: int = 0
    proxy_metrics_port: int = 0
    proxy: bool = True
    count: int = 0
    #: Set on an autoscaled pool (for a hollow one, ``count`` is then ``max_nodes``).
    autoscaling: AutoscalingSpec | None = None
    #: The autoscaled pool this node is a slot of ("" for the rest): see ``members()``.
    pool: str = ""
    #: Position in ``nodes`` (or ``hollowNodes``), for error messages.
    index: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        path = self.path
        check_dns_label(self.name, f"{path}.name")
        if not is_ip(self.node_ip):
            raise ClusterConfigError(f"{path}.nodeIP", f"{self.node_ip!r} is not an IP address")
        check_choice(self.runtime, defaults.RUNTIMES, f"{path}.runtime")
        check_port(self.kubelet_port, f"{path}.kubeletPort")
        check_port(self.proxy_port, f"{path}.proxyPort")
        check_optional_port(self.kubelet_metrics_port, f"{path}.kubeletMetricsPort")
        check_optional_port(self.proxy_metrics_port, f"{path}.proxyMetricsPort")
        check_optional_port(self.ingress_port, f"{path}.ingressPort")
        check_optional_port(self.ingress_tls_port, f"{path}.ingressTLSPort")
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
            t.check(f"{path}.taints[{i}]")
        if self.autoscaling is not None:
            self.autoscaling.check(f"{path}.autoscaling")
            if self.hollow and self.count != self.autoscaling.max_nodes:
                raise ClusterConfigError(f"{path}.count", "an autoscaled pool has maxNodes slots")
            if self.hollow and self.kubelet_metrics_port:
                raise ClusterConfigError(
                    f"{path}.kubeletMetricsPort",
                    "not with autoscaling: the pool's slots share one node IP",
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
        """The Node objects this kubelet registers (every slot's, for an autoscaled pool)."""
        if self.autoscaling is not None:
            return tuple(f"{self.name}-{i}" for i in range(self.autoscaling.max_nodes))
        if self.hollow and not self.pool:
            return tuple(f"{self.name}-{i}" for i in range(self.count))
        return (self.name,)

    def members(self) -> tuple[NodeSpec, ...]:
        """What runs: this node, or each slot of an autoscaled pool. A hollow pool's slot is a
        one-node hollow kubelet on the pool's IP; a process pool's slot ``i`` is a node on the
        pool's ``nodeIP`` + ``i`` (with the pool's ports), so slots never share an address."""
        if self.autoscaling is None:
            return (self,)
        labels = (*((k, v) for k, v in self.labels if k != POOL_LABEL), (POOL_LABEL, self.name))
        out = []
        for i in range(self.autoscaling.max_nodes):
            ip = self.node_ip
            if not self.hollow:
                try:
                    ip = str(ipaddress.ip_address(self.node_ip) + i)
                except ValueError:  # past the end of the address space
                    raise ClusterConfigError(
                        f"{self.path}.autoscaling.maxNodes",
                        f"{self.node_ip} + {i} is not an IP address",
                    ) from None
            out.append(
                dataclasses.replace(
                    self,
                    name=f"{self.name}-{i}",
                    node_ip=ip,
                    labels=labels,
                    count=1 if self.hollow else 0,
                    autoscaling=None,
                    pool=self.name,
                )
            )
        return tuple(out)


def default_nodes(count: int, host: str) -> tuple[NodeSpec, ...]:
    """``node-1``.. at node IPs 127.0.1.1.., each with a kubelet (process runtime) and a proxy."""
    return tuple(
        NodeSpec(
            name=f"node-{i + 1}", host=host, node_ip=f"{defaults.DEFAULT_NODE_IP_PREFIX}{i + 1}"
        )
        for i in range(count)
    )
