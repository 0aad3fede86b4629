"""The ``horizontalPodAutoscaler`` section: the HPA controller's timings and tolerance, as
kube-controller-manager takes them (design decision 6: every timing in the cluster config).

    horizontalPodAutoscaler:
      syncPeriod: 15s               # --horizontal-pod-autoscaler-sync-period
      tolerance: 0.1                # --horizontal-pod-autoscaler-tolerance
      downscaleStabilization: 5m    # --horizontal-pod-autoscaler-downscale-stabilization
      cpuInitializationPeriod: 5m   # --horizontal-pod-autoscaler-cpu-initialization-period
      initialReadinessDelay: 30s    # --horizontal-pod-autoscaler-initial-readiness-delay

Defaults are Kubernetes' own, defined once by the controller manager's config (``defaults``);
the launcher passes the section to every controller manager as those flags. Errors name the
field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from k8semu.cluster.config import defaults
from k8semu.cluster.config.values import format_duration
from k8semu.cluster.errors import ClusterConfigError
from k8semu.controllers.podautoscaler.flags import DURATION_FLAGS, TOLERANCE_FLAG

__all__ = ["HPA_DURATION_KEYS", "HPA_SECTION", "HorizontalPodAutoscalerSpec"]

HPA_SECTION = "horizontalPodAutoscaler"
# (attribute, YAML key, ControllerManagerConfig field) of each duration, in the doc's order.
HPA_DURATION_KEYS = (
    ("sync_period_ms", "syncPeriod", "hpa_sync_period"),
    ("downscale_stabilization_ms", "downscaleStabilization", "hpa_downscale_stabilization"),
    ("cpu_initialization_period_ms", "cpuInitializationPeriod", "hpa_cpu_initialization_period"),
    ("initial_readiness_delay_ms", "initialReadinessDelay", "hpa_initial_readiness_delay"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class HorizontalPodAutoscalerSpec:
    """The section; durations in milliseconds. The sync period must be at least 1ms, the
    other durations may be 0; the tolerance is a fraction of the target, 0 <= t < 1."""

    sync_period_ms: int = defaults.DEFAULT_HPA_SYNC_PERIOD_MS
    tolerance: float = defaults.DEFAULT_HPA_TOLERANCE
    downscale_stabilization_ms: int = defaults.DEFAULT_HPA_DOWNSCALE_STABILIZATION_MS
    cpu_initialization_period_ms: int = defaults.DEFAULT_HPA_CPU_INITIALIZATION_PERIOD_MS
    initial_readiness_delay_ms: int = defaults.DEFAULT_HPA_INITIAL_READINESS_DELAY_MS

    def __post_init__(self) -> None:
        # A sync period of 0 would evaluate every HPA in a busy loop; 0 turns the others off.
        for (attr, key, _), least in zip(HPA_DURATION_KEYS, (1, 0, 0, 0), strict=True):
            if getattr(self, attr) < least:
                reason = "must be at least 1ms" if least else "must be a duration >= 0"
                raise ClusterConfigError(f"{HPA_SECTION}.{key}", reason)
        if not (math.isfinite(self.tolerance) and 0 <= self.tolerance < 1):
            raise ClusterConfigError(
                f"{HPA_SECTION}.tolerance",
                f"must be a fraction of the target, >= 0 and < 1, got {self.tolerance}",
            )

    def flags(self) -> tuple[str, ...]:
        """The section as ``k8semu controller-manager`` flags (kube-controller-manager's)."""
        out: list[str] = []
        for attr, _, field in HPA_DURATION_KEYS:
            out += [DURATION_FLAGS[field], format_duration(getattr(self, attr))]
        return (*out, TOLERANCE_FLAG, repr(self.tolerance))
