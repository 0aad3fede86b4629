"""The proxy subresources' refusals against a real API server and store (no kubelet runs
here): a pod not running, a kubelet that does not answer, a Service with no endpoints or
an unknown port, a bad name; each a Status with Kubernetes' code, nothing proxied."""

from __future__ import annotations

from typing import Any

from k8semu.cluster.processes import free_loopback_ports
from k8semu.kubelet.node import ENDPOINT_ANNOTATION

from .conftest import REST

NS = "/api/v1/namespaces/default"


def _status(rest: REST, path: str, method: str = "GET") -> dict[str, Any]:
    code, doc = rest.json(method, path)
    assert doc["kind"] == "Status" and doc["code"] == code, doc
    return dict(doc)


def test_proxy_refusals(rest: REST) -> None:
    dead = f"127.0.0.1:{free_loopback_ports(1)[0]}"  # nothing listens there
    node = {"metadata": {"name": "px-node", "annotations": {ENDPOINT_ANNOTATION: dead}}}
    assert rest.json("POST", "/api/v1/nodes", node)[0] == 201
    pod = {
        "metadata": {"name": "px-pod"},
        "spec": {"nodeName": "px-node", "containers": [{"name": "c", "image": "nginx",
                 "ports": [{"name": "web", "containerPort": 80}]}]},
    }  # fmt: skip
    code, created = rest.json("POST", f"{NS}/pods", pod)
    assert code == 201, created
    pending = _status(rest, f"{NS}/pods/px-pod/proxy/")
    assert pending["code"] == 503 and "is not running" in pending["message"], pending
    created["status"] = {"phase": "Running", "podIP": "127.0.0.99"}
    code, doc = rest.json("PUT", f"{NS}/pods/px-pod/status", created)
    assert code == 200, doc
    # The pod's kubelet does not answer: the pod cannot be reached.
    for name in ("px-pod", "px-pod:web", "http:px-pod:80"):
        down = _status(rest, f"{NS}/pods/{name}/proxy/x", method="POST")
        assert down["code"] == 503 and "error trying to reach service" in down["message"], down
    unnamed = _status(rest, f"{NS}/pods/px-pod:nope/proxy/")
    assert unnamed["code"] == 400 and 'no container port named "nope"' in unnamed["message"]
    assert _status(rest, f"{NS}/pods/https:px-pod:443/proxy/")["code"] == 400
    assert _status(rest, f"{NS}/pods/a:b:c:d/proxy/")["code"] == 400
    assert _status(rest, f"{NS}/pods/px-missing/proxy/")["code"] == 404
    ports = [{"name": "http", "port": 80}]
    service = {"metadata": {"name": "px-svc"}, "spec": {"selector": {"app": "x"}, "ports": ports}}
    assert rest.json("POST", f"{NS}/services", service)[0] == 201
    empty = _status(rest, f"{NS}/services/px-svc/proxy/")
    assert (
        empty["code"] == 503 and 'no endpoints available for service "px-svc"' in empty["message"]
    )
    wrong = _status(rest, f"{NS}/services/px-svc:8080/proxy/")
    assert wrong["code"] == 503 and 'no port "8080"' in wrong["message"], wrong
