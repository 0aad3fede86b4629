"""The scheduler's inter-pod affinity, topology spread and preemption plugins over a real
SchedulerCache: the Kubernetes docs' examples, placed one decision at a time."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence

from k8semu.pb.api.v1 import core_pb2
from k8semu.scheduler import algorithm, plugins, preemption
from k8semu.scheduler import spread as spread_mod
from k8semu.scheduler.cache import SchedulerCache
from k8semu.scheduler.framework import PodInfo, PodSelector, pod_info
from k8semu.scheduler.queue import SchedulingQueue
from tests.scheduler.helpers import anti_affinity, node, pod

HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def cluster(*nodes: core_pb2.Node) -> SchedulerCache:
    cache = SchedulerCache()
    for n in nodes:
        cache.add_node(n)
    return cache


def decide(cache: SchedulerCache, p: core_pb2.Pod, **kw: object) -> algorithm.Decision:
    """As the scheduler decides: with the cache's per-domain tables (test_topology.py checks
    they decide as the passes over every node and pod)."""
    kw.setdefault("topology", cache.topology)
    return algorithm.schedule(
        pod_info(p, cache.namespace_labels),
        cache.nodes,
        cache.order,
        nodes_with_affinity=cache.affinity_nodes,
        rng=random.Random(1),
        **kw,  # type: ignore[arg-type]
    )


def place(cache: SchedulerCache, p: core_pb2.Pod) -> str:
    """Decide and bind (in the cache): the node's name, or "" when none fits."""
    d = decide(cache, p)
    if d.node:
        p.spec.node_name = d.node
        cache.add_pod(p)
    return d.node


def affinity(
    p: core_pb2.Pod, labels: Mapping[str, str], key: str, *, weight: int = 0, anti: bool = False
) -> core_pb2.Pod:
    group = p.spec.affinity.pod_anti_affinity if anti else p.spec.affinity.pod_affinity
    if weight:
        w = group.preferred_during_scheduling_ignored_during_execution.add(weight=weight)
        term = w.pod_affinity_term
    else:
        term = group.required_during_scheduling_ignored_during_execution.add()
    term.label_selector.match_labels.update(labels)
    term.topology_key = key
    return p


def anti_terms(p: core_pb2.Pod) -> list[core_pb2.PodAffinityTerm]:
    return list(
        p.spec.affinity.pod_anti_affinity.required_during_scheduling_ignored_during_execution
    )


def spread(
    p: core_pb2.Pod,
    labels: Mapping[str, str],
    key: str,
    *,
    skew: int = 1,
    when: str = "DoNotSchedule",
    min_domains: int = 0,
) -> core_pb2.Pod:
    c = p.spec.topology_spread_constraints.add(max_skew=skew, topology_key=key)
    c.when_unsatisfiable = when
    c.label_selector.match_labels.update(labels)
    if min_domains:
        c.min_domains = min_domains
    return p


def zones(spec: Sequence[tuple[str, str]], cpu: str = "4") -> list[core_pb2.Node]:
    return [node(name, cpu=cpu, labels={ZONE: zone}) for name, zone in spec]


# ---- inter-pod affinity ---------------------------------------------------------------------


def test_the_docs_web_store_with_its_cache() -> None:
    """redis-cache: anti-affinity to itself per host; web-store: anti-affinity to itself
    and affinity to the cache per host. Three of each on three nodes: one pair per node."""
    cache = cluster(*(node(f"node-{i}") for i in range(1, 4)))
    caches = []
    for i in range(3):
        p = pod(f"cache-{i}", labels={"app": "store"})
        caches.append(place(cache, affinity(p, {"app": "store"}, HOST, anti=True)))
    assert sorted(caches) == ["node-1", "node-2", "node-3"]
    webs = []
    for i in range(3):
        p = affinity(pod(f"web-{i}", labels={"app": "web-store"}), {"app": "web-store"}, HOST,
                     anti=True)  # fmt: skip
        webs.append(place(cache, affinity(p, {"app": "store"}, HOST)))
    assert sorted(webs) == ["node-1", "node-2", "node-3"]
    # A fourth cache fits nowhere, for its own anti-affinity.
    extra = affinity(pod("cache-3", labels={"app": "store"}), {"app": "store"}, HOST, anti=True)
    d = decide(cache, extra)
    assert d.node == ""
    assert d.message == "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."


