"""The kubelet's configuration: one frozen object with named defaults (design decision 6), and
the parsers for the flag values that are more than a number (capacity, labels, taints).

Pure: no I/O. Bad values raise ConfigError naming the flag and the item.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from k8semu.api.errors import QuantityError
from k8semu.api.quantity import Quantity, format_quantity, parse_quantity
from k8semu.kubelet.podusers import DEFAULT_RANGE, parse_range
from k8semu.pb.api.v1 import core_pb2

DEFAULT_CAPACITY = "cpu=4,memory=8Gi,pods=110"
DEFAULT_LEASE_DURATION = 4.0  # seconds (Kubernetes: 40)
DEFAULT_LEASE_RENEW_INTERVAL = 1.0  # seconds (Kubernetes: a quarter of the duration, 10)
DEFAULT_STATUS_UPDATE_FREQUENCY = 2.0  # seconds (Kubernetes: 10)
DEFAULT_MAX_CONTAINER_BACKOFF = 20.0  # seconds (Kubernetes: 300)
# How often a running pod's configMap/secret/downwardAPI/projected volumes are read again
# (kubelet/refresh.py), so the most a change waits before its files show it (Kubernetes: 60).
DEFAULT_SYNC_FREQUENCY = 10.0
DEFAULT_POD_CIDR_WAIT = 5.0  # seconds to wait for the node IPAM controller's podCIDR
DEFAULT_EXEC_TIMEOUT = 60.0
KUBELET_PORT = 10250
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
RUNTIMES = ("process", "simulated")
CGROUP_MODES = ("auto", "on", "off")  # auto: where usable; on: required; off: rlimits only
DEFAULT_POD_USER_RANGE = DEFAULT_RANGE
DEFAULT_POD_PIDS_LIMIT = 1024  # Kubernetes: -1 (unlimited); one host holds many nodes here
# Container logs rotate as the kubelet's: --container-log-max-size, --container-log-max-files.
DEFAULT_CONTAINER_LOG_MAX_SIZE = "10Mi"
DEFAULT_CONTAINER_LOG_MAX_FILES = 5


class ConfigError(ValueError):
    """A flag value the kubelet cannot use; the message names the flag."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeletConfig:
    """Everything one kubelet (or one hollow node) needs. Durations are seconds."""

    node_name: str
    node_ip: str = "127.0.0.1"
    listen_address: str = ""  # "" = <node_ip>:10250; "none" = no gRPC server
    runtime: str = "process"
    root_dir: str = ""  # "" = .k8semu/kubelet/<node>
    capacity: Mapping[str, str] = field(default_factory=lambda: parse_resources(DEFAULT_CAPACITY))
    reserved: Mapping[str, str] = field(default_factory=dict)
    node_labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[core_pb2.Taint, ...] = ()
    lease_duration: float = DEFAULT_LEASE_DURATION
    lease_renew_interval: float = DEFAULT_LEASE_RENEW_INTERVAL
    status_update_frequency: float = DEFAULT_STATUS_UPDATE_FREQUENCY
    max_container_backoff: float = DEFAULT_MAX_CONTAINER_BACKOFF
    sync_frequency: float = DEFAULT_SYNC_FREQUENCY
    initial_container_backoff: float = 1.0
    simulated_start_delay: float = 0.0
    pod_cidr: str = ""  # used when the node has no spec.podCIDR after pod_cidr_wait
    pod_cidr_wait: float = DEFAULT_POD_CIDR_WAIT
    exec_timeout: float = DEFAULT_EXEC_TIMEOUT
    cluster_dns: str = ""  # the cluster DNS Service's IP (kubelet --cluster-dns); "" = none
    cluster_domain: str = "cluster.local"
    cgroups: str = "auto"
    pod_pids_limit: int = DEFAULT_POD_PIDS_LIMIT  # -1: unlimited
    # The uids given to pods, one each (kubelet/podusers.py); "": pods run as the kubelet.
    pod_user_range: str = DEFAULT_POD_USER_RANGE
    container_log_max_size: str = DEFAULT_CONTAINER_LOG_MAX_SIZE
    container_log_max_files: int = DEFAULT_CONTAINER_LOG_MAX_FILES

    def __post_init__(self) -> None:
        if not self.node_name:
            raise ConfigError("--node-name: must not be empty")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"--runtime: {self.runtime!r}: must be one of {', '.join(RUNTIMES)}")
        for flag, value in (
            ("--node-lease-duration", self.lease_duration),
            ("--node-lease-renew-interval", self.lease_renew_interval),
            ("--node-status-update-frequency", self.status_update_frequency),
            ("--max-container-backoff", self.max_container_backoff),
            ("--sync-frequency", self.sync_frequency),
        ):
            if not value > 0:
                raise ConfigError(f"{flag}: must be > 0, got {value}")
        if self.lease_renew_interval >= self.lease_duration:
            raise ConfigError(
                f"--node-lease-renew-interval ({self.lease_renew_interval}) must be shorter"
                f" than --node-lease-duration ({self.lease_duration})"
            )
        if self.simulated_start_delay < 0 or self.pod_cidr_wait < 0:
            raise ConfigError("--simulated-start-delay and --pod-cidr-wait must be >= 0")
        try:
            ipaddress.ip_address(self.node_ip)
        except ValueError:
            raise ConfigError(f"--node-ip: {self.node_ip!r}: not an IP address") from None
        if self.pod_cidr:
            parse_cidr(self.pod_cidr, flag="--pod-cidr")
        if self.cgroups not in CGROUP_MODES:
            raise ConfigError(f"--cgroups: {self.cgroups!r}: must be one of auto, on, off")
        try:
            parse_range(self.pod_user_range)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.pod_pids_limit == 0 or self.pod_pids_limit < -1:
            raise ConfigError(
                f"--pod-pids-limit: must be > 0, or -1 for unlimited; got {self.pod_pids_limit}"
            )
        self.container_log_max_bytes  # noqa: B018 - checked here, not at the first rotation
        if self.container_log_max_files < 2:
            raise ConfigError(
                f"--container-log-max-files: must be >= 2, got {self.container_log_max_files}"
            )

    @property
    def container_log_max_bytes(self) -> int:
        """--container-log-max-size in bytes (a quantity, as Kubernetes': 10Mi)."""
        flag = "--container-log-max-size"
        try:
            size = parse_quantity(self.container_log_max_size, field=flag).value()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if size <= 0:
            raise ConfigError(f"{flag}: must be > 0, got {self.container_log_max_size!r}")
        return size

    @property
    def effective_root_dir(self) -> str:
        return self.root_dir or f".k8semu/kubelet/{self.node_name}"

    @property
    def effective_listen_address(self) -> str:
        return self.listen_address or f"{self.node_ip}:{KUBELET_PORT}"

    def allocatable(self) -> dict[str, str]:
        return allocatable(self.capacity, self.reserved)


