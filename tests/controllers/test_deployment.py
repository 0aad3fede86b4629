"""Deployment controller, sample-controller style, with the ReplicaSet controller beside it on
the same recording client: caches are synced after every write and the test plays the
kubelet (marking pods Ready), so a whole rollout can be checked step by step."""

from __future__ import annotations

from typing import Any

from k8semu.controllers import _pods
from k8semu.controllers import deployment as dc
from k8semu.controllers.deployment import DeploymentController
from k8semu.controllers.replicaset import ReplicaSetController
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from tests.controllers.conftest import FakeCluster, deployment, rs, template

KEY = "default/web"


def make(cluster: FakeCluster) -> tuple[DeploymentController, ReplicaSetController]:
    return (
        DeploymentController(cluster.ctx, clock=cluster.clock),
        ReplicaSetController(cluster.ctx, clock=cluster.clock),
    )


def live_deployment(cluster: FakeCluster, name: str = "web") -> apps_pb2.Deployment:
    obj = cluster.client.objects[("deployments", "default", name)]
    assert isinstance(obj, apps_pb2.Deployment)
    return obj


def replica_sets(cluster: FakeCluster) -> list[apps_pb2.ReplicaSet]:
    return sorted(cluster.objects(apps_pb2.ReplicaSet), key=dc.revision_of)


def condition(d: apps_pb2.Deployment, type_: str) -> tuple[str, str]:
    cond = dc.get_condition(d.status, type_)
    assert cond is not None, f"no {type_} condition"
    return cond.status, cond.reason


def edit(cluster: FakeCluster, change: Any) -> None:
    """Change the live Deployment as a user would (generation + 1)."""
    d = _pods.copy_of(live_deployment(cluster))
    change(d)
    d.metadata.generation += 1
    cluster.client.seed(d)
    cluster.sync()


def set_image(image: str) -> Any:
    def change(d: apps_pb2.Deployment) -> None:
        d.spec.template.spec.containers[0].image = image

    return change


async def roll_out(cluster: FakeCluster, *ctrls: Any) -> None:
    """Reconcile until quiet, marking every pod Ready, until nothing changes any more."""
    for _ in range(50):
        await cluster.drain(*ctrls)
        before = len(cluster.client.actions)
        cluster.kubelet()
        await cluster.drain(*ctrls)
        if len(cluster.client.actions) == before and not any(len(c.queue) for c in ctrls):
            return
    raise AssertionError("rollout did not settle")


def test_fenceposts_round_surge_up_and_unavailable_down() -> None:
    assert dc.fenceposts(deployment("web", 10)) == (3, 2)  # 25% of 10: 2.5 -> 3 and 2
    assert dc.fenceposts(deployment("web", 1)) == (1, 0)
    assert dc.fenceposts(deployment("web", 4, max_surge=0, max_unavailable=0)) == (0, 1)
    assert dc.fenceposts(deployment("web", 4, max_surge="50%", max_unavailable=3)) == (2, 3)
    bad = deployment("web", 4, max_surge="lots")
    try:
        dc.fenceposts(bad)
    except ValueError as exc:
        assert "spec.strategy.rollingUpdate.maxSurge" in str(exc)
    else:
        raise AssertionError("a bad maxSurge must be an error naming the field")
    try:
        dc.fenceposts(deployment("web", 4, max_unavailable=-1))
    except ValueError as exc:
        assert "maxUnavailable: invalid value -1: must be >= 0" in str(exc)
    else:
        raise AssertionError("a negative maxUnavailable must be an error")


async def test_bad_strategy_is_reported_and_nothing_written() -> None:
    cluster = FakeCluster()
    d_ctrl, _ = make(cluster)
    cluster.add(deployment("web", 2, max_surge="lots"))
    await d_ctrl.reconcile(KEY)
    assert cluster.client.actions == []
    (event,) = cluster.recorder.events
    assert (event.type, event.reason) == ("Warning", "InvalidSpec")
    assert event.message.startswith('spec.strategy.rollingUpdate.maxSurge: invalid value "lots"')


