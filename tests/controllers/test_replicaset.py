"""ReplicaSet controller, sample-controller style: caches pre-filled, reconcile called
directly, the API calls compared with what Kubernetes' controller would make."""

from __future__ import annotations

from typing import Any

import pytest

from k8semu.client import Invalid
from k8semu.controllers import _pods
from k8semu.controllers.replicaset import ReplicaSetController, slow_start_batch
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from tests.controllers.conftest import T0, FakeCluster, pod, rs

LABELS = {"app": "web"}


def make(cluster: FakeCluster) -> ReplicaSetController:
    return ReplicaSetController(cluster.ctx, clock=cluster.clock)


def status_of(cluster: FakeCluster, name: str = "web") -> apps_pb2.ReplicaSetStatus:
    obj = cluster.client.objects[("replicasets", "default", name)]
    assert isinstance(obj, apps_pb2.ReplicaSet)
    return obj.status


async def test_creates_replicas_owned_by_the_replica_set() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(rs("web", 3, LABELS))
    await ctrl.reconcile("default/web")
    creates = [a for a in cluster.client.actions if a.verb == "create"]
    assert len(creates) == 3
    for action in creates:
        p = action.object
        assert p.metadata.generate_name == "web-"
        assert dict(p.metadata.labels) == LABELS
        (ref,) = p.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid, ref.api_version) == (
            "ReplicaSet",
            "web",
            "uid-rs-web",
            "apps/v1",
        )
        assert ref.controller and ref.block_owner_deletion
        assert p.spec.containers[0].image == "nginx:1"
    assert cluster.client.verbs()[-1] == "update_status replicasets default/web"
    assert cluster.recorder.messages("SuccessfulCreate")[0].startswith("Created pod: web-")


async def test_expectations_prevent_over_creation_until_the_cache_sees_the_pods() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(rs("web", 3, LABELS))
    await ctrl.reconcile("default/web")
    cluster.client.clear()
    # The informer has not seen the three creates yet: a second reconcile must not create.
    await ctrl.reconcile("default/web")
    assert [a.verb for a in cluster.client.actions if a.verb == "create"] == []
    assert ctrl.expectations.pending("default/web") == (3, 0)
    cluster.sync()
    for p in cluster.objects(core_pb2.Pod):
        ctrl._pod_added(p)  # the informer's add events
    assert ctrl.expectations.satisfied("default/web")
    await ctrl.reconcile("default/web")
    assert [a.verb for a in cluster.client.actions if a.verb in ("create", "delete")] == []


async def test_slow_start_batches_stop_after_a_failing_batch() -> None:
    calls = 0

    async def create() -> None:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise Invalid("quota")

    done, error = await slow_start_batch(10, 1, create)
    # Batches 1 and 2 succeed; the batch of 4 fails; the remaining 3 are never tried.
    assert (done, calls) == (3, 7)
    assert isinstance(error, Invalid)


async def test_failing_creates_cost_one_call_and_lower_expectations() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(rs("web", 5, LABELS))
    cluster.client.fail_on[("create", "pods")] = Invalid('pods "x": spec: bad')
    with pytest.raises(Invalid):
        await ctrl.reconcile("default/web")
    assert [a.verb for a in cluster.client.actions].count("create") == 1
    assert ctrl.expectations.satisfied("default/web")
    assert cluster.recorder.messages("FailedCreate")


def test_deletion_order_matches_kubernetes() -> None:
    now = T0
    pods = [
        pod("running-ready-long", LABELS, node="n", phase="Running", ready_since=now - 100),
        pod("running-ready-short", LABELS, node="n", phase="Running", ready_since=now - 10),
        pod("running-not-ready", LABELS, node="n", phase="Running"),
        pod("unknown", LABELS, node="n", phase="Unknown"),
        pod("assigned-pending", LABELS, node="n", phase="Pending"),
        pod("unassigned", LABELS, phase="Pending"),
    ]
    order = [p.metadata.name for p in _pods.pods_to_delete(pods, len(pods))]
    assert order == [
        "unassigned",
        "assigned-pending",
        "unknown",
        "running-not-ready",
        "running-ready-short",
        "running-ready-long",
    ]
    ties = [
        pod("old-few", LABELS, node="n", phase="Running", ready_since=now, created=now - 50),
        pod("old-many", LABELS, node="n", phase="Running", ready_since=now, restarts=3,
            created=now - 50),
        pod("new-few", LABELS, node="n", phase="Running", ready_since=now, created=now - 5),
    ]  # fmt: skip
    order = [p.metadata.name for p in _pods.pods_to_delete(ties, 3)]
    assert order == ["old-many", "new-few", "old-few"]


