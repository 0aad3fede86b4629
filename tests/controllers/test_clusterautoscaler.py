"""The cluster autoscaler's decisions, pure: pending pods and pool templates -> which slots to
start (and why a pod starts none); node utilization over an injected clock -> which node to
remove. Plus the pools flag and the status ConfigMap's nodeGroups, which must never make a
reader fail whatever they hold."""

from __future__ import annotations

import json

import pytest

from k8semu.api.selectors import LabelSelector
from k8semu.controllers.clusterautoscaler import targets
from k8semu.controllers.clusterautoscaler.planner import (
    MAX_NODE_GROUP_SIZE_REACHED,
    Budget,
    ScaleDown,
    ScaleUp,
    node_infos,
    plan_scale_down,
    plan_scale_up,
    unschedulable,
)
from k8semu.controllers.clusterautoscaler.pools import NodePool, parse_node_pools, slot_index
from k8semu.pb.api.v1 import core_pb2
from k8semu.scheduler.framework import pod_info

SMALL = NodePool(
    name="small", max_nodes=2, capacity=(("cpu", "2"), ("memory", "4Gi"), ("pods", "10"))
)
GPU = NodePool(
    name="gpu",
    max_nodes=1,
    capacity=(("cpu", "8"), ("memory", "32Gi"), ("pods", "10")),
    labels=(("accelerator", "gpu"),),
    taints=(("gpu", "true", "NoSchedule"),),
)


def pod(
    name: str,
    cpu: str = "1",
    *,
    node: str = "",
    selector: dict[str, str] | None = None,
    owner: str = "ReplicaSet",
    tolerate_gpu: bool = False,
) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = "default"
    p.metadata.uid = f"uid-{name}"
    if owner:
        p.metadata.owner_references.add(kind=owner, name="web", uid="rs", controller=True)
    p.spec.node_name = node
    p.spec.node_selector.update(selector or {})
    if tolerate_gpu:
        p.spec.tolerations.add(key="gpu", operator="Exists", effect="NoSchedule")
    c = p.spec.containers.add(name="app", image="busybox")
    c.resources.requests["cpu"] = cpu
    if node:
        p.status.phase = "Running"
    else:
        p.status.phase = "Pending"
        p.status.conditions.add(type="PodScheduled", status="False", reason="Unschedulable")
    return p


def node(pool: NodePool, index: int, *, ready: bool = True) -> core_pb2.Node:
    n = pool.template(pool.slot(index))
    if not ready:
        n.status.conditions[0].status = "Unknown"
    return n


def worker(cpu: str = "1") -> core_pb2.Node:
    n = core_pb2.Node()
    n.metadata.name = "w1"
    n.metadata.labels["kubernetes.io/hostname"] = "w1"
    n.status.allocatable.update({"cpu": cpu, "memory": "2Gi", "pods": "10"})
    n.status.conditions.add(type="Ready", status="True")
    return n


def up(
    pending: list[core_pb2.Pod],
    nodes: list[core_pb2.Node],
    pools: tuple[NodePool, ...] = (SMALL,),
    wanted: dict[str, list[str]] | None = None,
) -> ScaleUp:
    infos = node_infos(nodes, pending)
    return plan_scale_up([pod_info(p) for p in pending], infos, pools, wanted or {})


# ---- scale-up ----------------------------------------------------------------------------------


def test_pods_that_fit_no_running_node_start_one_pool_node_packed_with_both() -> None:
    plan = up([pod("a"), pod("b")], [worker("500m")])
    assert plan.new == {"small": ["small-0"]}
    assert plan.triggered == {"default/a": "small", "default/b": "small"}
    assert not plan.not_triggered


def test_a_third_pod_needs_a_second_node_and_a_fifth_hits_max_nodes() -> None:
    pending = [pod(n, "1500m") for n in "abc"]
    plan = up(pending, [])
    assert plan.new == {"small": ["small-0", "small-1"]}
    assert plan.not_triggered == {"default/c": f"1 {MAX_NODE_GROUP_SIZE_REACHED}"}


def test_a_pod_no_pool_template_takes_starts_nothing_and_says_why() -> None:
    pending = [pod("sel", selector={"disktype": "ssd"}), pod("huge", "16")]
    plan = up(pending, [], pools=(SMALL, GPU))
    assert not plan.new
    assert plan.not_triggered == {
        "default/sel": "2 node(s) didn't match Pod's node affinity/selector",
        "default/huge": "1 Insufficient cpu, 1 node(s) had untolerated taint {gpu: true}",
    }


