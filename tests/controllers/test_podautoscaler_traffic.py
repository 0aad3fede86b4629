"""Requests per second from the proxies' counters: the rate computation as pure unit tests
(spans, counter resets, a restarted proxy, endpoints coming and going, the sum over
proxies), and `ProxyTraffic` over stub proxies (a proxy that does not answer is left out;
none answering, an unknown metric, a metric selector, an Object that is not a Service or
does not exist are MetricsUnavailable with a message for the HPA's conditions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from k8semu.api.selectors import LabelSelector
from k8semu.client import Client, NotFound
from k8semu.controllers.podautoscaler.metrics import MetricsUnavailable
from k8semu.controllers.podautoscaler.traffic import (
    EndpointKey,
    ProxyTraffic,
    Sample,
    TrafficHistory,
    rates_between,
)
from k8semu.pb.api.v1 import autoscaling_pb2 as pb
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.proxy.v1 import proxy_pb2
from k8semu.proxy import scrape

A = EndpointKey("default", "web", "http", "TCP", "", "127.244.1.1", 8080)
B = EndpointKey("default", "web", "http", "TCP", "", "127.244.1.2", 8080)


def sample(uptime: float, counters: dict[EndpointKey, int], instance: str = "i1") -> Sample:
    """Requests only (HTTP requests and connections the same)."""
    return Sample(instance, uptime, {k: (n, n, n) for k, n in counters.items()})


def requests(rates: dict[EndpointKey, tuple[float, float, float]]) -> dict[EndpointKey, float]:
    return {k: round(r[0], 6) for k, r in rates.items()}


def test_rate_is_the_counter_delta_over_the_proxy_uptime_span() -> None:
    old, new = sample(100, {A: 50, B: 0}), sample(110, {A: 150, B: 20})
    assert requests(rates_between(old, new)) == {A: 10.0, B: 2.0}


def test_a_counter_that_went_down_counts_from_zero() -> None:
    # The proxy forgot A (not ready, no connection) and listed it again: 30 since then.
    assert requests(rates_between(sample(0, {A: 500}), sample(10, {A: 30}))) == {A: 3.0}


def test_endpoints_appearing_count_from_zero_and_gone_ones_not_at_all() -> None:
    old, new = sample(0, {A: 100}), sample(5, {B: 25})
    assert requests(rates_between(old, new)) == {B: 5.0}


def test_samples_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError):
        rates_between(sample(10, {}), sample(10, {}))


def test_history_takes_the_rate_over_the_window() -> None:
    h = TrafficHistory(window=15, min_interval=1)
    h.add("node-1", sample(0, {A: 0}), taken=0)
    assert h.pair("node-1") is None  # one sample: no rate yet
    h.add("node-1", sample(0.4, {A: 5}), taken=0.4)
    assert h.pair("node-1") is None  # too short a span
    for t in range(1, 41):
        h.add("node-1", sample(t, {A: 10 * t if t <= 30 else 300 + 40 * (t - 30)}), taken=t)
    pair = h.pair("node-1")
    assert pair is not None
    old, new = pair
    # The newest sample at least 15 s older than the newest: t=25; the load went from 10/s
    # to 40/s at t=30: (700 - 250) / 15.
    assert (old.uptime, new.uptime) == (25, 40)
    assert requests(h.rates(["node-1"])) == {A: 30.0}


def test_a_restarted_proxy_starts_its_history_over() -> None:
    h = TrafficHistory(window=10, min_interval=1)
    h.add("node-1", sample(100, {A: 1000}), taken=0)
    h.add("node-1", sample(110, {A: 1100}), taken=10)
    assert requests(h.rates(["node-1"])) == {A: 10.0}
    # Another process (new instance), counters from zero: no rate against the old one.
    h.add("node-1", sample(2, {A: 4}, instance="i2"), taken=12)
    assert h.pair("node-1") is None and h.rates(["node-1"]) == {}
    h.add("node-1", sample(4, {A: 10}, instance="i2"), taken=14)
    assert requests(h.rates(["node-1"])) == {A: 3.0}
    # Same instance but its uptime went back (cannot happen unless restarted): over too.
    h.add("node-1", sample(1, {A: 1}, instance="i2"), taken=15)
    assert h.pair("node-1") is None


def test_rates_are_summed_over_the_proxies_that_answered() -> None:
    h = TrafficHistory(window=10, min_interval=1)
    for name, per_second in (("node-1", 3), ("node-2", 5), ("node-3", 7)):
        h.add(name, sample(0, {A: 0}, instance=name), taken=0)
        h.add(name, sample(10, {A: 10 * per_second}, instance=name), taken=10)
    assert requests(h.rates(["node-1", "node-2", "node-3"])) == {A: 15.0}
    assert requests(h.rates(["node-1", "node-3"])) == {A: 10.0}  # node-2 did not answer
    # Two Nodes naming one proxy process: counted once.
    h.add("node-4", sample(0, {A: 0}, instance="node-1"), taken=0)
    h.add("node-4", sample(10, {A: 30}, instance="node-1"), taken=10)
    assert requests(h.rates(["node-1", "node-4"])) == {A: 3.0}
    h.forget_except(["node-1"])
    assert requests(h.rates(["node-1", "node-2"])) == {A: 3.0}


def test_fresh_samples_are_reused_within_the_min_interval() -> None:
    h = TrafficHistory(window=10, min_interval=1)
    assert not h.fresh("node-1", 0)
    h.add("node-1", sample(0, {}), taken=100)
    assert h.fresh("node-1", 100.5) and not h.fresh("node-1", 101)


# ---- ProxyTraffic over stub proxies ---------------------------------------------------------


def _node(name: str, endpoint: str = "") -> core_pb2.Node:
    node = core_pb2.Node()
    node.metadata.name = name
    if endpoint:
        node.metadata.annotations[scrape.ENDPOINT_ANNOTATION] = endpoint
    return node


def _pod(name: str, ip: str, app: str = "web") -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace = name, "default"
    pod.metadata.labels["app"] = app
    pod.status.pod_ip = ip
    return pod


@dataclass
class _Items:
    items: list[Any]


@dataclass
class StubCluster:
    """What ProxyTraffic reads through the client (Nodes, Pods, Services), and each proxy's
    counters by node name: requests per endpoint IP, one dict per answer (the last one
    repeated), 10 s of uptime apart; a node not in `counters` does not answer."""

    nodes: list[core_pb2.Node] = field(default_factory=list)
    pods: list[core_pb2.Pod] = field(default_factory=list)
    services: set[str] = field(default_factory=set)
    counters: dict[str, list[dict[str, int]]] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)

    async def list_all(self, kind: type[Any], *, namespace: str = "") -> _Items:
        return _Items(list(self.nodes if kind is core_pb2.Node else self.pods))

    async def get(self, kind: type[Any], name: str, *, namespace: str = "") -> Any:
        if name not in self.services:
            raise NotFound(f'services "{name}" not found')
        return core_pb2.Service()

    async def fetch(self, node: core_pb2.Node) -> proxy_pb2.ProxyMetrics:
        name = node.metadata.name
        if name not in self.counters:
            raise ConnectionRefusedError(f"node {name}: connection refused")
        n = self.answers[name] = self.answers.get(name, -1) + 1
        counters = self.counters[name][min(n, len(self.counters[name]) - 1)]
        port = proxy_pb2.ServicePortMetrics(
            namespace="default", service="web", port_name="http", protocol="TCP"
        )
        for ip, count in counters.items():
            port.endpoints.add(ip=ip, port=8080, requests_total=count, connections_total=count)
        tunnel = proxy_pb2.ServicePortMetrics(service="tunnel", protocol="TCP")  # not counted
        tunnel.endpoints.add(ip="127.244.1.1", port=8080, requests_total=10**6)
        return proxy_pb2.ProxyMetrics(
            instance=name, uptime_seconds=100.0 + 10 * n, ports=[port, tunnel]
        )


def _source(cluster: StubCluster) -> ProxyTraffic:
    return ProxyTraffic(cast(Client, cluster), window=10, min_interval=0.01, fetch=cluster.fetch)


RPS = pb.MetricIdentifier(name="requests_per_second")
WEB = LabelSelector.from_match({"app": "web"})


async def test_pod_rates_summed_over_proxies_one_of_them_not_answering() -> None:
    cluster = StubCluster(
        nodes=[_node("n1", "a:1"), _node("n2", "b:1"), _node("n3", "c:1"), _node("n4")],
        pods=[
            _pod("web-1", "127.244.1.1"),
            _pod("web-2", "127.244.1.2"),
            _pod("web-3", "127.244.1.3"),  # no proxy lists it: no sample (missing)
            _pod("db-1", "127.244.1.9", app="db"),  # not selected
        ],
        counters={
            "n1": [
                {"127.244.1.1": 0, "127.244.1.2": 0, "127.244.1.9": 0},
                {"127.244.1.1": 100, "127.244.1.2": 0, "127.244.1.9": 500},
            ],
            "n2": [{"127.244.1.1": 0, "127.244.1.2": 0}, {"127.244.1.1": 50, "127.244.1.2": 30}],
        },  # n3 names an endpoint but does not answer; n4 has no proxy
    )
    # First contact: the source samples again shortly, to have a rate at once.
    got = await _source(cluster).pod_metric("default", WEB, RPS)
    assert {name: m.value for name, m in got.items()} == {"web-1": 15_000, "web-2": 3_000}
    assert cluster.answers == {"n1": 1, "n2": 1}


async def test_no_proxy_answering_is_unavailable() -> None:
    cluster = StubCluster(nodes=[_node("n1", "a:1")], pods=[_pod("web-1", "127.244.1.1")])
    with pytest.raises(MetricsUnavailable, match="no proxy answered: node n1: connection refused"):
        await _source(cluster).pod_metric("default", WEB, RPS)
    cluster.nodes = [_node("n1")]
    with pytest.raises(MetricsUnavailable, match="no node names its proxy"):
        await _source(cluster).pod_metric("default", WEB, RPS)


async def test_service_object_metric() -> None:
    cluster = StubCluster(
        nodes=[_node("n1", "a:1")],
        services={"web"},
        counters={"n1": [{"127.244.1.1": 0}, {"127.244.1.1": 20, "127.244.1.2": 10}]},
    )
    web = pb.CrossVersionObjectReference(kind="Service", name="web", api_version="v1")
    assert await _source(cluster).object_metric("default", web, RPS) == 3_000


@pytest.mark.parametrize(
    ("described", "metric", "message"),
    [
        (
            pb.CrossVersionObjectReference(kind="Service", name="nope", api_version="v1"),
            RPS,
            'services "nope" not found',
        ),
        (
            pb.CrossVersionObjectReference(kind="Ingress", name="web", api_version="v1"),
            RPS,
            "only Services (apiVersion v1) are served",
        ),
        (
            pb.CrossVersionObjectReference(kind="Service", name="web"),
            pb.MetricIdentifier(name="queue_length"),
            "unable to get metric queue_length: not served (served: requests_per_second, ",
        ),
    ],
)
async def test_object_metric_errors(
    described: pb.CrossVersionObjectReference, metric: pb.MetricIdentifier, message: str
) -> None:
    cluster = StubCluster(nodes=[_node("n1", "a:1")], services={"web"}, counters={"n1": [{}]})
    with pytest.raises(MetricsUnavailable) as info:
        await _source(cluster).object_metric("default", described, metric)
    assert message in str(info.value)


async def test_metric_selectors_are_refused() -> None:
    cluster = StubCluster(nodes=[_node("n1", "a:1")], counters={"n1": [{}]})
    metric = pb.MetricIdentifier(name="requests_per_second")
    metric.selector.match_labels["path"] = "/api"
    with pytest.raises(MetricsUnavailable, match="metric selectors are not supported"):
        await _source(cluster).pod_metric("default", WEB, metric)
