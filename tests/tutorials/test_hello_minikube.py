""" "Hello Minikube" (kubernetes.io/docs/tutorials/hello-minikube) without its minikube
commands: the agnhost netexec Deployment, its events, logs and `kubectl config view`, a
LoadBalancer Service that gets an external IP (the emulator's load-balancer pool stands in
for `minikube tunnel`), and the clean-up."""

from __future__ import annotations

from .conftest import Tutorial, http_get, until

IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.39"


def test_hello_node_deployment_events_logs_and_config(tutorial: Tutorial) -> None:
    t = tutorial
    out = t.kubectl(
        "create", "deployment", "hello-node", f"--image={IMAGE}",
        "--", "/agnhost", "netexec", "--http-port=8080",
    )  # fmt: skip
    assert "deployment.apps/hello-node created" in out, out
    until("hello-node is available", lambda: "1/1" in t.kubectl("get", "deployments", "hello-node"))
    pod = t.pod_names("app=hello-node")[0]
    assert "Running" in t.kubectl("get", "pods", pod)
    events = t.kubectl("get", "events")
    for reason in ("ScalingReplicaSet", "SuccessfulCreate", "Scheduled", "Started"):
        assert reason in events, events
    view = t.kubectl("config", "view")
    assert "current-context:" in view and "DATA+OMITTED" in view, view
    assert until("netexec logs", lambda: "netexec" in t.kubectl("logs", pod))


def test_loadbalancer_service_then_clean_up(tutorial: Tutorial) -> None:
    t = tutorial
    out = t.kubectl("expose", "deployment", "hello-node", "--type=LoadBalancer", "--port=8080")
    assert "service/hello-node exposed" in out, out

    def external_ip() -> str:
        path = "jsonpath={.status.loadBalancer.ingress[0].ip}"
        return t.kubectl("get", "services", "hello-node", "-o", path)

    ip = until("an external IP", external_ip)
    assert ip in t.kubectl("get", "services")
    pod = t.pod_names("app=hello-node")[0]
    assert until("the LoadBalancer answers", lambda: http_get(f"http://{ip}:8080/hostname")) == pod
    assert http_get(f"http://{ip}:8080/echo?msg=hello") == "hello"
    assert 'service "hello-node" deleted' in t.kubectl("delete", "service", "hello-node")
    assert 'deployment.apps "hello-node" deleted' in t.kubectl("delete", "deployment", "hello-node")