def test_template_hash_is_stable_and_depends_on_template_and_collisions() -> None:
    a = template({"app": "web"}, "nginx:1")
    assert dc.template_hash(a) == dc.template_hash(template({"app": "web"}, "nginx:1"))
    assert dc.template_hash(a) != dc.template_hash(template({"app": "web"}, "nginx:2"))
    assert dc.template_hash(a) != dc.template_hash(a, 1)
    assert set(dc.template_hash(a)) <= set("bcdfghjklmnpqrstvwxz2456789")


async def test_creates_a_replica_set_named_by_the_template_hash() -> None:
    cluster = FakeCluster()
    d_ctrl, rs_ctrl = make(cluster)
    d = deployment("web", 3)
    d.metadata.annotations[dc.CHANGE_CAUSE] = "first"
    cluster.add(d)
    await d_ctrl.reconcile(KEY)
    (created,) = cluster.objects(apps_pb2.ReplicaSet)
    h = dc.template_hash(d.spec.template)
    assert created.metadata.name == f"web-{h}"
    assert created.spec.selector.match_labels[_pods.POD_TEMPLATE_HASH_LABEL] == h
    assert created.spec.template.metadata.labels[_pods.POD_TEMPLATE_HASH_LABEL] == h
    assert created.metadata.labels[_pods.POD_TEMPLATE_HASH_LABEL] == h
    assert created.spec.replicas == 3
    ann = created.metadata.annotations
    assert ann[dc.REVISION] == "1"
    assert ann[dc.CHANGE_CAUSE] == "first"
    assert (ann[dc.DESIRED_REPLICAS], ann[dc.MAX_REPLICAS]) == ("3", "4")
    ref = _pods.controller_ref(created)
    assert ref is not None and ref.uid == d.metadata.uid and ref.block_owner_deletion
    live = live_deployment(cluster)
    assert live.metadata.annotations[dc.REVISION] == "1"
    assert condition(live, dc.PROGRESSING) == ("True", dc.NEW_RS_CREATED)
    assert cluster.recorder.messages("ScalingReplicaSet") == [f"Scaled up replica set web-{h} to 3"]
    # The ReplicaSet controller then makes the pods; the rollout completes once they are ready.
    await roll_out(cluster, d_ctrl, rs_ctrl)
    live = live_deployment(cluster)
    st = live.status
    assert (st.replicas, st.updated_replicas, st.ready_replicas, st.available_replicas) == (
        3,
        3,
        3,
        3,
    )
    assert st.unavailable_replicas == 0 and st.observed_generation == 1
    assert condition(live, dc.AVAILABLE) == ("True", dc.MIN_AVAILABLE)
    assert condition(live, dc.PROGRESSING) == ("True", dc.NEW_RS_AVAILABLE)


async def _rolling_update(replicas: int, surge: int | str, unavailable: int | str) -> FakeCluster:
    cluster = FakeCluster()
    d_ctrl, rs_ctrl = make(cluster)
    cluster.add(deployment("web", replicas, max_surge=surge, max_unavailable=unavailable))
    await roll_out(cluster, d_ctrl, rs_ctrl)
    max_surge, max_unavailable = dc.fenceposts(live_deployment(cluster))
    steps: list[tuple[int, int]] = []

    def check() -> None:
        pods = cluster.objects(core_pb2.Pod)
        available = [p for p in pods if _pods.is_pod_ready(p)]
        assert len(pods) <= replicas + max_surge, f"{len(pods)} pods: more than surge allows"
        assert len(available) >= replicas - max_unavailable, (
            f"{len(available)} available: fewer than maxUnavailable allows"
        )
        sizes = [x.spec.replicas for x in replica_sets(cluster)]
        assert sum(sizes) <= replicas + max_surge
        if len(sizes) == 2 and (not steps or steps[-1] != (sizes[1], sizes[0])):
            steps.append((sizes[1], sizes[0]))  # (new, old)

    edit(cluster, set_image("nginx:2"))
    await cluster.start_pods_one_by_one(d_ctrl, rs_ctrl, steps=100, check=check)
    await roll_out(cluster, d_ctrl, rs_ctrl)
    old, new = replica_sets(cluster)
    assert (old.spec.replicas, new.spec.replicas) == (0, replicas)
    assert new.spec.template.spec.containers[0].image == "nginx:2"
    live = live_deployment(cluster)
    assert live.metadata.annotations[dc.REVISION] == "2"
    assert condition(live, dc.PROGRESSING) == ("True", dc.NEW_RS_AVAILABLE)
    assert steps[0][0] >= 1 and steps[-1] == (replicas, 0)
    cluster.steps = steps  # type: ignore[attr-defined]
    return cluster


