"""autoscaling/v1 HorizontalPodAutoscaler, served beside the stored v2 by conversion
(k8semu/apiserver/rest/versions.py), with the real kubectl and Kubernetes' Python client."""

from __future__ import annotations

import json
from typing import Any

from k8semu.apiserver.rest.versions import METRICS

from .conftest import REST, python_client

V1 = """
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata:
  name: v1-web
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: v1-web}
  minReplicas: 2
  maxReplicas: 5
  targetCPUUtilizationPercentage: 60
"""

TWO_METRICS = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "two-metrics", "labels": {"test": "two-metrics"}},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
        "maxReplicas": 4,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 70},
                },
            },
            {
                "type": "Resource",
                "resource": {
                    "name": "memory",
                    "target": {"type": "AverageValue", "averageValue": "100Mi"},
                },
            },
        ],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}},
    },
}
V2_PATH = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"
V1_PATH = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers"


def _v2(rest: REST, name: str) -> Any:
    code, doc = rest.json("GET", f"{V2_PATH}/{name}")
    assert code == 200, doc
    return doc


def test_discovery_serves_both_versions_v2_preferred(rest: REST) -> None:
    code, group = rest.json("GET", "/apis/autoscaling")
    assert code == 200
    assert [v["version"] for v in group["versions"]] == ["v2", "v1"]
    assert group["preferredVersion"]["version"] == "v2"
    code, listed = rest.json("GET", "/apis/autoscaling/v1")
    hpa = next(r for r in listed["resources"] if r["name"] == "horizontalpodautoscalers")
    assert hpa["shortNames"] == ["hpa"] and hpa["kind"] == "HorizontalPodAutoscaler"
    assert "horizontalpodautoscalers/status" in [r["name"] for r in listed["resources"]]
    # The v1 schema in the OpenAPI documents (kubectl explain reads v3).
    explained = rest.kubectl(
        "explain", "horizontalpodautoscalers.spec", "--api-version=autoscaling/v1"
    )
    assert "VERSION:    v1" in explained and "targetCPUUtilizationPercentage" in explained
    code, v3 = rest.json("GET", "/openapi/v3/apis/autoscaling/v1")
    assert code == 200
    assert "io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler" in v3["components"]["schemas"]


def test_kubectl_autoscale_creates_a_v2_cpu_metric(rest: REST) -> None:
    rest.kubectl("create", "deployment", "as-web", "--image=nginx:1.25")
    out = rest.kubectl(
        "autoscale", "deployment", "as-web", "--cpu-percent=50", "--min=1", "--max=10"
    )
    assert "autoscaled" in out, out
    spec = _v2(rest, "as-web")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 10)
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50},
            },
        }
    ]
    table = rest.kubectl("get", "hpa", "as-web")
    header, row = table.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "REFERENCE", "TARGETS"], table
    assert "cpu: <unknown>/50%" in row, table
    v1 = json.loads(
        rest.kubectl("get", "horizontalpodautoscalers.v1.autoscaling", "as-web", "-o", "json")
    )
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 50
    v1_table = rest.kubectl("get", "horizontalpodautoscalers.v1.autoscaling", "as-web")
    assert "cpu: <unknown>/50%" in v1_table, v1_table
    rest.kubectl("delete", "horizontalpodautoscalers.v1.autoscaling", "as-web")
    rest.kubectl("delete", "deployment", "as-web")


def test_v1_manifest_applied_and_patched(rest: REST) -> None:
    assert "created" in rest.kubectl("apply", "-f", "-", stdin=V1)
    assert _v2(rest, "v1-web")["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 60,
    }
    # Applied again with a change: kubectl's strategic patch, computed and applied in v1.
    rest.kubectl("apply", "-f", "-", stdin=V1.replace("maxReplicas: 5", "maxReplicas: 7"))
    assert _v2(rest, "v1-web")["spec"]["maxReplicas"] == 7
    rest.kubectl(
        "patch", "horizontalpodautoscalers.v1.autoscaling", "v1-web", "--type=merge",
        "-p", '{"spec":{"targetCPUUtilizationPercentage":75}}',
    )  # fmt: skip
    rest.kubectl(
        "patch", "horizontalpodautoscalers.v1.autoscaling", "v1-web", "--type=json",
        "-p", '[{"op":"replace","path":"/spec/minReplicas","value":3}]',
    )  # fmt: skip
    spec = _v2(rest, "v1-web")["spec"]
    assert spec["metrics"][0]["resource"]["target"]["averageUtilization"] == 75
    assert spec["minReplicas"] == 3
    # Server-side apply of the v1 manifest.
    rest.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-",
        stdin=V1.replace("maxReplicas: 5", "maxReplicas: 9"),
    )  # fmt: skip
    assert _v2(rest, "v1-web")["spec"]["maxReplicas"] == 9
    rest.kubectl("delete", "-f", "-", stdin=V1)


