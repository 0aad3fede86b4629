"""DaemonSet controller on a fake cluster: which nodes run the daemon (selectors, taints,
cordons), pods following nodes, rolling updates with maxUnavailable and with maxSurge, and
the API's checks."""

from __future__ import annotations

import re

import pytest
from google.protobuf.message import Message

from k8semu.apiserver import registry
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.errors import Invalid
from k8semu.controllers.daemonset import REVISION_HASH, DaemonSetController, target_node
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from tests.controllers.conftest import T0, FakeCluster, int_or_string, template

ROW = registry.build(DEFAULT_RANGES).resolve("daemonsets")


def daemon_set(name: str = "agent", **spec: object) -> apps_pb2.DaemonSet:
    ds = apps_pb2.DaemonSet(api_version="apps/v1", kind="DaemonSet")
    ds.metadata.name = name
    ds.spec.selector.match_labels["app"] = name
    ds.spec.template.CopyFrom(template({"app": name}))
    for key, value in spec.items():
        if isinstance(value, Message):
            getattr(ds.spec, key).CopyFrom(value)
        else:
            setattr(ds.spec, key, value)
    ROW.prepare_for_create(ds, namespace="default", uid=f"uid-ds-{name}")
    ROW.validate_create(ds)
    return ds


def node(
    name: str, *, labels: dict[str, str] | None = None, taint: str = "", cordoned: bool = False
) -> core_pb2.Node:
    n = core_pb2.Node(api_version="v1", kind="Node")
    n.metadata.name = name
    n.metadata.uid = f"uid-node-{name}"
    n.metadata.labels.update(labels or {})
    if taint:
        key, _, effect = taint.partition(":")
        n.spec.taints.add(key=key, effect=effect)
    if cordoned:
        n.spec.unschedulable = True
        n.spec.taints.add(key="node.kubernetes.io/unschedulable", effect="NoSchedule")
    n.status.conditions.add(type="Ready", status="True")
    return n


def placed(cluster: FakeCluster) -> dict[str, list[str]]:
    """node -> the images of the live daemon pods meant for it."""
    out: dict[str, list[str]] = {}
    for p in cluster.objects(core_pb2.Pod):
        out.setdefault(target_node(p), []).append(p.spec.containers[0].image)
    return {k: sorted(v) for k, v in sorted(out.items())}


def make(cluster: FakeCluster) -> DaemonSetController:
    return DaemonSetController(cluster.ctx, clock=cluster.clock)


def stored(cluster: FakeCluster) -> apps_pb2.DaemonSet:
    obj = cluster.client.objects[("daemonsets", "default", "agent")]
    assert isinstance(obj, apps_pb2.DaemonSet)
    return obj


def new_image(cluster: FakeCluster, image: str) -> None:
    ds = stored(cluster)
    ds.spec.template.spec.containers[0].image = image
    ds.metadata.generation += 1
    cluster.client.seed(ds)
    cluster.sync()


def test_the_api_refuses_daemon_sets_that_cannot_run() -> None:
    ds = daemon_set()
    assert ds.spec.update_strategy.type == "RollingUpdate"
    assert ds.spec.update_strategy.rolling_update.max_unavailable.int_val == 1
    with pytest.raises(
        Invalid,
        match=re.escape('restartPolicy: Unsupported value: "Never": supported values: "Always"'),
    ):
        bad = apps_pb2.DaemonSet()
        bad.CopyFrom(ds)
        bad.spec.template.spec.restart_policy = "Never"
        ROW.validate_create(bad)
    zero = apps_pb2.RollingUpdateDaemonSet(
        max_unavailable=int_or_string(0), max_surge=int_or_string(0)
    )
    with pytest.raises(Invalid, match="may not be 0 when maxSurge is 0"):
        daemon_set(
            update_strategy=apps_pb2.DaemonSetUpdateStrategy(
                type="RollingUpdate", rolling_update=zero
            )
        )


async def test_one_pod_per_eligible_node_bound_there_by_affinity() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    ds = daemon_set()
    ds.spec.template.spec.node_selector["disk"] = "ssd"
    cluster.add(
        node("a", labels={"disk": "ssd"}),
        node("b", labels={"disk": "ssd"}, cordoned=True),  # a cordon does not keep daemons out
        node("c", labels={"disk": "hdd"}),  # the selector does
        node("d", labels={"disk": "ssd"}, taint="dedicated:NoSchedule"),  # an untolerated taint
        ds,
    )
    await cluster.drain(ctrl)
    assert placed(cluster) == {"a": ["nginx:1"], "b": ["nginx:1"]}
    pod = cluster.objects(core_pb2.Pod)[0]
    term = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    (only,) = term.node_selector_terms
    assert [(r.key, r.operator) for r in only.match_fields] == [("metadata.name", "In")]
    tolerated = {(t.key, t.effect) for t in pod.spec.tolerations}
    assert ("node.kubernetes.io/unreachable", "NoExecute") in tolerated
    assert ("node.kubernetes.io/unschedulable", "NoSchedule") in tolerated
    assert pod.metadata.labels[REVISION_HASH]
    (ref,) = pod.metadata.owner_references
    assert (ref.kind, ref.uid) == ("DaemonSet", "uid-ds-agent")
    cluster.kubelet()
    await cluster.drain(ctrl)
    st = stored(cluster).status
    assert (st.desired_number_scheduled, st.current_number_scheduled, st.number_ready) == (2, 2, 2)
    assert (st.number_available, st.updated_number_scheduled, st.number_misscheduled) == (2, 2, 0)