def test_the_first_pool_that_fits_is_used_and_taints_need_a_toleration() -> None:
    gpu_pod = pod("g", "4", selector={"accelerator": "gpu"}, tolerate_gpu=True)
    plan = up([gpu_pod, pod("s")], [], pools=(GPU, SMALL))
    assert plan.new == {"gpu": ["gpu-0"], "small": ["small-0"]}
    assert plan.triggered == {"default/g": "gpu", "default/s": "small"}


def test_a_pod_that_fits_a_node_already_asked_for_or_ready_waits_for_it() -> None:
    coming = up([pod("a")], [], wanted={"small": ["small-0"]})
    assert not coming.new and coming.waiting == {"default/a"}
    not_ready = up([pod("a")], [node(SMALL, 0, ready=False)], wanted={"small": ["small-0"]})
    assert not not_ready.new and not_ready.waiting == {"default/a"}
    fits_now = up([pod("a")], [worker("2")])
    assert not fits_now.new and fits_now.waiting == {"default/a"}


def test_a_slot_whose_old_node_is_still_registered_is_not_reused() -> None:
    lingering = node(SMALL, 0, ready=False)  # removed from the targets, Node not deleted yet
    plan = up([pod("a")], [lingering])
    assert plan.new == {"small": ["small-1"]}


def spread(p: core_pb2.Pod) -> core_pb2.Pod:
    """``p`` labelled app=web, with a required anti-affinity to app=web pods per hostname."""
    p.metadata.labels["app"] = "web"
    term = (
        p.spec.affinity.pod_anti_affinity.required_during_scheduling_ignored_during_execution.add(
            topology_key="kubernetes.io/hostname"
        )
    )
    term.label_selector.match_labels["app"] = "web"
    return p


def test_required_anti_affinity_spreads_pods_over_new_nodes() -> None:
    running = spread(pod("old", "100m", node="w1"))
    pending = [spread(pod("a", "500m")), spread(pod("b", "500m"))]
    infos = node_infos([worker("2")], [running, *pending])
    plan = plan_scale_up([pod_info(p) for p in pending], infos, (SMALL,), {})
    assert plan.new == {"small": ["small-0", "small-1"]}  # not w1, nor both on one node
    assert plan.triggered == {"default/a": "small", "default/b": "small"}


def test_only_pods_the_scheduler_marked_unschedulable_count() -> None:
    fresh = pod("fresh")
    del fresh.status.conditions[:]
    assert unschedulable(pod("a")) and not unschedulable(fresh)
    assert not unschedulable(pod("bound", node="w1"))
    gone = pod("gone")
    gone.metadata.deletion_timestamp.seconds = 1
    assert not unschedulable(gone)


# ---- scale-down ----------------------------------------------------------------------------------


def down(
    nodes: list[core_pb2.Node],
    pods: list[core_pb2.Pod],
    wanted: dict[str, list[str]],
    since: dict[str, float],
    now: float,
    pools: tuple[NodePool, ...] = (SMALL,),
) -> ScaleDown:
    by_node: dict[str, list[core_pb2.Pod]] = {}
    for p in pods:
        by_node.setdefault(p.spec.node_name, []).append(p)
    return plan_scale_down(node_infos(nodes, pods), by_node, pools, wanted, since, now)


POOL = NodePool(
    name="small",
    max_nodes=2,
    min_nodes=0,
    scale_down_utilization=0.5,
    scale_down_unneeded_time=10.0,
    capacity=(("cpu", "2"), ("memory", "4Gi"), ("pods", "10")),
)


def test_an_underused_node_is_removed_only_after_its_unneeded_time() -> None:
    nodes = [node(POOL, 0), worker("2")]
    pods = [pod("a", "500m", node="small-0")]  # 25% of small-0; fits on w1
    wanted = {"small": ["small-0"]}
    first = down(nodes, pods, wanted, {}, 100.0, (POOL,))
    assert first.unneeded == {"small-0": 100.0} and first.remove is None
    later = down(nodes, pods, wanted, first.unneeded, 109.9, (POOL,))
    assert later.remove is None
    due = down(nodes, pods, wanted, later.unneeded, 110.0, (POOL,))
    assert due.remove == ("small", "small-0")


def test_nodes_that_are_busy_hold_unreplicated_pods_or_whose_pods_fit_nowhere_stay() -> None:
    nodes = [node(POOL, 0), node(POOL, 1), worker("250m")]
    pods = [
        pod("busy", "1500m", node="small-0"),  # 75%
        pod("bare", "100m", node="small-1", owner=""),
    ]
    plan = down(nodes, pods, {"small": ["small-0", "small-1"]}, {}, 0.0, (POOL,))
    assert plan.unneeded == {}
    assert plan.blocked["small-0"].startswith("utilization 0.75")
    assert plan.blocked["small-1"] == "pod default/bare is not replicated"
    stuck = down(
        [node(POOL, 0), worker("250m")],
        [pod("x", "900m", node="small-0")],
        {"small": ["small-0"]},
        {},
        0.0,
        (POOL,),
    )
    assert stuck.blocked == {"small-0": "its pods fit on no other node"}


