"""`autoscale`, `get hpa`, `describe hpa` and `run` as kubectl has them: pure printer tests
of the TARGETS column and describe's Metrics, then the verbs against a real store + API
server (subprocesses; no controllers, so the HPA's metrics are `<unknown>`)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from k8semu.cli import _describe
from k8semu.cli import _printers as printers
from k8semu.pb.api.v1 import autoscaling_pb2 as pb
from tests.cli.conftest import Run
from tests.support.apiserver import APIServerProcess

PHP_APACHE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: php-apache
  namespace: {ns}
spec:
  selector:
    matchLabels:
      run: php-apache
  template:
    metadata:
      labels:
        run: php-apache
    spec:
      containers:
      - name: php-apache
        image: registry.k8s.io/hpa-example
        ports:
        - containerPort: 80
        resources:
          limits:
            cpu: 500m
          requests:
            cpu: 200m
"""


def cpu_hpa(current: int | None = None) -> pb.HorizontalPodAutoscaler:
    h = pb.HorizontalPodAutoscaler()
    h.metadata.name = "php-apache"
    h.spec.scale_target_ref.kind = "Deployment"
    h.spec.scale_target_ref.name = "php-apache"
    h.spec.min_replicas = 1
    h.spec.max_replicas = 10
    m = h.spec.metrics.add(type="Resource")
    m.resource.name = "cpu"
    m.resource.target.type = "Utilization"
    m.resource.target.average_utilization = 50
    if current is not None:
        s = h.status.current_metrics.add(type="Resource")
        s.resource.name = "cpu"
        s.resource.current.average_utilization = current
        s.resource.current.average_value = "124m"
        h.status.current_replicas = 1
        h.status.desired_replicas = 2
    return h


def test_targets_column_as_kubectl() -> None:
    assert printers.hpa_targets(cpu_hpa()) == "cpu: <unknown>/50%"
    assert printers.hpa_targets(cpu_hpa(62)) == "cpu: 62%/50%"
    h = cpu_hpa(62)
    pods = h.spec.metrics.add(type="Pods")
    pods.pods.metric.name = "rps"
    pods.pods.target.average_value = "100"
    ext = h.spec.metrics.add(type="External")
    ext.external.target.type = "AverageValue"
    ext.external.target.average_value = "30"
    assert printers.hpa_targets(h) == "cpu: 62%/50%, <unknown>/100 + 1 more..."
    mem = pb.HorizontalPodAutoscaler()
    m = mem.spec.metrics.add(type="Resource")
    m.resource.name = "memory"
    m.resource.target.type = "AverageValue"
    m.resource.target.average_value = "100Mi"
    assert printers.hpa_targets(mem) == "memory: <unknown>/100Mi"


def test_describe_shows_metrics_replicas_and_conditions() -> None:
    h = cpu_hpa(62)
    h.status.conditions.add(
        type="AbleToScale", status="True", reason="ReadyForNewScale", message="recommended size"
    )
    text = _describe.describe(h, [], 0.0)
    assert "Reference:" in text and "Deployment/php-apache" in text
    assert "resource cpu on pods  (as a percentage of request):  62% (124m) / 50%" in text
    assert "Deployment pods:" in text and "1 current / 2 desired" in text
    row = next(line for line in text.splitlines() if "AbleToScale" in line)
    assert row.split()[:3] == ["AbleToScale", "True", "ReadyForNewScale"]