async def test_pods_follow_nodes_and_failed_or_extra_pods_are_replaced() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(node("a"), daemon_set())
    await cluster.drain(ctrl)
    cluster.add(node("b"))
    await cluster.drain(ctrl)
    assert list(placed(cluster)) == ["a", "b"]
    del cluster.client.objects[("nodes", "", "b")]
    cluster.sync()
    await cluster.drain(ctrl)
    assert list(placed(cluster)) == ["a"], "the pod of a node that went is deleted"
    (p,) = cluster.objects(core_pb2.Pod)
    p.status.phase = "Failed"
    cluster.client.seed(p)
    cluster.sync()
    await cluster.drain(ctrl)
    (again,) = cluster.objects(core_pb2.Pod)
    assert again.metadata.name != p.metadata.name and again.status.phase != "Failed"
    node_a = cluster.client.objects[("nodes", "", "a")]
    assert isinstance(node_a, core_pb2.Node)
    node_a.metadata.labels["x"] = "y"  # still eligible: nothing changes
    cluster.client.seed(node_a)
    cluster.sync()
    await cluster.drain(ctrl)
    assert [q.metadata.name for q in cluster.objects(core_pb2.Pod)] == [again.metadata.name]


async def test_a_daemon_set_made_again_adopts_its_orphaned_pods() -> None:
    """`kubectl delete ds agent --cascade=orphan`, then the DaemonSet made again: it adopts
    the pods (none is made twice, none deleted while its template is the same); a pod the
    selector does not match stays an orphan."""
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(node("a"), node("b"), daemon_set())
    await cluster.drain(ctrl)
    cluster.kubelet()
    await cluster.drain(ctrl)
    before = {p.metadata.name for p in cluster.objects(core_pb2.Pod)}
    cluster.client.objects.pop(("daemonsets", "default", "agent"))
    # What the garbage collector's orphaning leaves: pods and revisions without owners.
    for orphan in [*cluster.objects(core_pb2.Pod), *cluster.objects(apps_pb2.ControllerRevision)]:
        del orphan.metadata.owner_references[:]
        cluster.add(orphan)
    stray = cluster.objects(core_pb2.Pod)[0]
    stray.metadata.name, stray.metadata.labels["app"] = "other", "other"
    cluster.add(stray)
    again = daemon_set()
    again.metadata.uid = "uid-ds-agent-again"
    cluster.add(again)
    await cluster.drain(ctrl)
    owners = {p.metadata.name: [r.uid for r in p.metadata.owner_references]
              for p in cluster.objects(core_pb2.Pod)}  # fmt: skip
    assert owners == {"other": [], **{n: ["uid-ds-agent-again"] for n in before}}, owners
    (revision,) = cluster.objects(apps_pb2.ControllerRevision)
    assert [r.uid for r in revision.metadata.owner_references] == ["uid-ds-agent-again"]


async def test_rolling_update_replaces_one_node_at_a_time() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(node("a"), node("b"), node("c"), daemon_set())
    await cluster.drain(ctrl)
    cluster.kubelet()
    await cluster.drain(ctrl)
    new_image(cluster, "nginx:2")
    seen: list[dict[str, list[str]]] = []
    for _ in range(10):
        await cluster.drain(ctrl)
        seen.append(placed(cluster))
        cluster.kubelet()
    await cluster.drain(ctrl)
    assert placed(cluster) == {n: ["nginx:2"] for n in "abc"}
    for state in seen:  # never two nodes without a daemon pod at once (maxUnavailable 1)
        assert sum(1 for n in "abc" if n not in state) <= 1, seen
    assert stored(cluster).status.updated_number_scheduled == 3


async def test_surge_starts_the_new_pod_beside_the_old_one() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    rolling = apps_pb2.RollingUpdateDaemonSet(
        max_unavailable=int_or_string(0), max_surge=int_or_string(1)
    )
    surge = apps_pb2.DaemonSetUpdateStrategy(type="RollingUpdate", rolling_update=rolling)
    cluster.add(node("a"), node("b"), daemon_set(update_strategy=surge))
    await cluster.drain(ctrl)
    cluster.kubelet()
    await cluster.drain(ctrl)
    new_image(cluster, "nginx:2")
    await cluster.drain(ctrl)
    state = placed(cluster)
    assert sorted(state.values()) == [["nginx:1"], ["nginx:1", "nginx:2"]], state
    for _ in range(6):
        cluster.kubelet()
        await cluster.drain(ctrl)
        for images in placed(cluster).values():
            assert images, "every node keeps a daemon pod throughout"
    assert placed(cluster) == {"a": ["nginx:2"], "b": ["nginx:2"]}


async def test_on_delete_keeps_old_pods_until_they_are_deleted() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(
        node("a"), daemon_set(update_strategy=apps_pb2.DaemonSetUpdateStrategy(type="OnDelete"))
    )
    await cluster.drain(ctrl)
    cluster.kubelet()
    new_image(cluster, "nginx:2")
    await cluster.drain(ctrl)
    assert placed(cluster) == {"a": ["nginx:1"]}
    (p,) = cluster.objects(core_pb2.Pod)
    del cluster.client.objects[("pods", "default", p.metadata.name)]
    cluster.sync()
    await cluster.drain(ctrl)
    assert placed(cluster) == {"a": ["nginx:2"]}
    assert stored(cluster).status.desired_number_scheduled == 1


def test_target_node_reads_the_binding_or_the_affinity() -> None:
    p = core_pb2.Pod()
    assert target_node(p) == ""
    p.spec.node_name = "n1"
    assert target_node(p) == "n1"
    assert T0  # the fake clock's epoch is shared with the other controller tests
