"""The filter and score plugins, pure: a PodInfo and a NodeInfo in, a reason or a score out."""

from __future__ import annotations

import random

import pytest

from k8semu.pb.api.v1 import core_pb2
from k8semu.scheduler import algorithm, plugins
from k8semu.scheduler.framework import NodeInfo, PodSpecError, pod_info
from k8semu.scheduler.plugins import AntiAffinityState, prefilter_anti_affinity, run_filters
from k8semu.scheduler.spread import score_spread
from tests.scheduler.helpers import (
    anti_affinity,
    node,
    pod,
    preferred_node_affinity,
    required_node_affinity,
)


def info(n: core_pb2.Node, *pods: core_pb2.Pod) -> NodeInfo:
    ni = NodeInfo(n.metadata.name, n)
    for p in pods:
        ni.add_pod(pod_info(p))
    return ni


def test_pod_info_requests_sum_containers_and_take_the_max_init_container() -> None:
    p = pod("a", cpu="500m", memory="1Gi")
    p.spec.containers.add(name="b").resources.requests.update({"cpu": "250m"})
    p.spec.init_containers.add(name="i").resources.requests.update({"cpu": "2", "memory": "1Mi"})
    pi = pod_info(p)
    assert (pi.milli_cpu, pi.memory) == (2000, 1024**3)
    # Scoring's non-zero defaults: container "b" requests no memory -> 200Mi counted for it.
    assert pi.nonzero_memory == 1024**3 + 200 * 1024**2


def test_pod_info_names_the_field_of_a_bad_quantity() -> None:
    p = pod("a", cpu="12Qi")
    with pytest.raises(PodSpecError, match=r"pod default/a: spec.containers\[0\].*cpu.*12Qi"):
        pod_info(p)


def test_pod_info_names_a_bad_node_affinity_operator() -> None:
    p = required_node_affinity(pod("a"), [("zone", "Near", ["a"])])
    with pytest.raises(
        PodSpecError, match=r"nodeSelectorTerms\[0\].matchExpressions\[0\].operator"
    ):
        pod_info(p)


def test_ready_and_unschedulable() -> None:
    p = pod_info(pod("a"))
    assert run_filters(p, info(node("n", ready=False)), plugins.NO_ANTI_AFFINITY) == [
        "node(s) were not ready"
    ]
    assert run_filters(p, info(node("n", unschedulable=True)), plugins.NO_ANTI_AFFINITY) == [
        "node(s) were unschedulable"
    ]
    tolerant = pod("b", tolerations=[core_pb2.Toleration(key="node.kubernetes.io/unschedulable",
                                                          operator="Exists")])  # fmt: skip
    assert (
        plugins.filter_node_unschedulable(pod_info(tolerant), info(node("n", unschedulable=True)))
        is None
    )
    assert run_filters(p, info(node("n")), plugins.NO_ANTI_AFFINITY) == []


def test_resources_count_pods_already_on_the_node() -> None:
    n = node("n", cpu="1", memory="1Gi", pods="3")
    full = info(n, pod("x", cpu="700m", node_name="n"), pod("y", memory="900Mi", node_name="n"))
    assert plugins.insufficient_resources(pod_info(pod("a", cpu="300m")), full) == []
    assert plugins.insufficient_resources(pod_info(pod("a", cpu="301m")), full) == [
        "Insufficient cpu"
    ]
    assert plugins.insufficient_resources(pod_info(pod("a", cpu="2", memory="200Mi")), full) == [
        "Insufficient cpu",
        "Insufficient memory",
    ]
    full.add_pod(pod_info(pod("z", node_name="n")))
    assert plugins.insufficient_resources(pod_info(pod("a")), full) == ["Too many pods"]
    full.remove_pod("default/z")
    full.remove_pod("default/x")
    assert plugins.insufficient_resources(pod_info(pod("a", cpu="1")), full) == []


def test_node_selector() -> None:
    n = info(node("n", labels={"disk": "ssd"}))
    assert (
        plugins.filter_node_affinity(pod_info(pod("a", node_selector={"disk": "ssd"})), n) is None
    )
    assert (
        plugins.filter_node_affinity(pod_info(pod("a", node_selector={"disk": "hdd"})), n)
        == "node(s) didn't match Pod's node affinity/selector"
    )