async def test_rolling_update_respects_max_surge_and_max_unavailable_at_every_step() -> None:
    cluster = await _rolling_update(4, 1, 1)
    # One reconcile surges the new ReplicaSet to 1 and takes the old one down by the one
    # pod maxUnavailable allows; that frees room for one more surge pod.
    assert cluster.steps[:2] == [(1, 3), (2, 3)]  # type: ignore[attr-defined]


async def test_rolling_update_with_percentages_and_zero_unavailable() -> None:
    await _rolling_update(10, "25%", "25%")
    cluster = await _rolling_update(3, 1, 0)
    # maxUnavailable 0: an old pod goes only after a new one is available.
    assert cluster.steps[:3] == [(1, 3), (1, 2), (2, 2)]  # type: ignore[attr-defined]


async def test_recreate_scales_old_to_zero_and_waits_for_their_pods_before_the_new() -> None:
    cluster = FakeCluster()
    d_ctrl, rs_ctrl = make(cluster)
    cluster.add(deployment("web", 3, strategy="Recreate"))
    await roll_out(cluster, d_ctrl, rs_ctrl)

    def check() -> None:
        images = {p.spec.containers[0].image for p in cluster.objects(core_pb2.Pod)}
        assert len(images) <= 1, f"old and new pods at once: {images}"

    edit(cluster, set_image("nginx:2"))
    await d_ctrl.reconcile(KEY)
    # First write: the old ReplicaSet to 0; no new ReplicaSet yet.
    assert [v for v in cluster.client.verbs() if "replicasets" in v][-1].startswith("update")
    assert len(cluster.objects(apps_pb2.ReplicaSet)) == 1
    assert cluster.objects(apps_pb2.ReplicaSet)[0].spec.replicas == 0
    cluster.sync()
    await cluster.drain(d_ctrl, rs_ctrl, check=check)
    await roll_out(cluster, d_ctrl, rs_ctrl)
    old, new = replica_sets(cluster)
    assert (old.spec.replicas, new.spec.replicas) == (0, 3)
    assert {p.spec.containers[0].image for p in cluster.objects(core_pb2.Pod)} == {"nginx:2"}


def _old_rs(d: apps_pb2.Deployment, name: str, revision: int, image: str) -> apps_pb2.ReplicaSet:
    out = rs(name, 0, {"app": "web"})
    out.spec.template.CopyFrom(template({"app": "web"}, image))
    out.metadata.annotations[dc.REVISION] = str(revision)
    out.metadata.owner_references.add(
        api_version="apps/v1", kind="Deployment", name="web", uid=d.metadata.uid, controller=True
    )
    out.status.replicas = 0
    out.status.observed_generation = 1
    return out


async def test_old_replica_sets_beyond_revision_history_limit_are_deleted() -> None:
    cluster = FakeCluster()
    d_ctrl, rs_ctrl = make(cluster)
    d = deployment("web", 2, revision_history_limit=1)
    cluster.add(
        d,
        _old_rs(d, "web-r1", 1, "nginx:0.1"),
        _old_rs(d, "web-r3", 3, "nginx:0.3"),
        _old_rs(d, "web-r2", 2, "nginx:0.2"),
    )
    await roll_out(cluster, d_ctrl, rs_ctrl)
    deleted = [v for v in cluster.client.verbs() if v.startswith("delete replicasets")]
    assert deleted == ["delete replicasets default/web-r1", "delete replicasets default/web-r2"]
    names = sorted(x.metadata.name for x in cluster.objects(apps_pb2.ReplicaSet))
    assert "web-r3" in names and len(names) == 2
    assert live_deployment(cluster).metadata.annotations[dc.REVISION] == "4"


