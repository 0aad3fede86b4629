"""The normalizer against Kubernetes' documented behavior ("Configurable scaling behavior"):
stabilization windows, Pods/Percent policies with their periods, selectPolicy, the default
rules, min/max, and the conditions that explain each result. Pure: time is an argument."""

from __future__ import annotations

from k8semu.api import autoscaling as api
from k8semu.controllers.podautoscaler.behavior import Bounds, ScalingHistory
from k8semu.pb.api.v1 import autoscaling_pb2 as pb

T = 1_700_000_000.0
KEY = "default/web"


def behavior(
    *,
    down_window: int | None = 0,
    down_policies: tuple[tuple[str, int, int], ...] = (),
    down_select: str = "",
    up_window: int | None = None,
) -> pb.HorizontalPodAutoscalerBehavior:
    """A behavior with Kubernetes' defaults filled in for what is not given."""
    hpa = pb.HorizontalPodAutoscaler()
    b = hpa.spec.behavior
    b.SetInParent()
    if down_window is not None:
        b.scale_down.stabilization_window_seconds = down_window
    if up_window is not None:
        b.scale_up.stabilization_window_seconds = up_window
    for type_, value, period in down_policies:
        b.scale_down.policies.add(type=type_, value=value, period_seconds=period)
    b.scale_down.select_policy = down_select
    return api.effective_behavior(hpa, downscale_stabilization=300)


# ---- without a behavior (what `autoscale` creates) ------------------------------------------


def test_scale_down_waits_for_the_window_to_agree() -> None:
    h = ScalingHistory()
    assert h.normalize(KEY, Bounds(10, 10, 1, 20), T).replicas == 10
    later = h.normalize(KEY, Bounds(10, 5, 1, 20), T + 60)
    assert later.replicas == 10
    assert later.able_to_scale.reason == "ScaleDownStabilized"
    # After 300 s the recommendation of 10 is out of the window: down to 5.
    done = h.normalize(KEY, Bounds(10, 5, 1, 20), T + 301)
    assert done.replicas == 5
    assert done.able_to_scale.reason == "ReadyForNewScale"


def test_a_shorter_downscale_window_is_the_controllers_setting() -> None:
    h = ScalingHistory()
    h.normalize(KEY, Bounds(10, 10, 1, 20), T, downscale_window=30)
    assert h.normalize(KEY, Bounds(10, 5, 1, 20), T + 31, downscale_window=30).replicas == 5


def test_scale_up_is_at_most_twice_or_four_at_a_time() -> None:
    h = ScalingHistory()
    first = h.normalize(KEY, Bounds(1, 7, 1, 10), T)
    assert first.replicas == 4  # max(2 x 1, 4)
    assert first.scaling_limited.status
    assert first.scaling_limited.reason == "ScaleUpLimit"
    assert h.normalize("other/a", Bounds(3, 20, 1, 10), T).replicas == 6
    capped = h.normalize("other/b", Bounds(6, 20, 1, 10), T)
    assert (capped.replicas, capped.scaling_limited.reason) == (10, "TooManyReplicas")


def test_min_replicas_holds() -> None:
    got = ScalingHistory().normalize(KEY, Bounds(3, 0, 2, 10), T)
    assert (got.replicas, got.scaling_limited.reason) == (2, "TooFewReplicas")


def test_within_range_is_not_limited() -> None:
    got = ScalingHistory().normalize(KEY, Bounds(3, 4, 1, 10), T)
    assert got.replicas == 4
    assert not got.scaling_limited.status
    assert got.scaling_limited.reason == "DesiredWithinRange"


# ---- with a behavior --------------------------------------------------------------------------


def test_default_scale_up_adds_4_pods_or_100_percent_every_15_seconds() -> None:
    h = ScalingHistory()
    b = behavior()
    first = h.normalize(KEY, Bounds(1, 10, 1, 20), T, behavior=b)
    assert first.replicas == 5  # max(1 + 4, 2 x 1)
    assert first.scaling_limited.reason == "ScaleUpLimit"
    h.record_scale(KEY, 1, 5, T, b)
    # Within the same 15 s period the 4 added pods used it up.
    assert h.normalize(KEY, Bounds(5, 20, 1, 20), T + 5, behavior=b).replicas == 5
    # A new period: max(5 + 4, 2 x 5).
    assert h.normalize(KEY, Bounds(5, 20, 1, 20), T + 16, behavior=b).replicas == 10


def test_docs_scale_down_example_80_to_72_to_64() -> None:
    # Pods 4 / 60 s and Percent 10 / 60 s, Max: 80 replicas lose 8 (10%), then 72 lose 8
    # (10% of 72 = 7.2, rounded up in pods removed).
    h = ScalingHistory()
    b = behavior(down_policies=(("Pods", 4, 60), ("Percent", 10, 60)))
    first = h.normalize(KEY, Bounds(80, 10, 1, 100), T, behavior=b)
    assert (first.replicas, first.scaling_limited.reason) == (72, "ScaleDownLimit")
    h.record_scale(KEY, 80, 72, T, b)
    assert h.normalize(KEY, Bounds(72, 10, 1, 100), T + 30, behavior=b).replicas == 72
    assert h.normalize(KEY, Bounds(72, 10, 1, 100), T + 61, behavior=b).replicas == 64


def test_select_policy_min_takes_the_smallest_change() -> None:
    b = behavior(down_policies=(("Pods", 4, 60), ("Percent", 10, 60)), down_select="Min")
    assert ScalingHistory().normalize(KEY, Bounds(80, 10, 1, 100), T, behavior=b).replicas == 76


def test_select_policy_disabled_stops_scaling_down() -> None:
    b = behavior(down_select="Disabled")
    got = ScalingHistory().normalize(KEY, Bounds(10, 2, 1, 100), T, behavior=b)
    assert (got.replicas, got.scaling_limited.reason) == (10, "ScaleDownLimit")


def test_scale_up_window_takes_the_lowest_recent_recommendation() -> None:
    h = ScalingHistory()
    b = behavior(up_window=60)
    assert h.normalize(KEY, Bounds(2, 3, 1, 20), T, behavior=b).replicas == 3
    got = h.normalize(KEY, Bounds(2, 5, 1, 20), T + 10, behavior=b)
    assert (got.replicas, got.able_to_scale.reason) == (3, "ScaleUpStabilized")
    assert h.normalize(KEY, Bounds(2, 5, 1, 20), T + 71, behavior=b).replicas == 5


def test_unset_scale_down_window_comes_from_the_controller() -> None:
    b = behavior(down_window=None)
    assert b.scale_down.stabilization_window_seconds == 300
    assert b.scale_up.stabilization_window_seconds == 0
    assert [p.type for p in b.scale_up.policies] == ["Pods", "Percent"]
    h = ScalingHistory()
    h.normalize(KEY, Bounds(10, 10, 1, 20), T, behavior=b)
    assert h.normalize(KEY, Bounds(10, 4, 1, 20), T + 200, behavior=b).replicas == 10
    assert h.normalize(KEY, Bounds(10, 4, 1, 20), T + 301, behavior=b).replicas == 4


def test_forget_drops_an_hpas_memory() -> None:
    h = ScalingHistory()
    h.normalize(KEY, Bounds(10, 10, 1, 20), T)
    h.forget(KEY)
    assert h.normalize(KEY, Bounds(10, 5, 1, 20), T + 1).replicas == 5
