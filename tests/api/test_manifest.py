"""Manifests load into typed messages and print back as the same data."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8semu.api import manifest
from k8semu.api.errors import ManifestError
from k8semu.pb.api.v1 import apps_pb2, autoscaling_pb2, coordination_pb2, core_pb2

MANIFESTS = Path(__file__).parent / "manifests"


def parsed(text: str) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


@pytest.mark.parametrize("name", sorted(p.name for p in MANIFESTS.glob("*.yaml")))
def test_round_trip_yaml(name: str) -> None:
    text = (MANIFESTS / name).read_text()
    objects = manifest.load_all(text, source=name)
    assert [manifest.to_dict(o) for o in objects] == parsed(text)
    assert parsed(manifest.dump_all(objects)) == parsed(text)
    again = manifest.load_all(manifest.dump_all(objects), source="dumped")
    assert again == objects


@pytest.mark.parametrize("name", sorted(p.name for p in MANIFESTS.glob("*.yaml")))
def test_round_trip_json(name: str) -> None:
    for obj in manifest.load_all((MANIFESTS / name).read_text(), source=name):
        text = manifest.dump(obj, "json")
        assert manifest.load(text, source="dumped.json") == obj


def test_typed_access_after_load() -> None:
    text = (MANIFESTS / "nginx-deployment.yaml").read_text()
    [deploy] = manifest.load_all(text, source="nginx-deployment.yaml")
    assert isinstance(deploy, apps_pb2.Deployment)
    assert deploy.spec.replicas == 3
    container = deploy.spec.template.spec.containers[0]
    assert container.env[0].value_from.field_ref.field_path == "metadata.name"
    assert container.readiness_probe.tcp_socket.port.str_val == "http"
    assert container.liveness_probe.http_get.port.int_val == 80
    assert container.resources.limits["memory"] == "128Mi"
    assert deploy.spec.strategy.rolling_update.max_surge.str_val == "25%"
    assert deploy.spec.strategy.rolling_update.max_unavailable.int_val == 1
    assert deploy.status.conditions[0].last_update_time.seconds == 1704067210
    volumes = {v.name: v for v in deploy.spec.template.spec.volumes}
    assert volumes["cache"].HasField("empty_dir")
    assert not volumes["config"].HasField("empty_dir")


def test_multi_document_dispatch_and_empty_documents() -> None:
    objects = manifest.load_all((MANIFESTS / "multi.yaml").read_text(), source="multi.yaml")
    assert [type(o) for o in objects] == [
        core_pb2.Namespace,
        core_pb2.ConfigMap,
        core_pb2.Secret,
        autoscaling_pb2.HorizontalPodAutoscaler,
    ]
    secret = objects[2]
    assert isinstance(secret, core_pb2.Secret)
    assert secret.data["password"] == b"s3cr3t"  # base64 on the wire, bytes in the message
    assert secret.string_data["username"] == "admin"
    assert manifest.load_all("---\n---\n# nothing\n", source="empty.yaml") == []


def test_stream_and_bytes_input() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"
    for source in (io.StringIO(text), io.BytesIO(text.encode()), text.encode()):
        [ns] = manifest.load_all(source, source="<stdin>")
        assert isinstance(ns, core_pb2.Namespace)
        assert ns.metadata.name == "a"


@pytest.mark.parametrize(
    ("wire", "field"),
    [(8080, "int_val"), ("http", "str_val"), ("8080", "str_val"), (0, "int_val")],
)
def test_int_or_string_round_trip(wire: object, field: str) -> None:
    text = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPort": wire}]},
        }
    )
    svc = manifest.load(text, source="svc.yaml")
    assert isinstance(svc, core_pb2.Service)
    target = svc.spec.ports[0].target_port
    assert target.WhichOneof("value") == field
    assert getattr(target, field) == wire
    for fmt in ("yaml", "json"):
        out = yaml.safe_load(manifest.dump(svc, fmt))
        assert out["spec"]["ports"][0]["targetPort"] == wire
        assert type(out["spec"]["ports"][0]["targetPort"]) is type(wire)


def test_dump_omits_defaults_and_prints_int64_as_numbers() -> None:
    pod = core_pb2.Pod()
    pod.metadata.name = "p"
    pod.metadata.generation = 7
    pod.spec.termination_grace_period_seconds = 0  # a pointer in Kubernetes: kept
    pod.spec.host_network = False  # omitempty in Kubernetes: dropped
    pod.spec.containers.add(name="c", image="busybox")
    assert manifest.to_dict(pod) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "generation": 7},
        "spec": {
            "containers": [{"name": "c", "image": "busybox"}],
            "terminationGracePeriodSeconds": 0,
        },
    }
    assert manifest.dump(pod).startswith("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n")


def test_times_normalize_to_utc_rfc3339() -> None:
    text = """
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: l, creationTimestamp: 2024-01-01T01:00:00+01:00}
spec: {renewTime: 2024-01-01T00:00:00.000000Z, acquireTime: 2024-01-01T00:00:02.5Z}
"""
    lease = manifest.load(text, source="lease.yaml")
    assert isinstance(lease, coordination_pb2.Lease)
    out = manifest.to_dict(lease)
    assert out["metadata"]["creationTimestamp"] == "2024-01-01T00:00:00Z"
    assert out["spec"] == {
        "acquireTime": "2024-01-01T00:00:02.500Z",
        "renewTime": "2024-01-01T00:00:00Z",
    }


def test_nulls_mean_unset_and_quantities_accept_numbers() -> None:
    text = """
apiVersion: v1
kind: Pod
metadata: {name: p, labels: null, creationTimestamp: null}
spec:
  containers:
  - name: c
    resources: {limits: {cpu: 2, memory: 1.5}}
"""
    pod = manifest.load(text, source="pod.yaml")
    assert isinstance(pod, core_pb2.Pod)
    assert not pod.metadata.HasField("creation_timestamp")
    assert dict(pod.spec.containers[0].resources.limits) == {"cpu": "2", "memory": "1.5"}


def test_load_requires_exactly_one_object() -> None:
    with pytest.raises(ManifestError, match="expected exactly one object, found 0"):
        manifest.load("", source="empty.yaml")


def test_dump_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown output format"):
        manifest.dump(core_pb2.Namespace(), "xml")  # type: ignore[arg-type]