def test_required_affinity_needs_a_matching_pod_or_matches_itself_first() -> None:
    cache = cluster(node("a", labels={ZONE: "z1"}), node("b", labels={ZONE: "z2"}), node("c"))
    lonely = affinity(pod("x", labels={"app": "x"}), {"app": "db"}, ZONE)
    d = decide(cache, lonely)
    assert d.message == "0/3 nodes are available: 3 node(s) didn't match pod affinity rules."
    # The first of a group that wants to be together goes anywhere with the topology label.
    first = affinity(pod("db-0", labels={"app": "db"}), {"app": "db"}, ZONE)
    assert place(cache, first) in ("a", "b")
    zone = cache.nodes[first.spec.node_name].labels[ZONE]
    for i in range(3):
        p = affinity(pod(f"db-{i + 1}", labels={"app": "db"}), {"app": "db"}, ZONE)
        assert cache.nodes[place(cache, p)].labels[ZONE] == zone
    assert decide(cache, lonely).node == first.spec.node_name


def test_preferred_affinity_and_anti_affinity_score() -> None:
    cache = cluster(node("a"), node("b"), node("c"))
    place(cache, pod("db", labels={"app": "db"}, node_name="b"))
    cache.add_pod(pod("db", labels={"app": "db"}, node_name="b"))
    near = affinity(pod("near"), {"app": "db"}, HOST, weight=100)
    assert decide(cache, near).node == "b"
    far = affinity(pod("far"), {"app": "db"}, HOST, weight=100, anti=True)
    assert decide(cache, far).node in ("a", "c")


def test_namespace_selector_widens_the_terms() -> None:
    cache = cluster(node("a"), node("b"))
    cache.namespace_labels.update({"default": {}, "team": {"team": "x"}})
    cache.add_pod(pod("db", namespace="team", labels={"app": "db"}, node_name="a"))
    own_ns = affinity(pod("p"), {"app": "db"}, HOST, anti=True)
    assert decide(cache, own_ns).feasible == 2  # the term looks in "default" only
    by_sel = affinity(pod("q"), {"app": "db"}, HOST, anti=True)
    (term,) = anti_terms(by_sel)
    term.namespace_selector.match_labels["team"] = "x"
    assert decide(cache, by_sel).node == "b"
    everywhere = affinity(pod("r"), {"app": "db"}, HOST, anti=True)
    (every,) = anti_terms(everywhere)
    every.namespace_selector.SetInParent()  # {}: every namespace
    assert decide(cache, everywhere).node == "b"


# ---- topology spread ------------------------------------------------------------------------


def test_zone_spread_with_max_skew_1() -> None:
    """The docs' example: two pods in zoneA, one in zoneB; a third for zoneA would make the
    skew 2, so the new pod goes to zoneB."""
    cache = cluster(*zones([("n1", "A"), ("n2", "A"), ("n3", "B"), ("n4", "B")]))
    for name, where in (("p1", "n1"), ("p2", "n2"), ("p3", "n3")):
        cache.add_pod(pod(name, labels={"foo": "bar"}, node_name=where))
    p = spread(pod("new", labels={"foo": "bar"}), {"foo": "bar"}, ZONE)
    assert decide(cache, p).node in ("n3", "n4")
    cache.add_pod(pod("p4", labels={"foo": "bar"}, node_name="n4"))
    # 2 and 2: either zone.
    assert decide(cache, p).feasible == 4
    # Eight more, one at a time, never more than one apart.
    for i in range(8):
        assert place(cache, spread(pod(f"q{i}", labels={"foo": "bar"}), {"foo": "bar"}, ZONE))
    per_zone = Counter(cache.nodes[n].labels[ZONE] for n, pi in cache.pods() if pi.labels)
    assert per_zone == {"A": 6, "B": 6}


def test_min_domains_and_a_missing_label() -> None:
    cache = cluster(*zones([("n1", "A"), ("n2", "B")]), node("bare"))
    cache.add_pod(pod("a", labels={"app": "x"}, node_name="n1"))
    cache.add_pod(pod("b", labels={"app": "x"}, node_name="n2"))
    p = spread(pod("c", labels={"app": "x"}), {"app": "x"}, ZONE, min_domains=3)
    d = decide(cache, p)
    assert d.node == ""
    assert d.message == (
        "0/3 nodes are available: 1 node(s) didn't match pod topology spread constraints"
        " (missing required label), 2 node(s) didn't match pod topology spread constraints."
    )
    cache.add_node(node("n3", labels={ZONE: "C"}))
    assert decide(cache, p).node == "n3"
    # Without minDomains the two zones are balanced and either takes it.
    loose = spread(pod("d", labels={"app": "x"}), {"app": "x"}, ZONE)
    assert decide(cache, loose).node == "n3"  # C holds 0, the least: skew 1 there only
    cache.add_pod(pod("e", labels={"app": "x"}, node_name="n3"))
    assert decide(cache, loose).feasible == 3