async def test_scale_down_deletes_in_order_and_waits_for_the_deletions() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    owner = rs("web", 2, LABELS)
    cluster.add(
        owner,
        pod("a-ready", LABELS, owner=owner, node="n", phase="Running", ready_since=T0 - 60),
        pod("b-pending", LABELS, owner=owner, node="n", phase="Pending"),
        pod("c-unassigned", LABELS, owner=owner),
        pod("d-ready", LABELS, owner=owner, node="n", phase="Running", ready_since=T0 - 30),
    )
    await ctrl.reconcile("default/web")
    assert [v for v in cluster.client.verbs() if v.startswith("delete")] == [
        "delete pods default/c-unassigned",
        "delete pods default/b-pending",
    ]
    assert ctrl.expectations.pending("default/web") == (0, 2)
    # Deleted pods are not counted in the status written right after.
    assert status_of(cluster).replicas == 2
    cluster.client.clear()
    await ctrl.reconcile("default/web")  # cache still has them: no more deletes
    assert not [a for a in cluster.client.actions if a.verb == "delete"]


async def test_adopts_matching_orphans_releases_non_matching_and_ignores_others() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    owner = rs("web", 2, LABELS)
    other = rs("other", 1, LABELS, uid="uid-other")
    cluster.add(
        owner,
        other,
        pod("orphan", LABELS),
        pod("relabeled", {"app": "db"}, owner=owner),
        pod("others", LABELS, owner=other),
        pod("stranger", {"app": "db"}),
    )
    await ctrl.reconcile("default/web")
    verbs = cluster.client.verbs()
    assert "update pods default/orphan" in verbs
    assert "update pods default/relabeled" in verbs
    adopted = cluster.client.objects[("pods", "default", "orphan")]
    assert isinstance(adopted, core_pb2.Pod)
    assert _pods.controller_ref(adopted) is not None
    assert _pods.controller_ref(adopted).uid == "uid-rs-web"  # type: ignore[union-attr]
    released = cluster.client.objects[("pods", "default", "relabeled")]
    assert not released.metadata.owner_references  # type: ignore[attr-defined]
    assert not any("others" in v or "stranger" in v for v in verbs)
    # One adopted pod counts: one more is created to reach 2.
    assert [v[: len("create pods default/web-")] for v in verbs if v.startswith("create")] == [
        "create pods default/web-"
    ]


async def test_terminating_pods_do_not_count() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    owner = rs("web", 2, LABELS)
    leaving = pod("leaving", LABELS, owner=owner, node="n", phase="Running")
    leaving.metadata.deletion_timestamp.FromSeconds(int(T0) + 30)
    cluster.add(owner, pod("a", LABELS, owner=owner), leaving)
    await ctrl.reconcile("default/web")
    assert len([v for v in cluster.client.verbs() if v.startswith("create pods")]) == 1
    assert not [a for a in cluster.client.actions if a.verb == "delete"]


async def test_status_counts_ready_and_available_after_min_ready_seconds() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    owner = rs("web", 3, {"app": "web", "tier": "fe"}, min_ready_seconds=10, generation=4)
    partial = pod("partial", {"app": "web"}, owner=owner, node="n", phase="Running")
    owner.spec.selector.match_labels.pop("tier")
    cluster.add(
        owner,
        pod("old", {"app": "web", "tier": "fe"}, owner=owner, node="n", phase="Running",
            ready_since=T0 - 60),
        pod("fresh", {"app": "web", "tier": "fe"}, owner=owner, node="n", phase="Running",
            ready_since=T0 - 2),
        partial,
    )  # fmt: skip
    await ctrl.reconcile("default/web")
    st = status_of(cluster)
    assert (st.replicas, st.fully_labeled_replicas, st.ready_replicas) == (3, 2, 2)
    assert st.available_replicas == 1  # "fresh" has been ready for 2 s of the 10 needed
    assert st.observed_generation == 4
    cluster.sync()
    cluster.clock.advance(9)
    await ctrl.reconcile("default/web")
    assert status_of(cluster).available_replicas == 2


async def test_status_write_retries_once_after_a_conflict() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(rs("web", 0, LABELS))
    stale: Any = cluster.informers.informer(apps_pb2.ReplicaSet).cache.get("default/web")
    # Someone writes the object after the cache saw it: the cached resourceVersion is old.
    cluster.client.seed(cluster.client.objects[("replicasets", "default", "web")])
    assert (
        stale.metadata.resource_version
        != cluster.client.objects[("replicasets", "default", "web")].metadata.resource_version
    )  # type: ignore[attr-defined]
    await ctrl.reconcile("default/web")
    assert cluster.client.verbs() == [
        "update_status replicasets default/web",
        "update_status replicasets default/web",
    ]
    assert status_of(cluster).HasField("replicas")


async def test_gone_replica_set_is_forgotten() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    ctrl.expectations.expect_creations("default/gone", 2)
    await ctrl.reconcile("default/gone")
    assert cluster.client.actions == []
    assert ctrl.expectations.pending("default/gone") == (0, 0)
