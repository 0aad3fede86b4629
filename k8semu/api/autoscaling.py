"""autoscaling/v2 HorizontalPodAutoscaler rules that are not the schema's: validation and
defaults, as Kubernetes' API server applies them. Pure: no I/O.

- `validate_hpa(hpa)` lists every problem as (field path, message), Kubernetes' paths and
  wording (`spec.maxReplicas: must be greater than or equal to minReplicas`); empty when valid.
  The API server's per-kind registry calls it on create and update (wired there, not here).
- `default_hpa(hpa)` fills what Kubernetes' defaulting fills: minReplicas 1, one CPU metric at
  80% when none is given, and, when `behavior` is given, every unset rule of it.
- `effective_behavior(hpa, downscale_stabilization)` is the behavior the controller applies:
  the defaults above, the scale-down window from the controller's flag when unset.

Must not import the API server or the controllers (a lower layer than both).
"""

from __future__ import annotations

from collections.abc import Iterator

from k8semu.api.errors import QuantityError
from k8semu.api.quantity import parse_quantity
from k8semu.pb.api.v1 import autoscaling_pb2 as pb

RESOURCE = "Resource"
CONTAINER_RESOURCE = "ContainerResource"
PODS = "Pods"
OBJECT = "Object"
EXTERNAL = "External"
METRIC_TYPES = (RESOURCE, CONTAINER_RESOURCE, PODS, OBJECT, EXTERNAL)
# the MetricSpec field each type fills
SOURCE_FIELD = {
    RESOURCE: "resource",
    CONTAINER_RESOURCE: "container_resource",
    PODS: "pods",
    OBJECT: "object",
    EXTERNAL: "external",
}
_JSON_FIELD = {
    "resource": "resource",
    "container_resource": "containerResource",
    "pods": "pods",
    "object": "object",
    "external": "external",
}

UTILIZATION = "Utilization"
AVERAGE_VALUE = "AverageValue"
VALUE = "Value"
# which target types each metric type accepts (Kubernetes' validation)
TARGET_TYPES = {
    RESOURCE: (UTILIZATION, AVERAGE_VALUE),
    CONTAINER_RESOURCE: (UTILIZATION, AVERAGE_VALUE),
    PODS: (AVERAGE_VALUE,),
    OBJECT: (VALUE, AVERAGE_VALUE),
    EXTERNAL: (VALUE, AVERAGE_VALUE),
}

SELECT_MAX = "Max"
SELECT_MIN = "Min"
SELECT_DISABLED = "Disabled"
POLICY_PODS = "Pods"
POLICY_PERCENT = "Percent"

DEFAULT_CPU_UTILIZATION = 80  # percent, when an HPA names no metric
MAX_STABILIZATION_WINDOW = 3600  # seconds
MAX_PERIOD_SECONDS = 1800
SCALE_UP_DEFAULT_WINDOW = 0


def default_scale_up() -> pb.HPAScalingRules:
    """Kubernetes' scale-up rules: no window; every 15 s, +4 pods or +100%, the larger."""
    return pb.HPAScalingRules(
        stabilization_window_seconds=SCALE_UP_DEFAULT_WINDOW,
        select_policy=SELECT_MAX,
        policies=[
            pb.HPAScalingPolicy(type=POLICY_PODS, value=4, period_seconds=15),
            pb.HPAScalingPolicy(type=POLICY_PERCENT, value=100, period_seconds=15),
        ],
    )


def default_scale_down() -> pb.HPAScalingRules:
    """Kubernetes' scale-down rules: the window comes from the controller (300 s by
    default), then up to 100% of the pods may go every 15 s."""
    return pb.HPAScalingRules(
        select_policy=SELECT_MAX,
        policies=[pb.HPAScalingPolicy(type=POLICY_PERCENT, value=100, period_seconds=15)],
    )


def _fill_rules(rules: pb.HPAScalingRules, defaults: pb.HPAScalingRules) -> None:
    if not rules.HasField("stabilization_window_seconds") and defaults.HasField(
        "stabilization_window_seconds"
    ):
        rules.stabilization_window_seconds = defaults.stabilization_window_seconds
    if not rules.select_policy:
        rules.select_policy = defaults.select_policy
    if not rules.policies:
        rules.policies.extend(defaults.policies)