def test_schedule_anyway_prefers_the_emptier_zone_but_never_refuses() -> None:
    cache = cluster(*zones([("n1", "A"), ("n2", "B")], cpu="1"))
    for i in range(3):
        cache.add_pod(pod(f"a{i}", labels={"app": "x"}, node_name="n1"))
    soft = spread(pod("s", labels={"app": "x"}), {"app": "x"}, ZONE, when="ScheduleAnyway")
    assert decide(cache, soft).node == "n2"
    hard_full = spread(
        pod("h", labels={"app": "x"}, cpu="1"), {"app": "x"}, ZONE, when="ScheduleAnyway"
    )
    cache.add_pod(pod("hog", cpu="1", node_name="n2"))
    assert decide(cache, hard_full).node == "n1"  # n2 is full: soft constraints yield


def test_default_spreading_of_a_replica_set_over_zones() -> None:
    """No constraints of its own: the system defaults spread a ReplicaSet's pods over zones
    (maxSkew 5 soft) and hosts."""
    cache = cluster(*zones([("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B")]))
    for i in range(8):
        assert place(cache, pod(f"rs-{i}", owner_uid="rs-1"))
    per_zone = Counter(cache.nodes[n].labels[ZONE] for n, _ in cache.pods())
    assert per_zone["B"] >= 3, per_zone  # b1 alone holds its zone's share
    assert pod_info(pod("x", owner_uid="rs")).spread[0].system_default
    assert pod_info(pod("y")).spread == ()


# ---- priority and preemption ----------------------------------------------------------------


def prioritized(p: core_pb2.Pod, priority: int) -> core_pb2.Pod:
    p.spec.priority = priority
    return p


def test_the_active_queue_pops_higher_priority_first() -> None:
    q = SchedulingQueue(clock=lambda: 0.0)
    q.add(prioritized(pod("low"), 0))
    q.add(prioritized(pod("high"), 100))
    q.add(prioritized(pod("mid"), 10))
    q.add(prioritized(pod("high-2"), 100))
    order = [q._active[k].key for _, _, _, k in sorted(q._active_heap)]
    assert order == ["default/high", "default/high-2", "default/mid", "default/low"]


def victims_of(outcome: preemption.Outcome) -> list[str]:
    assert outcome.candidate is not None, outcome.why
    return sorted(v.name for v in outcome.candidate.victims)


def test_preemption_takes_the_fewest_lowest_victims() -> None:
    cache = cluster(node("a", cpu="2"), node("b", cpu="2"))
    cache.add_pod(prioritized(pod("a-low", cpu="1", node_name="a"), 1))
    cache.add_pod(prioritized(pod("a-mid", cpu="1", node_name="a"), 5))
    cache.add_pod(prioritized(pod("b-mid", cpu="1", node_name="b"), 5))
    cache.add_pod(prioritized(pod("b-top", cpu="1", node_name="b"), 50))
    high = pod_info(prioritized(pod("high", cpu="1"), 10))
    assert decide(cache, prioritized(pod("high", cpu="1"), 10)).node == ""
    out = preemption.select(high, cache.nodes, cache.order)
    assert out.candidate is not None and out.candidate.node == "a"
    assert victims_of(out) == ["a-low"]  # a-mid is reprieved: one victim is enough
    bigger = pod_info(prioritized(pod("big", cpu="2"), 10))
    assert victims_of(preemption.select(bigger, cache.nodes, cache.order)) == ["a-low", "a-mid"]
    # Nothing of lower priority than 1: nothing to take.
    assert preemption.select(pod_info(prioritized(pod("p", cpu="1"), 1)), cache.nodes,
                             cache.order).candidate is None  # fmt: skip


