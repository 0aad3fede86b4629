""" "Learn Kubernetes Basics" (kubernetes.io/docs/tutorials/kubernetes-basics), modules 2-6,
followed as written with kubectl: the bootcamp Deployment, `kubectl proxy` and the pods/proxy
and services/proxy subresources, logs and exec (curl localhost:8080 inside the container), a
NodePort Service, labels, scaling, a rolling update to v2, the v10 image that does not
exist (the rollout stalls on ErrImagePull/ImagePullBackOff) and `rollout undo`.

The tests run in order on one Deployment, as the tutorial's modules do."""

from __future__ import annotations

import json
import re

from .conftest import Tutorial, http_get, until

APP = "kubernetes-bootcamp"
V1 = "gcr.io/google-samples/kubernetes-bootcamp:v1"
V2 = "docker.io/jocatalin/kubernetes-bootcamp:v2"
V10 = "gcr.io/google-samples/kubernetes-bootcamp:v10"


def _answer(pod: str, version: int) -> str:
    return f"Hello Kubernetes bootcamp! | Running on: {pod} | v={version}\n"


def _node_port(t: Tutorial) -> int:
    template = "{{(index .spec.ports 0).nodePort}}"
    return int(t.kubectl("get", f"services/{APP}", "-o", f"go-template={template}"))


def _running(t: Tutorial, selector: str = f"app={APP}") -> list[str]:
    template = '{{range .items}}{{.metadata.name}} {{.status.phase}}{{"\\n"}}{{end}}'
    out = t.kubectl("get", "pods", "-l", selector, "-o", f"go-template={template}")
    return [line.split()[0] for line in out.splitlines() if line.endswith(" Running")]


def test_deploy_then_reach_the_pod_through_kubectl_proxy(tutorial: Tutorial) -> None:
    t = tutorial
    assert f"deployment.apps/{APP} created" in t.kubectl(
        "create", "deployment", APP, f"--image={V1}"
    )
    until("the Deployment is available", lambda: "1/1" in t.kubectl("get", "deployments"))
    pod = t.pod_names(f"app={APP}")[0]
    proxy = t.background("proxy", "--port=0")
    try:
        assert proxy.stdout is not None
        line = proxy.stdout.readline()  # "Starting to serve on 127.0.0.1:PORT"
        port = re.search(r":(\d+)$", line.strip())
        assert port, line
        base = f"http://127.0.0.1:{port.group(1)}"
        version = json.loads(http_get(f"{base}/version"))
        assert version["major"] == "1", version
        url = f"{base}/api/v1/namespaces/default/pods/{pod}:8080/proxy/"
        # Running is not listening yet (no readiness probe): poll as a user would retry.
        assert until("the pod answers", lambda: _answer(pod, 1) in http_get(url)), url
        # Without the slash, Kubernetes redirects to it; a path and a query pass through.
        assert http_get(url.rstrip("/")) == _answer(pod, 1)
        assert http_get(f"{url}some/path?x=1") == _answer(pod, 1)
        # As on Kubernetes: a port nothing listens on is a 503, a missing pod a 404.
        refused = http_get(f"{base}/api/v1/namespaces/default/pods/{pod}:9/proxy/")
        assert '"code":503' in refused and "error trying to reach service" in refused, refused
        missing = http_get(f"{base}/api/v1/namespaces/default/pods/nothing:80/proxy/")
        assert '"code":404' in missing, missing
    finally:
        proxy.terminate()
        proxy.communicate(timeout=10)  # reaped, its pipe closed


