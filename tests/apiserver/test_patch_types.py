"""JSON patch (RFC 6902) and strategic merge patch: the pure merge rules against Kubernetes'
documented examples, then both types through the real gRPC Patch verb."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from k8semu.api import kinds, manifest, patchkeys
from k8semu.apiserver import patch, strategicpatch
from k8semu.apiserver.errors import Invalid
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import apps_pb2, core_pb2

from .conftest import NGINX_APP, Client, unpack

POD_SPEC = core_pb2.PodSpec.DESCRIPTOR
POD = core_pb2.Pod.DESCRIPTOR


def _smp(original: dict[str, Any], doc: dict[str, Any], desc: Any = POD_SPEC) -> dict[str, Any]:
    return strategicpatch.apply(original, doc, desc)


def _names(spec: dict[str, Any], field: str = "containers") -> list[str]:
    return [c["name"] for c in spec[field]]


# ---- the table ------------------------------------------------------------------------------


def test_every_table_entry_names_a_real_list_or_object_field() -> None:
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    for full_name, meta in patchkeys.FIELDS.items():
        message, _, field_name = full_name.rpartition(".")
        field = pool.FindMessageTypeByName(message).fields_by_name.get(field_name)
        assert field is not None, full_name
        assert field.is_repeated or meta.list_type == "", full_name
        if meta.merge_key:
            assert meta.merge_key in {f.json_name for f in field.message_type.fields}, full_name


def test_every_conditions_list_merges_by_type() -> None:
    """A kind added later gets its conditions into the table (docs/apiserver.md, "Adding a
    kind"): Kubernetes merges every conditions list by type in a strategic merge patch, but
    CertificateSigningRequest's (certificates/v1 has no patchStrategy there, only a list map
    by type for server-side apply)."""
    seen: set[str] = set()
    todo = [k.message.DESCRIPTOR for k in kinds.all_kinds()]
    while todo:
        desc = todo.pop()
        if desc.full_name in seen:
            continue
        seen.add(desc.full_name)
        for field in desc.fields:
            if field.message_type is not None:
                todo.append(field.message_type)
            if field.name == "conditions" and field.is_repeated:
                meta = patchkeys.for_field(field)
                if field.containing_type.name == "CertificateSigningRequestStatus":
                    assert (meta.strategy, meta.list_type, meta.map_keys) == ("", "map", ("type",))
                else:
                    assert (meta.strategy, meta.merge_key) == ("merge", "type"), field.full_name


# ---- strategic merge patch: Kubernetes' strategic-merge-patch.md examples ----------------


LIVE = {
    "containers": [
        {"name": "nginx", "image": "nginx-1.0", "ports": [{"containerPort": 80}]},
        {"name": "log-tailer", "image": "log-tailer-1.0"},
    ],
    "volumes": [{"name": "data", "emptyDir": {}}],
}


def test_containers_merge_by_name() -> None:
    added = _smp(LIVE, {"containers": [{"name": "sidecar", "image": "s:1"}]})
    assert _names(added) == ["nginx", "log-tailer", "sidecar"]
    changed = _smp(LIVE, {"containers": [{"name": "nginx", "image": "nginx-1.1"}]})
    assert changed["containers"][0] == {
        "name": "nginx",
        "image": "nginx-1.1",
        "ports": [{"containerPort": 80}],  # merged, not replaced
    }
    assert LIVE["containers"][0]["image"] == "nginx-1.0"  # the input is not modified


def test_patch_delete_and_replace_in_a_list() -> None:
    gone = _smp(LIVE, {"containers": [{"name": "log-tailer", "$patch": "delete"}]})
    assert _names(gone) == ["nginx"]
    replaced = _smp(LIVE, {"containers": [{"name": "only", "image": "o"}, {"$patch": "replace"}]})
    assert replaced["containers"] == [{"name": "only", "image": "o"}]


def test_patch_replace_and_delete_on_an_object() -> None:
    deploy = apps_pb2.Deployment.DESCRIPTOR
    live = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    deleted = _smp(live, {"spec": {"strategy": {"rollingUpdate": {"$patch": "delete"}}}}, deploy)
    assert deleted == {"spec": {"strategy": {"type": "RollingUpdate"}}}
    replaced = _smp(live, {"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}, deploy)
    assert replaced == {"spec": {"strategy": {"type": "Recreate"}}}
    nulled = _smp(live, {"spec": {"strategy": {"rollingUpdate": None}}}, deploy)
    assert nulled == deleted


def test_retain_keys_clears_the_other_members_of_a_union() -> None:
    deploy = apps_pb2.Deployment.DESCRIPTOR
    live = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    doc = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert _smp(live, doc, deploy) == {"spec": {"strategy": {"type": "Recreate"}}}
    # volumes are merge,retainKeys: switching a volume's source drops the old one.
    doc = {
        "volumes": [
            {"name": "data", "configMap": {"name": "c"}, "$retainKeys": ["name", "configMap"]}
        ]
    }
    assert _smp(LIVE, doc)["volumes"] == [{"name": "data", "configMap": {"name": "c"}}]


def test_set_element_order() -> None:
    doc = {
        "$setElementOrder/containers": [{"name": "log-tailer"}, {"name": "nginx"}],
        "containers": [{"name": "nginx", "image": "nginx-2"}],
    }
    out = _smp(LIVE, doc)
    assert _names(out) == ["log-tailer", "nginx"]
    assert out["containers"][1]["image"] == "nginx-2"
    # A live element the order leaves out goes in before the first listed element it preceded
    # in the live list (Kubernetes merges the two sorted lists by live position).
    live = {"metadata": {"finalizers": ["a", "b", "x", "c"]}}
    out = _smp(live, {"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"]}}, POD)
    assert out["metadata"]["finalizers"] == ["x", "c", "b", "a"]
    out = _smp(live, {"metadata": {"$setElementOrder/finalizers": ["a", "c", "b"]}}, POD)
    assert out["metadata"]["finalizers"] == ["a", "x", "c", "b"]
    doc = {"metadata": {"$setElementOrder/finalizers": ["b", "c", "a"]}}
    out = _smp({"metadata": {"finalizers": ["a", "b", "c"]}}, doc, POD)
    assert out["metadata"]["finalizers"] == ["b", "c", "a"]  # the document's own example


def test_primitive_lists() -> None:
    live = {"metadata": {"finalizers": ["a", "b", "c"]}}
    # finalizers are a set (patchStrategy merge): union without duplicates.
    out = _smp(live, {"metadata": {"finalizers": ["c", "d", "d"]}}, POD)
    assert out["metadata"]["finalizers"] == ["a", "b", "c", "d"]
    out = _smp(live, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "c"]}}, POD)
    assert out["metadata"]["finalizers"] == ["a"]
    # command has no strategy: replaced, as in a merge patch.
    live_c = {"containers": [{"name": "a", "command": ["sh", "-c"]}]}
    out = _smp(live_c, {"containers": [{"name": "a", "command": ["true"]}]})
    assert out["containers"][0]["command"] == ["true"]


def test_atomic_lists_and_maps() -> None:
    live = {"tolerations": [{"key": "a"}], "nodeSelector": {"zone": "x", "disk": "ssd"}}
    doc = {"tolerations": [{"key": "b"}], "nodeSelector": {"zone": None, "gpu": "1"}}
    assert _smp(live, doc) == {
        "tolerations": [{"key": "b"}],
        "nodeSelector": {"disk": "ssd", "gpu": "1"},
    }


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (
            {"containers": [{"image": "x"}]},
            "containers[0]: does not contain declared merge key: name",
        ),
        ({"containers": ["x"]}, "containers[0]: expected an object with merge key 'name'"),
        ({"$patch": "explode"}, "$patch: unknown directive 'explode'"),
        ({"$patch": "delete"}, "cannot delete the object itself"),
        ({"$retainKeys": "name"}, "$retainKeys: must be a list of field names"),
    ],
)
def test_strategic_errors_name_the_field(doc: dict[str, Any], needle: str) -> None:
    with pytest.raises(strategicpatch.StrategicPatchError) as err:
        _smp(LIVE, doc)
    assert needle in str(err.value)


# ---- through patch.parse/apply (decoded strictly) -------------------------------------------


def _deployment(name: str = "web") -> apps_pb2.Deployment:
    deploy = manifest.load_all(NGINX_APP, source="app.yaml")[0]
    assert isinstance(deploy, apps_pb2.Deployment)
    deploy.metadata.name = name
    deploy.metadata.resource_version = "7"
    return deploy


def _apply(patch_type: str, doc: object, obj: Any = None) -> Any:
    kind = kinds.for_resource("deployments")
    parsed = patch.parse(kind, "web", patch_type, json.dumps(doc).encode())
    return patch.apply(kind, obj or _deployment(), parsed)


def test_json_patch_operations() -> None:
    ops = [
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/metadata/labels/tier", "value": "front"},
        {"op": "remove", "path": "/metadata/labels/app"},
        {
            "op": "copy",
            "from": "/spec/template/spec/containers/0",
            "path": "/spec/template/spec/containers/-",
        },
        {"op": "replace", "path": "/spec/template/spec/containers/1/name", "value": "copy"},
        {
            "op": "move",
            "from": "/spec/template/spec/containers/1/ports",
            "path": "/spec/template/spec/containers/1/env",
        },
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/1/env",
            "value": [{"name": "A", "value": "1"}],
        },
    ]
    new = _apply("application/json-patch+json", ops)
    assert new.spec.replicas == 4 and dict(new.metadata.labels) == {"tier": "front"}
    nginx, copy = new.spec.template.spec.containers
    assert (copy.name, copy.image, len(copy.ports), copy.env[0].name) == (
        "copy",
        nginx.image,
        0,
        "A",
    )
    assert new.metadata.resource_version == ""  # a precondition, checked by the caller


@pytest.mark.parametrize(
    ("ops", "needle"),
    [
        (
            [{"op": "test", "path": "/spec/replicas", "value": 9}],
            "operation 0 ('test' '/spec/replicas'): test failed",
        ),
        (
            [{"op": "add", "path": "/spec/x", "value": 1}, {"op": "remove", "path": "/nope"}],
            "operation 1 ('remove' '/nope'): can't remove",
        ),
        ([{"op": "remove", "path": "/spec/nope"}], "operation 0 ('remove' '/spec/nope')"),
        (
            [{"op": "explode", "path": "/spec"}],
            "operation 0 ('explode' '/spec'): Unknown operation",
        ),
        ([{"op": "add", "path": "spec", "value": 1}], "operation 0 ('add' 'spec')"),
        ([{"op": "replace", "path": "/kind", "value": "Pod"}], "kind: Invalid value"),
        ([{"op": "replace", "path": "", "value": [1]}], "the result must be a JSON object"),
        ({"op": "add"}, "a JSON patch must be an array of operations"),
        ([1], "operation 0: must be an object"),
    ],
)
def test_json_patch_errors_name_the_operation(ops: object, needle: str) -> None:
    with pytest.raises(Invalid) as err:
        _apply("json", ops)
    assert needle in err.value.message, err.value.message


def test_json_patch_unknown_field_is_refused_by_the_strict_decode() -> None:
    with pytest.raises(Invalid, match=r"spec.x: unknown field"):
        _apply("json", [{"op": "add", "path": "/spec/x", "value": 1}])


def test_resource_version_preconditions() -> None:
    kind = kinds.for_resource("deployments")

    def rv(patch_type: str, doc: object) -> str | None:
        return patch.resource_version_precondition(
            patch.parse(kind, "web", patch_type, json.dumps(doc).encode())
        )

    assert rv("strategic", {"metadata": {"resourceVersion": "5"}}) == "5"
    assert rv("json", [{"op": "replace", "path": "/metadata/resourceVersion", "value": "6"}]) == "6"
    assert rv("json", [{"op": "test", "path": "/metadata/resourceVersion", "value": "6"}]) is None
    assert rv("merge", {"spec": {}}) is None


def test_strategic_patch_through_parse_and_strict_decode() -> None:
    doc = {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:2"}]}}}}
    new = _apply("application/strategic-merge-patch+json", doc)
    [nginx] = new.spec.template.spec.containers
    assert nginx.image == "nginx:2" and nginx.ports[0].container_port == 80
    with pytest.raises(Invalid, match=r"containers\[0\]\.imagee: unknown field"):
        _apply(
            "strategic",
            {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "imagee": "x"}]}}}},
        )
    with pytest.raises(Invalid, match="does not contain declared merge key"):
        _apply("strategic", {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})


# ---- through the real gRPC Patch verb ------------------------------------------------------


async def _patch(client: Client, name: str, doc: object, patch_type: str) -> apps_pb2.Deployment:
    req = api.PatchRequest(
        resource="deployments", name=name, patch_type=patch_type, patch=json.dumps(doc).encode()
    )
    resp = await client.stub.Patch(req, timeout=10)
    deploy: apps_pb2.Deployment = unpack(resp.object, apps_pb2.Deployment)
    return deploy


async def test_strategic_status_patch_merges_conditions_by_type(client: Client) -> None:
    pod = core_pb2.Pod()
    pod.metadata.name = "conditions"
    pod.spec.containers.add(name="c", image="busybox")
    await client.create("pods", pod, "default")

    async def patch_status(doc: object) -> core_pb2.Pod:
        req = api.PatchRequest(
            resource="pods", namespace="default", name="conditions", patch_type="strategic",
            patch=json.dumps(doc).encode(), status=True,
        )  # fmt: skip
        got: core_pb2.Pod = unpack((await client.stub.Patch(req, timeout=10)).object, core_pb2.Pod)
        return got

    ready = {"type": "Ready", "status": "False"}
    await patch_status(
        {"status": {"conditions": [{"type": "PodScheduled", "status": "True"}, ready]}}
    )
    # The kubelet's way: name one condition, the others stay (a merge patch would drop them).
    new = await patch_status({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert [(c.type, c.status) for c in new.status.conditions] == [
        ("PodScheduled", "True"), ("Ready", "True")
    ]  # fmt: skip
    assert new.spec.containers[0].name == "c"  # a status patch writes only status
    await client.delete("pods", "conditions", "default")


async def test_strategic_and_json_patch_through_the_api_server(client: Client) -> None:
    created = _deployment("typed-patch")
    created.metadata.resource_version = ""
    await client.create("deploy", created)
    sidecar = {"name": "sidecar", "image": "busybox", "ports": [{"containerPort": 9000}]}
    doc = {"spec": {"template": {"spec": {"containers": [sidecar]}}}}
    new = await _patch(client, "typed-patch", doc, "strategic")
    nginx, side = new.spec.template.spec.containers
    assert (nginx.name, nginx.ports[0].container_port, side.name) == ("nginx", 80, "sidecar")
    assert new.metadata.generation == 2

    ops = [
        {"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "sidecar"},
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
        {"op": "replace", "path": "/spec/replicas", "value": 2},
    ]
    new = await _patch(client, "typed-patch", ops, "application/json-patch+json")
    assert [c.name for c in new.spec.template.spec.containers] == ["nginx"]
    assert new.spec.replicas == 2

    # A failed test writes nothing and names the operation; a stale precondition conflicts.
    before = (await client.get("deploy", "typed-patch")).object
    bad = [
        {"op": "replace", "path": "/spec/replicas", "value": 9},
        {"op": "test", "path": "/spec/replicas", "value": 3},
    ]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _patch(client, "typed-patch", bad, "json")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "operation 1 ('test' '/spec/replicas'): test failed" in (err.value.details() or "")
    stale = [{"op": "replace", "path": "/metadata/resourceVersion", "value": "1"}]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _patch(client, "typed-patch", stale, "json")
    assert err.value.code() == grpc.StatusCode.ABORTED, err.value.details()
    assert (await client.get("deploy", "typed-patch")).object == before
    await client.delete("deploy", "typed-patch")


def test_hostile_patches_are_refused_not_crashed_on() -> None:
    kind = kinds.for_resource("deployments")
    for doc in (b'{"a":' * 150 + b"1" + b"}" * 150, b"[" * 100_000):
        with pytest.raises(Invalid, match="nested deeper than 100 levels"):
            patch.parse(kind, "web", "strategic", doc)
    # Each copy doubles spec: the bound on copied bytes stops it long before memory does.
    bomb = [{"op": "copy", "from": "/spec", "path": f"/spec/x{i}"} for i in range(60)]
    with pytest.raises(Invalid, match=r"operation \d+ \('copy' '/spec/x\d+'\): the copies exceed"):
        _apply("json", bomb)
    # Moves nest the object one level per two operations: refused before the decode recurses.
    deepen = [
        op
        for _ in range(120)
        for op in (
            {"op": "add", "path": "/w", "value": {}},
            {"op": "move", "from": "/spec", "path": "/w/spec"},
            {"op": "move", "from": "/w", "path": "/spec"},
        )
    ]
    with pytest.raises(Invalid, match="the result is nested deeper than 100 levels"):
        _apply("json", deepen)