async def test_change_cause_history_and_rollback_reuse_the_old_replica_set() -> None:
    cluster = FakeCluster()
    d_ctrl, rs_ctrl = make(cluster)
    d = deployment("web", 2)
    d.metadata.annotations[dc.CHANGE_CAUSE] = "v1"
    cluster.add(d)
    await roll_out(cluster, d_ctrl, rs_ctrl)

    def to_v2(d: apps_pb2.Deployment) -> None:
        d.spec.template.spec.containers[0].image = "nginx:2"
        d.metadata.annotations[dc.CHANGE_CAUSE] = "v2"

    edit(cluster, to_v2)
    await roll_out(cluster, d_ctrl, rs_ctrl)
    first, second = replica_sets(cluster)
    assert first.metadata.annotations[dc.CHANGE_CAUSE] == "v1"
    ann = second.metadata.annotations
    assert (ann[dc.REVISION], ann[dc.CHANGE_CAUSE]) == ("2", "v2")

    def back(d: apps_pb2.Deployment) -> None:  # what `rollout undo` writes
        d.spec.template.CopyFrom(template({"app": "web"}, "nginx:1"))
        d.spec.template.spec.restart_policy = "Always"
        d.metadata.annotations[dc.CHANGE_CAUSE] = "v1"

    edit(cluster, back)
    await roll_out(cluster, d_ctrl, rs_ctrl)
    sets = replica_sets(cluster)
    assert len(sets) == 2  # the old one came back; nothing new
    second, first = sets
    assert first.metadata.annotations[dc.REVISION] == "3"
    assert first.metadata.annotations[dc.REVISION_HISTORY] == "1"
    assert (first.spec.replicas, second.spec.replicas) == (2, 0)
    assert live_deployment(cluster).metadata.annotations[dc.REVISION] == "3"


async def test_paused_deployment_does_not_roll_out_but_scales_proportionally() -> None:
    cluster = FakeCluster()
    d_ctrl, rs_ctrl = make(cluster)
    d = deployment("web", 4, max_surge=1, max_unavailable=0, paused=True)
    older = _old_rs(d, "web-old", 1, "nginx:0")
    newer = _old_rs(d, "web-new", 2, "nginx:1")
    newer.spec.template.CopyFrom(d.spec.template)
    # Mid-rollout when paused: 3 old + 2 new = replicas + maxSurge.
    for x, size in ((older, 3), (newer, 2)):
        x.spec.replicas = size
        x.status.replicas = x.status.available_replicas = size
        x.metadata.annotations[dc.DESIRED_REPLICAS] = "4"
        x.metadata.annotations[dc.MAX_REPLICAS] = "5"
    older.metadata.creation_timestamp.FromSeconds(1000)
    newer.metadata.creation_timestamp.FromSeconds(2000)
    cluster.add(d, older, newer)
    await d_ctrl.reconcile(KEY)
    assert condition(live_deployment(cluster), dc.PROGRESSING) == ("Unknown", dc.PAUSED)
    assert not [v for v in cluster.client.verbs() if "replicasets" in v]
    cluster.sync()
    # A template change while paused: no new ReplicaSet.
    edit(cluster, set_image("nginx:2"))
    await d_ctrl.reconcile(KEY)
    assert not [v for v in cluster.client.verbs() if "replicasets" in v]
    # Scale 4 -> 8 while paused: 8 + maxSurge 1 = 9 pods allowed, 4 to add; each grows by
    # 9/5 of its size (annotated max 5): 3 -> 5.4 -> 5, 2 -> 3.6 -> 4.
    edit(cluster, lambda d: setattr(d.spec, "replicas", 8))
    await d_ctrl.reconcile(KEY)
    sizes = {x.metadata.name: x.spec.replicas for x in cluster.objects(apps_pb2.ReplicaSet)}
    assert sizes == {"web-new": 4, "web-old": 5}
    assert sorted(cluster.recorder.messages("ScalingReplicaSet")) == [
        "Scaled up replica set web-new to 4",
        "Scaled up replica set web-old to 5",
    ]
    # Resumed: the rollout goes on, to the template changed while paused.
    cluster.sync()
    edit(cluster, lambda d: setattr(d.spec, "paused", False))
    await roll_out(cluster, d_ctrl, rs_ctrl)
    final = {
        x.spec.template.spec.containers[0].image: x.spec.replicas for x in replica_sets(cluster)
    }
    assert final == {"nginx:0": 0, "nginx:1": 0, "nginx:2": 8}


