"""Field sets and server-side apply's merge rules (k8semu.apiserver.fieldmanager), pure: on
Kubernetes JSON dicts and the object model's descriptors, no server."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest
from google.protobuf.descriptor import Descriptor

from k8semu.api import manifest, timestamps
from k8semu.apiserver import fieldmanager, objects
from k8semu.apiserver.fieldmanager import ApplyConflict
from k8semu.pb.api.v1 import apps_pb2, meta_pb2

DEPLOYMENT = cast(Descriptor, apps_pb2.Deployment.DESCRIPTOR)


def _deployment(replicas: int = 2, *containers: dict[str, Any], **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "u1", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": list(containers) or [{"name": "web", "image": "n:1"}]},
            },
        },
        "status": {"replicas": 2},
    }


def _apply(
    live: dict[str, Any], config: dict[str, Any], manager: str = "a", force: bool = False
) -> dict[str, Any]:
    """`config` applied by `manager`: the merged object with its new managedFields."""
    m = manifest.decode(live, apps_pb2.Deployment).metadata
    merged, entries = fieldmanager.apply(
        live,
        config,
        m,
        DEPLOYMENT,
        manager=manager,
        api_version="apps/v1",
        force=force,
        now=timestamps.now(),
    )
    merged["metadata"]["managedFields"] = [manifest.to_dict(e) for e in entries]
    return merged


def _owned(obj: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(manager, operation) -> the rendered paths it owns."""
    return {
        (e["manager"], e["operation"]): {
            fieldmanager.render(p) for p in fieldmanager.from_fields_v1(e["fieldsV1"])
        }
        for e in obj["metadata"].get("managedFields", [])
    }


def test_fields_name_keyed_list_elements_and_skip_server_fields() -> None:
    obj = _deployment(2, {"name": "web", "image": "n:1", "ports": [{"containerPort": 80}]}, a="1")
    obj["metadata"]["finalizers"] = ["x"]
    rendered = {fieldmanager.render(p) for p in fieldmanager.fields(obj, DEPLOYMENT)}
    containers = ".spec.template.spec.containers"
    assert rendered == {
        ".metadata.labels.a",
        '.metadata.finalizers[="x"]',
        ".spec.replicas",
        ".spec.selector.matchLabels.app",
        ".spec.template.metadata.labels.app",
        f'{containers}[name="web"]',
        f'{containers}[name="web"].name',
        f'{containers}[name="web"].image',
        f'{containers}[name="web"].ports[containerPort=80]',
        f'{containers}[name="web"].ports[containerPort=80].containerPort',
    }
    status = fieldmanager.fields(obj, DEPLOYMENT, "status")
    assert {fieldmanager.render(p) for p in status} == {".status.replicas"}


def test_fields_v1_round_trip_marks_owned_parents() -> None:
    paths = fieldmanager.fields(_deployment(), DEPLOYMENT)
    doc = fieldmanager.to_fields_v1(paths)
    web = doc["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert web == {".": {}, "f:name": {}, "f:image": {}}
    assert fieldmanager.from_fields_v1(doc) == paths


def test_apply_merges_keyed_lists_and_records_the_manager() -> None:
    live = _apply({}, _deployment(2, {"name": "web", "image": "n:1"}), "a")
    merged = _apply(live, _deployment(2, {"name": "side", "image": "b"}), "b")
    names = [c["name"] for c in merged["spec"]["template"]["spec"]["containers"]]
    assert names == ["web", "side"]
    owned = _owned(merged)
    assert '.spec.template.spec.containers[name="side"].image' in owned[("b", "Apply")]
    assert '.spec.template.spec.containers[name="web"].image' in owned[("a", "Apply")]
    assert ".spec.replicas" in owned[("a", "Apply")] & owned[("b", "Apply")]  # co-owned


def test_a_changed_value_another_manager_owns_conflicts_unless_forced() -> None:
    live = _apply({}, _deployment(2), "a")
    with pytest.raises(ApplyConflict) as caught:
        _apply(live, _deployment(3), "b")
    assert str(caught.value) == (
        'Apply failed with 1 conflict: conflict with "a" using apps/v1: .spec.replicas'
    )
    assert caught.value.causes == ((".spec.replicas", 'conflict with "a" using apps/v1'),)
    forced = _apply(live, _deployment(3), "b", force=True)
    assert forced["spec"]["replicas"] == 3
    owned = _owned(forced)
    assert ".spec.replicas" in owned[("b", "Apply")]
    assert ".spec.replicas" not in owned[("a", "Apply")]


def test_fields_no_longer_applied_are_removed_unless_another_manager_owns_them() -> None:
    two = ({"name": "web", "image": "n:1"}, {"name": "log", "image": "busybox"})
    live = _apply({}, _deployment(2, *two, a="1", b="2"), "a")
    live = _apply(live, _deployment(2, two[0], b="2"), "other")  # co-owns web and label b
    after = _apply(live, _deployment(2, two[0], a="1"), "a")
    assert after["metadata"]["labels"] == {"a": "1", "b": "2"}  # b: "other" still applies it
    assert [c["name"] for c in after["spec"]["template"]["spec"]["containers"]] == ["web"]
    alone = _apply(after, _deployment(2, two[0]), "a")
    assert alone["metadata"]["labels"] == {"b": "2"}  # a: nobody else owned it


def test_an_update_takes_the_fields_it_changed() -> None:
    applied = manifest.decode(_apply({}, _deployment(2), "a"), apps_pb2.Deployment)
    scaled = copy.deepcopy(applied)
    scaled.spec.replicas = 5
    fieldmanager.record_update(applied, scaled, scaled, "scaler", "apps/v1", "scale")
    owned = _owned(manifest.to_dict(scaled))
    assert owned[("scaler", "Update")] == {".spec.replicas"}
    assert ".spec.replicas" not in owned[("a", "Apply")]
    # A later write that sends no managedFields keeps the stored ones.
    bare = copy.deepcopy(scaled)
    bare.metadata.ClearField("managed_fields")
    fieldmanager.record_update(scaled, bare, bare, "", "apps/v1")
    assert list(bare.metadata.managed_fields) == list(scaled.metadata.managed_fields)


def test_entries_carry_kubernetes_fields() -> None:
    merged = _apply({}, _deployment(2), "kubectl")
    [entry] = merged["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"], entry["apiVersion"], entry["fieldsType"]) == (
        "kubectl",
        "Apply",
        "apps/v1",
        "FieldsV1",
    )
    assert entry["time"].endswith("Z")
    parsed = manifest.decode(merged, apps_pb2.Deployment)
    assert isinstance(parsed.metadata.managed_fields[0], meta_pb2.ManagedFieldsEntry)


