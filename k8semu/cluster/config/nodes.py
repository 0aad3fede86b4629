"""The ``nodes`` and ``hollowNodes`` sections: worker nodes, each a kubelet (and a proxy).

Errors name ``nodes[i].<field>`` or ``hollowNodes[i].<field>``; label keys and values, taint
effects and capacities are checked as the API server would check the Node they register.
"""

from __future__ import annotations

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

__all__ = ["NodeSpec", "Taint", "default_nodes"]


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
    #: Prometheus /metrics of the kubelet and the proxy on ``node_ip``; 0: none.
    kubelet_metrics_port: int = 0
    proxy_metrics_port: int = 0
    proxy: bool = True
    count: int = 0
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


def default_nodes(count: int, host: str) -> tuple[NodeSpec, ...]:
    """``node-1``.. at node IPs 127.0.1.1.., each with a kubelet (process runtime) and a proxy."""
    return tuple(
        NodeSpec(
            name=f"node-{i + 1}", host=host, node_ip=f"{defaults.DEFAULT_NODE_IP_PREFIX}{i + 1}"
        )
        for i in range(count)
    )
