"""The HPA controller, sample-controller style: a fake cluster (RecordingClient + caches), an
in-memory metrics source (the seam where the metrics pipeline plugs in), `reconcile(key)`
called directly; then what it wrote: the target's replicas, the HPA's status, its Events.
Bad input (min > max, an unknown metric, a target that does not exist) ends in conditions
and events, never in an exception out of reconcile."""

from __future__ import annotations

from typing import Any, cast

import pytest

from k8semu.api.selectors import LabelSelector
from k8semu.controllers.podautoscaler import HorizontalPodAutoscalerController
from k8semu.controllers.podautoscaler.metrics import MetricsUnavailable
from k8semu.controllers.podautoscaler.replicas import PodMetric
from k8semu.pb.api.v1 import apps_pb2, autoscaling_pb2, core_pb2
from tests.controllers.conftest import FakeCluster, deployment, pod

KEY = "default/web"
LABELS = {"app": "web"}


class FakeMetrics:
    """Per-pod CPU (millicores) and requests-per-second (milli) samples; `broken` makes
    resource queries fail as an absent metrics API would."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.cpu: dict[str, int] = {}
        self.rps: dict[str, int] = {}
        self.broken = ""

    def _samples(self, values: dict[str, int]) -> dict[str, PodMetric]:
        at = self.cluster.clock() - 5
        return {name: PodMetric(v, timestamp=at, window=15) for name, v in values.items()}

    async def pod_resources(
        self, namespace: str, selector: LabelSelector, resource: str, container: str = ""
    ) -> dict[str, PodMetric]:
        if self.broken:
            raise MetricsUnavailable(self.broken)
        return self._samples(self.cpu)

    async def pod_metric(
        self, namespace: str, selector: LabelSelector, metric: autoscaling_pb2.MetricIdentifier
    ) -> dict[str, PodMetric]:
        return self._samples(self.rps)

    async def object_metric(
        self,
        namespace: str,
        described: autoscaling_pb2.CrossVersionObjectReference,
        metric: autoscaling_pb2.MetricIdentifier,
    ) -> int:
        raise MetricsUnavailable("no object metrics here")

    async def external_metric(
        self, namespace: str, metric: autoscaling_pb2.MetricIdentifier
    ) -> list[int]:
        raise MetricsUnavailable("no external metrics here")


def web_pod(cluster: FakeCluster, name: str) -> core_pb2.Pod:
    p = pod(name, LABELS, phase="Running", ready_since=cluster.clock() - 590)
    p.spec.containers[0].resources.requests["cpu"] = "200m"
    p.status.start_time.FromNanoseconds(int((cluster.clock() - 600) * 1e9))
    return p


def hpa(
    *, min_replicas: int = 1, max_replicas: int = 10, cpu: int | None = 50, target: str = "web"
) -> autoscaling_pb2.HorizontalPodAutoscaler:
    out = autoscaling_pb2.HorizontalPodAutoscaler(
        api_version="autoscaling/v2", kind="HorizontalPodAutoscaler"
    )
    out.metadata.name = "web"
    out.metadata.namespace = "default"
    out.metadata.uid = "uid-hpa-web"
    out.metadata.generation = 1
    ref = out.spec.scale_target_ref
    ref.api_version, ref.kind, ref.name = "apps/v1", "Deployment", target
    out.spec.min_replicas = min_replicas
    out.spec.max_replicas = max_replicas
    if cpu is not None:
        m = out.spec.metrics.add(type="Resource")
        m.resource.name = "cpu"
        m.resource.target.type = "Utilization"
        m.resource.target.average_utilization = cpu
    return out


def rps_metric(h: autoscaling_pb2.HorizontalPodAutoscaler, target: str) -> None:
    m = h.spec.metrics.add(type="Pods")
    m.pods.metric.name = "requests_per_second"
    m.pods.target.type = "AverageValue"
    m.pods.target.average_value = target


def setup(
    replicas: int, the_hpa: autoscaling_pb2.HorizontalPodAutoscaler
) -> tuple[FakeCluster, HorizontalPodAutoscalerController, FakeMetrics]:
    cluster = FakeCluster()
    metrics = FakeMetrics(cluster)
    controller = HorizontalPodAutoscalerController(
        cluster.ctx, metrics=metrics, clock=cluster.clock
    )
    cluster.add(deployment("web", replicas), the_hpa)
    cluster.add(*(web_pod(cluster, f"web-{i}") for i in range(replicas)))
    return cluster, controller, metrics


def live_hpa(cluster: FakeCluster) -> autoscaling_pb2.HorizontalPodAutoscaler:
    return cast(
        autoscaling_pb2.HorizontalPodAutoscaler,
        cluster.client.objects[("horizontalpodautoscalers", "default", "web")],
    )


def replicas_of(cluster: FakeCluster) -> int:
    d = cast(apps_pb2.Deployment, cluster.client.objects[("deployments", "default", "web")])
    return d.spec.replicas


def conditions(h: autoscaling_pb2.HorizontalPodAutoscaler) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in h.status.conditions}


async def test_scales_up_on_cpu_and_reports_it() -> None:
    cluster, controller, metrics = setup(2, hpa())
    metrics.cpu = {"web-0": 200, "web-1": 200}  # 100% of the request, target 50%
    await controller.reconcile(KEY)
    assert replicas_of(cluster) == 4
    assert cluster.recorder.messages("SuccessfulRescale") == [
        "New size: 4; reason: cpu resource utilization (percentage of request) above target"
    ]
    h = live_hpa(cluster)
    assert (h.status.current_replicas, h.status.desired_replicas) == (2, 4)
    assert h.status.HasField("last_scale_time")
    current = h.status.current_metrics[0].resource.current
    assert (current.average_utilization, current.average_value) == (100, "200m")
    assert conditions(h) == {
        "AbleToScale": ("True", "SucceededRescale"),
        "ScalingActive": ("True", "ValidMetricFound"),
        "ScalingLimited": ("False", "DesiredWithinRange"),
    }


async def test_within_tolerance_writes_status_but_does_not_scale() -> None:
    cluster, controller, metrics = setup(2, hpa())
    metrics.cpu = {"web-0": 104, "web-1": 104}  # 52% against 50%
    await controller.reconcile(KEY)
    assert replicas_of(cluster) == 2
    verbs = [a.verb for a in cluster.client.actions if a.resource == "deployments"]
    assert "update_scale" not in verbs
    h = live_hpa(cluster)
    assert (h.status.current_replicas, h.status.desired_replicas) == (2, 2)
    assert conditions(h)["AbleToScale"] == ("True", "ReadyForNewScale")
    assert not h.status.HasField("last_scale_time")


async def test_the_largest_proposal_of_several_metrics_wins() -> None:
    the_hpa = hpa()
    rps_metric(the_hpa, "100")
    cluster, controller, metrics = setup(3, the_hpa)
    metrics.cpu = {f"web-{i}": 150 for i in range(3)}  # 75%: ceil(1.5 x 3) = 5
    metrics.rps = {f"web-{i}": 200_000 for i in range(3)}  # 200/s vs 100/s: 6
    await controller.reconcile(KEY)
    assert replicas_of(cluster) == 6
    assert cluster.recorder.messages("SuccessfulRescale") == [
        "New size: 6; reason: pods metric requests_per_second above target"
    ]
    assert live_hpa(cluster).status.current_metrics[1].pods.current.average_value == "200"


async def test_without_metrics_it_reports_and_only_keeps_min_and_max() -> None:
    cluster, controller, metrics = setup(2, hpa())
    metrics.broken = "unable to get metrics for resource cpu: no metrics API"
    await controller.reconcile(KEY)
    assert replicas_of(cluster) == 2
    h = live_hpa(cluster)
    assert conditions(h)["ScalingActive"] == ("False", "FailedGetResourceMetric")
    assert len(h.status.current_metrics) == 1  # printed <unknown>
    assert cluster.recorder.messages("FailedGetResourceMetric") == [metrics.broken]
    assert cluster.recorder.messages("FailedComputeMetricsReplicas")

    # Below minReplicas it scales up without asking the metrics.
    cluster2, controller2, metrics2 = setup(1, hpa(min_replicas=3))
    metrics2.broken = "nothing"
    await controller2.reconcile(KEY)
    assert replicas_of(cluster2) == 3
    assert cluster2.recorder.messages("SuccessfulRescale") == [
        "New size: 3; reason: Current number of replicas below Spec.MinReplicas"
    ]


async def test_a_failing_metric_blocks_a_scale_down_the_others_ask_for() -> None:
    the_hpa = hpa()
    rps_metric(the_hpa, "100")
    cluster, controller, metrics = setup(4, the_hpa)
    metrics.broken = "cpu unavailable"
    metrics.rps = {f"web-{i}": 10_000 for i in range(4)}  # would say 1
    await controller.reconcile(KEY)
    assert replicas_of(cluster) == 4
    assert conditions(live_hpa(cluster))["ScalingActive"] == ("False", "FailedGetResourceMetric")


async def test_scale_down_waits_for_the_stabilization_window() -> None:
    cluster, controller, metrics = setup(4, hpa())
    metrics.cpu = {f"web-{i}": 100 for i in range(4)}  # exactly 50%: stays
    await controller.reconcile(KEY)
    cluster.sync()
    metrics.cpu = {f"web-{i}": 20 for i in range(4)}  # 10%: 1 replica
    cluster.clock.advance(60)
    await controller.reconcile(KEY)
    cluster.sync()
    assert replicas_of(cluster) == 4
    assert conditions(live_hpa(cluster))["AbleToScale"] == ("True", "ScaleDownStabilized")
    cluster.clock.advance(300)
    await controller.reconcile(KEY)
    assert replicas_of(cluster) == 1


async def test_bad_input_becomes_conditions_not_crashes() -> None:
    # min > max: refused by validate_hpa, reported.
    cluster, controller, metrics = setup(2, hpa(min_replicas=5, max_replicas=2))
    metrics.cpu = {"web-0": 200, "web-1": 200}
    await controller.reconcile(KEY)
    assert replicas_of(cluster) == 2
    active = next(c for c in live_hpa(cluster).status.conditions if c.type == "ScalingActive")
    assert (active.status, active.reason) == ("False", "InvalidSpec")
    assert "spec.maxReplicas" in active.message

    # An unknown metric type.
    odd = hpa(cpu=None)
    odd.spec.metrics.add(type="Telepathy")
    cluster, controller, _ = setup(2, odd)
    await controller.reconcile(KEY)
    assert "spec.metrics[0].type" in live_hpa(cluster).status.conditions[0].message

    # A target that does not exist.
    cluster, controller, _ = setup(2, hpa(target="nothing"))
    await controller.reconcile(KEY)
    able = live_hpa(cluster).status.conditions[0]
    assert (able.type, able.status, able.reason) == ("AbleToScale", "False", "FailedGetScale")
    assert 'deployments "nothing" not found' in able.message
    assert cluster.recorder.messages("FailedGetScale")


async def test_a_second_pass_with_nothing_new_writes_nothing() -> None:
    cluster, controller, metrics = setup(2, hpa())
    metrics.cpu = {"web-0": 100, "web-1": 100}
    await controller.reconcile(KEY)
    cluster.sync()
    cluster.client.clear()
    await controller.reconcile(KEY)
    assert cluster.client.actions == []


async def test_a_deleted_hpa_is_forgotten_and_requeued_every_sync_period() -> None:
    cluster, controller, metrics = setup(2, hpa())
    metrics.cpu = {"web-0": 100, "web-1": 100}
    await controller.reconcile(KEY)
    waiting = cast(Any, controller.queue)._waiting
    assert KEY in waiting  # the next pass, one sync period later
    del cluster.client.objects[("horizontalpodautoscalers", "default", "web")]
    cluster.sync()
    await controller.reconcile(KEY)  # gone: nothing to do, no error


def test_the_controller_is_registered_and_runs_under_star() -> None:
    from k8semu.controllers.manager import resolve_controllers

    named = dict(resolve_controllers(("*",)))
    assert named["horizontalpodautoscaling"] is HorizontalPodAutoscalerController
    assert "horizontalpodautoscaling" not in dict(
        resolve_controllers(("*", "-horizontalpodautoscaling"))
    )


def test_the_controller_manager_flags_set_the_hpa_timings() -> None:
    from k8semu.cli import controller_manager

    def config(*argv: str) -> object:
        return controller_manager.config_from_args(controller_manager._parser().parse_args(argv))

    got = cast(Any, config(
        "--horizontal-pod-autoscaler-sync-period=5s",
        "--horizontal-pod-autoscaler-downscale-stabilization=1m",
        "--horizontal-pod-autoscaler-tolerance=0.2",
    ))  # fmt: skip
    assert (got.hpa_sync_period, got.hpa_downscale_stabilization, got.hpa_tolerance) == (
        5.0,
        60.0,
        0.2,
    )
    assert cast(Any, config()).hpa_cpu_initialization_period == 300.0  # Kubernetes' 5 min
    with pytest.raises(ValueError, match="--horizontal-pod-autoscaler-sync-period: must be > 0"):
        config("--horizontal-pod-autoscaler-sync-period=0")
