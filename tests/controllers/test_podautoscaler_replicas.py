"""The replica calculator against Kubernetes' documented rules ("Horizontal Pod Autoscaling:
algorithm details"): the ratio, the tolerance, missing metrics, not-yet-ready pods, and the
Object/External forms. Pure: pods and samples in, a proposal out, time passed in."""

from __future__ import annotations

import pytest

from k8semu.controllers.podautoscaler.replicas import (
    MetricError,
    PodMetric,
    ReplicaCalculator,
)
from k8semu.pb.api.v1 import core_pb2

NOW = 1_700_000_000.0
CALC = ReplicaCalculator()


def running(
    name: str,
    *,
    cpu: str = "200m",
    phase: str = "Running",
    ready: str = "True",
    started: float = NOW - 600,
    ready_changed: float | None = None,
    deleting: bool = False,
) -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name = name
    pod.spec.containers.add(name="app", image="hpa-example")
    if cpu:
        pod.spec.containers[0].resources.requests["cpu"] = cpu
    pod.status.phase = phase
    pod.status.start_time.FromNanoseconds(int(started * 1e9))
    if ready:
        cond = pod.status.conditions.add(type="Ready", status=ready)
        changed = started + 5 if ready_changed is None else ready_changed
        cond.last_transition_time.FromNanoseconds(int(changed * 1e9))
    if deleting:
        pod.metadata.deletion_timestamp.FromNanoseconds(int(NOW * 1e9))
    return pod


def samples(**values: int) -> dict[str, PodMetric]:
    """pod name -> a fresh sample of `value` milli-units."""
    return {name: PodMetric(value, timestamp=NOW - 5, window=15) for name, value in values.items()}


# ---- the ratio and the tolerance -----------------------------------------------------------


def test_double_the_metric_doubles_the_replicas_and_half_halves_them() -> None:
    # The docs: current 200m, desired 100m -> twice the replicas; 50m -> half.
    pods = [running("a"), running("b")]
    assert CALC.plain(2, 100, samples(a=200, b=200), pods, NOW).replicas == 4
    assert CALC.plain(2, 100, samples(a=50, b=50), pods, NOW).replicas == 1
    assert CALC.plain(2, 100, samples(a=50, b=50), pods, NOW).usage == 50


def test_within_the_tolerance_nothing_changes() -> None:
    pods = [running(n) for n in "abcd"]
    near = samples(a=105, b=105, c=105, d=105)
    assert CALC.plain(4, 100, near, pods, NOW).replicas == 4  # ratio 1.05 <= 1 + 0.1
    far = samples(a=115, b=115, c=115, d=115)
    assert CALC.plain(4, 100, far, pods, NOW).replicas == 5  # ceil(1.15 * 4)
    loose = ReplicaCalculator(tolerance=0.2)
    assert loose.plain(4, 100, far, pods, NOW).replicas == 4


def test_utilization_is_usage_over_requests() -> None:
    pods = [running(n) for n in "abc"]
    proposal = CALC.resource_utilization(3, 50, "cpu", samples(a=200, b=200, c=200), pods, NOW)
    assert (proposal.replicas, proposal.utilization, proposal.usage) == (6, 100, 200)


def test_walkthrough_305_percent_of_request_asks_for_7_replicas() -> None:
    # php-apache: 200m requested, 610m used = 305% against a 50% target.
    proposal = CALC.resource_utilization(1, 50, "cpu", samples(a=610), [running("a")], NOW)
    assert (proposal.replicas, proposal.utilization) == (7, 305)


# ---- missing metrics and pods not yet ready -----------------------------------------------------


def test_missing_metrics_count_as_100_percent_on_a_scale_down() -> None:
    pods = [running(n) for n in "abcd"]
    # 3 pods at 10% of 200m, d silent: alone they say ceil(0.2 * 3) = 1; d assumed at 100%
    # of its request gives (60 + 200) / 800 = 32% -> ceil(0.64 * 4) = 3.
    proposal = CALC.resource_utilization(4, 50, "cpu", samples(a=20, b=20, c=20), pods, NOW)
    assert proposal.replicas == 3
    assert proposal.utilization == 10  # the status shows what was measured


def test_missing_metrics_count_as_0_percent_on_a_scale_up() -> None:
    pods = [running(n) for n in "abcd"]
    # 3 at 100% (ratio 2 to a 50% target), d silent at 0%: 600 / 800 = 75% -> ceil(1.5 * 4).
    proposal = CALC.resource_utilization(4, 50, "cpu", samples(a=200, b=200, c=200), pods, NOW)
    assert proposal.replicas == 6


def test_missing_pod_metric_assumes_the_target_on_a_scale_down() -> None:
    pods = [running(n) for n in "abcd"]
    # 3 pods at 20 against 100, d silent = 100: (60 + 100) / 4 = 40 -> ceil(0.4 * 4) = 2.
    assert CALC.plain(4, 100, samples(a=20, b=20, c=20), pods, NOW).replicas == 2


