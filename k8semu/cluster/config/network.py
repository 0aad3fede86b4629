"""The ``network`` section: the address ranges of design decision 7.

Pod IPs (``clusterCIDR``, one /``nodeCIDRMaskSize`` per node), ClusterIPs (``serviceCIDR``),
NodePorts and LoadBalancer IPs must not overlap; errors name ``network.<field>``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from k8semu.api.names import is_dns1123_subdomain
from k8semu.cluster.config import defaults
from k8semu.cluster.errors import ClusterConfigError

__all__ = ["NetworkSpec"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkSpec:
    """Address ranges (design decision 7): pod IPs (``clusterCIDR``, one /``nodeCIDRMaskSize`` per
    node), ClusterIPs (``serviceCIDR``), NodePorts, LoadBalancer IPs."""

    cluster_cidr: str = defaults.DEFAULT_CLUSTER_CIDR
    node_cidr_mask_size: int = defaults.DEFAULT_NODE_CIDR_MASK_SIZE
    service_cidr: str = defaults.DEFAULT_SERVICE_CIDR
    node_port_range: str = defaults.DEFAULT_NODE_PORT_RANGE
    load_balancer_pool: str = defaults.DEFAULT_LOAD_BALANCER_POOL
    #: The cluster DNS Service's ClusterIP ("" = the 10th address of serviceCIDR, as
    #: kubeadm picks) and domain; kubelets hand them to pods, the dns add-on serves them.
    cluster_dns: str = ""
    cluster_domain: str = defaults.DEFAULT_CLUSTER_DOMAIN

    @property
    def dns_ip(self) -> str:
        if self.cluster_dns:
            return self.cluster_dns
        return str(ipaddress.ip_network(self.service_cidr)[10])

    def __post_init__(self) -> None:
        nets = self._ranges()
        mask = self.node_cidr_mask_size
        pods = nets["clusterCIDR"]
        if not pods.prefixlen <= mask <= pods.max_prefixlen - 2:
            raise ClusterConfigError(
                "network.nodeCIDRMaskSize",
                f"must be between network.clusterCIDR's prefix length "
                f"({pods.prefixlen}) and {pods.max_prefixlen - 2}",
            )
        keys = list(nets)
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                if nets[a].overlaps(nets[b]):
                    raise ClusterConfigError(f"network.{b}", f"overlaps network.{a} ({nets[a]})")
        if self.cluster_dns:
            self._check_dns_ip(nets["serviceCIDR"])
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

    def _ranges(self) -> dict[str, _Network]:
        """Config key -> network of every CIDR field, each a valid CIDR."""
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
        return nets

    def _check_dns_ip(self, services: _Network) -> None:
        try:
            dns = ipaddress.ip_address(self.cluster_dns)
        except ValueError:
            raise ClusterConfigError(
                "network.clusterDNS", f"{self.cluster_dns!r} is not an IP address"
            ) from None
        if dns not in services:
            raise ClusterConfigError("network.clusterDNS", f"{dns} is not in network.serviceCIDR")
