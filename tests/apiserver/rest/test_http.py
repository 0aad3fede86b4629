"""The REST API over plain HTTP: discovery, Status errors, bad input, watch, tables, dry run,
field validation, delete options; nothing is written by a refused request."""

from __future__ import annotations

import json

from k8semu.api import manifest
from k8semu.kubelet.env import service_env
from k8semu.pb.api.v1 import core_pb2

from .conftest import REST

CMS = "/api/v1/namespaces/default/configmaps"
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def _cm(name: str, **extra: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **extra}


def test_discovery_and_health(rest: REST) -> None:
    code, doc = rest.json("GET", "/api/v1")
    assert code == 200 and doc["kind"] == "APIResourceList"
    pods = next(r for r in doc["resources"] if r["name"] == "pods")
    assert pods["shortNames"] == ["po"] and pods["categories"] == ["all"]
    assert pods["singularName"] == "pod" and pods["namespaced"] and "watch" in pods["verbs"]
    assert any(r["name"] == "pods/status" for r in doc["resources"])
    code, doc = rest.json("GET", "/apis/apps/v1")
    scale = next(r for r in doc["resources"] if r["name"] == "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    code, doc = rest.json("GET", "/apis")
    assert "apps" in [g["name"] for g in doc["groups"]]
    assert rest.json("GET", "/version")[1]["major"] == "1"
    for path in ("/healthz", "/livez", "/readyz"):
        assert rest.request("GET", path)[0] == 200


def _status(
    rest: REST, method: str, path: str, body: bytes | None = None, **headers: str
) -> dict[str, object]:
    code, _, raw = rest.request(method, path, body, headers)
    doc = json.loads(raw)
    assert doc["kind"] == "Status" and doc["code"] == code, doc
    return doc


def _absent(rest: REST, name: str) -> bool:
    return rest.request("GET", f"{CMS}/{name}")[0] == 404


def test_bad_input_is_a_status_and_writes_nothing(rest: REST) -> None:
    json_type = {"Content-Type": "application/json"}
    assert _status(rest, "POST", CMS, b"{bad", **json_type)["reason"] == "BadRequest"
    doc = _status(
        rest, "POST", CMS, json.dumps(_cm("h-x")).encode(), **{"Content-Type": "text/plain"}
    )
    assert (doc["code"], doc["reason"]) == (415, "UnsupportedMediaType")
    big = json.dumps(_cm("h-big", data={"k": "x" * (4 * 1024 * 1024)})).encode()
    doc = _status(rest, "POST", CMS, big, **json_type)
    assert (doc["code"], doc["reason"]) == (413, "RequestEntityTooLarge")
    assert _absent(rest, "h-x") and _absent(rest, "h-big")
    for path in (
        "/api/v2/pods",
        "/api/v1/nothings",
        "/apis/nogroup/v1/x",
        "/api/v1/namespaces/default/pods/a/b/c",
    ):
        assert _status(rest, "GET", path)["code"] == 404, path
    doc = _status(rest, "GET", f"{CMS}?labelSelector=a+in+(")
    assert doc["reason"] == "BadRequest"
    wrong_kind = json.dumps(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "h-y"}}
    ).encode()
    assert _status(rest, "POST", CMS, wrong_kind, **json_type)["code"] == 400
    assert _absent(rest, "h-y")


def test_errors_carry_kubernetes_reasons(rest: REST) -> None:
    doc = _status(rest, "GET", f"{CMS}/h-none")
    assert (doc["reason"], doc["message"]) == ("NotFound", 'configmaps "h-none" not found')
    assert rest.json("POST", CMS, _cm("h-dup"))[0] == 201
    code, doc = rest.json("POST", CMS, _cm("h-dup"))
    assert (code, doc["reason"]) == (409, "AlreadyExists")
    stale = _cm("h-dup", data={"a": "b"})
    stale["metadata"] = {"name": "h-dup", "resourceVersion": "1"}
    code, doc = rest.json("PUT", f"{CMS}/h-dup", stale)
    assert (code, doc["reason"]) == (409, "Conflict")
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "h-bad"},
        "spec": {"replicas": -1},
    }
    code, doc = rest.json("POST", DEPLOYS, bad)
    assert (code, doc["reason"]) == (422, "Invalid")
    assert doc["message"].startswith('Deployment.apps "h-bad" is invalid: [spec.replicas: ')
    causes = {c["field"]: c["reason"] for c in doc["details"]["causes"]}
    assert causes["spec.replicas"] == "FieldValueInvalid"
    assert causes["spec.selector"] == "FieldValueRequired"


def test_put_without_resource_version_is_unconditional(rest: REST) -> None:
    assert rest.json("POST", CMS, _cm("h-put"))[0] == 201
    code, doc = rest.json("PUT", f"{CMS}/h-put", _cm("h-put", data={"k": "v"}))
    assert code == 200 and doc["data"] == {"k": "v"}


