"""The ``horizontalPodAutoscaler`` section of the cluster config: Kubernetes' defaults, values
given reaching the controller manager as kube-controller-manager's flags (and parsed back
by ``k8semu controller-manager`` into the same settings), bad values naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from k8semu.cli import controller_manager
from k8semu.cluster import config as cc
from k8semu.cluster.errors import ClusterConfigError
from k8semu.cluster.plan import plan_cluster
from k8semu.controllers.context import ControllerManagerConfig

HEAD = "kind: ClusterConfig\nversion: v1alpha1\n"


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


@pytest.mark.parametrize(
    ("body", "path", "reason"),
    [
        ("{syncPeriod: 0s}", "syncPeriod", "must be at least 1ms"),
        ("{syncPeriod: 2}", "syncPeriod", "expected a duration"),
        ("{downscaleStabilization: soon}", "downscaleStabilization", "is not a duration"),
        ("{tolerance: 1}", "tolerance", ">= 0 and < 1"),
        ("{tolerance: -0.1}", "tolerance", ">= 0 and < 1"),
        ("{tolerance: .nan}", "tolerance", ">= 0 and < 1"),
        ("{tolerance: ten}", "tolerance", "expected a number, got a string"),
        ("{tolerance: true}", "tolerance", "expected a number, got a boolean"),
        ("{syncperiod: 2s}", "syncperiod", "did you mean syncPeriod?"),
        ("[15s]", "", "expected a mapping"),
    ],
)
def test_bad_values_name_the_field(body: str, path: str, reason: str) -> None:
    with pytest.raises(ClusterConfigError) as info:
        cc.parse_config(HEAD + f"horizontalPodAutoscaler: {body}\n", source="test.yaml")
    where = f"horizontalPodAutoscaler.{path}" if path else "horizontalPodAutoscaler"
    assert info.value.path == where
    assert str(info.value).startswith(f"test.yaml: {where}: ") and reason in str(info.value)
