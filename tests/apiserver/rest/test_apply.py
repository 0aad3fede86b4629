"""Server-side apply over the REST API: `kubectl apply --server-side` (create, change,
conflict after `kubectl scale`, --force-conflicts, field removal), client-side to
server-side migration, the Python client's apply, managedFields of ordinary writes, and the
bad requests an apply can make."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from .conftest import REST

APPLY = "application/apply-patch+yaml"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def _manifest(name: str, replicas: int, labels: dict[str, str], *containers: str) -> str:
    """A Deployment as YAML's JSON subset, one container per name (image busybox)."""
    app = {"app": name}
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": app},
                 "template": {"metadata": {"labels": app},
                              "spec": {"containers": [{"name": c, "image": "busybox"}
                                                      for c in containers]}}},
    })  # fmt: skip


def _live(rest: REST, name: str) -> dict[str, Any]:
    out = rest.kubectl("get", "deploy", name, "-o", "json", "--show-managed-fields")
    found: dict[str, Any] = json.loads(out)
    return found


def _managers(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["manager"], e["operation"]): e["fieldsV1"] for e in obj["metadata"]["managedFields"]}


def test_kubectl_server_side_apply(rest: REST) -> None:
    v1 = _manifest("ssa-web", 2, {"a": "1", "b": "2"}, "web", "log")
    assert "serverside-applied" in rest.kubectl("apply", "--server-side", "-f", "-", stdin=v1)
    live = _live(rest, "ssa-web")
    mine = _managers(live)[("kubectl", "Apply")]
    assert 'k:{"name":"log"}' in mine["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert live["spec"]["progressDeadlineSeconds"] == 600  # defaults still applied

    rest.kubectl("scale", "deploy", "ssa-web", "--replicas=5")
    assert "f:replicas" not in _managers(_live(rest, "ssa-web"))[("kubectl", "Apply")]["f:spec"]
    v2 = _manifest("ssa-web", 3, {"a": "1"}, "web")
    out = rest.kubectl("apply", "--server-side", "-f", "-", stdin=v2, check=False)
    assert (
        'Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" using'
        " apps/v1: .spec.replicas" in out
    ), out
    assert _live(rest, "ssa-web")["spec"]["replicas"] == 5  # nothing written

    rest.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=v2)
    live = _live(rest, "ssa-web")
    containers = live["spec"]["template"]["spec"]["containers"]
    # Replicas taken by force, label b and container log removed: nobody else owned them.
    assert (live["spec"]["replicas"], live["metadata"]["labels"]) == (3, {"a": "1"})
    assert [c["name"] for c in containers] == ["web"]
    assert [m for m, _ in _managers(live)] == ["kubectl"]
    rest.kubectl("delete", "deploy", "ssa-web")


def test_client_side_apply_then_server_side(rest: REST) -> None:
    v1 = _manifest("csa-web", 2, {"a": "1"}, "web")
    rest.kubectl("apply", "-f", "-", stdin=v1)
    assert ("kubectl-client-side-apply", "Update") in _managers(_live(rest, "csa-web"))
    v2 = _manifest("csa-web", 4, {"a": "1"}, "web")
    out = rest.kubectl("apply", "--server-side", "-f", "-", stdin=v2, check=False)
    assert 'conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas' in out, out
    # The same configuration migrates: kubectl moves the fields to its apply manager.
    rest.kubectl("apply", "--server-side", "-f", "-", stdin=v1)
    rest.kubectl("apply", "--server-side", "-f", "-", stdin=v2)
    assert _live(rest, "csa-web")["spec"]["replicas"] == 4
    rest.kubectl("delete", "deploy", "csa-web")


def test_python_client_apply_and_update_managers(rest: REST) -> None:
    kubernetes = pytest.importorskip("kubernetes")
    config = kubernetes.client.Configuration()
    config.host = rest.url
    with kubernetes.client.ApiClient(config) as client:
        core = kubernetes.client.CoreV1Api(client)
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa-py"}}
        body["data"] = {"k": "v"}
        created = core.patch_namespaced_config_map(
            "ssa-py", "default", body, field_manager="py", _content_type=APPLY
        )
        assert created.data == {"k": "v"}
        cm = core.read_namespaced_config_map("ssa-py", "default")
        cm.data["other"] = "x"
        core.replace_namespaced_config_map("ssa-py", "default", cm)  # manager: the user agent
        found = core.read_namespaced_config_map("ssa-py", "default")
        owners = {(e.manager, e.operation): e.fields_v1 for e in found.metadata.managed_fields}
        assert owners[("py", "Apply")] == {"f:data": {"f:k": {}}}
        [(manager, operation)] = [k for k in owners if k != ("py", "Apply")]
        assert (manager, operation) == ("OpenAPI-Generator", "Update")
        assert owners[(manager, operation)] == {"f:data": {"f:other": {}}}
        core.delete_namespaced_config_map("ssa-py", "default")


