"""The ``timings`` and ``launcher`` sections: every duration the config sets, in milliseconds.

``timings`` holds the control plane's (leader election, node leases, node lifecycle, API server
compaction and Event TTL); ``launcher`` how ``k8semu up`` waits for, restarts and stops its
processes. Their defaults come from the components (``defaults``); errors name the field.
"""

from __future__ import annotations

from dataclasses import dataclass

from k8semu.cluster.config import defaults
from k8semu.cluster.config.values import format_duration
from k8semu.cluster.errors import ClusterConfigError

__all__ = ["TIMING_KEYS", "LauncherSpec", "TimingsSpec"]

# (attribute, YAML key) of every timing that must be at least 1ms, in the order of the README's
# table. The three that 0 turns off (etcdCompactionInterval, eventTTL, metricResolution) are
# not among them.
TIMING_KEYS = (
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
class TimingsSpec:
    """Every control-plane timing that is not the store's or the launcher's (design decision 6)."""

    leader_elect_lease_ms: int = defaults.DEFAULT_LEADER_ELECT_LEASE_MS
    leader_elect_renew_ms: int = defaults.DEFAULT_LEADER_ELECT_RENEW_MS
    leader_elect_retry_ms: int = defaults.DEFAULT_LEADER_ELECT_RETRY_MS
    node_lease_ms: int = defaults.DEFAULT_NODE_LEASE_MS
    node_lease_renew_ms: int = defaults.DEFAULT_NODE_LEASE_RENEW_MS
    node_status_update_ms: int = defaults.DEFAULT_NODE_STATUS_UPDATE_MS
    node_monitor_period_ms: int = defaults.DEFAULT_NODE_MONITOR_PERIOD_MS
    node_monitor_grace_ms: int = defaults.DEFAULT_NODE_MONITOR_GRACE_MS
    pod_eviction_ms: int = defaults.DEFAULT_POD_EVICTION_MS
    etcd_compaction_interval_ms: int = defaults.DEFAULT_ETCD_COMPACTION_INTERVAL_MS  # 0: off
    event_ttl_ms: int = defaults.DEFAULT_EVENT_TTL_MS  # 0: Events never expire
    metric_resolution_ms: int = defaults.DEFAULT_METRIC_RESOLUTION_MS  # 0: no metrics.k8s.io

    def __post_init__(self) -> None:
        for attr, key in TIMING_KEYS:
            if getattr(self, attr) < 1:
                raise ClusterConfigError(f"timings.{key}", "must be at least 1ms")
        if self.etcd_compaction_interval_ms < 0:
            raise ClusterConfigError(
                "timings.etcdCompactionInterval", "must be a duration, or 0 to turn it off"
            )
        if self.event_ttl_ms < 0:
            raise ClusterConfigError("timings.eventTTL", "must be a duration, or 0 to keep Events")
        if self.metric_resolution_ms < 0:
            raise ClusterConfigError(
                "timings.metricResolution", "must be a duration, or 0 to serve no resource metrics"
            )
        if self.leader_elect_lease_ms < 1000:
            raise ClusterConfigError(
                "timings.leaderElectLeaseDuration", "must be at least 1s (a Lease holds seconds)"
            )
        # (shorter key, its value, longer key, its value): each must be strictly shorter.
        for shorter, short_ms, longer, long_ms in (
            ("leaderElectRenewDeadline", self.leader_elect_renew_ms,
             "leaderElectLeaseDuration", self.leader_elect_lease_ms),
            ("leaderElectRetryPeriod", self.leader_elect_retry_ms,
             "leaderElectRenewDeadline", self.leader_elect_renew_ms),
            ("nodeLeaseRenewInterval", self.node_lease_renew_ms,
             "nodeLeaseDuration", self.node_lease_ms),
        ):  # fmt: skip
            if short_ms >= long_ms:
                raise ClusterConfigError(
                    f"timings.{shorter}",
                    f"must be shorter than timings.{longer} ({format_duration(long_ms)})",
                )
        if self.node_monitor_grace_ms <= self.node_monitor_period_ms:
            raise ClusterConfigError(
                "timings.nodeMonitorGracePeriod",
                f"must be longer than timings.nodeMonitorPeriod "
                f"({format_duration(self.node_monitor_period_ms)})",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class LauncherSpec:
    """The ``launcher`` section: how ``k8semu up`` waits for, restarts and stops processes.

    A process that exits unexpectedly is started again after ``restart_backoff_ms``, doubling
    per crash up to ``max_restart_backoff_ms``; one that ran ``backoff_reset_after_ms`` without
    exiting starts from the first delay again. After ``max_restarts`` restarts in a row that
    each crashed sooner than that, the supervisor gives up on it: it is marked failed and left
    down while the rest of the cluster keeps running (``k8semu restart NAME`` starts it again).
    """

    ready_timeout_ms: int = defaults.DEFAULT_READY_TIMEOUT_MS
    stop_grace_ms: int = defaults.DEFAULT_STOP_GRACE_MS
    restart_backoff_ms: int = defaults.DEFAULT_RESTART_BACKOFF_MS
    max_restart_backoff_ms: int = defaults.DEFAULT_MAX_RESTART_BACKOFF_MS
    backoff_reset_after_ms: int = defaults.DEFAULT_BACKOFF_RESET_AFTER_MS
    max_restarts: int = defaults.DEFAULT_MAX_RESTARTS
    #: Component logs rotated past this many megabytes (0: never), ``log_max_backups`` kept.
    log_max_size_mb: int = defaults.DEFAULT_LOG_MAX_SIZE_MB
    log_max_backups: int = defaults.DEFAULT_LOG_MAX_BACKUPS

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
        if self.log_max_size_mb < 0:
            raise ClusterConfigError("launcher.logMaxSizeMB", "must be >= 0 (0: never rotate)")
        if self.log_max_backups < 0:
            raise ClusterConfigError("launcher.logMaxBackups", "must be >= 0")
