"""`k8semu rollout history|undo` against a real store + API server. No controller runs here:
the test writes the ReplicaSets a Deployment controller would have written (revision and
change-cause annotations, controller reference), so the CLI's side is checked on its own."""

from __future__ import annotations

import uuid

import pytest

from k8semu.client import Client
from k8semu.pb.api.v1 import apps_pb2, core_pb2, meta_pb2
from tests.cli.conftest import Run
from tests.support.apiserver import APIServerProcess

pytestmark = pytest.mark.slow

REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"


def _template(image: str, hash_: str = "") -> core_pb2.PodTemplateSpec:
    t = core_pb2.PodTemplateSpec()
    t.metadata.labels["app"] = "web"
    if hash_:
        t.metadata.labels["pod-template-hash"] = hash_
    t.spec.containers.add(name="web", image=image)
    return t


async def _setup(address: str, namespace: str) -> Client:
    client = Client([address])
    ns = core_pb2.Namespace()
    ns.metadata.name = namespace
    await client.create(ns)
    d = apps_pb2.Deployment()
    d.metadata.name = "web"
    d.metadata.namespace = namespace
    d.metadata.annotations[CHANGE_CAUSE] = "image nginx:3"
    d.spec.replicas = 2
    d.spec.selector.match_labels["app"] = "web"
    d.spec.template.CopyFrom(_template("nginx:3"))
    d = await client.create(d)
    for revision, image, cause in ((1, "nginx:1", "first"), (2, "nginx:2", ""), (3, "nginx:3", "")):
        h = f"h{revision}"
        rs = apps_pb2.ReplicaSet()
        rs.metadata.name = f"web-{h}"
        rs.metadata.namespace = namespace
        rs.metadata.labels.update({"app": "web", "pod-template-hash": h})
        rs.metadata.annotations[REVISION] = str(revision)
        if cause:
            rs.metadata.annotations[CHANGE_CAUSE] = cause
        rs.metadata.owner_references.append(
            meta_pb2.OwnerReference(
                api_version="apps/v1", kind="Deployment", name="web", uid=d.metadata.uid,
                controller=True,
            )
        )  # fmt: skip
        rs.spec.replicas = 0
        rs.spec.selector.match_labels.update({"app": "web", "pod-template-hash": h})
        rs.spec.template.CopyFrom(_template(image, h))
        await client.create(rs)
    # Someone else's ReplicaSet with a revision: not part of this history.
    other = apps_pb2.ReplicaSet()
    other.metadata.name = "stranger"
    other.metadata.namespace = namespace
    other.metadata.labels["app"] = "other"
    other.metadata.annotations[REVISION] = "9"
    other.spec.selector.match_labels["app"] = "other"
    other.spec.template.CopyFrom(_template("busybox"))
    other.spec.template.metadata.labels["app"] = "other"
    await client.create(other)
    return client


async def test_history_lists_revisions_and_change_causes(
    k8semu: Run, apiserver: APIServerProcess
) -> None:
    namespace = f"ro-{uuid.uuid4().hex[:6]}"
    async with await _setup(apiserver.address, namespace):
        pass
    r = k8semu("rollout", "history", "deploy/web", "-n", namespace)
    assert (r.code, r.err) == (0, "")
    assert r.out.splitlines() == [
        "deployment.apps/web",
        "REVISION   CHANGE-CAUSE",
        "1          first",
        "2          <none>",
        "3          <none>",
    ]
    r = k8semu("rollout", "history", "deployment", "web", "--revision", "2", "-n", namespace)
    assert r.code == 0, r.err
    assert r.out.startswith("deployment.apps/web with revision #2\nPod Template:\n")
    assert "image: nginx:2" in r.out
    r = k8semu("rollout", "history", "deploy/web", "--revision", "7", "-n", namespace)
    assert (r.code, r.err.strip()) == (1, "error: unable to find the specified revision 7")


async def test_undo_restores_the_previous_or_a_chosen_revision(
    k8semu: Run, apiserver: APIServerProcess
) -> None:
    namespace = f"ro-{uuid.uuid4().hex[:6]}"
    async with await _setup(apiserver.address, namespace) as client:
        r = k8semu("rollout", "undo", "deploy/web", "-n", namespace)
        assert (r.code, r.out, r.err) == (0, "deployment.apps/web rolled back\n", "")
        d = await client.get(apps_pb2.Deployment, "web", namespace=namespace)
        assert d.spec.template.spec.containers[0].image == "nginx:2"
        assert "pod-template-hash" not in d.spec.template.metadata.labels
        assert CHANGE_CAUSE not in d.metadata.annotations  # revision 2 had none

        r = k8semu("rollout", "undo", "deploy/web", "--to-revision", "1", "-n", namespace)
        assert (r.code, r.err) == (0, "")
        d = await client.get(apps_pb2.Deployment, "web", namespace=namespace)
        assert d.spec.template.spec.containers[0].image == "nginx:1"
        assert d.metadata.annotations[CHANGE_CAUSE] == "first"
        assert REVISION not in d.metadata.annotations  # the controller's to write

        r = k8semu("rollout", "undo", "deploy/web", "--to-revision", "1", "-n", namespace)
        assert (r.code, r.out) == (
            0,
            "deployment.apps/web skipped rollback (current template already matches revision 1)\n",
        )
        r = k8semu("rollout", "undo", "deploy/web", "--to-revision", "5", "-n", namespace)
        assert (r.code, r.err.strip()) == (
            1,
            "error: unable to find specified revision 5 in history",
        )
        r = k8semu("rollout", "undo", "rs/web-h1", "-n", namespace)
        assert r.code == 1 and "only deployments" in r.err

        d.spec.paused = True
        await client.update(d)
        r = k8semu("rollout", "undo", "deploy/web", "-n", namespace)
        assert r.code == 1 and "cannot rollback a paused deployment" in r.err


def test_undo_of_a_missing_deployment_is_not_found(k8semu: Run) -> None:
    r = k8semu("rollout", "undo", "deploy/nope")
    assert r.code == 1
    assert r.err.strip() == 'Error from server (NotFound): deployments "nope" not found'