def default_hpa(hpa: pb.HorizontalPodAutoscaler) -> None:
    """Kubernetes' defaults, in place: minReplicas 1, CPU at 80% when no metric is named,
    and the unset parts of a given `behavior`."""
    spec = hpa.spec
    if not spec.HasField("min_replicas"):
        spec.min_replicas = 1
    if not spec.metrics:
        spec.metrics.append(
            pb.MetricSpec(
                type=RESOURCE,
                resource=pb.ResourceMetricSource(
                    name="cpu",
                    target=pb.MetricTarget(
                        type=UTILIZATION, average_utilization=DEFAULT_CPU_UTILIZATION
                    ),
                ),
            )
        )
    if spec.HasField("behavior"):
        _fill_rules(spec.behavior.scale_up, default_scale_up())
        _fill_rules(spec.behavior.scale_down, default_scale_down())


def min_replicas(hpa: pb.HorizontalPodAutoscaler) -> int:
    return hpa.spec.min_replicas if hpa.spec.HasField("min_replicas") else 1


def effective_behavior(
    hpa: pb.HorizontalPodAutoscaler, downscale_stabilization: int
) -> pb.HorizontalPodAutoscalerBehavior:
    """The behavior the controller applies to an HPA that has one: defaults filled in, an
    unset scale-down window taken from the controller (`downscale_stabilization` seconds)."""
    behavior = pb.HorizontalPodAutoscalerBehavior()
    behavior.CopyFrom(hpa.spec.behavior)
    _fill_rules(behavior.scale_up, default_scale_up())
    _fill_rules(behavior.scale_down, default_scale_down())
    if not behavior.scale_down.HasField("stabilization_window_seconds"):
        behavior.scale_down.stabilization_window_seconds = downscale_stabilization
    return behavior


# ---- validation -------------------------------------------------------------------------------

FieldProblem = tuple[str, str]
"""(field path, message): the registry turns each into its own field error type."""


def validate_hpa(hpa: pb.HorizontalPodAutoscaler) -> list[FieldProblem]:
    """Every problem of `hpa`'s spec, Kubernetes' field paths; empty when it is valid."""
    return list(_spec(hpa.spec))


def _spec(spec: pb.HorizontalPodAutoscalerSpec) -> Iterator[FieldProblem]:
    ref = spec.scale_target_ref
    if not ref.kind:
        yield "spec.scaleTargetRef.kind", "Required value"
    elif "/" in ref.kind or "%" in ref.kind:
        yield "spec.scaleTargetRef.kind", f"Invalid value: {ref.kind!r}: may not contain '/'"
    if not ref.name:
        yield "spec.scaleTargetRef.name", "Required value"
    elif "/" in ref.name or "%" in ref.name:
        yield "spec.scaleTargetRef.name", f"Invalid value: {ref.name!r}: may not contain '/'"
    minimum = spec.min_replicas if spec.HasField("min_replicas") else 1
    if minimum < 1:
        yield "spec.minReplicas", f"Invalid value: {minimum}: must be greater than or equal to 1"
    if spec.max_replicas < 1:
        yield "spec.maxReplicas", f"Invalid value: {spec.max_replicas}: must be greater than 0"
    elif minimum > spec.max_replicas:
        yield (
            "spec.maxReplicas",
            f"Invalid value: {spec.max_replicas}: must be greater than or equal to `minReplicas`",
        )
    for i, metric in enumerate(spec.metrics):
        yield from _metric(metric, f"spec.metrics[{i}]")
    if spec.HasField("behavior"):
        yield from _rules(spec.behavior.scale_up, "spec.behavior.scaleUp", spec.behavior)
        yield from _rules(spec.behavior.scale_down, "spec.behavior.scaleDown", spec.behavior)


