"""The normalizer: from the metrics' proposal to the replica count the HPA sets, by Kubernetes'
rules, remembering what each HPA recommended and scaled recently.

Without `spec.behavior` (what `autoscale` creates):
1. stabilization: the highest recommendation of the last `downscale_window` seconds (the
   controller's --horizontal-pod-autoscaler-downscale-stabilization, 300 s), so a scale-down
   happens only once every recommendation in the window agreed to it;
2. clamp to [minReplicas, maxReplicas], and at most max(2 x current, 4) in one step.

With `spec.behavior` (defaults filled in by `k8semu.api.autoscaling.effective_behavior`):
1. stabilization per direction: scaling up takes the lowest recommendation of the scale-up
   window (0 s by default), scaling down the highest of the scale-down window;
2. rate: each policy allows, from the replica count at the start of its period (the current
   count minus what was added plus what was removed within periodSeconds), +/- `value` pods
   (Pods) or +/- `value`% (Percent, rounded up when growing, down when shrinking); selectPolicy
   Max takes the policy allowing the biggest change, Min the smallest, Disabled none;
3. clamp to [minReplicas, maxReplicas].

Each call also says which AbleToScale and ScalingLimited conditions (Kubernetes' reasons) hold.
Pure: time is the `now` argument; memory is per HPA key and bounded by the longest window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from k8semu.api import autoscaling as api
from k8semu.pb.api.v1 import autoscaling_pb2 as pb

SCALE_UP_LIMIT_FACTOR = 2
SCALE_UP_LIMIT_MINIMUM = 4
DEFAULT_DOWNSCALE_STABILIZATION = 300.0  # seconds


@dataclass(frozen=True, slots=True)
class Condition:
    """An HPA condition's status, reason and message (the type is where it is used)."""

    status: bool
    reason: str
    message: str


READY_FOR_NEW_SCALE = Condition(True, "ReadyForNewScale", "recommended size matches current size")
SCALE_DOWN_STABILIZED = Condition(
    True,
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent "
    "recommendation",
)
SCALE_UP_STABILIZED = Condition(
    True,
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
)
_WITHIN_RANGE = ("DesiredWithinRange", "the desired count is within the acceptable range")
_TOO_MANY = ("TooManyReplicas", "the desired replica count is more than the maximum replica count")
_TOO_FEW = ("TooFewReplicas", "the desired replica count is less than the minimum replica count")
_UP_LIMIT = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
)
_DOWN_LIMIT = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
)


class Normalized(NamedTuple):
    """The count to set, and the AbleToScale / ScalingLimited conditions that explain it."""

    replicas: int
    able_to_scale: Condition
    scaling_limited: Condition


@dataclass(slots=True)
class _Timed:
    at: float
    value: int  # a recommendation, or a change in replicas (positive)


@dataclass(slots=True)
class _Memory:
    recommendations: list[_Timed] = field(default_factory=list)
    ups: list[_Timed] = field(default_factory=list)
    downs: list[_Timed] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Bounds:
    """The replica counts a normalization works with."""

    current: int
    desired: int
    minimum: int
    maximum: int


class ScalingHistory:
    """What the normalizer remembers per HPA (namespace/name): recent recommendations and
    scale events. One per controller; `forget` when an HPA goes away."""

    def __init__(self) -> None:
        self._memory: dict[str, _Memory] = {}

    def forget(self, key: str) -> None:
        self._memory.pop(key, None)

    def normalize(
        self,
        key: str,
        bounds: Bounds,
        now: float,
        *,
        behavior: pb.HorizontalPodAutoscalerBehavior | None = None,
        downscale_window: float = DEFAULT_DOWNSCALE_STABILIZATION,
    ) -> Normalized:
        """The replica count to set for a proposal of `bounds.desired` (see the module doc)."""
        memory = self._memory.setdefault(key, _Memory())
        if behavior is None:
            stabilized = _stabilize(memory, bounds.desired, now, downscale_window)
            able = READY_FOR_NEW_SCALE if stabilized == bounds.desired else SCALE_DOWN_STABILIZED
            replicas, why = _clamp_with_rate_limit(bounds.current, stabilized, bounds)
        else:
            stabilized, able = _stabilize_with_behavior(memory, bounds, now, behavior)
            replicas, why = _clamp_with_policies(memory, bounds, stabilized, now, behavior)
        limited = Condition(replicas != stabilized, *why)
        return Normalized(replicas, able, limited)

    def record_scale(
        self,
        key: str,
        previous: int,
        new: int,
        now: float,
        behavior: pb.HorizontalPodAutoscalerBehavior | None = None,
    ) -> None:
        """Remember a rescale (with a behavior, its policies count what happened in their
        periods); older events than the longest period are dropped."""
        if behavior is None or new == previous:
            return
        memory = self._memory.setdefault(key, _Memory())
        if new > previous:
            events, rules = memory.ups, behavior.scale_up
        else:
            events, rules = memory.downs, behavior.scale_down
        events.append(_Timed(now, abs(new - previous)))
        longest = max((p.period_seconds for p in rules.policies), default=0)
        events[:] = [e for e in events if e.at > now - longest]