def test_dry_run_and_field_validation(rest: REST) -> None:
    code, doc = rest.json("POST", f"{CMS}?dryRun=All", _cm("h-dry"))
    assert code == 201 and doc["metadata"]["uid"]
    assert _absent(rest, "h-dry")
    unknown = _cm("h-fv", data={"k": "v"}, extra={"x": 1})
    code, doc = rest.json("POST", f"{CMS}?fieldValidation=Strict", unknown)
    assert (code, doc["message"]) == (400, 'strict decoding error: unknown field "extra"')
    assert _absent(rest, "h-fv")
    code, headers, raw = rest.request(
        "POST",
        f"{CMS}?fieldValidation=Warn",
        json.dumps(unknown).encode(),
        {"Content-Type": "application/json"},
    )
    assert code == 201 and 'unknown field \\"extra\\"' not in headers.get("Warning", "x")
    assert 'unknown field "extra"' in headers["Warning"]
    assert json.loads(raw)["data"] == {"k": "v"}


def test_delete_options_and_collections(rest: REST) -> None:
    for name in ("h-del-1", "h-del-2"):
        created = _cm(name)
        created["metadata"] = {"name": name, "labels": {"del": "yes"}}
        assert rest.json("POST", CMS, created)[0] == 201
    code, doc = rest.json(
        "DELETE",
        f"{CMS}/h-del-1",
        {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "nope"}},
    )
    assert (code, doc["reason"]) == (409, "Conflict")
    code, doc = rest.json("DELETE", f"{CMS}?labelSelector=del%3Dyes")
    assert code == 200 and sorted(i["metadata"]["name"] for i in doc["items"]) == [
        "h-del-1",
        "h-del-2",
    ]
    assert _absent(rest, "h-del-1") and _absent(rest, "h-del-2")


def test_tables_use_the_cli_columns(rest: REST) -> None:
    code, doc = rest.json("GET", "/api/v1/namespaces", Accept=TABLE)
    assert code == 200 and doc["kind"] == "Table"
    assert [c["name"] for c in doc["columnDefinitions"]] == ["Name", "Status", "Age"]
    assert doc["rows"][0]["cells"][:2] == ["default", "Active"]
    assert doc["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    code, doc = rest.json("GET", "/api/v1/namespaces/default/pods", Accept=TABLE)
    wide = [c["name"] for c in doc["columnDefinitions"] if c["priority"] == 1]
    assert wide == ["Ip", "Node"]


def test_watch_streams_json_lines_and_410(rest: REST) -> None:
    assert rest.json("POST", CMS, _cm("h-watched"))[0] == 201
    code, _, raw = rest.request(
        "GET", "/api/v1/watch/namespaces/default/configmaps/h-watched?timeoutSeconds=1"
    )
    events = [json.loads(line) for line in raw.splitlines()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "h-watched")
    ]
    selected = f"{CMS}?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dh-watched"
    code, _, raw = rest.request("GET", selected, headers={"Accept": TABLE})
    table = json.loads(raw.splitlines()[0])["object"]
    assert table["kind"] == "Table" and table["rows"][0]["cells"][0] == "h-watched"
    # A watch from a compacted resourceVersion (of a kind no watch cache serves yet, whose
    # window could still hold it): 200, then one ERROR event (410 Expired).
    secrets = "/api/v1/namespaces/default/secrets"
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "h-s"}}
    assert rest.json("POST", secrets, secret)[0] == 201
    old = int(rest.json("GET", secrets)[1]["metadata"]["resourceVersion"])
    assert rest.json("POST", CMS, _cm("h-after"))[0] == 201
    rest.compact(old + 1)
    code, _, raw = rest.request(
        "GET", f"{secrets}?watch=1&resourceVersion={old - 1}&timeoutSeconds=5"
    )
    assert code == 200
    event = json.loads(raw.splitlines()[0])
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")
    code, doc = rest.json("GET", f"{CMS}?resourceVersion={old - 1}&resourceVersionMatch=Exact")
    assert (code, doc["reason"]) == (410, "Expired")


def test_the_kubernetes_service_leads_pods_to_the_rest_api(rest: REST) -> None:
    """Its first port (`https`, KUBERNETES_SERVICE_PORT) is the REST API; `grpc` the gRPC one."""
    code, svc = rest.json("GET", "/api/v1/namespaces/default/services/kubernetes")
    assert code == 200
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [
        ("https", 443),
        ("grpc", 6443),
    ]
    rest_port = int(rest.url.rpartition(":")[2])
    grpc_port = int(rest.grpc_address.rpartition(":")[2])
    code, ep = rest.json("GET", "/api/v1/namespaces/default/endpoints/kubernetes")
    ports = {p["name"]: p["port"] for p in ep["subsets"][0]["ports"]}
    assert ports == {"https": rest_port, "grpc": grpc_port}
    env = service_env([manifest.decode(svc, core_pb2.Service)], "default")
    assert (env["KUBERNETES_SERVICE_PORT"], env["KUBERNETES_SERVICE_PORT_GRPC"]) == ("443", "6443")