@pytest.mark.slow
def test_walkthrough_autoscale_get_describe(k8semu: Run, tmp_path: Path) -> None:
    ns = f"hpa-{uuid.uuid4().hex[:6]}"
    manifest = tmp_path / "php.yaml"
    manifest.write_text(
        f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n"
        + PHP_APACHE.format(ns=ns)
    )
    assert k8semu("apply", "-f", str(manifest)).code == 0
    r = k8semu("autoscale", "deployment", "php-apache", "--cpu-percent=50", "--min=1",
               "--max=10", "-n", ns)  # fmt: skip
    assert (r.code, r.out) == (0, "horizontalpodautoscaler.autoscaling/php-apache autoscaled\n")
    r = k8semu("get", "hpa", "-n", ns)
    assert r.code == 0, r.err
    header, row = r.out.splitlines()
    assert header.split() == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS",
                              "AGE"]  # fmt: skip
    assert row.split()[:7] == ["php-apache", "Deployment/php-apache", "cpu:", "<unknown>/50%",
                               "1", "10", "0"]  # fmt: skip
    r = k8semu("get", "hpa", "php-apache", "-n", ns, "-o", "yaml")
    doc = yaml.safe_load(r.out)
    assert doc["apiVersion"] == "autoscaling/v2"
    assert doc["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "php-apache",
    }
    assert doc["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 50,
    }
    r = k8semu("describe", "hpa", "php-apache", "-n", ns)
    assert r.code == 0, r.err
    assert "<unknown> / 50%" in r.out and "Max replicas:" in r.out

    # kubectl's refusals: a second HPA of the same name, no --max, min > max, a Service,
    # a Deployment that does not exist.
    assert "AlreadyExists" in k8semu("autoscale", "deployment", "php-apache", "--max=3",
                                     "-n", ns).err  # fmt: skip
    r = k8semu("autoscale", "deployment", "php-apache", "-n", ns)
    assert r.code != 0 and "--max=MAXPODS is required" in r.err
    r = k8semu("autoscale", "deployment/php-apache", "--min=5", "--max=2", "-n", ns)
    assert r.code != 0 and "--max=MAXPODS must be larger or equal to --min=MINPODS" in r.err
    r = k8semu("autoscale", "service", "web", "--max=2", "-n", ns)
    assert r.code != 0 and "cannot autoscale a Service" in r.err
    r = k8semu("autoscale", "deployment", "nope", "--max=2", "-n", ns)
    assert r.code != 0 and "not found" in r.err
    assert "nope" not in k8semu("get", "hpa", "-n", ns).out


@pytest.mark.slow
def test_run_creates_a_bare_pod_as_kubectl(k8semu: Run, apiserver: APIServerProcess) -> None:
    # --server before the `--`: what follows it is the container's.
    server = ("--server", apiserver.address)
    loop = "while sleep 0.01; do wget -q -O- http://php-apache; done"
    r = k8semu("run", "load-generator", "--image=busybox:1.28", "--restart=Never",
               "--env", "MODE=hpa", *server, "--", "/bin/sh", "-c", loop,
               server=False)  # fmt: skip
    assert (r.code, r.out) == (0, "pod/load-generator created\n"), r.err
    doc = yaml.safe_load(k8semu("get", "pod", "load-generator", "-o", "yaml").out)
    assert doc["metadata"]["labels"] == {"run": "load-generator"}
    assert doc["spec"]["restartPolicy"] == "Never"
    container = doc["spec"]["containers"][0]
    assert container["name"] == "load-generator" and container["image"] == "busybox:1.28"
    assert container["args"] == ["/bin/sh", "-c", loop]
    assert container["env"] == [{"name": "MODE", "value": "hpa"}]
    r = k8semu("run", "web", "--image=nginx", "--port", "80", "--command", *server, "--", "nginx",
               server=False)  # fmt: skip
    assert r.code == 0, r.err
    web = yaml.safe_load(k8semu("get", "pod", "web", "-o", "yaml").out)
    assert web["spec"]["containers"][0]["command"] == ["nginx"]
    assert web["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert web["spec"]["restartPolicy"] == "Always"
    for args, words in (
        (("run", "x", "--image=nginx", "--env", "NOEQUALS"), "--env"),
        (("run", "x", "--image=nginx", "--restart=Sometimes"), "--restart"),
        (("run", "Bad_Name", "--image=nginx"), "invalid pod name"),
    ):
        r = k8semu(*args)
        assert r.code != 0 and words in r.err, r.err
    assert "x" not in k8semu("get", "pods", "-o", "name").out.split("pod/")