def test_daemonset_pods_go_with_their_node_and_budgets_hold_a_drain_back() -> None:
    nodes = [node(POOL, 0), worker("2")]
    daemon = pod("agent", "100m", node="small-0", owner="DaemonSet")
    web = pod("web-1", "100m", node="small-0")
    web.metadata.labels["app"] = "web"
    wanted = {"small": ["small-0"]}
    plan = down(nodes, [daemon, web], wanted, {}, 0.0, (POOL,))
    assert plan.unneeded == {"small-0": 0.0}  # the agent neither blocks nor must move
    assert not unschedulable(pod("agent-2", owner="DaemonSet"))  # never a reason to scale up

    def budget(allowed: int) -> Budget:
        return Budget("web", "default", LabelSelector.from_match({"app": "web"}, []), allowed)

    by_node = {"small-0": [daemon, web]}
    infos = node_infos(nodes, [daemon, web])
    held = plan_scale_down(infos, by_node, (POOL,), wanted, {}, 0.0, [budget(0)])
    assert held.blocked == {
        "small-0": "PodDisruptionBudget default/web allows 0 disruptions, 1 of its pods are here"
    }
    free = plan_scale_down(infos, by_node, (POOL,), wanted, {}, 0.0, [budget(1)])
    assert free.unneeded == {"small-0": 0.0}


def test_never_below_min_nodes_and_the_longest_unneeded_goes_first() -> None:
    pool = NodePool(
        name="small", min_nodes=1, max_nodes=3, scale_down_unneeded_time=0.0,
        capacity=SMALL.capacity,
    )  # fmt: skip
    nodes = [node(pool, 0), node(pool, 1)]
    wanted = {"small": ["small-0", "small-1"]}
    plan = down(nodes, [], wanted, {"small-0": 5.0, "small-1": 1.0}, 10.0, (pool,))
    assert plan.remove == ("small", "small-1")
    last = down(nodes[:1], [], {"small": ["small-0"]}, {}, 10.0, (pool,))
    assert last.unneeded == {"small-0": 10.0} and last.remove is None


# ---- the flag and the ConfigMap ----------------------------------------------------------------


def test_pools_flag_round_trips_and_bad_pools_are_errors_naming_the_field() -> None:
    text = json.dumps(
        [{"name": "p", "minNodes": 1, "maxNodes": 3, "initialNodes": 1, "hollow": True,
          "scaleDownUtilization": 0.4, "scaleDownUnneededTime": "30s",
          "capacity": {"cpu": "2"}, "labels": {"a": "b"},
          "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}]
    )  # fmt: skip
    (p,) = parse_node_pools(text)
    assert (p.min_nodes, p.max_nodes, p.scale_down_unneeded_time) == (1, 3, 30.0)
    assert p.taints == (("k", "v", "NoSchedule"),) and p.slots == ("p-0", "p-1", "p-2")
    assert parse_node_pools("") == ()
    bad = {
        "[1]": r"--node-pools\[0\]: expected an object",
        '[{"name": "p", "minNodes": 3, "maxNodes": 2}]': r"\[0\]\.minNodes: must be 0-2",
        '[{"name": "p", "maxNodes": 0}]': r"\[0\]\.maxNodes: must be 1-100",
        '[{"name": "p", "maxNodes": 1, "initialNodes": 2}]': r"\[0\]\.initialNodes",
        '[{"name": "p", "maxNodes": 1, "capacity": {"cpu": "lots"}}]': r"capacity\.cpu",
        '[{"name": "p", "maxNodes": 1, "taints": [{"key": "k", "effect": "Nope"}]}]': "effect",
        '[{"name": "p", "maxNodes": 1}, {"name": "p", "maxNodes": 1}]': "given twice",
        "{": "not JSON",
    }
    for flag, message in bad.items():
        with pytest.raises(ValueError, match=message):
            parse_node_pools(flag)


def test_slot_names_are_exact() -> None:
    assert slot_index(SMALL, "small-1") == 1
    for name in ("small-2", "small-01", "small-", "smaller-0", "small-x", "w1"):
        assert slot_index(SMALL, name) is None


def test_node_groups_decode_whatever_the_configmap_holds() -> None:
    text = targets.encode({"small": (0, 2, ["small-0"])})
    assert json.loads(text)["small"]["targetSize"] == 1
    assert targets.decode(text) == {"small": frozenset({"small-0"})}
    for junk in ("", "[]", "{", '{"a": 1}', '{"a": {"nodes": [1]}}', "[" * 10_000):
        assert targets.decode(junk) == {}
