"""The `kubectl` binary against the REST API: what a user types on a real cluster works,
with kubectl validating manifests against the server's OpenAPI as it does by default."""

from __future__ import annotations

import json
import subprocess
import time

from .conftest import KUBECTL, REST

APP = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: kc-web
  labels: {app: kc-web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: kc-web}
  template:
    metadata:
      labels: {app: kc-web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
---
apiVersion: v1
kind: ConfigMap
metadata: {name: kc-conf}
data: {color: blue}
"""


def test_api_resources_lists_every_served_kind(rest: REST) -> None:
    out = rest.kubectl("api-resources")
    lines = {line.split()[0] + " " + line.split()[-1] for line in out.splitlines()[1:]}
    for expected in ("pods Pod", "deployments Deployment", "namespaces Namespace", "leases Lease"):
        assert expected in lines, out
    assert "po" in next(line for line in out.splitlines() if line.startswith("pods "))
    # Categories: `get all` is served from the discovery's `all` category.
    assert "service/kubernetes" in rest.kubectl("get", "all")


def test_create_apply_get_label_scale_delete(rest: REST) -> None:
    assert "created" in rest.kubectl("create", "-f", "-", stdin=APP)
    # A table: the same columns as `k8semu get`, the wide ones with -o wide.
    table = rest.kubectl("get", "deploy", "kc-web")
    assert table.split("\n")[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    wide = rest.kubectl("get", "deploy", "kc-web", "-o", "wide")
    assert "nginx:1.25" in wide and "app=kc-web" in wide, wide
    assert rest.kubectl("get", "cm", "kc-conf", "-o", "jsonpath={.data.color}") == "blue"
    doc = json.loads(rest.kubectl("get", "deploy", "kc-web", "-o", "json"))
    assert doc["spec"]["replicas"] == 2
    assert "kind: ConfigMap" in rest.kubectl("get", "cm", "kc-conf", "-o", "yaml")
    rest.kubectl("label", "deploy", "kc-web", "tier=front")
    rest.kubectl("annotate", "cm", "kc-conf", "note=hello")
    assert "kc-web" in rest.kubectl("get", "deploy", "-l", "tier=front")
    rest.kubectl("scale", "deploy", "kc-web", "--replicas=5")
    assert rest.kubectl("get", "deploy", "kc-web", "-o", "jsonpath={.spec.replicas}") == "5"
    out = rest.kubectl(
        "get",
        "cm",
        "kc-conf",
        "-o",
        "custom-columns=NAME:.metadata.name,NOTE:.metadata.annotations.note",
    )
    assert out.split("\n")[1].split() == ["kc-conf", "hello"], out
    rest.kubectl("delete", "cm", "kc-conf", "--wait")
    out = rest.kubectl("get", "cm", "kc-conf", check=False)
    assert 'configmaps "kc-conf" not found' in out, out


def test_apply_creates_then_patches(rest: REST) -> None:
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kc-applied}\ndata: {a: '1'}\n"
    assert "created" in rest.kubectl("apply", "-f", "-", stdin=manifest)
    # The second apply sends a strategic merge patch computed from last-applied-configuration.
    changed = manifest.replace("'1'", "'2'")
    out = rest.kubectl("apply", "-f", "-", stdin=changed, check=False)
    assert "configured" in out, out
    assert rest.kubectl("get", "cm", "kc-applied", "-o", "jsonpath={.data.a}") == "2"


def test_get_watch_prints_new_objects(rest: REST) -> None:
    assert KUBECTL is not None or rest.kubectl("version")  # skips without kubectl
    with subprocess.Popen(
        [KUBECTL or "kubectl", f"--server={rest.url}", "get", "cm", "-w", "--request-timeout=30s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"KUBECONFIG": "/dev/null", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
    ) as watch:
        assert watch.stdout is not None
        assert watch.stdout.readline().split()[:2] == ["NAME", "DATA"]
        end = time.monotonic() + 20
        seen = ""
        rest.kubectl(
            "create", "-f", "-",
            stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kc-watched}\n",
        )  # fmt: skip
        while "kc-watched" not in seen and time.monotonic() < end:
            seen += watch.stdout.readline()
        watch.kill()
        assert "kc-watched" in seen, seen


def test_errors_read_as_kubectl_prints_them(rest: REST) -> None:
    out = rest.kubectl("get", "pod", "nope", check=False)
    assert 'Error from server (NotFound): pods "nope" not found' in out
    out = rest.kubectl("get", "pods", "-l", "a in (", check=False)
    assert "Error from server (BadRequest)" in out, out
    bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: kc-bad}\nspec: {replicas: -1}\n"
    out = rest.kubectl("create", "-f", "-", stdin=bad, check=False)
    assert 'The Deployment "kc-bad" is invalid' in out, out
    assert "* spec.replicas: Invalid value" in out, out


def test_explain_validation_and_kubectls_own_patches(rest: REST) -> None:
    """OpenAPI served from the object model: explain, client-side validation of an unknown
    field, and the strategic merge patches `set image` and `rollout restart` send."""
    out = rest.kubectl("explain", "deployment.spec.template.spec.containers.image")
    assert "FIELD: image <string>" in out, out
    typo = APP.replace("image: nginx:1.25", "imagee: nginx:1.25").split("---")[0]
    typo = typo.replace("kc-web", "kc-typo")
    out = rest.kubectl("apply", "-f", "-", stdin=typo, check=False)
    # kubectl asks for fieldValidation=Strict: the server names the field, nothing is written.
    assert "spec.template.spec.containers[0].imagee" in out and "unknown field" in out, out
    assert "NotFound" in rest.kubectl("get", "deploy", "kc-typo", check=False)
    web = APP.split("---")[0].replace("kc-web", "kc-patched")
    assert "created" in rest.kubectl("apply", "-f", "-", stdin=web)
    rest.kubectl("set", "image", "deploy/kc-patched", "web=nginx:1.27")
    image = rest.kubectl(
        "get", "deploy", "kc-patched", "-o", "jsonpath={.spec.template.spec.containers[0].image}"
    )
    assert image == "nginx:1.27"
    rest.kubectl("rollout", "restart", "deploy/kc-patched")
    annotations = json.loads(
        rest.kubectl("get", "deploy", "kc-patched", "-o", "jsonpath={.spec.template.metadata}")
    ).get("annotations", {})
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    patch = '[{"op": "replace", "path": "/spec/replicas", "value": 3}]'
    rest.kubectl("patch", "deploy", "kc-patched", "--type=json", "-p", patch)
    assert rest.kubectl("get", "deploy", "kc-patched", "-o", "jsonpath={.spec.replicas}") == "3"
    out = rest.kubectl(
        "diff", "-f", "-", stdin=web.replace("replicas: 2", "replicas: 4"), check=False
    )
    assert "-  replicas: 3" in out and "+  replicas: 4" in out, out


def test_kubectl_drain_evicts_through_the_eviction_subresource(rest: REST) -> None:
    """kubectl's own drain: cordon, then policy/v1 Evictions; a budget not yet processed by
    the disruption controller (none runs here) answers 429, which kubectl retries until its
    --timeout; deleting the budget lets the drain finish."""
    setup = """
apiVersion: v1
kind: Node
metadata: {name: kd-1}
---
apiVersion: v1
kind: Pod
metadata: {name: kd-pod, labels: {app: kd}}
spec: {nodeName: kd-1, containers: [{name: c, image: busybox}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: kd}
spec: {minAvailable: 1, selector: {matchLabels: {app: kd}}}
"""
    rest.kubectl("create", "-f", "-", stdin=setup)
    args = ("drain", "kd-1", "--force", "--grace-period=0")
    out = rest.kubectl(*args, "--timeout=2s", check=False)  # the first 429 is enough
    assert "node/kd-1 cordoned" in out, out
    assert "Cannot evict pod as it would violate the pod's disruption budget" in out, out
    assert "kd-pod" in rest.kubectl("get", "pods")
    rest.kubectl("delete", "pdb", "kd")
    out = rest.kubectl(*args, "--timeout=30s", check=False)
    assert "evicting pod default/kd-pod" in out and "node/kd-1 drained" in out, out
    assert "kd-pod" not in rest.kubectl("get", "pods")
    assert "SchedulingDisabled" in rest.kubectl("get", "node", "kd-1")
    rest.kubectl("delete", "node", "kd-1")
