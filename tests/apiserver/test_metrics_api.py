"""metrics.k8s.io NodeMetrics and PodMetrics through a real API server (`--metric-resolution
1s`) scraping real kubelets: a hollow node whose pods' usage is modelled by annotations, and
a process-runtime node running a CPU burner. Values are checked against the model and against
the kubelet's own Summary; writes are refused."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from fractions import Fraction

import grpc
import pytest

from k8semu.api.quantity import parse_quantity
from k8semu.client import APIStatusError, Client
from k8semu.kubelet import scrape
from k8semu.pb.api.v1 import core_pb2, metrics_pb2
from tests.kubelet.conftest import KubeletProcess, eventually, kubelets  # noqa: F401
from tests.kubelet.test_e2e_process import make_pod
from tests.support.apiserver import APIServerProcess
from tests.support.fixtures import TEST_RETRIES, new_namespace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def apiserver(metrics_apiserver: APIServerProcess) -> APIServerProcess:
    return metrics_apiserver  # the one the kubelets fixture registers its nodes with too


@pytest.fixture
async def kclient(apiserver: APIServerProcess) -> AsyncIterator[Client]:
    # tests/apiserver's `client` is the raw stub; these tests read through k8semu.client.
    async with Client([apiserver.address], retries=TEST_RETRIES) as c:
        yield c


@pytest.fixture
async def ns(kclient: Client) -> str:
    return await new_namespace(kclient)


def cores(text: str) -> Fraction:
    return parse_quantity(text).amount


def modelled_pod(ns: str, name: str, node: str, cpu: str, memory: str, app: str) -> core_pb2.Pod:
    pod = make_pod(ns, name, node, ["serve"])
    pod.spec.containers.add(name="side", image="k8semu-test/python", command=["serve"])
    pod.metadata.labels["app"] = app
    pod.metadata.annotations["k8semu.io/usage-cpu"] = cpu
    pod.metadata.annotations["k8semu.io/usage-memory"] = memory
    return pod


async def test_hollow_node_and_pod_metrics_follow_the_model(
    kclient: Client,
    ns: str,
    kubelets: Callable[..., KubeletProcess],  # noqa: F811
) -> None:
    k = kubelets("--runtime", "simulated", "--count", "2", "--listen-address", "127.0.0.1:0")
    node = f"{k.name}-0"
    await kclient.create(modelled_pod(ns, "web-a", node, "250m", "64Mi", "web"))
    await kclient.create(modelled_pod(ns, "web-b", node, "100m", "32Mi", "web"))
    await kclient.create(modelled_pod(ns, "db", f"{k.name}-1", "1", "1Gi", "db"))

    async def all_three() -> list[metrics_pb2.PodMetrics]:
        got = (await kclient.list(metrics_pb2.PodMetrics, namespace=ns)).items
        return list(got) if len(got) == 3 else []

    pods = {p.metadata.name: p for p in await eventually(all_three, 60, "three PodMetrics")}
    a = pods["web-a"]
    assert a.api_version == "metrics.k8s.io/v1beta1" and a.kind == "PodMetrics"
    assert a.window == "1s" and a.timestamp.seconds > 0
    assert a.metadata.labels["app"] == "web"
    assert sorted(c.name for c in a.containers) == ["main", "side"]
    for c in a.containers:
        assert c.usage["memory"] == "64Mi"
        assert abs(cores(c.usage["cpu"]) - Fraction(1, 4)) < Fraction(1, 100)
    assert pods["db"].containers[0].usage["memory"] == "1Gi"

    # A label selector; every namespace; one by name; one that is not there.
    web = await kclient.list(metrics_pb2.PodMetrics, namespace=ns, label_selector="app=web")
    assert sorted(p.metadata.name for p in web.items) == ["web-a", "web-b"]
    everywhere = (await kclient.list(metrics_pb2.PodMetrics)).items
    assert {"web-a", "web-b", "db"} <= {p.metadata.name for p in everywhere}
    got = await kclient.get(metrics_pb2.PodMetrics, "db", namespace=ns)
    assert got.metadata.namespace == ns
    with pytest.raises(APIStatusError) as missing:
        await kclient.get(metrics_pb2.PodMetrics, "nope", namespace=ns)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert 'podmetrics.metrics.k8s.io "nope" not found' in missing.value.message

    # The node: the sum of its pods (a hollow node has no process of its own).
    async def node_metrics() -> metrics_pb2.NodeMetrics | None:
        got = await kclient.get(metrics_pb2.NodeMetrics, node)
        return got if abs(cores(got.usage["cpu"]) - Fraction(7, 10)) < Fraction(2, 100) else None

    n = await eventually(node_metrics, 60, "the node's CPU: 2 x (250m + 100m)")
    assert n.usage["memory"] == "192Mi"
    names = {m.metadata.name for m in (await kclient.list(metrics_pb2.NodeMetrics)).items}
    assert {node, f"{k.name}-1"} <= names


async def test_process_node_reports_a_burner_as_its_kubelet_measures_it(
    kclient: Client,
    ns: str,
    kubelets: Callable[..., KubeletProcess],  # noqa: F811
) -> None:
    k = kubelets("--listen-address", "127.0.0.1:0")
    burner = make_pod(ns, "burner", k.name, [sys.executable, "-c", "while True: pass"])
    burner.spec.containers[0].resources.limits["cpu"] = "500m"
    await kclient.create(burner)

    async def burning() -> Fraction:
        got = await kclient.get(metrics_pb2.PodMetrics, "burner", namespace=ns)
        used = cores(got.containers[0].usage["cpu"])
        # Any measurable share: on a busy host (load above 30 on two cores) a busy loop gets
        # ~50m, so waiting for more than 100m could wait forever.
        return used if used > Fraction(1, 50) else Fraction(0)

    from_api = await eventually(burning, 60, "the burner's PodMetrics")
    node = await kclient.get(core_pb2.Node, k.name)
    summary = await scrape.summary(node)
    (stats,) = [p for p in summary.pods if p.pod_ref.name == "burner"]
    nano = scrape.cpu_nano_cores(stats.containers[0].cpu)
    assert nano is not None
    from_kubelet = Fraction(nano, 10**9)
    # Two samples of one steady burner, a second or so apart: close, not equal.
    assert abs(from_api - from_kubelet) < Fraction(3, 10) * max(from_kubelet, Fraction(1, 10))
    assert from_api <= Fraction(3, 2)
    node_metrics = await kclient.get(metrics_pb2.NodeMetrics, k.name)
    assert cores(node_metrics.usage["cpu"]) > 0
    assert parse_quantity(node_metrics.usage["memory"]).value() > 0


async def test_metrics_are_read_only_and_discovered(kclient: Client, ns: str) -> None:
    obj = metrics_pb2.PodMetrics()
    obj.metadata.name, obj.metadata.namespace = "x", ns
    attempts = [
        kclient.create(obj),
        kclient.delete(metrics_pb2.PodMetrics, "x", namespace=ns),
        kclient.patch(metrics_pb2.NodeMetrics, "n", {"metadata": {"labels": {"a": "b"}}}),
    ]
    for attempt in attempts:
        with pytest.raises(APIStatusError) as refused:
            await attempt
        assert refused.value.code == grpc.StatusCode.UNIMPLEMENTED
        assert "does not allow this method" in refused.value.message
    found = await kclient.discovery()
    served = {(r.name, r.api_version, r.kind) for r in found}
    assert ("nodes", "metrics.k8s.io/v1beta1", "NodeMetrics") in served
    assert ("pods", "metrics.k8s.io/v1beta1", "PodMetrics") in served
    assert ("pods", "v1", "Pod") in served  # the core kinds keep their names