def _metric(metric: pb.MetricSpec, path: str) -> Iterator[FieldProblem]:
    if not metric.type:
        yield f"{path}.type", "Required value: must specify a metric source type"
        return
    if metric.type not in METRIC_TYPES:
        yield (
            f"{path}.type",
            f"Unsupported value: {metric.type!r}: supported values: "
            + (", ".join(f'"{t}"' for t in METRIC_TYPES)),
        )
        return
    wanted = SOURCE_FIELD[metric.type]
    for name in SOURCE_FIELD.values():
        if name != wanted and metric.HasField(name):  # type: ignore[arg-type]
            yield (
                f"{path}.{_JSON_FIELD[name]}",
                "Forbidden: must populate the given metric source only",
            )
    if not metric.HasField(wanted):  # type: ignore[arg-type]
        yield (
            f"{path}.{_JSON_FIELD[wanted]}",
            "Required value: must populate information for the given metric source",
        )
        return
    source = getattr(metric, wanted)
    where = f"{path}.{_JSON_FIELD[wanted]}"
    if metric.type in (RESOURCE, CONTAINER_RESOURCE):
        if not source.name:
            yield f"{where}.name", "Required value: must specify a resource name"
        if metric.type == CONTAINER_RESOURCE and not source.container:
            yield f"{where}.container", "Required value: must specify a container"
    else:
        if not source.metric.name:
            yield f"{where}.metric.name", "Required value: must specify a metric name"
    if metric.type == OBJECT:
        ref = source.described_object
        if not ref.kind:
            yield f"{where}.describedObject.kind", "Required value"
        if not ref.name:
            yield f"{where}.describedObject.name", "Required value"
    yield from _target(source.target, f"{where}.target", TARGET_TYPES[metric.type])


def _target(target: pb.MetricTarget, path: str, allowed: tuple[str, ...]) -> Iterator[FieldProblem]:
    if not target.type:
        yield f"{path}.type", "Required value: must specify a metric target type"
        return
    if target.type not in allowed:
        yield f"{path}.type", f"Invalid value: {target.type!r}: must be " + " or ".join(allowed)
        return
    if target.type == UTILIZATION:
        if not target.HasField("average_utilization"):
            yield f"{path}.averageUtilization", "Required value: must set averageUtilization"
        elif target.average_utilization <= 0:
            yield (
                f"{path}.averageUtilization",
                f"Invalid value: {target.average_utilization}: must be greater than 0",
            )
        return
    field, text = (
        ("averageValue", target.average_value)
        if target.type == AVERAGE_VALUE
        else ("value", target.value)
    )
    if not text:
        yield f"{path}.{field}", f"Required value: must set {field}"
        return
    try:
        amount = parse_quantity(text, field=f"{path}.{field}").amount
    except QuantityError as exc:
        yield f"{path}.{field}", f"Invalid value: {text!r}: {exc}"
        return
    if amount <= 0:
        yield f"{path}.{field}", f"Invalid value: {text!r}: must be positive"


def _rules(
    rules: pb.HPAScalingRules, path: str, behavior: pb.HorizontalPodAutoscalerBehavior
) -> Iterator[FieldProblem]:
    field = path.rsplit(".", 1)[1]
    if not behavior.HasField("scale_up" if field == "scaleUp" else "scale_down"):
        return
    if rules.HasField("stabilization_window_seconds"):
        window = rules.stabilization_window_seconds
        if not 0 <= window <= MAX_STABILIZATION_WINDOW:
            yield (
                f"{path}.stabilizationWindowSeconds",
                f"Invalid value: {window}: must be between 0 and {MAX_STABILIZATION_WINDOW}",
            )
    if rules.select_policy and rules.select_policy not in (SELECT_MAX, SELECT_MIN, SELECT_DISABLED):
        yield (
            f"{path}.selectPolicy",
            f"Unsupported value: {rules.select_policy!r}: "
            'supported values: "Disabled", "Max", "Min"',
        )
    for i, policy in enumerate(rules.policies):
        where = f"{path}.policies[{i}]"
        if policy.type not in (POLICY_PODS, POLICY_PERCENT):
            yield (
                f"{where}.type",
                f'Unsupported value: {policy.type!r}: supported values: "Percent", "Pods"',
            )
        if policy.value <= 0:
            yield f"{where}.value", f"Invalid value: {policy.value}: must be greater than zero"
        if not 0 < policy.period_seconds <= MAX_PERIOD_SECONDS:
            yield (
                f"{where}.periodSeconds",
                f"Invalid value: {policy.period_seconds}: must be greater than zero and less "
                f"than or equal to {MAX_PERIOD_SECONDS}",
            )


def target_milli(target: pb.MetricTarget) -> int:
    """A target's Value or AverageValue in thousandths (Kubernetes compares MilliValues)."""
    text = target.average_value if target.type == AVERAGE_VALUE else target.value
    return parse_quantity(text).milli()