def test_v2_metrics_survive_a_v1_read_and_write(rest: REST) -> None:
    code, created = rest.json("POST", V2_PATH, TWO_METRICS)
    assert code == 201, created
    code, v1 = rest.json("GET", f"{V1_PATH}/two-metrics")
    assert code == 200, v1
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 70
    assert "metrics" not in v1["spec"]
    assert "autoscaling.alpha.kubernetes.io/metrics" in v1["metadata"]["annotations"]
    v1["spec"]["maxReplicas"] = 6
    code, written = rest.json("PUT", f"{V1_PATH}/two-metrics", v1)
    assert code == 200, written
    assert written["apiVersion"] == "autoscaling/v1"
    spec = _v2(rest, "two-metrics")["spec"]
    assert spec["maxReplicas"] == 6
    assert [m["resource"]["name"] for m in spec["metrics"]] == ["cpu", "memory"]
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 30
    assert "annotations" not in _v2(rest, "two-metrics")["metadata"]
    code, listed = rest.json("GET", V1_PATH)
    assert listed["kind"] == "HorizontalPodAutoscalerList"
    assert listed["apiVersion"] == "autoscaling/v1"
    assert {i["apiVersion"] for i in listed["items"]} == {"autoscaling/v1"}
    code, deleted = rest.json(
        "DELETE", f"{V1_PATH}?labelSelector=test%3Dtwo-metrics"
    )  # deletecollection, answered in v1
    assert code == 200 and deleted["apiVersion"] == "autoscaling/v1", deleted
    assert [i["metadata"]["name"] for i in deleted["items"]] == ["two-metrics"]


def test_python_client_v1_watch_and_status(rest: REST) -> None:
    kubernetes, api_client = python_client(rest)
    with api_client as client:
        v1 = kubernetes.client.AutoscalingV1Api(client)
        body = kubernetes.client.V1HorizontalPodAutoscaler(
            metadata=kubernetes.client.V1ObjectMeta(name="py-web"),
            spec=kubernetes.client.V1HorizontalPodAutoscalerSpec(
                scale_target_ref=kubernetes.client.V1CrossVersionObjectReference(
                    api_version="apps/v1", kind="Deployment", name="py-web"
                ),
                max_replicas=3,
                target_cpu_utilization_percentage=40,
            ),
        )
        created = v1.create_namespaced_horizontal_pod_autoscaler("default", body)
        assert created.spec.target_cpu_utilization_percentage == 40
        # The status subresource in v1: the CPU reading is v2's current cpu metric.
        created.status = kubernetes.client.V1HorizontalPodAutoscalerStatus(
            current_replicas=2, desired_replicas=3, current_cpu_utilization_percentage=55
        )
        v1.replace_namespaced_horizontal_pod_autoscaler_status("py-web", "default", created)
        status = _v2(rest, "py-web")["status"]
        assert status["currentMetrics"][0]["resource"]["current"]["averageUtilization"] == 55
        assert "55%/40%" in rest.kubectl("get", "hpa", "py-web")
        watch = kubernetes.watch.Watch()
        seen = []
        for event in watch.stream(
            v1.list_namespaced_horizontal_pod_autoscaler,
            "default",
            field_selector="metadata.name=py-web",
            timeout_seconds=20,
        ):
            seen.append((event["type"], event["object"]))
            if len(seen) == 1:
                v1.patch_namespaced_horizontal_pod_autoscaler(
                    "py-web", "default", {"spec": {"maxReplicas": 8}}
                )
            else:
                watch.stop()
        assert [t for t, _ in seen] == ["ADDED", "MODIFIED"]
        assert seen[1][1].spec.max_replicas == 8
        assert seen[1][1].spec.target_cpu_utilization_percentage == 40
        assert seen[1][1].api_version == "autoscaling/v1"
        v1.delete_namespaced_horizontal_pod_autoscaler("py-web", "default")


def test_bad_v1_bodies_are_refused_and_write_nothing(rest: REST) -> None:
    spec = {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 2}
    body = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "spec": spec,
            "metadata": {"name": "bad", "annotations": {METRICS: "{not json"}}}  # fmt: skip
    code, status = rest.json("POST", V1_PATH, body)
    assert code == 400 and METRICS in status["message"], status
    code, status = rest.json("POST", V1_PATH, {**body, "apiVersion": "autoscaling/v2"})
    assert code == 400, status
    code, status = rest.json("POST", V1_PATH, {**body, "spec": "x", "metadata": {"name": "bad"}})
    assert code == 400 and "spec" in status["message"], status
    code, status = rest.json(
        "PATCH", f"{V1_PATH}/bad", {"spec": {}}, **{"Content-Type": "application/merge-patch+json"}
    )
    assert code == 404, status
    assert rest.json("GET", f"{V2_PATH}/bad")[0] == 404


def test_kubectl_autoscale_without_cpu_percent_targets_80(rest: REST) -> None:
    rest.kubectl("create", "deployment", "as-80", "--image=nginx:1.25")
    rest.kubectl("autoscale", "deployment", "as-80", "--max=3")
    [metric] = _v2(rest, "as-80")["spec"]["metrics"]
    assert metric["resource"]["target"]["averageUtilization"] == 80
    rest.kubectl("delete", "hpa", "as-80")
    rest.kubectl("delete", "deployment", "as-80")
