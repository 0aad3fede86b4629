"""`k8semu patch --type merge|json|strategic` against a real store + API server."""

from __future__ import annotations

import json

import pytest

from tests.apiserver.conftest import NGINX_APP
from tests.cli.conftest import Run

pytestmark = pytest.mark.slow

# The first document: a Deployment "nginx-deployment", container "nginx" with port 80.
WEB = NGINX_APP.split("---")[0]


def test_patch_types(k8semu: Run) -> None:
    r = k8semu("apply", "-f", "-", stdin=WEB)
    assert r.code == 0, r.err
    sidecar = '{"spec":{"template":{"spec":{"containers":[{"name":"log","image":"busybox"}]}}}}'
    r = k8semu("patch", "deploy/nginx-deployment", "--type", "strategic", "-p", sidecar)
    assert r.out == "deployment.apps/nginx-deployment patched\n", r.err
    ops = '[{"op":"replace","path":"/spec/replicas","value":4},{"op":"test","path":"/spec/template/spec/containers/1/name","value":"log"}]'  # noqa: E501
    r = k8semu("patch", "deploy", "nginx-deployment", "--type", "json", "-p", ops)
    assert r.out == "deployment.apps/nginx-deployment patched\n", r.err
    r = k8semu("get", "deploy", "nginx-deployment", "-o", "json")
    spec = json.loads(r.out)["spec"]
    containers = spec["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["nginx", "log"]  # merged by name, not replaced
    assert containers[0]["ports"] == [{"name": "http", "containerPort": 80, "protocol": "TCP"}]
    assert spec["replicas"] == 4

    r = k8semu("patch", "deploy/nginx-deployment", "--type", "json", "-p", '{"spec":{}}')
    assert r.code != 0 and "expected a JSON array of operations" in r.err, r.err
    bad = '[{"op":"test","path":"/spec/replicas","value":9}]'
    r = k8semu("patch", "deploy/nginx-deployment", "--type", "json", "-p", bad)
    assert r.code != 0 and "operation 0 ('test' '/spec/replicas'): test failed" in r.err, r.err
    r = k8semu("patch", "deploy/nginx-deployment", "--type", "apply", "-p", "{}")
    assert r.code != 0 and "invalid choice: 'apply'" in r.err, r.err
    assert k8semu("delete", "deploy", "nginx-deployment").code == 0