def test_logs_and_exec_into_the_container(tutorial: Tutorial) -> None:
    t = tutorial
    pod = t.pod_names(f"app={APP}")[0]
    logs = t.kubectl("logs", pod)
    assert "Kubernetes Bootcamp App Started At:" in logs and pod in logs, logs
    assert f"HOSTNAME={pod}" in t.kubectl("exec", pod, "--", "env")
    # `describe` finds a pod's events by field selectors; so can a user.
    selector = f"involvedObject.kind=Pod,involvedObject.name={pod},type=Normal"
    events = t.kubectl("get", "events", "--field-selector", selector)
    assert "Scheduled" in events and "ScalingReplicaSet" not in events, events
    assert "Scheduled" in t.kubectl("describe", "pods", pod).split("Events:")[1]
    # `kubectl exec -ti $POD_NAME -- bash`, then `curl http://localhost:8080` in it: the
    # pod's localhost is its own.
    shell = t.kubectl("exec", "-i", pod, "--", "bash", stdin="curl http://localhost:8080\nexit\n")
    assert shell == _answer(pod, 1), shell


def test_nodeport_service_labels_and_services_proxy(tutorial: Tutorial) -> None:
    t = tutorial
    out = t.kubectl("expose", f"deployment/{APP}", "--type=NodePort", "--port", "8080")
    assert f"service/{APP} exposed" in out, out
    port = _node_port(t)
    assert 30000 <= port <= 32767
    pod = t.pod_names(f"app={APP}")[0]
    url = f"http://{t.node_ip}:{port}"
    assert until("the node port answers", lambda: http_get(url) == _answer(pod, 1))
    raw = t.kubectl("get", "--raw", f"/api/v1/namespaces/default/services/{APP}/proxy/")
    assert raw == _answer(pod, 1), raw
    raw = t.kubectl("get", "--raw", f"/api/v1/namespaces/default/services/{APP}:8080/proxy/x")
    assert raw == _answer(pod, 1), raw
    assert f"pod/{pod} labeled" in t.kubectl("label", "pods", pod, "version=v1")
    assert "version=v1" in t.kubectl("describe", "pods", pod)
    assert pod in t.kubectl("get", "pods", "-l", "version=v1")
    assert APP in t.kubectl("get", "services", "-l", f"app={APP}")
    assert f'service "{APP}" deleted' in t.kubectl("delete", "service", "-l", f"app={APP}")
    assert APP not in t.kubectl("get", "services")
    # The app still runs: only the Service went.
    assert t.kubectl("exec", pod, "--", "curl", "-s", "http://localhost:8080") == _answer(pod, 1)


def test_scale_update_stall_on_a_missing_image_and_undo(tutorial: Tutorial) -> None:
    t = tutorial
    t.kubectl("expose", f"deployment/{APP}", "--type=NodePort", "--port", "8080")
    assert "scaled" in t.kubectl("scale", f"deployments/{APP}", "--replicas=4")
    until("4 replicas run", lambda: len(_running(t)) == 4)
    url = f"http://{t.node_ip}:{_node_port(t)}"
    t.kubectl("set", "image", f"deployments/{APP}", f"{APP}={V2}")
    status = t.kubectl("rollout", "status", f"deployments/{APP}", "--timeout=60s", timeout=70)
    assert "successfully rolled out" in status, status
    assert until("v2 answers", lambda: "| v=2" in http_get(url))
    assert V2 in t.kubectl("describe", "pods")
    # v10 does not exist: the new pod waits on the pull, the old ones keep serving.
    t.kubectl("set", "image", f"deployments/{APP}", f"{APP}={V10}")

    def stalled() -> bool:
        out = t.kubectl("get", "pods")
        return "ErrImagePull" in out or "ImagePullBackOff" in out

    until("the v10 pod waits on its image", stalled)
    out = t.kubectl("rollout", "status", f"deployments/{APP}", "--timeout=2s", check=False)
    assert "Waiting for deployment" in out and "timed out" in out, out
    assert "Failed" in t.kubectl("describe", "pods", "-l", f"app={APP}")
    assert "| v=2" in http_get(url)
    assert "rolled back" in t.kubectl("rollout", "undo", f"deployments/{APP}")
    status = t.kubectl("rollout", "status", f"deployments/{APP}", "--timeout=60s", timeout=70)
    assert "successfully rolled out" in status, status
    images = t.kubectl("get", "pods", "-l", f"app={APP}", "-o", "jsonpath={..image}").split()
    assert set(images) == {V2}, images
