"""The ``horizontalPodAutoscaler`` section of the cluster config: Kubernetes' defaults, values
given reaching the controller manager as kube-controller-manager's flags (and parsed back
by ``k8semu controller-manager`` into the same settings). Bad values naming the field are
cases of tests/cluster/bad_configs.yaml."""

from __future__ import annotations

from pathlib import Path

from k8semu.cli import controller_manager
from k8semu.cluster import config as cc
from k8semu.cluster.plan import plan_cluster
from k8semu.controllers.context import ControllerManagerConfig
from tests.cluster.test_config import HEAD


def _controller_manager_config(config: cc.ClusterConfig) -> ControllerManagerConfig:
    """What the launcher's controller manager would run with: its planned argv, parsed by
    the command itself."""
    plan = plan_cluster(config, Path("/state"), python="py", commands={"controller-manager"})
    (cm,) = plan.components
    argv = list(cm.argv[cm.argv.index("controller-manager") + 1 :])
    return controller_manager.config_from_args(controller_manager._parser().parse_args(argv))


def test_defaults_are_kubernetes_own() -> None:
    hpa = cc.load_config().horizontal_pod_autoscaler
    assert hpa == cc.HorizontalPodAutoscalerSpec()
    assert (hpa.sync_period_ms, hpa.tolerance, hpa.downscale_stabilization_ms) == (
        15_000,
        0.1,
        300_000,
    )
    assert (hpa.cpu_initialization_period_ms, hpa.initial_readiness_delay_ms) == (300_000, 30_000)
    cm = _controller_manager_config(cc.load_config())
    assert (cm.hpa_sync_period, cm.hpa_tolerance, cm.hpa_downscale_stabilization) == (
        15.0,
        0.1,
        300.0,
    )
    assert (cm.hpa_cpu_initialization_period, cm.hpa_initial_readiness_delay) == (300.0, 30.0)


def test_values_reach_the_controller_manager_as_its_flags() -> None:
    config = cc.parse_config(
        HEAD
        + "horizontalPodAutoscaler:\n"
        + "  syncPeriod: 2s\n  tolerance: 0.05\n  downscaleStabilization: 10s\n"
        + "  cpuInitializationPeriod: 0s\n  initialReadinessDelay: 1500ms\n"
    )
    flags = config.horizontal_pod_autoscaler.flags()
    assert dict(zip(flags[::2], flags[1::2], strict=True)) == {
        "--horizontal-pod-autoscaler-sync-period": "2s",
        "--horizontal-pod-autoscaler-tolerance": "0.05",
        "--horizontal-pod-autoscaler-downscale-stabilization": "10s",
        "--horizontal-pod-autoscaler-cpu-initialization-period": "0s",
        "--horizontal-pod-autoscaler-initial-readiness-delay": "1500ms",
    }
    cm = _controller_manager_config(config)
    assert (cm.hpa_sync_period, cm.hpa_tolerance, cm.hpa_downscale_stabilization) == (
        2.0,
        0.05,
        10.0,
    )
    assert (cm.hpa_cpu_initialization_period, cm.hpa_initial_readiness_delay) == (0.0, 1.5)