def test_preemption_spares_budgeted_pods_when_another_node_works() -> None:
    cache = cluster(node("a", cpu="1"), node("b", cpu="1"))
    cache.add_pod(prioritized(pod("guarded", cpu="1", labels={"app": "db"}, node_name="a"), 0))
    cache.add_pod(prioritized(pod("free", cpu="1", labels={"app": "web"}, node_name="b"), 0))
    budget = preemption.Budget("default", PodSelector((("app", "db"),)), allowed=0)
    high = pod_info(prioritized(pod("high", cpu="1"), 100))
    out = preemption.select(high, cache.nodes, cache.order, budgets=[budget])
    assert out.candidate is not None and out.candidate.node == "b"
    assert out.candidate.violations == 0
    # With only the guarded node left, it is still taken (best effort), counted as a violation.
    cache.add_pod(prioritized(pod("top", cpu="1", node_name="b"), 1000))
    cache.remove_pod(pod("free", node_name="b"))
    out = preemption.select(high, cache.nodes, cache.order, budgets=[budget])
    assert out.candidate is not None and out.candidate.node == "a"
    assert out.candidate.violations == 1


def test_never_preempts_nor_twice_and_unresolvable_nodes_are_skipped() -> None:
    cache = cluster(node("a", cpu="1"), node("tainted", cpu="1", taints=[("k", "v", "NoSchedule")]))
    cache.add_pod(prioritized(pod("low", cpu="1", node_name="a"), 0))
    cache.add_pod(prioritized(pod("low-t", cpu="1", node_name="tainted"), 0))
    never = prioritized(pod("never", cpu="1"), 100)
    never.spec.preemption_policy = "Never"
    assert preemption.may_preempt(pod_info(never), "", cache.nodes) == "preemptionPolicy is Never"
    high = pod_info(prioritized(pod("high", cpu="1"), 100))
    out = preemption.select(high, cache.nodes, cache.order)
    assert out.candidate is not None and out.candidate.node == "a" and out.considered == 1
    going = prioritized(pod("low", cpu="1", node_name="a"), 0)
    going.metadata.deletion_timestamp.GetCurrentTime()
    cache.add_pod(going)
    assert preemption.may_preempt(high, "a", cache.nodes).startswith("waiting for victims")


def test_a_nominated_pod_keeps_its_room_from_lower_priorities() -> None:
    cache = cluster(node("a", cpu="1"))
    waiting: PodInfo = pod_info(prioritized(pod("high", cpu="1"), 100))
    low = prioritized(pod("low", cpu="1"), 0)
    assert decide(cache, low, nominated={"a": [waiting]}).node == ""
    assert decide(cache, low).node == "a"
    higher = prioritized(pod("higher", cpu="1"), 200)
    assert decide(cache, higher, nominated={"a": [waiting]}).node == "a"
    assert (
        decide(cache, prioritized(pod("high", cpu="1"), 100), nominated={"a": [waiting]}).node
        == "a"
    )


def test_pod_info_reads_priority_and_spread_fields() -> None:
    p = spread(prioritized(pod("p", labels={"app": "x", "rev": "2"}), 7), {"app": "x"}, ZONE,
               when="ScheduleAnyway")  # fmt: skip
    p.spec.topology_spread_constraints[0].match_label_keys.append("rev")
    p.spec.topology_spread_constraints[0].node_taints_policy = "Honor"
    info = pod_info(p)
    assert info.priority == 7 and not info.preempt_never
    (c,) = info.spread
    assert not c.hard and c.honor_taints and c.honor_node_affinity
    assert c.selector.matches({"app": "x", "rev": "2"})
    assert not c.selector.matches({"app": "x", "rev": "1"})
    old = anti_affinity(pod("o"), {"app": "x"}, HOST)
    assert pod_info(old).has_affinity_terms


def test_the_inline_spread_gate_agrees_with_the_filter() -> None:
    """The hot path's SpreadState.passes decides as filter_spread on random clusters."""
    rng = random.Random(7)
    for _ in range(30):
        nodes = [node(f"n{i}", labels={ZONE: f"z{rng.randrange(4)}"} if rng.random() < 0.9 else {})
                 for i in range(12)]  # fmt: skip
        cache = cluster(*nodes)
        for i in range(rng.randrange(20)):
            where = rng.choice(nodes).metadata.name
            cache.add_pod(pod(f"p{i}", labels={"app": rng.choice("xy")}, node_name=where))
        p = spread(pod("new", labels={"app": "x"}), {"app": "x"}, ZONE, skew=rng.randint(1, 2),
                   min_domains=rng.choice([0, 3, 5]))  # fmt: skip
        info = pod_info(p)
        state = spread_mod.prefilter_spread(info, cache.nodes, cache.order, plugins.NODE_CHECKS)
        for n in cache.nodes.values():
            assert state.passes(n.labels) == (spread_mod.filter_spread(n, state) is None)