@pytest.mark.parametrize(
    ("expr", "fits"),
    [
        (("zone", "In", ["a", "b"]), True),
        (("zone", "In", ["c"]), False),
        (("zone", "NotIn", ["c"]), True),
        (("zone", "NotIn", ["a"]), False),
        (("missing", "NotIn", ["a"]), True),
        (("zone", "Exists", []), True),
        (("missing", "Exists", []), False),
        (("missing", "DoesNotExist", []), True),
        (("zone", "DoesNotExist", []), False),
        (("cores", "Gt", ["8"]), True),
        (("cores", "Gt", ["16"]), False),
        (("cores", "Lt", ["17"]), True),
        (("cores", "Lt", ["16"]), False),
        (("zone", "Gt", ["1"]), False),  # not an integer label
    ],
)
def test_required_node_affinity_operators(expr: tuple[str, str, list[str]], fits: bool) -> None:
    n = info(node("n", labels={"zone": "a", "cores": "16"}))
    p = pod_info(required_node_affinity(pod("a"), [expr]))
    assert (plugins.filter_node_affinity(p, n) is None) is fits


def test_required_node_affinity_terms_are_ored_and_expressions_anded() -> None:
    n = info(node("n", labels={"zone": "a", "disk": "hdd"}))
    both = [("zone", "In", ["a"]), ("disk", "In", ["ssd"])]
    assert plugins.filter_node_affinity(pod_info(required_node_affinity(pod("a"), both)), n)
    either = required_node_affinity(pod("a"), [("disk", "In", ["ssd"])], [("zone", "In", ["a"])])
    assert plugins.filter_node_affinity(pod_info(either), n) is None
    fields = pod("f")
    term = fields.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    term.node_selector_terms.add().match_fields.add(
        key="metadata.name", operator="In", values=["n"]
    )
    assert plugins.filter_node_affinity(pod_info(fields), n) is None
    assert plugins.filter_node_affinity(pod_info(fields), info(node("m")))


def test_taints_and_tolerations() -> None:
    n = info(node("n", taints=[("dedicated", "gpu", "NoSchedule")]))
    assert plugins.filter_taints(pod_info(pod("a")), n) == (
        "node(s) had untolerated taint {dedicated: gpu}"
    )
    equal = core_pb2.Toleration(key="dedicated", operator="Equal", value="gpu", effect="NoSchedule")
    assert plugins.filter_taints(pod_info(pod("a", tolerations=[equal])), n) is None
    wrong_value = core_pb2.Toleration(key="dedicated", value="cpu")
    assert plugins.filter_taints(pod_info(pod("a", tolerations=[wrong_value])), n)
    exists_any = core_pb2.Toleration(operator="Exists")
    assert plugins.filter_taints(pod_info(pod("a", tolerations=[exists_any])), n) is None
    no_execute = info(node("m", taints=[("k", "v", "NoExecute")]))
    only_noschedule = core_pb2.Toleration(key="k", operator="Exists", effect="NoSchedule")
    assert plugins.filter_taints(pod_info(pod("a", tolerations=[only_noschedule])), no_execute)
    prefer = info(node("p", taints=[("k", "v", "PreferNoSchedule")]))
    assert plugins.filter_taints(pod_info(pod("a")), prefer) is None
    assert plugins.score_taint_count(pod_info(pod("a")), prefer) == 1
    tolerate = core_pb2.Toleration(key="k", operator="Exists", effect="PreferNoSchedule")
    assert plugins.score_taint_count(pod_info(pod("a", tolerations=[tolerate])), prefer) == 0


def test_host_ports() -> None:
    n = info(node("n"), pod("x", host_port=8080, node_name="n"))
    assert plugins.filter_host_ports(pod_info(pod("a", host_port=8080)), n) == (
        "node(s) didn't have free ports for the requested pod ports"
    )
    assert plugins.filter_host_ports(pod_info(pod("a", host_port=8081)), n) is None
    udp = pod("u", host_port=8080)
    udp.spec.containers[0].ports[0].protocol = "UDP"
    assert plugins.filter_host_ports(pod_info(udp), n) is None
    on_ip = pod("i", host_port=9000)
    on_ip.spec.containers[0].ports[0].host_ip = "127.0.1.1"
    m = info(node("m"), on_ip)
    other_ip = pod("j", host_port=9000)
    other_ip.spec.containers[0].ports[0].host_ip = "127.0.1.2"
    assert plugins.filter_host_ports(pod_info(other_ip), m) is None
    assert plugins.filter_host_ports(pod_info(pod("k", host_port=9000)), m)  # 0.0.0.0 clashes