async def test_progress_deadline_exceeded_then_available() -> None:
    cluster = FakeCluster()
    d_ctrl, rs_ctrl = make(cluster)
    cluster.add(deployment("web", 2, progress_deadline_seconds=10))
    await cluster.drain(d_ctrl, rs_ctrl)  # pods created, never ready
    live = live_deployment(cluster)
    assert condition(live, dc.PROGRESSING)[0] == "True"
    assert condition(live, dc.AVAILABLE) == ("False", dc.MIN_UNAVAILABLE)
    cluster.clock.advance(11)
    await d_ctrl.reconcile(KEY)
    live = live_deployment(cluster)
    assert condition(live, dc.PROGRESSING) == ("False", dc.TIMED_OUT)
    assert cluster.recorder.messages(dc.TIMED_OUT)
    cluster.sync()
    await roll_out(cluster, d_ctrl, rs_ctrl)
    live = live_deployment(cluster)
    assert condition(live, dc.PROGRESSING) == ("True", dc.NEW_RS_AVAILABLE)
    assert condition(live, dc.AVAILABLE) == ("True", dc.MIN_AVAILABLE)


async def test_adopts_an_orphan_replica_set_matching_the_selector() -> None:
    cluster = FakeCluster()
    d_ctrl, _ = make(cluster)
    d = deployment("web", 1)
    orphan = rs("web-orphan", 1, {"app": "web"})
    cluster.add(d, orphan)
    await d_ctrl.reconcile(KEY)
    assert "update replicasets default/web-orphan" in cluster.client.verbs()
    adopted = cluster.client.objects[("replicasets", "default", "web-orphan")]
    ref = _pods.controller_ref(adopted)
    assert ref is not None and ref.uid == d.metadata.uid


async def test_template_changed_again_mid_rollout_keeps_the_bounds() -> None:
    cluster = FakeCluster()
    d_ctrl, rs_ctrl = make(cluster)
    cluster.add(deployment("web", 4, max_surge=1, max_unavailable=1))
    await roll_out(cluster, d_ctrl, rs_ctrl)

    def check() -> None:
        pods = cluster.objects(core_pb2.Pod)
        assert len(pods) <= 5
        assert sum(1 for p in pods if _pods.is_pod_ready(p)) >= 3

    async def one_pod_at_a_time(steps: int) -> None:
        await cluster.start_pods_one_by_one(d_ctrl, rs_ctrl, steps=steps, check=check)

    edit(cluster, set_image("nginx:2"))
    await one_pod_at_a_time(2)
    part_way = {
        x.spec.template.spec.containers[0].image: x.spec.replicas for x in replica_sets(cluster)
    }
    assert part_way["nginx:1"] > 0 and part_way["nginx:2"] > 0, part_way
    edit(cluster, set_image("nginx:3"))
    await one_pod_at_a_time(100)
    await roll_out(cluster, d_ctrl, rs_ctrl)
    sizes = {
        x.spec.template.spec.containers[0].image: x.spec.replicas for x in replica_sets(cluster)
    }
    assert sizes == {"nginx:1": 0, "nginx:2": 0, "nginx:3": 4}
    assert {p.spec.containers[0].image for p in cluster.objects(core_pb2.Pod)} == {"nginx:3"}
    assert live_deployment(cluster).metadata.annotations[dc.REVISION] == "3"
