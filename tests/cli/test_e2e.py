"""`python -m k8semu VERB ...` against a real store + API server (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from k8semu.api import manifest
from tests.cli.conftest import Run
from tests.support.apiserver import APIServerProcess

pytestmark = pytest.mark.slow

APP = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  namespace: shop
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: my-service
  namespace: shop
spec:
  selector:
    app: nginx
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
"""
NAMESPACE_AND_CM = """\
apiVersion: v1
kind: Namespace
metadata: {name: watched}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: watched-cm, namespace: watched}
data: {key: value}
"""


def test_apply_lifecycle(k8semu: Run, tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    app.write_text(APP)
    r = k8semu("apply", "-f", str(app))
    assert (r.code, r.err) == (0, "")
    assert r.out.splitlines() == [
        "namespace/shop created",
        "deployment.apps/nginx-deployment created",
        "service/my-service created",
    ]
    r = k8semu("apply", "-f", str(app))
    assert r.code == 0
    assert [line.split()[-1] for line in r.out.splitlines()] == ["unchanged"] * 3

    # get -o yaml round-trips: the printed object applies back as "unchanged".
    r = k8semu("get", "deploy", "nginx-deployment", "-n", "shop", "-o", "yaml")
    assert r.code == 0, r.err
    printed = yaml.safe_load(r.out)
    assert printed["kind"] == "Deployment"
    assert printed["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.14.2"
    assert printed["metadata"]["uid"]
    assert manifest.dump(manifest.load(r.out, source="get")) == r.out

    app.write_text(APP.replace("nginx:1.14.2", "nginx:1.16.1"))
    r = k8semu("apply", "-f", str(tmp_path), "-R")  # a directory: both files
    assert "deployment.apps/nginx-deployment configured" in r.out.splitlines(), r.err
    r = k8semu("get", "deployments.apps", "-n", "shop", "-o", "json")
    items = json.loads(r.out)["items"]
    assert [i["spec"]["template"]["spec"]["containers"][0]["image"] for i in items] == [
        "nginx:1.16.1"
    ]

    r = k8semu("get", "deploy,svc", "-n", "shop")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert lines[1].split()[:4] == ["deployment.apps/nginx-deployment", "0/3", "0", "0"]
    assert lines[3].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert lines[4].split()[0] == "service/my-service" and "80/TCP" in lines[4]
    r = k8semu("get", "ns", "shop", "-o", "name")
    assert r.out == "namespace/shop\n"

    r = k8semu("label", "deploy", "nginx-deployment", "tier=web", "-n", "shop")
    assert r.out == "deployment.apps/nginx-deployment labeled\n", r.err
    r = k8semu("label", "deploy/nginx-deployment", "tier=api", "-n", "shop")
    assert r.code == 1
    assert "'tier' already has a value (web), and --overwrite is false" in r.err
    r = k8semu("annotate", "svc", "my-service", "owner=team-a", "-n", "shop")
    assert r.out == "service/my-service annotated\n", r.err
    r = k8semu("get", "deploy", "-n", "shop", "-l", "tier=web", "-o", "name")
    assert r.out == "deployment.apps/nginx-deployment\n"

    r = k8semu("scale", "deploy", "nginx-deployment", "--replicas", "5", "-n", "shop")
    assert r.out == "deployment.apps/nginx-deployment scaled\n", r.err
    r = k8semu("scale", "deploy/nginx-deployment", "--current-replicas", "3", "--replicas", "4",
               "-n", "shop")  # fmt: skip
    assert r.code == 1 and "Expected replicas to be 3, was 5" in r.err, r.err
    r = k8semu("scale", "deploy/nginx-deployment", "--current-replicas", "5", "--replicas", "5",
               "-n", "shop")  # fmt: skip
    assert r.out == "deployment.apps/nginx-deployment scaled\n", r.err
    r = k8semu("patch", "deploy", "nginx-deployment", "-n", "shop", "-p",
               '{"spec":{"minReadySeconds":7}}')  # fmt: skip
    assert r.out == "deployment.apps/nginx-deployment patched\n", r.err
    r = k8semu("get", "deploy", "nginx-deployment", "-n", "shop", "-o", "json")
    spec = json.loads(r.out)["spec"]
    assert (spec["replicas"], spec["minReadySeconds"]) == (5, 7)
    assert json.loads(r.out)["metadata"]["labels"] == {"app": "nginx", "tier": "web"}

    r = k8semu("describe", "deploy", "nginx-deployment", "-n", "shop")
    assert r.code == 0, r.err
    assert "Name:               nginx-deployment" in r.out
    assert "5 desired" in r.out and "Image:  nginx:1.16.1" in r.out
    assert "Events:" in r.out

    r = k8semu("delete", "-f", str(app))
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        'deployment.apps "nginx-deployment" deleted',
        'service "my-service" deleted',
        'namespace "shop" deleted',
    ]


def test_bad_manifest_writes_nothing(k8semu: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\ndata: {a: b}\n---\n"
        + APP.split("---\n")[1].replace(
            "- containerPort: 80", "- containerPort: 80\n        imagePullPolicyy: Always"
        )
    )
    r = k8semu("apply", "-f", str(bad))
    assert r.code == 1 and r.out == ""
    assert r.err == (
        f'error: {bad}: document 2: Deployment "nginx-deployment": '
        "spec.template.spec.containers[0].imagePullPolicyy: unknown field\n"
    )
    r = k8semu("get", "cm", "first")
    assert r.code == 1
    assert r.err == 'Error from server (NotFound): configmaps "first" not found\n'


def test_errors_and_empty(k8semu: Run, tmp_path: Path) -> None:
    r = k8semu("get", "foo")
    assert (r.code, r.err) == (1, 'error: the server doesn\'t have a resource type "foo"\n')
    r = k8semu("get", "pods", "-n", "empty-ns")
    assert (r.code, r.out, r.err) == (0, "", "No resources found in empty-ns namespace.\n")
    r = k8semu("delete", "pod", "ghost")
    assert (r.code, r.err) == (1, 'Error from server (NotFound): pods "ghost" not found\n')
    r = k8semu("delete", "pod", "ghost", "--ignore-not-found")
    assert r.code == 0
    r = k8semu("get", "pods", "-l", "a in (b")
    assert r.code == 1 and r.err.startswith("Error from server (BadRequest): labelSelector:")
    r = k8semu("version", "--server", "127.0.0.1:1", server=False)
    assert r.code == 1 and "not reachable" in r.out
    r = k8semu("get", "pods", "--server", "127.0.0.1:1", "--request-timeout", "1", server=False)
    assert r.code == 1 and r.err.startswith("Unable to connect to the server")
    # Durations as kubectl takes them: units, or a bare number of seconds.
    r = k8semu("rollout", "status", "deploy/ghost", "--timeout", "30s")
    assert r.code == 1 and "NotFound" in r.err, r.err
    r = k8semu("rollout", "status", "deploy/ghost", "--timeout", "soon")
    assert r.code == 2 and "argument --timeout: 'soon' is not a duration" in r.err
    r = k8semu("get", "pods", "--server", "127.0.0.1:1", "--request-timeout", "1s", server=False)
    assert r.code == 1 and r.err.startswith("Unable to connect to the server")
    # One clear line: the client's retry logs are for -v.
    assert len(r.err.splitlines()) == 1 and "call retried" not in r.err
    r = k8semu("get", "pods", "-v=6", "--server", "127.0.0.1:1", server=False)
    assert r.code == 1 and "call retried" in r.err


def test_closed_output_pipe_ends_quietly(k8semu: Run, apiserver: APIServerProcess) -> None:
    docs = "".join(
        f"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pipe-{i:02d}\n"
        for i in range(40)
    )
    assert k8semu("apply", "-f", "-", stdin=docs).code == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8semu", "get", "cm", "--server", apiserver.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader went away, as with `| head`
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_create_stdin_events_and_discovery(k8semu: Run) -> None:
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\n"
        "spec: {containers: [{name: c, image: busybox}]}\n---\n"
        "apiVersion: v1\nkind: Event\nmetadata: {name: p1.1}\n"
        "involvedObject: {kind: Pod, name: p1, namespace: default}\n"
        "reason: Scheduled\nmessage: assigned to node-1\ntype: Normal\n"
    )
    r = k8semu("create", "-f", "-", stdin=pod)
    assert r.out == "pod/p1 created\nevent/p1.1 created\n", r.err
    r = k8semu("create", "-f", "-", stdin=pod)
    assert r.code == 1
    assert 'Error from server (AlreadyExists): pods "p1" already exists' in r.err
    r = k8semu("get", "po", "-o", "wide")
    assert r.out.splitlines()[0].split() == [
        "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
    ]  # fmt: skip
    assert r.out.splitlines()[1].split()[:3] == ["p1", "0/1", "Pending"]
    r = k8semu("get", "events")
    assert r.out.splitlines()[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert "pod/p1" in r.out and "assigned to node-1" in r.out
    r = k8semu("describe", "po/p1")
    assert "Scheduled" in r.out and "assigned to node-1" in r.out, r.err
    r = k8semu("api-resources")
    assert r.out.splitlines()[0].split() == [
        "NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND",
    ]  # fmt: skip
    assert any(line.split()[:2] == ["deployments", "deploy"] for line in r.out.splitlines())
    r = k8semu("version")
    assert r.code == 0 and "reachable" in r.out
    r = k8semu("delete", "pods", "--all", "--grace-period", "0")
    assert r.out == 'pod "p1" deleted\n', r.err


@pytest.mark.timeout(30)
def test_get_watch_prints_changes(k8semu: Run, apiserver: APIServerProcess) -> None:
    cmd = [sys.executable, "-m", "k8semu", "get", "cm", "-w", "-n", "watched"]
    with subprocess.Popen(
        [*cmd, "--server", apiserver.address], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert k8semu("create", "-f", "-", stdin=NAMESPACE_AND_CM).code == 0
            assert proc.stdout is not None
            lines = [proc.stdout.readline(), proc.stdout.readline()]
            assert lines[0].split() == ["NAME", "DATA", "AGE"]
            assert lines[1].split()[:2] == ["watched-cm", "1"]
        finally:
            proc.terminate()
            proc.wait(10)


def test_rollout_restart_sets_template_annotation(k8semu: Run) -> None:
    assert k8semu("apply", "-f", "-", stdin=APP).code == 0
    r = k8semu("rollout", "restart", "deploy/nginx-deployment", "-n", "shop")
    assert r.out == "deployment.apps/nginx-deployment restarted\n", r.err
    r = k8semu("get", "deploy", "nginx-deployment", "-n", "shop", "-o", "json")
    annotations = json.loads(r.out)["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    assert k8semu("delete", "ns", "shop").code == 0


def test_cordon_and_uncordon_as_kubectl(k8semu: Run) -> None:
    node = "apiVersion: v1\nkind: Node\nmetadata: {name: maint-1}\n"
    assert k8semu("create", "-f", "-", stdin=node).code == 0
    assert k8semu("cordon", "maint-1").out == "node/maint-1 cordoned\n"
    assert k8semu("cordon", "node/maint-1").out == "node/maint-1 already cordoned\n"
    r = k8semu("get", "node", "maint-1")
    assert "SchedulingDisabled" in r.out, r.out
    assert k8semu("uncordon", "maint-1").out == "node/maint-1 uncordoned\n"
    assert k8semu("uncordon", "maint-1").out == "node/maint-1 already uncordoned\n"
    assert "SchedulingDisabled" not in k8semu("get", "node", "maint-1").out
    r = k8semu("cordon", "nope")
    assert r.code == 1 and 'nodes "nope" not found' in r.err, r.err
    r = k8semu("cordon", "pod/x")
    assert r.code != 0 and "only nodes can be cordoned or drained" in r.err
    assert k8semu("delete", "node", "maint-1").code == 0