def _stabilize(memory: _Memory, desired: int, now: float, window: float) -> int:
    """The highest recommendation of the window, this one included."""
    cutoff = now - window
    kept = [r for r in memory.recommendations if r.at >= cutoff]
    best = max([desired, *(r.value for r in kept)])
    kept.append(_Timed(now, desired))
    memory.recommendations = kept
    return best


def _clamp_with_rate_limit(
    current: int, desired: int, bounds: Bounds
) -> tuple[int, tuple[str, str]]:
    scale_up_limit = max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM)
    if bounds.maximum > scale_up_limit:
        maximum, why = scale_up_limit, _UP_LIMIT
    else:
        maximum, why = bounds.maximum, _TOO_MANY
    if desired < bounds.minimum:
        return bounds.minimum, _TOO_FEW
    if desired > maximum:
        return maximum, why
    return desired, _WITHIN_RANGE


def _stabilize_with_behavior(
    memory: _Memory, bounds: Bounds, now: float, behavior: pb.HorizontalPodAutoscalerBehavior
) -> tuple[int, Condition]:
    up_window = behavior.scale_up.stabilization_window_seconds
    down_window = behavior.scale_down.stabilization_window_seconds
    if bounds.desired >= bounds.current:
        cutoff, pick, stabilized_condition = now - up_window, min, SCALE_UP_STABILIZED
    else:
        cutoff, pick, stabilized_condition = now - down_window, max, SCALE_DOWN_STABILIZED
    recommendation = bounds.desired
    for r in memory.recommendations:
        if r.at > cutoff:
            recommendation = pick(recommendation, r.value)
    obsolete = now - max(up_window, down_window)
    memory.recommendations = [r for r in memory.recommendations if r.at >= obsolete]
    memory.recommendations.append(_Timed(now, bounds.desired))
    able = READY_FOR_NEW_SCALE if recommendation == bounds.desired else stabilized_condition
    return recommendation, able


def _changed_within(events: list[_Timed], period: int, now: float) -> int:
    return sum(e.value for e in events if e.at > now - period)


def _period_start(memory: _Memory, current: int, period: int, now: float) -> int:
    """The replica count at the start of a policy's period."""
    return (
        current
        - _changed_within(memory.ups, period, now)
        + _changed_within(memory.downs, period, now)
    )


def policy_limit(
    memory: _Memory, current: int, rules: pb.HPAScalingRules, now: float, *, up: bool
) -> int:
    """The farthest the policies let the count go from `current` in one direction (up: a
    ceiling, down: a floor). Max picks the policy allowing the biggest change, Min the
    smallest, Disabled none."""
    if rules.select_policy == api.SELECT_DISABLED or not rules.policies:
        return current
    sign = 1 if up else -1
    proposals = []
    for policy in rules.policies:
        start = _period_start(memory, current, policy.period_seconds, now)
        if policy.type == api.POLICY_PODS:
            proposals.append(start + sign * policy.value)
        elif up:  # Percent: round up when growing, down when shrinking
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
        else:
            proposals.append(int(start * (1 - policy.value / 100)))
    biggest_change = max(proposals) if up else min(proposals)
    smallest_change = min(proposals) if up else max(proposals)
    return smallest_change if rules.select_policy == api.SELECT_MIN else biggest_change


def _clamp_with_policies(
    memory: _Memory,
    bounds: Bounds,
    desired: int,
    now: float,
    behavior: pb.HorizontalPodAutoscalerBehavior,
) -> tuple[int, tuple[str, str]]:
    current = bounds.current
    if desired > current:
        limit = max(policy_limit(memory, current, behavior.scale_up, now, up=True), current)
        if bounds.maximum > limit:
            maximum, why = limit, _UP_LIMIT
        else:
            maximum, why = bounds.maximum, _TOO_MANY
        if desired > maximum:
            return maximum, why
    elif desired < current:
        limit = min(policy_limit(memory, current, behavior.scale_down, now, up=False), current)
        if bounds.minimum < limit:
            minimum, why = limit, _DOWN_LIMIT
        else:
            minimum, why = bounds.minimum, _TOO_FEW
        if desired < minimum:
            return minimum, why
    return desired, _WITHIN_RANGE
