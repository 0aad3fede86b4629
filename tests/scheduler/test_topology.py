"""The cache's per-domain tables (k8semu/scheduler/topology.py) decide exactly as the passes
over every node and pod they replace: random clusters in zones, pods with zone and host
spread constraints, required and preferred (anti-)affinity, placed one at a time (so the
tables are kept incrementally), with pods removed, pods terminating and node labels
changing on the way; and the tables themselves equal a fresh count."""

from __future__ import annotations

import random

from k8semu.pb.api.v1 import core_pb2
from k8semu.scheduler import algorithm
from k8semu.scheduler.cache import SchedulerCache
from k8semu.scheduler.framework import pod_info
from k8semu.scheduler.topology import TopologyIndex
from tests.scheduler.helpers import node, pod
from tests.scheduler.test_rules import HOST, ZONE, affinity, spread


def constrained(rng: random.Random, name: str) -> core_pb2.Pod:
    app = rng.choice("xyz")
    p = pod(name, labels={"app": app}, cpu="100m", owner_uid=f"rs-{app}")
    if rng.random() < 0.7:
        spread(p, {"app": app}, ZONE, skew=rng.randint(1, 2), min_domains=rng.choice([0, 0, 5]))
    if rng.random() < 0.5:
        spread(p, {"app": app}, HOST, when="ScheduleAnyway")
    if rng.random() < 0.5:
        affinity(p, {"app": rng.choice("xyz")}, HOST, weight=rng.choice([10, 100]), anti=True)
    if rng.random() < 0.3:
        affinity(p, {"app": rng.choice("xyz")}, ZONE, weight=50)
    if rng.random() < 0.15:
        affinity(p, {"app": rng.choice("xyz")}, HOST, anti=True)
    if rng.random() < 0.1:
        affinity(p, {"app": app}, ZONE)
    return p


def zone_node(rng: random.Random, i: int) -> core_pb2.Node:
    labels = {ZONE: f"z{rng.randrange(5)}"} if rng.random() < 0.9 else {}
    return node(f"n{i:02d}", cpu="2", labels=labels)


def decide(cache: SchedulerCache, p: core_pb2.Pod, *, tables: bool) -> algorithm.Decision:
    return algorithm.schedule(
        pod_info(p, cache.namespace_labels),
        cache.nodes,
        cache.order,
        nodes_with_affinity=cache.affinity_nodes,
        label_keys=cache.label_keys,
        rng=random.Random(3),
        topology=cache.topology if tables else None,
    )


def assert_tables_fresh(cache: SchedulerCache) -> None:
    """Every table the cache keeps equals one built now from the nodes."""
    fresh = TopologyIndex(cache.nodes, cache.node_of)
    for (key, label), table in cache.topology._labels.items():
        assert fresh.domains(key, label) == table
    if cache.topology._terms is not None:
        for kind, terms in cache.topology._terms.items():
            assert fresh.terms(kind) == terms


def test_the_tables_decide_as_the_full_passes_on_random_clusters() -> None:
    rng = random.Random(17)
    for _ in range(12):
        nodes = [zone_node(rng, i) for i in range(16)]
        cache = SchedulerCache()
        for n in nodes:
            cache.add_node(n)
        placed: list[core_pb2.Pod] = []
        for step in range(40):
            p = constrained(rng, f"p{step}")
            with_tables = decide(cache, p, tables=True)
            assert with_tables == decide(cache, p, tables=False), step
            if with_tables.node:
                p.spec.node_name = with_tables.node
                cache.add_pod(p)
                placed.append(p)
            churn = rng.random()
            if churn < 0.1 and placed:
                cache.remove_pod(placed.pop(rng.randrange(len(placed))))
            elif churn < 0.15 and placed:
                going = placed[rng.randrange(len(placed))]
                going.metadata.deletion_timestamp.GetCurrentTime()
                cache.update_pod(going)
            elif churn < 0.2:
                n = rng.choice(nodes)
                n.metadata.labels[ZONE] = f"z{rng.randrange(5)}"
                cache.update_node(n)
            assert_tables_fresh(cache)


def test_a_status_update_of_a_node_keeps_the_tables() -> None:
    cache = SchedulerCache()
    n = node("a", labels={ZONE: "z1"})
    cache.add_node(n)
    table = cache.topology.domains(ZONE, ("default", "app", "x"))
    cache.add_pod(pod("p", labels={"app": "x"}, node_name="a"))
    assert cache.topology.domains(ZONE, ("default", "app", "x")) is table
    assert table.pods == {"z1": 1} and table.nodes == {"z1": 1}
    n.status.conditions[0].status = "False"
    cache.update_node(n)  # a heartbeat: same labels
    assert cache.topology.domains(ZONE, ("default", "app", "x")) is table
    n.metadata.labels[ZONE] = "z2"
    cache.update_node(n)
    moved = cache.topology.domains(ZONE, ("default", "app", "x"))
    assert moved is not table and moved.pods == {"z2": 1}
