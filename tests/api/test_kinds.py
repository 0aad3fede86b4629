"""The kind registry: lookups by type, message and resource name."""

from __future__ import annotations

import pytest

from k8semu.api import kinds
from k8semu.api.errors import UnknownKindError
from k8semu.pb.api.v1 import apps_pb2, autoscaling_pb2, coordination_pb2, core_pb2


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("po", "Pod"),
        ("pods", "Pod"),
        ("Pod", "Pod"),
        ("deploy", "Deployment"),
        ("deployments.apps", "Deployment"),
        ("svc", "Service"),
        ("no", "Node"),
        ("ns", "Namespace"),
        ("rs", "ReplicaSet"),
        ("ep", "Endpoints"),
        ("hpa", "HorizontalPodAutoscaler"),
        ("horizontalpodautoscalers.autoscaling", "HorizontalPodAutoscaler"),
        ("cm", "ConfigMap"),
        ("ev", "Event"),
        ("lease", "Lease"),
        ("leases.coordination.k8s.io", "Lease"),
        ("secret", "Secret"),
    ],
)
def test_for_resource(name: str, kind: str) -> None:
    assert kinds.for_resource(name).kind == kind


def test_unknown_resource() -> None:
    with pytest.raises(UnknownKindError, match='resource type "pdos"'):
        kinds.for_resource("pdos")


def test_by_type_and_for_message() -> None:
    assert kinds.by_type("apps/v1", "Deployment").message is apps_pb2.Deployment
    assert kinds.by_type("v1", "Pod").plural == "pods"
    hpa = kinds.by_type("autoscaling/v2", "HorizontalPodAutoscaler")
    assert hpa.message is autoscaling_pb2.HorizontalPodAutoscaler
    assert hpa.group == "autoscaling"
    assert kinds.by_type("coordination.k8s.io/v1", "Lease").message is coordination_pb2.Lease
    assert kinds.for_message(core_pb2.Pod()).api_version == "v1"
    assert kinds.for_message(apps_pb2.ReplicaSet).api_version == "apps/v1"
    with pytest.raises(UnknownKindError):
        kinds.for_message(core_pb2.PodSpec())


def test_scope() -> None:
    cluster_scoped = {k.kind for k in kinds.all_kinds() if not k.namespaced}
    assert cluster_scoped == {
        "Namespace",
        "Node",
        "NodeMetrics",
        "PersistentVolume",
        "StorageClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "PriorityClass",
        "SelfSubjectAccessReview",
        "IngressClass",
        "CertificateSigningRequest",
    }


def test_metrics_kinds_share_plurals_but_not_names() -> None:
    """metrics.k8s.io's "nodes" and "pods": the bare names stay the core kinds' (as kubectl
    resolves them); qualified names and the kind names reach the metrics kinds."""
    assert kinds.for_resource("pods").kind == "Pod"
    assert kinds.for_resource("nodes").kind == "Node"
    assert kinds.for_resource("pods.metrics.k8s.io").kind == "PodMetrics"
    assert kinds.for_resource("nodemetrics").kind == "NodeMetrics"
    assert kinds.for_resource("PodMetrics").resource == "pods.metrics.k8s.io"
    assert kinds.for_resource("po").resource == "pods"


def test_new_stamps_type_meta() -> None:
    obj = kinds.by_type("apps/v1", "Deployment").new()
    assert isinstance(obj, apps_pb2.Deployment)
    assert (obj.api_version, obj.kind) == ("apps/v1", "Deployment")


@pytest.mark.parametrize("kind", kinds.KINDS, ids=lambda k: k.kind)
def test_every_kind_has_type_meta_first(kind: kinds.Kind) -> None:
    fields = {f.number: f.json_name for f in kind.message.DESCRIPTOR.fields}
    assert (fields[1], fields[2], fields[3]) == ("apiVersion", "kind", "metadata")
    if kind.list_message is not None:
        list_fields = [f.json_name for f in kind.list_message.DESCRIPTOR.fields]
        assert list_fields == ["apiVersion", "kind", "metadata", "items"]
