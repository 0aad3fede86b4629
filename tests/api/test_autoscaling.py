"""HorizontalPodAutoscaler validation and defaults (Kubernetes' rules and field paths)."""

from __future__ import annotations

from k8semu.api import manifest
from k8semu.api.autoscaling import default_hpa, effective_behavior, validate_hpa
from k8semu.pb.api.v1 import autoscaling_pb2 as pb

WALKTHROUGH = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: php-apache}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: php-apache}
  minReplicas: 1
  maxReplicas: 10
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  - type: Pods
    pods:
      metric: {name: packets-per-second}
      target: {type: AverageValue, averageValue: 1k}
  - type: Object
    object:
      metric: {name: requests-per-second}
      describedObject: {apiVersion: networking.k8s.io/v1, kind: Ingress, name: main-route}
      target: {type: Value, value: 10k}
  - type: External
    external:
      metric: {name: queue_messages_ready, selector: {matchLabels: {queue: worker_tasks}}}
      target: {type: AverageValue, averageValue: "30"}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 60
      policies:
      - {type: Percent, value: 10, periodSeconds: 60}
"""


def load(text: str) -> pb.HorizontalPodAutoscaler:
    obj = manifest.load(text, source="test")
    assert isinstance(obj, pb.HorizontalPodAutoscaler)
    return obj


def paths(hpa: pb.HorizontalPodAutoscaler) -> list[str]:
    return [path for path, _ in validate_hpa(hpa)]


def test_the_docs_manifest_with_every_metric_type_is_valid() -> None:
    hpa = load(WALKTHROUGH)
    assert validate_hpa(hpa) == []
    assert hpa.spec.metrics[3].external.metric.selector.match_labels["queue"] == "worker_tasks"


def test_min_greater_than_max_and_bad_counts() -> None:
    hpa = load(WALKTHROUGH)
    hpa.spec.min_replicas = 11
    problems = validate_hpa(hpa)
    assert problems == [
        (
            "spec.maxReplicas",
            "Invalid value: 10: must be greater than or equal to `minReplicas`",
        )
    ]
    hpa.spec.min_replicas = 0
    hpa.spec.max_replicas = 0
    assert paths(hpa) == ["spec.minReplicas", "spec.maxReplicas"]


def test_targets_must_be_positive_and_of_an_allowed_type() -> None:
    hpa = load(WALKTHROUGH)
    hpa.spec.metrics[0].resource.target.average_utilization = 0
    hpa.spec.metrics[1].pods.target.average_value = "-1"
    hpa.spec.metrics[2].object.target.type = "Utilization"
    hpa.spec.metrics[3].external.target.average_value = "lots"
    assert paths(hpa) == [
        "spec.metrics[0].resource.target.averageUtilization",
        "spec.metrics[1].pods.target.averageValue",
        "spec.metrics[2].object.target.type",
        "spec.metrics[3].external.target.averageValue",
    ]


def test_unknown_or_mismatched_metric_sources() -> None:
    hpa = load(WALKTHROUGH)
    hpa.spec.metrics[0].type = "Telepathy"
    hpa.spec.metrics[1].type = "Resource"  # but fills pods
    problems = dict(validate_hpa(hpa))
    assert "Unsupported value: 'Telepathy'" in problems["spec.metrics[0].type"]
    assert "only" in problems["spec.metrics[1].pods"]
    assert "Required" in problems["spec.metrics[1].resource"]


def test_a_scale_target_needs_kind_and_name() -> None:
    hpa = load(WALKTHROUGH)
    hpa.spec.scale_target_ref.kind = ""
    hpa.spec.scale_target_ref.name = "a/b"
    assert paths(hpa) == ["spec.scaleTargetRef.kind", "spec.scaleTargetRef.name"]


def test_behavior_rules_are_bounded() -> None:
    hpa = load(WALKTHROUGH)
    rules = hpa.spec.behavior.scale_down
    rules.stabilization_window_seconds = 3601
    rules.select_policy = "Sometimes"
    rules.policies.add(type="Nodes", value=0, period_seconds=1801)
    assert paths(hpa) == [
        "spec.behavior.scaleDown.stabilizationWindowSeconds",
        "spec.behavior.scaleDown.selectPolicy",
        "spec.behavior.scaleDown.policies[1].type",
        "spec.behavior.scaleDown.policies[1].value",
        "spec.behavior.scaleDown.policies[1].periodSeconds",
    ]


def test_defaults_are_kubernetes() -> None:
    hpa = pb.HorizontalPodAutoscaler()
    hpa.spec.max_replicas = 3
    default_hpa(hpa)
    assert hpa.spec.min_replicas == 1
    target = hpa.spec.metrics[0].resource.target
    assert (hpa.spec.metrics[0].resource.name, target.average_utilization) == ("cpu", 80)
    assert not hpa.spec.HasField("behavior")  # only filled in when given

    given = load(WALKTHROUGH)
    default_hpa(given)
    down = given.spec.behavior.scale_down
    assert (down.stabilization_window_seconds, down.select_policy) == (60, "Max")
    assert [(p.type, p.value) for p in down.policies] == [("Percent", 10)]
    up = given.spec.behavior.scale_up
    assert up.stabilization_window_seconds == 0
    assert [(p.type, p.value, p.period_seconds) for p in up.policies] == [
        ("Pods", 4, 15),
        ("Percent", 100, 15),
    ]
    unset = effective_behavior(pb.HorizontalPodAutoscaler(), 120)
    assert unset.scale_down.stabilization_window_seconds == 120
