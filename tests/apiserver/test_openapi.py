"""The OpenAPI documents: valid, complete, carrying Kubernetes' extensions, and usable by kubectl.

kubectl against the real REST API (explain for every kind, validation):
tests/apiserver/rest/test_openapi_kubectl.py. One test here serves the documents from a small
aiohttp stand-in (kubectl_scaffold.py) that does NOT offer fieldValidation, as an older
kube-apiserver: only then does kubectl validate manifests itself against the v2 protobuf
document, a path the real server (which always offers fieldValidation) never takes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k8semu.api import kinds, patchkeys
from k8semu.apiserver import openapi
from k8semu.apiserver.openapi import schemas

V2 = openapi.openapi_v2()
DEFS = V2["definitions"]


def _v3_schemas(group: str, version: str) -> dict[str, Any]:
    found: dict[str, Any] = openapi.openapi_v3(group, version)["components"]["schemas"]
    return found


def _stored() -> Iterator[kinds.Kind]:
    return (k for k in kinds.all_kinds() if k.stored and k.list_message is not None)


def _name(kind: kinds.Kind) -> str:
    return schemas.definition_name(schemas.descriptor(kind))


# ---- structure -------------------------------------------------------------------------------


def test_documents_are_valid_openapi() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(V2)
    for group, version in openapi.group_versions():
        validator.validate(openapi.openapi_v3(group, version))


def test_every_kind_is_defined_with_its_group_version_kind() -> None:
    assert _name(kinds.for_resource("deployments")) == "io.k8s.api.apps.v1.Deployment"
    assert _name(kinds.for_resource("pods")) == "io.k8s.api.core.v1.Pod"
    for kind in kinds.all_kinds():
        gvk = {"group": kind.group, "kind": kind.kind, "version": kind.version}
        name = _name(kind)
        assert DEFS[name]["x-kubernetes-group-version-kind"] == [gvk], name
        v3 = _v3_schemas(kind.group, kind.version)
        assert v3[name]["x-kubernetes-group-version-kind"] == [gvk], name
        if kind.list_message is not None:
            listed = DEFS[f"{name}List"]["x-kubernetes-group-version-kind"]
            assert listed == [gvk | {"kind": f"{kind.kind}List"}]


def test_paths_and_verbs_of_every_stored_kind() -> None:
    paths = V2["paths"]
    for kind in _stored():
        prefix = f"/apis/{kind.api_version}" if kind.group else "/api/v1"
        ns = "/namespaces/{namespace}" if kind.namespaced else ""
        collection, item = f"{prefix}{ns}/{kind.plural}", f"{prefix}{ns}/{kind.plural}/{{name}}"
        assert {"get", "post", "delete"} <= set(paths[collection]), collection
        assert {"get", "put", "patch", "delete"} <= set(paths[item]), item
        patch = paths[item]["patch"]
        assert "application/strategic-merge-patch+json" in patch["consumes"]
        # kubectl leaves field validation to a server whose PATCH lists fieldValidation.
        assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
        gvk = patch["x-kubernetes-group-version-kind"]
        assert gvk == {"group": kind.group, "kind": kind.kind, "version": kind.version}
    assert paths["/api/v1/namespaces/{namespace}/pods"]["get"]["operationId"] == (
        "listCoreV1NamespacedPod"
    )
    assert paths["/api/v1/pods"]["get"]["operationId"] == "listCoreV1PodForAllNamespaces"
    scale = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["put"]
    assert scale["x-kubernetes-group-version-kind"]["kind"] == "Scale"
    assert "/api/v1/namespaces/{namespace}/pods/{name}/binding" in paths
    assert set(paths["/apis/metrics.k8s.io/v1beta1/nodes/{name}"]) == {"get", "parameters"}
    v3 = openapi.openapi_v3("apps", "v1")["paths"]
    body = v3["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"]["requestBody"]
    assert body["content"]["*/*"]["schema"] == {
        "$ref": "#/components/schemas/io.k8s.api.apps.v1.Deployment"
    }


# ---- what the schemas say ---------------------------------------------------------------


def _v3_property(schema: dict[str, Any]) -> str:
    """The component a v3 property refers to, plain or wrapped in allOf."""
    target = schema.get("$ref") or schema["allOf"][0]["$ref"]
    return str(target).rsplit("/", 1)[1]


def test_deployment_containers_carry_the_merge_key() -> None:
    containers = DEFS["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["x-kubernetes-list-type"] == "map"
    assert containers["items"] == {"$ref": "#/definitions/io.k8s.api.core.v1.Container"}
    # Walk v3 from Deployment down, as kubectl does.
    v3 = _v3_schemas("apps", "v1")
    spec = v3[_v3_property(v3["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"])]
    template = v3[_v3_property(spec["properties"]["template"])]
    pod_spec = v3[_v3_property(template["properties"]["spec"])]
    assert pod_spec["properties"]["containers"]["x-kubernetes-patch-merge-key"] == "name"
    assert pod_spec["required"] == ["containers"]
    strategy = spec["properties"]["strategy"]
    assert strategy["x-kubernetes-patch-strategy"] == "retainKeys"
    assert strategy["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"}
    ]


def test_every_patch_table_entry_is_published() -> None:
    for full_name, meta in patchkeys.FIELDS.items():
        message, _, field_name = full_name.rpartition(".")
        desc = next(
            d
            for d in _all_descriptors()
            if d.full_name == message  # the table's keys are proto names
        )
        field = desc.fields_by_name[field_name]
        prop = DEFS[schemas.definition_name(desc)]["properties"][field.json_name]
        assert prop.get("x-kubernetes-patch-strategy", "") == meta.strategy, full_name
        assert prop.get("x-kubernetes-patch-merge-key", "") == meta.merge_key, full_name
        assert prop.get("x-kubernetes-list-type", "") == meta.list_type, full_name


def _all_descriptors() -> Iterator[Any]:
    seen: set[str] = set()
    todo = [schemas.descriptor(k) for k in kinds.all_kinds()]
    while todo:
        desc = todo.pop()
        if desc.full_name in seen:
            continue
        seen.add(desc.full_name)
        yield desc
        todo.extend(f.message_type for f in desc.fields if f.message_type is not None)


def test_required_and_enum_tables_name_real_fields() -> None:
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    for message, fields in schemas.REQUIRED.items():
        json_names = {f.json_name for f in pool.FindMessageTypeByName(message).fields}
        assert set(fields) <= json_names, message
    for full_name in schemas.ENUMS:
        message, _, field = full_name.rpartition(".")
        assert field in pool.FindMessageTypeByName(message).fields_by_name, full_name


def test_kubernetes_types_and_formats() -> None:
    meta = DEFS["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]
    assert meta["creationTimestamp"] == {
        "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Time"
    }
    assert meta["generation"] == {"type": "integer", "format": "int64"}
    assert meta["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert DEFS[schemas.TIME]["format"] == "date-time"
    assert DEFS[schemas.INT_OR_STRING] | {"description": ""} == {
        "type": "string",
        "format": "int-or-string",
        "description": "",
    }
    resources = DEFS["io.k8s.api.core.v1.ResourceRequirements"]["properties"]
    assert resources["limits"]["additionalProperties"] == {
        "$ref": f"#/definitions/{schemas.QUANTITY}"
    }
    secret = DEFS["io.k8s.api.core.v1.Secret"]["properties"]
    assert secret["data"]["additionalProperties"] == {"type": "string", "format": "byte"}
    policy = DEFS["io.k8s.api.core.v1.Container"]["properties"]["imagePullPolicy"]
    assert policy == {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]}
    assert DEFS["io.k8s.api.apps.v1.DeploymentSpec"]["required"] == ["selector", "template"]
    lease = DEFS["io.k8s.api.coordination.v1.LeaseSpec"]["properties"]
    assert lease["renewTime"]["$ref"].endswith("MicroTime")
    v3 = _v3_schemas("apps", "v1")
    assert v3[schemas.INT_OR_STRING]["oneOf"] == [{"type": "integer"}, {"type": "string"}]
    assert v3[schemas.QUANTITY]["oneOf"] == [{"type": "string"}, {"type": "number"}]


def test_v3_index_names_each_document_by_hash() -> None:
    index = openapi.openapi_v3_index()["paths"]
    assert set(index) == {f"apis/{g}/{v}" if g else f"api/{v}" for g, v in openapi.group_versions()}
    assert {"api/v1", "apis/apps/v1", "apis/coordination.k8s.io/v1"} <= set(index)
    for path, entry in index.items():
        found = openapi.openapi_v3_path(path)
        assert found is not None
        data, digest = found
        assert entry["serverRelativeURL"] == f"/openapi/v3/{path}?hash={digest}"
        assert json.loads(data)["openapi"] == "3.0.0"
    for bad in ("apis/apps", "apis/apps/v2", "api/v2", "apis/x/y/z", ""):
        assert openapi.openapi_v3_path(bad) is None
    with pytest.raises(KeyError):
        openapi.openapi_v3("apps", "v9")
    assert json.loads(openapi.openapi_v2_json()) == V2
    # gnostic's Document: field 1 (swagger) "2.0" first; kubectl reads the rest (test below).
    assert openapi.openapi_v2_protobuf().startswith(b"\n\x032.0")
    assert b"io.k8s.api.apps.v1.Deployment" in openapi.openapi_v2_protobuf()
    kubectl_accept = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    body, content_type, etag = openapi.openapi_v2_for(kubectl_accept)
    assert (body, content_type) == (openapi.openapi_v2_protobuf(), openapi.V2_PROTOBUF)
    assert len(etag) == 128
    for accept in ("application/json", "*/*", "", f"application/json, {kubectl_accept}"):
        assert openapi.openapi_v2_for(accept)[:2] == (openapi.openapi_v2_json(), "application/json")
    # apps/v1 is self-contained: every reference resolves within the document.
    doc = json.dumps(openapi.openapi_v3("apps", "v1"))
    for name in {r.split('"')[0] for r in doc.split('"$ref": "#/components/schemas/')[1:]}:
        assert name in _v3_schemas("apps", "v1"), name


# ---- kubectl ------------------------------------------------------------------------------


WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  strategy: {rollingUpdate: {maxSurge: 25%, maxUnavailable: 1}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx
        ports: [{containerPort: 80}]
        resources: {limits: {cpu: 500m, memory: 128Mi}}
"""


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl on PATH")
async def test_kubectl_validates_with_the_v2_protobuf_document(tmp_path: Path) -> None:
    """A server without fieldValidation: kubectl validates manifests itself, against the v2
    document it fetches as gnostic protobuf."""
    pytest.importorskip("aiohttp", reason="the test scaffold needs aiohttp (the test extra)")
    from . import kubectl_scaffold
    from .kubectl_scaffold import kubectl

    good, bad, wrong_type = tmp_path / "good.yaml", tmp_path / "bad.yaml", tmp_path / "type.yaml"
    good.write_text(WEB)
    bad.write_text(WEB.replace("image: nginx", "imagee: nginx"))
    wrong_type.write_text(WEB.replace("replicas: 2", "replicas: two"))
    async with kubectl_scaffold.serving(field_validation=False) as scaffold:
        dry_run = ("apply", "--dry-run=client", "--validate=strict", "-f")
        rc, out = await kubectl(scaffold.url, tmp_path, *dry_run, str(good))
        assert rc == 0 and "deployment.apps/web created (dry run)" in out, out
        rc, out = await kubectl(scaffold.url, tmp_path, *dry_run, str(bad))
        assert rc != 0 and 'unknown field "imagee" in io.k8s.api.core.v1.Container' in out, out
        rc, out = await kubectl(scaffold.url, tmp_path, *dry_run, str(wrong_type))
        assert rc != 0 and "spec.replicas" in out, out
        rc, out = await kubectl(
            scaffold.url, tmp_path, "explain", "--output=plaintext-openapiv2", "deployment.spec"
        )
        assert rc == 0 and "template" in out, out
    assert "/openapi/v2" in scaffold.paths()
