"""Controller history on a fake cluster: a ControllerRevision per distinct template, owned
and labelled as Kubernetes does; going back to an old template renumbers its revision;
history trimmed to revisionHistoryLimit without dropping a revision a pod runs; a
StatefulSet pod made again below the partition gets the current revision's template; the
API's checks of ControllerRevisions."""

from __future__ import annotations

import re

import pytest

from k8semu.api import manifest
from k8semu.apiserver import registry
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.errors import Invalid
from k8semu.controllers import history
from k8semu.controllers.daemonset import DaemonSetController, revision_hash
from k8semu.controllers.statefulset import REVISION_HASH, StatefulSetController
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from tests.controllers.conftest import FakeCluster
from tests.controllers.test_daemonset import daemon_set, node
from tests.controllers.test_statefulset import bring_up, stateful_set

ROW = registry.build(DEFAULT_RANGES).resolve("controllerrevisions")


def revisions(cluster: FakeCluster) -> dict[int, str]:
    """{revision: image} of the cluster's ControllerRevisions."""
    out = {}
    for cr in cluster.objects(apps_pb2.ControllerRevision):
        template = history.template_of(cr)
        assert template is not None
        out[cr.revision] = template.spec.containers[0].image
    return out


async def set_image(
    cluster: FakeCluster,
    ctl: object,
    kind: type[apps_pb2.DaemonSet | apps_pb2.StatefulSet],
    image: str,
) -> None:
    owner = cluster.objects(kind)[0]
    owner.spec.template.spec.containers[0].image = image
    owner.metadata.generation += 1
    cluster.add(owner)
    await cluster.drain(ctl)