def test_unready_pods_count_as_0_percent_on_a_scale_up_only() -> None:
    pods = [running("a"), running("b"), running("c"), running("d", phase="Pending", ready="")]
    busy = samples(a=200, b=200, c=200)
    assert CALC.resource_utilization(4, 50, "cpu", busy, pods, NOW).replicas == 6
    idle = samples(a=20, b=20, c=20)
    # Scaling down, the pending pod is left out: ceil(0.2 * 3).
    assert CALC.resource_utilization(4, 50, "cpu", idle, pods, NOW).replicas == 1


def test_a_recomputation_that_turns_the_direction_around_changes_nothing() -> None:
    pods = [running("a"), running("b")]
    # a at 60% (ratio 1.2 up), b silent -> 0%: 120 / 400 = 30%, a scale-down: keep 2.
    assert CALC.resource_utilization(2, 50, "cpu", samples(a=120), pods, NOW).replicas == 2


def test_pods_being_deleted_and_failed_pods_are_ignored() -> None:
    pods = [
        running("a"),
        running("b", deleting=True),
        running("c", phase="Failed"),
    ]
    got = CALC.resource_utilization(3, 50, "cpu", samples(a=200, b=0, c=0), pods, NOW)
    assert got.replicas == 2  # only a: ratio 2 over one ready pod


# ---- CPU readiness rules -------------------------------------------------------------------------


def test_cpu_sample_taken_before_a_young_pod_turned_ready_does_not_count() -> None:
    # Started 60 s ago (inside the 5 min initialization period), ready since 2 s ago: the
    # sample (taken 5 s ago over 15 s) saw its start-up, so the pod is "not yet ready".
    young = running("young", started=NOW - 60, ready_changed=NOW - 2)
    pods = [running("a"), young]
    got = CALC.resource_utilization(2, 50, "cpu", samples(a=200, young=400), pods, NOW)
    # a alone says ratio 2; young counts 0 on a scale-up: 200 / 400 = 50% -> within tolerance.
    assert got.replicas == 2
    settled = ReplicaCalculator(cpu_initialization_period=30.0)
    # With a 30 s initialization period it is past start-up and counts: 600/400 = 150%.
    assert (
        settled.resource_utilization(2, 50, "cpu", samples(a=200, young=400), pods, NOW).replicas
        == 6
    )


def test_old_pod_never_ready_since_its_start_is_unready_but_one_that_was_ready_counts() -> None:
    # Out of the initialization period with Ready False: unready only if the condition last
    # changed within the initial readiness delay (30 s) of the start (never been ready).
    never = running("never", ready="False", started=NOW - 600, ready_changed=NOW - 590)
    lapsed = running("lapsed", ready="False", started=NOW - 600, ready_changed=NOW - 100)
    pods = [running("a"), never, lapsed]
    got = CALC.resource_utilization(3, 50, "cpu", samples(a=200, never=200, lapsed=200), pods, NOW)
    # a and lapsed count (ratio 2 over 2 ready); never counts 0: 400 / 600 = 66% -> 1.33 * 3.
    assert got.replicas == 4


def test_the_cpu_rules_do_not_apply_to_other_metrics() -> None:
    young = running("young", started=NOW - 60, ready_changed=NOW - 2)
    got = CALC.plain(2, 100, samples(a=200, young=200), [running("a"), young], NOW)
    assert got.replicas == 4


# ---- errors --------------------------------------------------------------------------------


def test_a_container_without_a_request_is_an_error_naming_it() -> None:
    with pytest.raises(MetricError, match="missing request for cpu in container app of Pod a"):
        CALC.resource_utilization(1, 50, "cpu", samples(a=10), [running("a", cpu="")], NOW)


def test_no_pods_and_no_samples_are_errors() -> None:
    with pytest.raises(MetricError, match="no pods returned by selector"):
        CALC.resource_utilization(1, 50, "cpu", samples(a=10), [], NOW)
    with pytest.raises(MetricError, match="did not receive metrics"):
        CALC.resource_utilization(1, 50, "cpu", {}, [running("a", phase="Pending", ready="")], NOW)


# ---- Object and External metrics ------------------------------------------------------------


def test_object_value_scales_the_ready_pods() -> None:
    pods = [running(n) for n in "abc"] + [running("d", phase="Pending", ready="")]
    assert CALC.object_value(4, 100, 200, pods).replicas == 6  # ratio 2 x 3 ready
    assert CALC.object_value(4, 100, 105, pods).replicas == 4  # within the tolerance
    assert CALC.object_value(0, 100, 250, pods).replicas == 3  # from zero: ceil(ratio)


def test_average_value_shares_the_usage_among_replicas() -> None:
    got = CALC.average_value(5, 100, 1000)
    assert (got.replicas, got.usage) == (10, 200)
    assert CALC.average_value(5, 100, 520).replicas == 5  # 520 / 500 within the tolerance