def test_message_leaves_name_the_same_paths_as_leaves() -> None:
    ports = [{"containerPort": 80}, {"containerPort": 443, "name": "https"}]
    web = {"name": "web", "image": "n:1", "ports": ports, "command": ["a", "b"]}
    obj = _deployment(2, web, {"name": "log", "image": "b"}, a="1")
    obj["metadata"]["finalizers"] = ["x", "y"]
    obj["spec"]["strategy"] = {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}
    obj["spec"]["template"]["metadata"]["annotations"] = {"k": "v"}
    message = manifest.decode(obj, apps_pb2.Deployment)
    assert set(fieldmanager.message_leaves(message)) == fieldmanager.fields(obj, DEPLOYMENT)
    status = fieldmanager.message_leaves(message, "status")
    assert set(status) == fieldmanager.fields(obj, DEPLOYMENT, "status")


def test_changes_match_a_diff_of_every_leaf() -> None:
    """`changes` descends only where the versions differ; it finds what comparing all the
    leaves of both finds."""
    web = {"name": "web", "image": "n:1", "ports": [{"containerPort": 80}], "args": ["a"]}
    base = _deployment(2, web, {"name": "log", "image": "b"}, a="1")
    base["metadata"]["finalizers"] = ["x"]
    edits: list[Any] = [
        lambda o: o["spec"].update(replicas=5),
        lambda o: o["metadata"]["labels"].update(b="2"),
        lambda o: o["metadata"]["labels"].pop("a"),
        lambda o: o["metadata"].pop("finalizers"),
        lambda o: o["spec"]["template"]["spec"]["containers"].pop(),
        lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="n:2", args=[]),
        lambda o: o["spec"]["template"]["spec"]["containers"][0]["ports"].append(
            {"containerPort": 443}
        ),
        lambda o: o["spec"].update(strategy={"type": "Recreate"}),
        lambda o: o.update(status={"replicas": 3}),
        lambda o: None,
    ]
    for i, edit in enumerate(edits):
        after = copy.deepcopy(base)
        edit(after)
        old = manifest.decode(base, apps_pb2.Deployment)
        new = manifest.decode(after, apps_pb2.Deployment)
        for scope in ("", "status"):
            a = fieldmanager.message_leaves(old, scope)
            b = fieldmanager.message_leaves(new, scope)
            want = ({p for p, v in b.items() if p not in a or a[p] != v}, set(a) - set(b))
            assert fieldmanager.changes(old, new, scope) == want, (i, scope)


def test_an_equal_object_is_unchanged_whatever_its_maps_order() -> None:
    """Maps (labels, FieldsV1 Structs) serialize in no fixed order: the no-op check of an
    update compares messages, so an equal object is never written again."""
    a = apps_pb2.Deployment()
    for i in range(50):
        a.metadata.labels[f"k{i}"] = "v"
    b = apps_pb2.Deployment()
    for i in reversed(range(50)):
        b.metadata.labels[f"k{i}"] = "v"
    b.metadata.resource_version = "7"
    assert objects.unchanged(a, b) and b.metadata.resource_version == "7"
    b.metadata.labels["k0"] = "changed"
    assert not objects.unchanged(a, b)
