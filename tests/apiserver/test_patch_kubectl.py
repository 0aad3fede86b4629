"""kubectl's own patches through the server's patch code: client-side apply, set image, rollout
restart, patch (strategic by default, json, merge) and edit, each sent by kubectl 1.32 and
applied with k8semu.apiserver.patch by the test scaffold (kubectl_scaffold.py: no REST server
yet, so no defaulting, validation or storage behind it; the REST server's tests take this over).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from k8semu.api import manifest

pytest.importorskip("aiohttp", reason="the test scaffold needs aiohttp (the test extra)")
from . import kubectl_scaffold
from .kubectl_scaffold import Scaffold, kubectl

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl on PATH")


def _deployment(image: str, env: list[dict[str, str]], *more: dict[str, Any]) -> str:
    """A Deployment manifest, as JSON (kubectl reads it as YAML's subset)."""
    web = {"name": "web", "image": image, "ports": [{"containerPort": 80}], "env": env}
    labels = {"app": "web"}
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [web, *more]}}},
    })  # fmt: skip


B = {"name": "B", "value": "2"}
V1 = _deployment("nginx:1", [{"name": "A", "value": "1"}, B], {"name": "log", "image": "busybox"})
V2 = _deployment("nginx:2", [B])


def _live(scaffold: Scaffold) -> dict[str, Any]:
    return manifest.to_dict(scaffold.objects[("deployments", "default", "web")])


def _containers(scaffold: Scaffold) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = _live(scaffold)["spec"]["template"]["spec"]["containers"]
    return found


def _last_patch(scaffold: Scaffold) -> tuple[str, str]:
    last = next(r for r in reversed(scaffold.requests) if r.method == "PATCH")
    return last.content_type, last.body.decode()


async def test_kubectl_patches_apply_as_kubernetes_merges_them(tmp_path: Path) -> None:
    async with kubectl_scaffold.serving() as scaffold:

        async def run(*args: str, **env: str) -> str:
            rc, out = await kubectl(scaffold.url, tmp_path, *args, env=env)
            assert rc == 0, (args, out)
            return out

        for name, text in (("v1.json", V1), ("v2.json", V2)):
            (tmp_path / name).write_text(text)
        assert "created" in await run("apply", "-f", str(tmp_path / "v1.json"))
        # Client-side apply: a strategic patch from last-applied-configuration, with
        # $setElementOrder and $patch: delete for the container and env var the file dropped.
        assert "configured" in await run("apply", "-f", str(tmp_path / "v2.json"))
        content_type, body = _last_patch(scaffold)
        assert content_type == "application/strategic-merge-patch+json"
        assert '"$setElementOrder/containers"' in body and '"$patch":"delete"' in body
        [web] = _containers(scaffold)
        assert (web["image"], web["env"], web["ports"]) == (
            "nginx:2",
            [{"name": "B", "value": "2"}],
            [{"containerPort": 80}],
        )

        await run("set", "image", "deployment/web", "web=nginx:3")
        assert [c["image"] for c in _containers(scaffold)] == ["nginx:3"]
        await run("rollout", "restart", "deployment/web")
        annotations = _live(scaffold)["spec"]["template"]["metadata"]["annotations"]
        assert "kubectl.kubernetes.io/restartedAt" in annotations
        sidecar = (
            '{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox"}]}}}}'
        )
        await run("patch", "deployment", "web", "-p", sidecar)  # strategic by default
        assert [c["name"] for c in _containers(scaffold)] == ["web", "side"]
        ops = '[{"op":"remove","path":"/spec/template/spec/containers/1"}]'
        await run("patch", "deployment", "web", "--type", "json", "-p", ops)
        assert _last_patch(scaffold)[0] == "application/json-patch+json"
        await run("patch", "deployment", "web", "--type", "merge", "-p", '{"spec":{"paused":true}}')
        assert _last_patch(scaffold)[0] == "application/merge-patch+json"
        await run("edit", "deployment/web", KUBE_EDITOR="sed -i s/replicas:.2/replicas:\\ 5/")
        assert _last_patch(scaffold) == (
            "application/strategic-merge-patch+json",
            '{"spec":{"replicas":5}}',
        )
        live = _live(scaffold)
        assert (live["spec"]["replicas"], live["spec"]["paused"]) == (5, True)
        assert [c["name"] for c in _containers(scaffold)] == ["web"]

        # A patch the server refuses comes back as kubectl's error, nothing changed.
        rc, out = await kubectl(
            scaffold.url,
            tmp_path,
            "patch",
            "deployment",
            "web",
            "-p",
            '{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}',
        )
        assert rc != 0 and "does not contain declared merge key: name" in out, out
        assert _live(scaffold) == live