def test_pod_anti_affinity_on_hostname_and_zone() -> None:
    a = info(node("a", labels={"zone": "z1"}), pod("web-1", labels={"app": "web"}, node_name="a"))
    b = info(node("b", labels={"zone": "z1"}))
    c = info(node("c", labels={"zone": "z2"}))
    nodes = {"a": a, "b": b, "c": c}
    by_host = pod_info(anti_affinity(pod("web-2", labels={"app": "web"}), {"app": "web"},
                                     "kubernetes.io/hostname"))  # fmt: skip
    state = prefilter_anti_affinity(by_host, nodes)
    assert plugins.filter_anti_affinity(by_host, a, state) == (
        "node(s) didn't match pod anti-affinity rules"
    )
    assert plugins.filter_anti_affinity(by_host, b, state) is None
    by_zone = pod_info(anti_affinity(pod("web-3"), {"app": "web"}, "zone"))
    state = prefilter_anti_affinity(by_zone, nodes)
    assert [plugins.filter_anti_affinity(by_zone, n, state) is None for n in (a, b, c)] == [
        False,
        False,
        True,
    ]
    other_ns = pod_info(anti_affinity(pod("x", namespace="other"), {"app": "web"}, "zone"))
    assert prefilter_anti_affinity(other_ns, nodes) == AntiAffinityState()


def test_existing_pods_anti_affinity_is_symmetric() -> None:
    loner = anti_affinity(pod("loner", node_name="a"), {"app": "web"}, "kubernetes.io/hostname")
    a = info(node("a"), loner)
    b = info(node("b"))
    web = pod_info(pod("web", labels={"app": "web"}))
    state = prefilter_anti_affinity(web, {"a": a, "b": b}, ["a"])
    assert plugins.filter_anti_affinity(web, a, state) == (
        "node(s) didn't satisfy existing pods anti-affinity rules"
    )
    assert plugins.filter_anti_affinity(web, b, state) is None
    db = pod_info(pod("db", labels={"app": "db"}))
    assert prefilter_anti_affinity(db, {"a": a, "b": b}, ["a"]).empty


def test_least_allocated_and_balanced() -> None:
    p = pod_info(pod("a", cpu="1", memory="1Gi"))
    empty = info(node("e", cpu="4", memory="4Gi"))
    busy = info(node("b", cpu="4", memory="4Gi"), pod("x", cpu="2", memory="2Gi", node_name="b"))
    assert plugins.score_least_allocated(p, empty) == 75.0
    assert plugins.score_least_allocated(p, busy) == 25.0
    assert plugins.score_balanced_allocation(p, empty) == 100.0
    skewed = info(node("s", cpu="4", memory="4Gi"), pod("y", cpu="2", memory="1Mi", node_name="s"))
    assert plugins.score_balanced_allocation(p, skewed) < 100.0


def test_spread_and_node_affinity_scores() -> None:
    p = pod_info(pod("a", owner_uid="rs-1"))
    one = info(node("one"), pod("x", owner_uid="rs-1", node_name="one"))
    none = info(node("none"))
    # The default spreading (hostname maxSkew 3): fewer siblings scores higher.
    both = {"one": one, "none": none}
    scores = score_spread(p, [one, none], both, ["one", "none"], plugins.NODE_CHECKS)
    assert scores is not None and scores[0] < scores[1] == 100.0
    empty = score_spread(p, [none], both, ["one", "none"], plugins.NODE_CHECKS)
    assert empty == [100.0]
    pref = pod_info(preferred_node_affinity(pod("b"), 30, [("zone", "In", ["z1"])]))
    z1, z2 = info(node("z1", labels={"zone": "z1"})), info(node("z2", labels={"zone": "z2"}))
    assert [plugins.score_node_affinity(pref, n) for n in (z1, z2)] == [30, 0]
    assert plugins.normalize_max([30, 0]) == [100.0, 0.0]


