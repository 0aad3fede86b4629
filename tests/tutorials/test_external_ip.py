""" "Exposing an External IP Address to Access an Application in a Cluster"
(kubernetes.io/docs/tutorials/stateless-application/expose-external-ip-address): the
hello-app Deployment of five replicas, `kubectl expose --type=LoadBalancer`, `describe
services` with its LoadBalancer Ingress and endpoints, and curl to the external IP. The
manifest is the tutorial's load-balancer-example.yaml, given on stdin (no internet here)."""

from __future__ import annotations

from .conftest import Tutorial, http_get, until

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  labels:
    app.kubernetes.io/name: load-balancer-example
  name: hello-world
  namespace: external
spec:
  replicas: 5
  selector:
    matchLabels:
      app.kubernetes.io/name: load-balancer-example
  template:
    metadata:
      labels:
        app.kubernetes.io/name: load-balancer-example
    spec:
      containers:
      - image: gcr.io/google-samples/hello-app:2.0
        name: hello-world
        ports:
        - containerPort: 8080
"""
SELECTOR = "app.kubernetes.io/name=load-balancer-example"


def test_loadbalancer_to_five_hello_apps(tutorial: Tutorial) -> None:
    t = tutorial
    # Its own namespace: the Services tutorial has a hello-world Deployment of its own.
    t.kubectl("create", "namespace", "external")
    ns = ("-n", "external")
    assert "created" in t.kubectl("apply", "-f", "-", stdin=MANIFEST)
    until("5 replicas", lambda: "5/5" in t.kubectl("get", "deployments", "hello-world", *ns))
    assert "5 desired" in t.kubectl("describe", "deployments", "hello-world", *ns)
    assert "hello-world-" in t.kubectl("get", "replicasets", *ns)
    out = t.kubectl("expose", "deployment", "hello-world", "--type=LoadBalancer",
                    "--name=my-service", *ns)  # fmt: skip
    assert "service/my-service exposed" in out, out

    def described() -> str | None:
        text = t.kubectl("describe", "services", "my-service", *ns)
        return text if "LoadBalancer Ingress:" in text and "+ 2 more" in text else None

    text = until("the Service's external IP and five endpoints", described)
    ip = text.split("LoadBalancer Ingress:")[1].split()[0]
    assert ip in t.kubectl("get", "services", "my-service", *ns)
    pods = set(t.kubectl("get", "pods", "-l", SELECTOR, "-o", "name", *ns).split())
    wide = t.kubectl("get", "pods", "--output=wide", *ns)
    assert wide.count("Running") == 5, wide

    def hello() -> str | None:
        body = http_get(f"http://{ip}:8080")
        return body if body.startswith("Hello, world!\nVersion: 2.0.0\nHostname: ") else None

    answer = until("the external IP answers", hello)
    assert f"pod/{answer.split('Hostname: ')[1].strip()}" in pods, (answer, pods)
    t.kubectl("delete", "services", "my-service", *ns)
    t.kubectl("delete", "deployment", "hello-world", *ns)
