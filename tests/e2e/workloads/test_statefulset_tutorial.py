"""The Kubernetes docs' "StatefulSet Basics" tutorial, followed with kubectl: the nginx-slim
`web` StatefulSet with its headless Service `nginx` and a volumeClaimTemplate, ordered
creation, stable host names and DNS names, scaling, RollingUpdate (with partitions), OnDelete,
a non-cascading delete whose pods the StatefulSet made again adopts, Parallel management.

The tests run in order on one StatefulSet, as the tutorial's steps do.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import MANIFESTS, Cluster, ready, until

pytestmark = pytest.mark.slow

WEB = (MANIFESTS / "web.yaml").read_text()
IMAGE_PATCH = (
    '[{"op": "replace", "path": "/spec/template/spec/containers/0/image",'
    ' "value":"registry.k8s.io/nginx-slim:%s"}]'
)


def _web(c: Cluster) -> dict[str, Any]:
    return c.pods("app=nginx")


def _all_ready(c: Cluster, names: list[str]) -> dict[str, Any] | None:
    pods = _web(c)
    if sorted(pods) == sorted(names) and all(ready(p) for p in pods.values()):
        return pods
    return None


def _image(c: Cluster, pod: str) -> str:
    """The pod's image; "" while there is no such pod (a rolling update deletes a pod before
    it makes it again under the same name: a poll can fall between the two)."""
    template = "{{range $i, $c := .spec.containers}}{{$c.image}}{{end}}"
    got = c.run("get", "pod", pod, "--template", template)
    if got.returncode != 0:
        assert "NotFound" in got.stderr, got.stderr
        return ""
    return got.stdout


def test_pods_come_up_in_order_with_their_claims(cluster: Cluster) -> None:
    # kubectl get pods -w -l app=nginx, in another terminal
    watch = cluster.popen("get", "pods", "-w", "-l", "app=nginx")
    try:
        out = cluster.kubectl("apply", "-f", "-", stdin=WEB)
        assert "service/nginx created" in out and "statefulset.apps/web created" in out, out
        pods = until("web-0 and web-1 Ready", lambda: _all_ready(cluster, ["web-0", "web-1"]))
    finally:
        watch.terminate()
        watched, _ = watch.communicate(timeout=30)
    rows = [line.split() for line in watched.splitlines()]
    assert rows[0][:3] == ["NAME", "READY", "STATUS"], watched
    assert ["web-0", "1/1", "Running"] in [r[:3] for r in rows], watched
    # OrderedReady: web-1 is made only once web-0 is Ready.
    web0_ready = next(
        c["lastTransitionTime"]
        for c in pods["web-0"]["status"]["conditions"]
        if c["type"] == "Ready"
    )
    assert pods["web-1"]["metadata"]["creationTimestamp"] >= web0_ready
    claims = cluster.get("pvc", "-l", "app=nginx")["items"]
    assert {
        (p["metadata"]["name"], p["status"]["phase"], p["spec"]["storageClassName"]) for p in claims
    } == {("www-web-0", "Bound", "standard"), ("www-web-1", "Bound", "standard")}


def test_host_names_and_dns_names(cluster: Cluster) -> None:
    # for i in 0 1; do kubectl exec "web-$i" -- sh -c 'hostname'; done
    for i in (0, 1):
        assert cluster.kubectl("exec", f"web-{i}", "--", "sh", "-c", "hostname") == f"web-{i}\n"
    # The tutorial's `kubectl run -i --tty ... dns-test` then `nslookup web-0.nginx`, without a
    # terminal: the same image and lookup, its output through `kubectl logs`.
    cluster.kubectl(
        "run", "dns-test", "--image", "busybox:1.28", "--restart=Never", "--", "nslookup",
        "web-0.nginx",
    )  # fmt: skip
    until(
        "dns-test Succeeded",
        lambda: (
            (cluster.get("pod", "dns-test") or {}).get("status", {}).get("phase") == "Succeeded"
        ),
    )
    out = cluster.kubectl("logs", "dns-test")
    ip = _web(cluster)["web-0"]["status"]["podIP"]
    assert "Name:\tweb-0.nginx.default.svc.cluster.local" in out and ip in out, out
    cluster.kubectl("delete", "pod", "dns-test", "--wait=false")
    # kubectl exec -i -t "web-$i" -- curl http://localhost/ (no terminal here: without -t)
    page = cluster.kubectl("exec", "-i", "web-0", "--", "curl", "http://localhost/")
    assert "web-0" in page, page


def _page(c: Cluster, pod: str) -> str:
    """`kubectl exec POD -- curl http://localhost/`; the pod's last log lines with it (what
    the server said about an error)."""
    page = c.kubectl("exec", pod, "--", "curl", "-s", "http://localhost/")
    return page if not page.startswith("500") else page + c.kubectl("logs", pod, "--tail=5")


def test_data_survives_the_pods_deletion(cluster: Cluster) -> None:
    # The page writes /usr/share/nginx/html/index.html; a process runtime has no mount
    # namespace, so the mount path is relative to the pod's directory, exec's working
    # directory (docs/tutorials.md, "Not done").
    for i in (0, 1):
        write = 'echo "$(hostname)" > usr/share/nginx/html/index.html'
        cluster.kubectl("exec", f"web-{i}", "--", "sh", "-c", write)
        assert _page(cluster, f"web-{i}") == f"web-{i}\n"
    cluster.kubectl("delete", "pod", "web-0")
    until("web-0 back", lambda: _all_ready(cluster, ["web-0", "web-1"]))
    assert _page(cluster, "web-0") == "web-0\n"


def test_scale_up_and_down_keeps_the_claims(cluster: Cluster) -> None:
    cluster.kubectl("scale", "sts", "web", "--replicas=5")
    names = [f"web-{i}" for i in range(5)]
    until("web-0..web-4 Ready", lambda: _all_ready(cluster, names))
    cluster.kubectl("patch", "sts", "web", "-p", '{"spec":{"replicas":3}}')
    until("web-3 and web-4 gone", lambda: _all_ready(cluster, names[:3]))
    claims = {p["metadata"]["name"] for p in cluster.get("pvc", "-l", "app=nginx")["items"]}
    assert claims == {f"www-web-{i}" for i in range(5)}  # not deleted with their pods


def test_rolling_update_then_partitions(cluster: Cluster) -> None:
    cluster.kubectl("patch", "statefulset", "web", "--type=json", "-p", IMAGE_PATCH % "0.24")
    cluster.kubectl("rollout", "status", "sts/web", "--timeout=85s")
    assert {_image(cluster, f"web-{i}") for i in range(3)} == {"registry.k8s.io/nginx-slim:0.24"}
    # Staging an update: a partition of 3 keeps web-2 at the current revision, even when it is
    # deleted and made again.
    cluster.kubectl(
        "patch", "statefulset", "web", "-p",
        '{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":3}}}}',
    )  # fmt: skip
    cluster.kubectl("patch", "statefulset", "web", "--type=json", "-p", IMAGE_PATCH % "0.21")
    cluster.kubectl("delete", "pod", "web-2")
    until("web-2 back", lambda: _all_ready(cluster, ["web-0", "web-1", "web-2"]))
    assert _image(cluster, "web-2") == "registry.k8s.io/nginx-slim:0.24"
    # The canary: a partition of 2 rolls web-2 only.
    cluster.kubectl(
        "patch", "statefulset", "web", "-p",
        '{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":2}}}}',
    )  # fmt: skip
    until("web-2 at 0.21", lambda: _image(cluster, "web-2") == "registry.k8s.io/nginx-slim:0.21")
    assert _image(cluster, "web-1") == "registry.k8s.io/nginx-slim:0.24"


def test_on_delete_then_orphaned_pods_adopted(cluster: Cluster) -> None:
    cluster.kubectl(
        "patch", "statefulset", "web", "-p",
        '{"spec":{"updateStrategy":{"type":"OnDelete", "rollingUpdate": null}}}',
    )  # fmt: skip
    assert cluster.get("sts", "web")["spec"]["updateStrategy"] == {"type": "OnDelete"}
    until("web-0..2 Ready", lambda: _all_ready(cluster, ["web-0", "web-1", "web-2"]))
    # Non-cascading delete: the pods stay, without an owner.
    cluster.kubectl("delete", "statefulset", "web", "--cascade=orphan")
    cluster.kubectl("delete", "pod", "web-0")
    until(
        "the pods orphaned",
        lambda: (
            sorted(_web(cluster)) == ["web-1", "web-2"]
            and not any(p["metadata"].get("ownerReferences") for p in _web(cluster).values())
        ),
    )
    # Made again (2 replicas): web-0 is created, web-1 adopted, web-2 (beyond the replicas)
    # adopted and deleted.
    cluster.kubectl("apply", "-f", "-", stdin=WEB)
    pods = until("web-0 and web-1 Ready", lambda: _all_ready(cluster, ["web-0", "web-1"]))
    owners = {n: [r["name"] for r in p["metadata"]["ownerReferences"]] for n, p in pods.items()}
    assert owners == {"web-0": ["web"], "web-1": ["web"]}


def test_parallel_pod_management(cluster: Cluster) -> None:
    cluster.kubectl("delete", "statefulset", "web")
    until("web's pods gone", lambda: not _web(cluster))
    parallel = WEB.replace("  replicas: 2\n", '  replicas: 2\n  podManagementPolicy: "Parallel"\n')
    cluster.kubectl("apply", "-f", "-", stdin=parallel)
    until("web-0 and web-1 Ready", lambda: _all_ready(cluster, ["web-0", "web-1"]))
    cluster.kubectl("scale", "statefulset/web", "--replicas=4")
    until("web-0..3 Ready", lambda: _all_ready(cluster, [f"web-{i}" for i in range(4)]))
    cluster.kubectl("delete", "-f", "-", stdin=WEB)
    until("web's pods gone", lambda: not _web(cluster))