@pytest.mark.parametrize(
    ("nodes", "percentage", "want"),
    [
        (50, 0, 50),
        (99, 0, 99),
        (100, 0, 100),  # 48% of 100 is 48, raised to the minimum of 100
        (1000, 0, 420),  # 50 - 1000/125 = 42%
        (5000, 0, 500),  # 50 - 40 = 10%
        (10000, 0, 500),  # max(5, 50 - 80) = 5%
        (1000, 20, 200),
        (1000, 5, 100),
        (1000, 100, 1000),
    ],
)
def test_num_feasible_nodes_to_find(nodes: int, percentage: int, want: int) -> None:
    assert plugins.num_feasible_nodes_to_find(nodes, percentage) == want


def test_fit_error_message_is_kubernetes_text() -> None:
    text = plugins.fit_error_message(
        3, {"Insufficient cpu": 2, "node(s) had untolerated taint {key: value}": 1}
    )
    assert text == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {key: value}, 2 Insufficient cpu."
    )
    assert plugins.fit_error_message(0, {}) == "0/0 nodes are available."


def _random_cluster(rng: random.Random, count: int) -> list[NodeInfo]:
    infos = []
    for i in range(count):
        taints = [("k", "v", rng.choice(["NoSchedule", "PreferNoSchedule"]))] * rng.randint(0, 1)
        n = node(
            f"n{i}",
            cpu=str(rng.randint(0, 4)),
            memory=f"{rng.randint(0, 4)}Gi",
            pods=str(rng.randint(0, 3)),
            ready=rng.random() > 0.1,
            unschedulable=rng.random() < 0.1,
            taints=taints,
            labels={"zone": rng.choice("ab")},
        )
        ni = NodeInfo(n.metadata.name, n)
        for j in range(rng.randint(0, 3)):
            ni.add_pod(pod_info(pod(f"x{i}-{j}", cpu=f"{rng.randint(0, 2000)}m",
                                    memory=f"{rng.randint(0, 2048)}Mi", node_name=n.metadata.name,
                                    owner_uid=rng.choice(["", "rs"]))))  # fmt: skip
        infos.append(ni)
    return infos


def test_the_scheduler_hot_paths_agree_with_the_plugins() -> None:
    """algorithm.schedule's inline resource check and plugins.score_resources are shortcuts;
    on random clusters they must decide and score exactly as the plugin functions do."""
    rng = random.Random(4)
    for round_ in range(200):
        infos = _random_cluster(rng, 12)
        p = pod_info(
            pod(
                f"p{round_}",
                cpu=rng.choice([None, "0", "500m", "2"]),
                memory=rng.choice([None, "100Mi", "3Gi"]),
                node_selector=rng.choice([None, {"zone": "a"}]),
                owner_uid="rs",
            )
        )
        nodes = {n.name: n for n in infos}
        feasible = [n for n in infos if not run_filters(p, n, plugins.NO_ANTI_AFFINITY)]
        decision = algorithm.schedule(p, nodes, list(nodes), rng=random.Random(1))
        assert decision.feasible == len(feasible)
        reasons = plugins.count_reasons(run_filters(p, n, plugins.NO_ANTI_AFFINITY) for n in infos)
        if not feasible:
            assert decision.reasons == reasons
        reference = [
            plugins.WEIGHT_LEAST_ALLOCATED * plugins.score_least_allocated(p, n)
            + plugins.WEIGHT_BALANCED * plugins.score_balanced_allocation(p, n)
            for n in feasible
        ]
        assert plugins.score_resources(p, feasible) == reference


def test_a_node_with_an_unreadable_allocatable_fits_nothing_that_needs_it() -> None:
    n = node("n")
    n.status.allocatable["cpu"] = "four"
    ni = NodeInfo("n", n)
    assert ni.alloc_cpu == 0 and ni.alloc_memory == 8 * 1024**3
    assert "status.allocatable[cpu]" in ni.problems[0]
    assert plugins.insufficient_resources(pod_info(pod("a", cpu="1")), ni) == ["Insufficient cpu"]
    assert plugins.insufficient_resources(pod_info(pod("b")), ni) == []
