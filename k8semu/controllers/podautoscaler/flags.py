"""kube-controller-manager's flag names for the HPA's settings, by `ControllerManagerConfig`
field: one table for `k8semu controller-manager` (which parses them) and the cluster
config's plan (which writes them)."""

from __future__ import annotations

DURATION_FLAGS = {
    "hpa_sync_period": "--horizontal-pod-autoscaler-sync-period",
    "hpa_downscale_stabilization": "--horizontal-pod-autoscaler-downscale-stabilization",
    "hpa_cpu_initialization_period": "--horizontal-pod-autoscaler-cpu-initialization-period",
    "hpa_initial_readiness_delay": "--horizontal-pod-autoscaler-initial-readiness-delay",
}
TOLERANCE_FLAG = "--horizontal-pod-autoscaler-tolerance"
