"""kubectl's own patches on the real REST API: client-side apply (a strategic merge patch
from last-applied-configuration, with $setElementOrder and $patch: delete), set image,
rollout restart, patch (strategic by default, json, merge) and edit with a scripted
KUBE_EDITOR, each sent by kubectl 1.32 and applied by the server's patch code, defaulting,
validation and storage."""

from __future__ import annotations

import json
from typing import Any

from .conftest import REST


def _deployment(image: str, env: list[dict[str, str]], *more: dict[str, Any]) -> str:
    """A Deployment manifest, as JSON (kubectl reads it as YAML's subset)."""
    web = {"name": "web", "image": image, "ports": [{"containerPort": 80}], "env": env}
    labels = {"app": "kp-web"}
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "kp-web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [web, *more]}}},
    })  # fmt: skip


B = {"name": "B", "value": "2"}
V1 = _deployment("nginx:1", [{"name": "A", "value": "1"}, B], {"name": "log", "image": "busybox"})
V2 = _deployment("nginx:2", [B])


def _live(rest: REST) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(rest.kubectl("get", "deploy", "kp-web", "-o", "json"))
    return found


def _containers(rest: REST) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = _live(rest)["spec"]["template"]["spec"]["containers"]
    return found


def test_kubectl_patches_apply_as_kubernetes_merges_them(rest: REST) -> None:
    assert "created" in rest.kubectl("apply", "-f", "-", stdin=V1)
    # The second apply drops container "log" and env A: $setElementOrder and $patch: delete.
    assert "configured" in rest.kubectl("apply", "-f", "-", stdin=V2)
    [web] = _containers(rest)
    assert (web["image"], web["env"], web["ports"]) == (
        "nginx:2",
        [{"name": "B", "value": "2"}],
        [{"containerPort": 80, "protocol": "TCP"}],
    )
    rest.kubectl("set", "image", "deployment/kp-web", "web=nginx:3")
    assert [c["image"] for c in _containers(rest)] == ["nginx:3"]
    sidecar = '{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox"}]}}}}'
    rest.kubectl("patch", "deployment", "kp-web", "-p", sidecar)  # strategic by default
    assert [c["name"] for c in _containers(rest)] == ["web", "side"]
    ops = '[{"op":"remove","path":"/spec/template/spec/containers/1"}]'
    rest.kubectl("patch", "deployment", "kp-web", "--type", "json", "-p", ops)
    rest.kubectl(
        "patch", "deployment", "kp-web", "--type", "merge", "-p", '{"spec":{"paused":true}}'
    )
    assert [c["name"] for c in _containers(rest)] == ["web"]

    # edit: kubectl opens the object in $KUBE_EDITOR and sends the difference.
    edited = rest.kubectl_env(
        {"KUBE_EDITOR": "sed -i s/replicas:.2/replicas:\\ 5/"}, "edit", "deployment/kp-web"
    )
    assert "edited" in edited, edited
    live = _live(rest)
    assert (live["spec"]["replicas"], live["spec"]["paused"]) == (5, True)

    # A patch the server refuses comes back as kubectl's error, nothing changed.
    bad = '{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}'
    out = rest.kubectl("patch", "deployment", "kp-web", "-p", bad, check=False)
    assert "does not contain declared merge key: name" in out, out
    after = _live(rest)
    assert after["spec"] == live["spec"]