def parse_cidr(text: str, *, flag: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {text!r}: {exc}") from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 30:
        raise ConfigError(f"{flag}: {text!r}: expected an IPv4 network of at least 4 addresses")
    return net


def _pairs(text: str, *, flag: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag}: {item!r}: expected KEY=VALUE")
        out.append((key.strip(), value.strip()))
    return out


def parse_resources(text: str, *, flag: str = "--capacity") -> dict[str, str]:
    """`cpu=4,memory=8Gi,pods=110` -> {"cpu": "4", ...}; each value must be a quantity."""
    out: dict[str, str] = {}
    for key, value in _pairs(text, flag=flag):
        try:
            quantity = parse_quantity(value)
        except QuantityError as exc:
            raise ConfigError(f"{flag}: {key}: {exc}") from None
        if quantity.amount < 0:
            raise ConfigError(f"{flag}: {key}: must not be negative, got {value!r}")
        out[key] = value
    return out


def allocatable(capacity: Mapping[str, str], reserved: Mapping[str, str]) -> dict[str, str]:
    """capacity minus reserved, per resource, never below zero."""
    out: dict[str, str] = {}
    for name, value in capacity.items():
        if name not in reserved:
            out[name] = value
            continue
        cap = parse_quantity(value)
        left = max(cap.amount - parse_quantity(reserved[name]).amount, Fraction(0))
        out[name] = format_quantity(Quantity(left, cap.format))
    return out


def parse_labels(text: str, *, flag: str = "--node-labels") -> dict[str, str]:
    return dict(_pairs(text, flag=flag))


def parse_taints(text: str, *, flag: str = "--register-with-taints") -> tuple[core_pb2.Taint, ...]:
    """`key=value:Effect,key:Effect` -> Taints."""
    taints = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        head, sep, effect = item.rpartition(":")
        if not sep or not head:
            raise ConfigError(f"{flag}: {item!r}: expected KEY[=VALUE]:EFFECT")
        if effect not in TAINT_EFFECTS:
            raise ConfigError(
                f"{flag}: {item!r}: effect {effect!r} must be one of {', '.join(TAINT_EFFECTS)}"
            )
        key, _, value = head.partition("=")
        if not key:
            raise ConfigError(f"{flag}: {item!r}: empty key")
        taints.append(core_pb2.Taint(key=key, value=value, effect=effect))
    return tuple(taints)