def test_apply_answers_201_when_it_creates(rest: REST) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa-201"}}
    path = "/api/v1/namespaces/default/configmaps/ssa-201"
    first = _apply(rest, path, json.dumps({**cm, "data": {"a": "1"}}).encode())
    again = _apply(rest, path, json.dumps({**cm, "data": {"a": "2"}}).encode())
    assert (first[0], again[0], again[1]["data"]) == (201, 200, {"a": "2"})
    dry_path = path.replace("ssa-201", "ssa-dry")
    dry_doc = json.dumps({**cm, "metadata": {"name": "ssa-dry"}}).encode()
    assert _apply(rest, dry_path, dry_doc, "?fieldManager=t&dryRun=All")[0] == 201
    assert rest.json("GET", dry_path)[0] == 404  # a dry run writes nothing
    assert rest.json("DELETE", path)[0] == 200


def test_grpc_writers_own_what_they_change(rest: REST) -> None:
    """`k8semu scale` (gRPC UpdateScale, user agent k8semu) owns spec.replicas through the scale
    subresource, so an apply that changes it conflicts with it, as with `kubectl scale`."""
    v1 = _manifest("grpc-own", 2, {"a": "1"}, "web")
    rest.kubectl("apply", "--server-side", "-f", "-", stdin=v1)
    scaled = subprocess.run(
        [sys.executable, "-m", "k8semu", "scale", "deployment/grpc-own", "--replicas=4",
         "--server", rest.grpc_address],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert scaled.returncode == 0, scaled.stderr
    live = _live(rest, "grpc-own")
    owners = {(e["manager"], e["operation"], e.get("subresource", "")): e for e in
              live["metadata"]["managedFields"]}  # fmt: skip
    assert owners[("k8semu", "Update", "scale")]["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    shown = rest.kubectl("get", "deploy", "grpc-own", "--show-managed-fields", "-o", "yaml")
    assert "manager: k8semu" in shown and "subresource: scale" in shown
    v2 = _manifest("grpc-own", 3, {"a": "1"}, "web")
    out = rest.kubectl("apply", "--server-side", "-f", "-", stdin=v2, check=False)
    assert 'conflict with "k8semu" with subresource "scale" using apps/v1: .spec.replicas' in out
    rest.kubectl("delete", "deploy", "grpc-own")


def _apply(rest: REST, path: str, body: bytes, query: str = "?fieldManager=t") -> tuple[int, Any]:
    code, _, raw = rest.request("PATCH", path + query, body, {"Content-Type": APPLY})
    return code, json.loads(raw)


def test_bad_applies_write_nothing(rest: REST) -> None:
    doc = _manifest("ssa-bad", 1, {}, "web").encode()
    code, status = _apply(rest, f"{DEPLOYMENTS}/ssa-bad", doc, "")
    assert (code, status["reason"]) == (422, "Invalid")
    assert "fieldManager: Required value: is required for apply patch" in status["message"]
    code, status = _apply(rest, f"{DEPLOYMENTS}/ssa-bad", b"spec: [unclosed")
    assert (code, status["reason"]) == (400, "BadRequest"), status
    code, status = _apply(rest, f"{DEPLOYMENTS}/other-name", doc)
    assert code == 422 and "does not match the name of the request" in status["message"]
    pod = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ssa-bad"}})
    code, status = _apply(rest, f"{DEPLOYMENTS}/ssa-bad", pod.encode())
    assert code == 422 and "must be of apps/v1 Deployment" in status["message"]
    unknown = json.loads(doc)
    unknown["spec"]["replicass"] = 2
    code, status = _apply(rest, f"{DEPLOYMENTS}/ssa-bad", json.dumps(unknown).encode())
    assert code == 422 and "spec.replicass: Invalid value: unknown field" in status["message"]
    code, status = _apply(rest, f"{DEPLOYMENTS}/ssa-bad", doc, "?fieldManager=t&force=maybe")
    assert code == 400
    assert rest.json("GET", f"{DEPLOYMENTS}/ssa-bad")[0] == 404
    merge = {"Content-Type": "application/merge-patch+json"}
    code, _, raw = rest.request("PATCH", f"{DEPLOYMENTS}/x?force=true", b"{}", merge)
    assert code == 422 and b"force: Forbidden" in raw
