"""The Kubernetes docs' DaemonSet pages ("Perform a Rolling Update on a DaemonSet", the
fluentd-elasticsearch example), "Specifying a Disruption Budget" and "Safely Drain a Node",
followed with kubectl.

The example's fluentd image cannot run here: it stays ErrImagePull/ImagePullBackOff with
Kubernetes' wording. The rolling update uses the same DaemonSet on busybox.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import MANIFESTS, Cluster, ready, until, waiting_reason

pytestmark = pytest.mark.slow

FLUENTD = (MANIFESTS / "fluentd-elasticsearch.yaml").read_text()
# The same DaemonSet on an image that runs.
BUSYBOX_DS = FLUENTD.replace(
    "        image: quay.io/fluentd_elasticsearch/fluentd:v2.5.2\n",
    '        image: busybox:1.36\n        command: ["sleep", "3600"]\n',
).replace("fluentd-elasticsearch", "logger")
ZK = (MANIFESTS / "zk-pdb.yaml").read_text()
FLUENTD_IMAGE = "quay.io/fluentd_elasticsearch/fluentd:v2.5.2"


def _one(c: Cluster, selector: str, namespace: str = "kube-system") -> dict[str, Any] | None:
    pods = list(c.pods(selector, namespace).values())
    return pods[0] if len(pods) == 1 else None


def test_an_image_we_cannot_run_is_an_image_pull_error(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=FLUENTD)

    def pull_error() -> tuple[str, str] | None:
        pod = _one(cluster, "name=fluentd-elasticsearch")
        got = waiting_reason(pod) if pod else ("", "")
        return got if got[0] in ("ErrImagePull", "ImagePullBackOff") else None

    reason, message = until("the fluentd pod's pull error", pull_error)
    expected = {
        "ErrImagePull": f'Failed to pull image "{FLUENTD_IMAGE}": ',
        "ImagePullBackOff": f'Back-off pulling image "{FLUENTD_IMAGE}": ErrImagePull: ',
    }[reason]
    assert message.startswith(expected), message
    cluster.kubectl("delete", "ds", "-n", "kube-system", "fluentd-elasticsearch")


def test_rolling_update_history_and_undo(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=BUSYBOX_DS)
    cluster.kubectl("rollout", "status", "ds/logger", "-n", "kube-system", "--timeout=85s")
    cluster.kubectl("set", "image", "ds/logger", "logger=busybox:1.37", "-n", "kube-system")
    cluster.kubectl("rollout", "status", "ds/logger", "-n", "kube-system", "--timeout=85s")

    def image() -> str:
        pod = _one(cluster, "name=logger")
        return pod["spec"]["containers"][0]["image"] if pod and ready(pod) else ""

    until("the pod at busybox:1.37", lambda: image() == "busybox:1.37")
    history = cluster.kubectl("rollout", "history", "ds/logger", "-n", "kube-system")
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    cluster.kubectl("rollout", "undo", "ds/logger", "-n", "kube-system")
    until("the pod back at busybox:1.36", lambda: image() == "busybox:1.36")
    # "Delete a DaemonSet with --cascade=orphan, then create a new one with the same
    # selector: it adopts the existing pods" (the DaemonSet concept page); same template,
    # so the pod stays as it is.
    pod = _one(cluster, "name=logger")
    assert pod is not None
    cluster.kubectl("delete", "ds", "logger", "-n", "kube-system", "--cascade=orphan")

    def owner() -> str:
        got = _one(cluster, "name=logger")
        refs = (got or {})["metadata"].get("ownerReferences", []) if got else []
        return refs[0]["uid"] if refs else ""

    until("the pod orphaned", lambda: owner() == "")
    cluster.kubectl("apply", "-f", "-", stdin=BUSYBOX_DS)
    uid = cluster.kubectl(
        "get", "ds", "logger", "-n", "kube-system", "-o", "jsonpath={.metadata.uid}"
    )
    until("the pod adopted", lambda: owner() == uid)
    cluster.kubectl("rollout", "status", "ds/logger", "-n", "kube-system", "--timeout=85s")
    again = _one(cluster, "name=logger")
    assert again is not None and again["metadata"]["uid"] == pod["metadata"]["uid"], again
    cluster.kubectl("delete", "ds", "logger", "-n", "kube-system")


def _drain(c: Cluster, timeout: str) -> str:
    """`kubectl drain --ignore-daemonsets NODE`, kept to the budget's pods (--pod-selector:
    the package's other pods, the DNS add-on's, stay), which must fail (the budget holds);
    then uncordon. Its stderr."""
    try:
        drain = c.run(
            "drain", "w1", "--ignore-daemonsets", "--pod-selector", "app=zookeeper",
            f"--timeout={timeout}",
        )  # fmt: skip
        assert drain.returncode != 0, drain.stdout
        assert "node/w1 cordoned" in drain.stdout, drain.stdout
        assert c.get("node", "w1")["spec"]["unschedulable"] is True
        return drain.stderr
    finally:
        c.kubectl("uncordon", "w1")


def test_drain_respects_the_disruption_budget(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=ZK)
    cluster.kubectl("rollout", "status", "deploy/zk", "--timeout=85s")
    until("zk-pdb allows no disruption", lambda: (cluster.get("pdb", "zk-pdb") or {})
          .get("status", {}).get("currentHealthy") == 2)  # fmt: skip
    pdb = cluster.kubectl("get", "pdb", "zk-pdb")
    assert pdb.split("\n")[1].split()[:4] == ["zk-pdb", "2", "N/A", "0"], pdb
    before = sorted(cluster.pods("app=zookeeper"))
    stderr = _drain(cluster, "6s")
    assert "Cannot evict pod as it would violate the pod's disruption budget" in stderr, stderr
    assert sorted(cluster.pods("app=zookeeper")) == before  # nothing evicted
    # A budget of one: the drain evicts one pod, its replacement cannot go anywhere (the node
    # is cordoned), so the other stays.
    cluster.kubectl("patch", "pdb", "zk-pdb", "--type=merge", "-p", '{"spec":{"minAvailable":1}}')
    until("zk-pdb allows one", lambda: cluster.get("pdb", "zk-pdb")["status"].get(
        "disruptionsAllowed") == 1)  # fmt: skip
    before = sorted(cluster.pods("app=zookeeper"))
    _drain(cluster, "8s")
    kept = set(before) & set(cluster.pods("app=zookeeper"))
    assert len(kept) == 1, (before, kept)  # one evicted (its replacement may run by now)
    cluster.kubectl("delete", "-f", "-", stdin=ZK)