async def test_a_daemon_set_keeps_one_revision_per_template_and_renumbers_on_rollback() -> None:
    cluster = FakeCluster()
    ctl = DaemonSetController(cluster.ctx, clock=cluster.clock)
    cluster.add(node("n1"), daemon_set())
    await cluster.drain(ctl)
    (cr,) = cluster.objects(apps_pb2.ControllerRevision)
    ds = cluster.objects(apps_pb2.DaemonSet)[0]
    hash_ = cluster.objects(core_pb2.Pod)[0].metadata.labels[REVISION_HASH]
    assert cr.metadata.name == f"agent-{hash_}"
    assert dict(cr.metadata.labels) == {"app": "agent", REVISION_HASH: hash_}
    ref = cr.metadata.owner_references[0]
    assert (ref.kind, ref.name, ref.uid, ref.controller) == (
        "DaemonSet",
        "agent",
        ds.metadata.uid,
        True,
    )
    data = manifest.to_dict(cr)["data"]
    assert data["spec"]["template"]["$patch"] == "replace"
    assert data["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30  # not 30.0
    assert history.template_of(cr) == ds.spec.template

    await set_image(cluster, ctl, apps_pb2.DaemonSet, "nginx:2")
    assert revisions(cluster) == {1: "nginx:1", 2: "nginx:2"}
    await set_image(cluster, ctl, apps_pb2.DaemonSet, "nginx:1")  # what undo writes
    assert revisions(cluster) == {3: "nginx:1", 2: "nginx:2"}
    await set_image(cluster, ctl, apps_pb2.DaemonSet, "nginx:1")  # no change: no new revision
    assert revisions(cluster) == {3: "nginx:1", 2: "nginx:2"}


async def test_history_is_trimmed_to_the_limit_but_keeps_revisions_pods_run() -> None:
    cluster = FakeCluster()
    ctl = DaemonSetController(cluster.ctx, clock=cluster.clock)
    ds = daemon_set(revision_history_limit=1)
    ds.spec.update_strategy.type = "OnDelete"  # the first pod keeps running nginx:1
    cluster.add(node("n1"), ds)
    await cluster.drain(ctl)
    cluster.kubelet()
    for image in ("nginx:2", "nginx:3", "nginx:4"):
        await set_image(cluster, ctl, apps_pb2.DaemonSet, image)
    # The newest, the one before it (the limit), and nginx:1 which the pod still runs.
    assert revisions(cluster) == {1: "nginx:1", 3: "nginx:3", 4: "nginx:4"}
    for pod in cluster.objects(core_pb2.Pod):
        cluster.client.objects.pop(("pods", "default", pod.metadata.name))
    cluster.sync()
    await cluster.drain(ctl)
    assert revisions(cluster) == {3: "nginx:3", 4: "nginx:4"}
    assert [p.spec.containers[0].image for p in cluster.objects(core_pb2.Pod)] == ["nginx:4"]


async def test_a_stateful_pod_below_the_partition_comes_back_with_the_current_template() -> None:
    cluster = FakeCluster()
    sts = stateful_set(claims=False)
    sts.spec.update_strategy.rolling_update.partition = 2
    cluster.add(sts)
    ctl = StatefulSetController(cluster.ctx, clock=cluster.clock)
    await bring_up(cluster, ctl, 3)
    old = cluster.objects(apps_pb2.StatefulSet)[0].status.update_revision
    await set_image(cluster, ctl, apps_pb2.StatefulSet, "nginx:2")
    await cluster.start_pods_one_by_one(ctl, steps=5)
    assert revisions(cluster) == {1: "nginx:1", 2: "nginx:2"}
    images = [p.spec.containers[0].image for p in cluster.objects(core_pb2.Pod)]
    assert images == ["nginx:1", "nginx:1", "nginx:2"]
    # web-0 is lost: it comes back on the current revision, as Kubernetes makes it.
    cluster.client.objects.pop(("pods", "default", "web-0"))
    cluster.sync()
    await cluster.start_pods_one_by_one(ctl, steps=5)
    web0 = next(p for p in cluster.objects(core_pb2.Pod) if p.metadata.name == "web-0")
    assert web0.spec.containers[0].image == "nginx:1"
    assert web0.metadata.labels[REVISION_HASH] == old
    status = cluster.objects(apps_pb2.StatefulSet)[0].status
    assert status.current_revision == old != status.update_revision


def test_the_api_checks_controller_revisions() -> None:
    cr = apps_pb2.ControllerRevision(api_version="apps/v1", kind="ControllerRevision")
    cr.metadata.name = "web-abc"
    cr.revision = -1
    ROW.prepare_for_create(cr, namespace="default", uid="uid-cr")
    for message in (
        "data: Required value: data is mandatory",
        "revision: Invalid value: -1: must be greater than or equal to 0",
    ):
        with pytest.raises(Invalid, match=re.escape(message)):
            ROW.validate_create(cr)
    cr.revision = 1
    cr.data.update({"spec": {"template": {"$patch": "replace"}}})
    ROW.validate_create(cr)
    changed = apps_pb2.ControllerRevision()
    changed.CopyFrom(cr)
    changed.revision = 5  # the controllers renumber revisions: allowed
    ROW.validate_for_update(changed, cr)
    changed.data.update({"other": 1})
    with pytest.raises(Invalid, match=r"data: Invalid value: .*field is immutable"):
        ROW.validate_for_update(changed, cr)


async def test_a_name_taken_by_another_revision_bumps_the_collision_count() -> None:
    cluster = FakeCluster()
    ctl = DaemonSetController(cluster.ctx, clock=cluster.clock)
    ds = daemon_set()
    squatter = history.new_revision(ds, "DaemonSet", revision_hash(ds), 1)
    # Another owner's revision holding the name (an orphan the selector matches would be
    # adopted instead: test_daemonset.py's adoption test).
    squatter.metadata.owner_references[0].uid = "uid-of-another-daemonset"
    cluster.add(node("n1"), squatter, ds)
    await cluster.drain(ctl)
    got = cluster.objects(apps_pb2.DaemonSet)[0]
    assert got.status.collision_count == 1
    mine = [
        cr
        for cr in cluster.objects(apps_pb2.ControllerRevision)
        if cr.metadata.owner_references[0].uid == "uid-ds-agent"
    ]
    assert [cr.metadata.name for cr in mine] == [f"agent-{revision_hash(got)}"]
    assert cluster.objects(core_pb2.Pod)[0].metadata.labels[REVISION_HASH] == revision_hash(got)
