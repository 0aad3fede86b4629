"""The conversions of versions served beside the stored one (k8semu/apiserver/rest/versions.py):
pure, on documents; the served paths and their errors."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from k8semu.api import manifest
from k8semu.apiserver.rest import paths
from k8semu.apiserver.rest.status import HTTPError
from k8semu.apiserver.rest.versions import (
    BEHAVIOR,
    CONDITIONS,
    CONVERSIONS,
    CURRENT_METRICS,
    METRICS,
    hpa_v1_to_v2,
    hpa_v2_to_v1,
)

HPA = CONVERSIONS[("autoscaling", "v1", "horizontalpodautoscalers")]


def _cpu(value: int) -> dict[str, Any]:
    target = {"type": "Utilization", "averageUtilization": value}
    return {"type": "Resource", "resource": {"name": "cpu", "target": target}}


FULL_V2: dict[str, Any] = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "web", "namespace": "default", "annotations": {"team": "a"}},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1,
        "maxReplicas": 5,
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "qps"},
                    "target": {"type": "AverageValue", "averageValue": "10"},
                },
            },
            _cpu(50),
        ],
        "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0}},
    },
    "status": {
        "observedGeneration": 2,
        "currentReplicas": 2,
        "desiredReplicas": 3,
        "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 61}}}
        ],
        "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}],
    },
}


def test_v2_to_v1_keeps_what_v1_cannot_say_in_annotations() -> None:
    v1 = hpa_v2_to_v1(copy.deepcopy(FULL_V2))
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 50
    assert "metrics" not in v1["spec"] and "behavior" not in v1["spec"]
    assert v1["status"]["currentCPUUtilizationPercentage"] == 61
    annotations = v1["metadata"]["annotations"]
    assert annotations["team"] == "a"
    assert json.loads(annotations[METRICS]) == [FULL_V2["spec"]["metrics"][0]]
    assert json.loads(annotations[BEHAVIOR]) == FULL_V2["spec"]["behavior"]
    assert json.loads(annotations[CONDITIONS]) == FULL_V2["status"]["conditions"]
    assert CURRENT_METRICS not in annotations  # the cpu reading is v1's own field
    # Valid v1 for the object model's decoder once back in v2.
    manifest.decode(hpa_v1_to_v2(v1), HPA.stored.message)


def test_round_trip_v2_v1_v2() -> None:
    back = hpa_v1_to_v2(hpa_v2_to_v1(copy.deepcopy(FULL_V2)))
    assert back["metadata"] == FULL_V2["metadata"]
    # The cpu target comes first after a trip through v1 (Kubernetes' order too).
    assert back["spec"]["metrics"] == [_cpu(50), FULL_V2["spec"]["metrics"][0]]
    assert back["spec"]["behavior"] == FULL_V2["spec"]["behavior"]
    assert back["status"] == FULL_V2["status"]


def test_a_v1_cpu_target_replaces_the_cpu_metric_of_the_annotation() -> None:
    v1 = hpa_v2_to_v1(copy.deepcopy(FULL_V2))
    v1["spec"]["targetCPUUtilizationPercentage"] = 90
    v1["metadata"]["annotations"][METRICS] = json.dumps([_cpu(10)])
    assert hpa_v1_to_v2(v1)["spec"]["metrics"] == [_cpu(90)]


def test_a_v1_object_without_target_gets_kubernetes_default_cpu_target() -> None:
    v1 = {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 2},
    }
    v2 = hpa_v1_to_v2(v1)
    assert v2["spec"]["metrics"] == [_cpu(80)] and "annotations" not in v2["metadata"]
    assert "status" not in v2


def test_bad_annotation_json_is_400_naming_it() -> None:
    v1 = hpa_v2_to_v1(copy.deepcopy(FULL_V2))
    v1["metadata"]["annotations"][METRICS] = "{not json"
    with pytest.raises(HTTPError) as err:
        HPA.incoming(v1)
    assert err.value.code == 400 and METRICS in str(err.value)


def test_a_body_of_another_version_or_kind_is_400() -> None:
    for body in ({**FULL_V2}, {**FULL_V2, "apiVersion": "autoscaling/v1", "kind": "Scale"}):
        with pytest.raises(HTTPError) as err:
            HPA.incoming(body)
        assert err.value.code == 400


def test_outgoing_converts_lists_tables_and_events_and_passes_the_rest() -> None:
    listed = {"kind": "HorizontalPodAutoscalerList", "apiVersion": "autoscaling/v2",
              "metadata": {}, "items": [FULL_V2]}  # fmt: skip
    out = HPA.outgoing(listed)
    assert out["apiVersion"] == "autoscaling/v1"
    assert out["items"][0]["apiVersion"] == "autoscaling/v1"
    table = {"kind": "Table", "rows": [{"cells": [], "object": FULL_V2}]}
    assert HPA.outgoing(table)["rows"][0]["object"]["apiVersion"] == "autoscaling/v1"
    line = json.dumps({"type": "MODIFIED", "object": FULL_V2}).encode() + b"\n"
    [event] = HPA.outgoing_lines(line + line).splitlines()[:1]
    assert json.loads(event)["object"]["spec"]["targetCPUUtilizationPercentage"] == 50
    status = {"kind": "Status", "apiVersion": "v1", "code": 404}
    assert HPA.outgoing(status) == status
    assert (
        HPA.outgoing_json(json.dumps(status).encode())
        == json.dumps(status, separators=(",", ":")).encode()
    )


def test_paths_name_the_stored_kind_and_the_conversion() -> None:
    target = paths.target("/apis/autoscaling/v1/namespaces/ns/horizontalpodautoscalers/h/status")
    assert (target.kind, target.served_as) == (HPA.stored, HPA)
    assert (target.namespace, target.name, target.subresource) == ("ns", "h", "status")
    assert paths.target("/apis/autoscaling/v2/horizontalpodautoscalers").served_as is None
    assert paths.group_versions()["autoscaling"] == ["v2", "v1"]
    for path in ("/apis/autoscaling/v1/deployments", "/apis/autoscaling/v3/x"):
        with pytest.raises(HTTPError):
            paths.target(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("spec", "x"),
        ("status", []),
        ("metadata", 3),
        ("metadata", {"annotations": ["a"]}),
        ("metadata", {"annotations": {"a": 1}}),
        ("metadata", {"annotations": {METRICS: '{"a": 1}'}}),
    ],
)
def test_malformed_v1_bodies_are_400(field: str, value: Any) -> None:
    body = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", field: value}
    with pytest.raises(HTTPError) as err:
        HPA.incoming(body)
    assert err.value.code == 400
