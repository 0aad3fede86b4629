"""The HPA on traffic, end to end on a real cluster started with `k8semu up` (1 store, API
server, scheduler, controller manager, one process-runtime worker with its proxy) whose
config sets a short `horizontalPodAutoscaler.syncPeriod` and `downscaleStabilization`:

- the shipped echo app (one replica) behind a ClusterIP Service, a bounded `k8semu/loadgen`
  pod sending 20 requests/s to the Service's ClusterIP, an HPA with a Pods metric
  `requests_per_second` (AverageValue 5): the proxy counts each keep-alive request per
  endpoint, the HPA reads every proxy and scales 1 -> 4 replicas, reporting the metric in
  its status;
- an HPA on a second Deployment ("shadow", not behind the Service) with an Object metric
  `requests_per_second` of the Service (AverageValue 8) scales it up on that traffic;
- bad input in the same cluster: an unknown metric name and an Object metric on a Service
  that does not exist are reported in the conditions (ScalingActive False,
  FailedGetPodsMetric / FailedGetObjectMetric) without scaling anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from k8semu import examples
from k8semu.api import manifest
from k8semu.bench._clusterrun import BenchCluster, ClusterLayout
from k8semu.client import Client
from k8semu.pb.api.v1 import apps_pb2, autoscaling_pb2, core_pb2

pytestmark = pytest.mark.slow

T = TypeVar("T")
RATE = 20  # requests/s the load generator sends
TARGET = 5  # requests/s per pod the HPA aims at: 20 / 5 = 4 replicas


def _app() -> tuple[apps_pb2.Deployment, core_pb2.Service, apps_pb2.Deployment]:
    """The shipped echo app (`k8semu up --demo`'s), one replica behind a ClusterIP Service
    (its fixed NodePort could collide with another cluster on this machine), and a copy of
    its Deployment, "shadow", whose pods the Service does not select."""
    deployment, service = manifest.load_all(examples.ECHO.read_text(), source="echo.yaml")
    assert isinstance(deployment, apps_pb2.Deployment)
    assert isinstance(service, core_pb2.Service)
    deployment.spec.replicas = 1
    service.spec.type = "ClusterIP"
    for port in service.spec.ports:
        port.node_port = 0
    shadow = apps_pb2.Deployment()
    shadow.CopyFrom(deployment)
    shadow.metadata.name = "shadow"
    for labels in (
        shadow.metadata.labels,
        shadow.spec.selector.match_labels,
        shadow.spec.template.metadata.labels,
    ):
        labels["app"] = "shadow"
    return deployment, service, shadow


def _hpa(
    name: str, max_replicas: int, metric: str, target: str = "echo"
) -> autoscaling_pb2.HorizontalPodAutoscaler:
    """An HPA on the Deployment `target` with one metric (`metric`: the YAML of its spec)."""
    (hpa,) = manifest.load_all(
        f"""\
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: {name}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {target}}}
  minReplicas: 1
  maxReplicas: {max_replicas}
  metrics: [{metric}]
""",
        source=name,
    )
    assert isinstance(hpa, autoscaling_pb2.HorizontalPodAutoscaler)
    return hpa


def _pods_metric(name: str, average: int) -> str:
    target = f"{{type: AverageValue, averageValue: '{average}'}}"
    return f"{{type: Pods, pods: {{metric: {{name: {name}}}, target: {target}}}}}"


def _service_metric(service: str, target: str) -> str:
    return (
        f"{{type: Object, object: {{describedObject: {{apiVersion: v1, kind: Service, "
        f"name: {service}}}, metric: {{name: requests_per_second}}, target: {target}}}}}"
    )


HPAS = (
    _hpa("echo", 5, _pods_metric("requests_per_second", TARGET)),
    # The Service's 20 requests/s against 8 per replica: 3 replicas of "shadow".
    _hpa(
        "by-service",
        4,
        _service_metric("echo", "{type: AverageValue, averageValue: '8'}"),
        "shadow",
    ),
    _hpa("unknown-metric", 10, _pods_metric("queue_length", 1)),
    _hpa("missing-service", 10, _service_metric("nope", "{type: Value, value: '10'}")),
)


def _loadgen(cluster_ip: str) -> core_pb2.Pod:
    # Bounded: it stops by itself after 60 s, longer than the test needs.
    (pod,) = manifest.load_all(
        f"""\
apiVersion: v1
kind: Pod
metadata: {{name: loadgen}}
spec:
  restartPolicy: Never
  containers:
    - name: loadgen
      image: k8semu/loadgen
      args: ["--url", "http://{cluster_ip}/", "--rate", "{RATE}", "--concurrency", "4",
             "--duration", "60"]
""",
        source="loadgen",
    )
    assert isinstance(pod, core_pb2.Pod)
    return pod


async def _until(what: str, check: Callable[[], Awaitable[T | None]], timeout: float) -> T:
    end = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.3)


def _condition(
    hpa: autoscaling_pb2.HorizontalPodAutoscaler, type_: str
) -> autoscaling_pb2.HorizontalPodAutoscalerCondition | None:
    return next((c for c in hpa.status.conditions if c.type == type_), None)


@pytest.fixture(scope="module")
def cluster() -> Iterator[BenchCluster]:
    layout = ClusterLayout(
        name="hpa-rps",
        store_replicas=1,
        real_nodes=1,
        ready_timeout_s=120,
        timings={},
        overrides={"horizontalPodAutoscaler": {"syncPeriod": "1s", "downscaleStabilization": "5s"}},
    )
    with BenchCluster(layout, say=lambda _line: None) as c:
        c.start()
        yield c


def test_requests_per_second_scale_the_deployment(cluster: BenchCluster) -> None:
    # The config's section reached the controller manager as kube-controller-manager's flags.
    (cm,) = [c for c in cluster.components if c.kind == "controller-manager"]
    flags = dict(zip(cm.command, cm.command[1:], strict=False))
    assert flags["--horizontal-pod-autoscaler-sync-period"] == "1s"
    assert flags["--horizontal-pod-autoscaler-downscale-stabilization"] == "5s"
    asyncio.run(_scale_on_requests(cluster))


async def _scale_on_requests(cluster: BenchCluster) -> None:
    async with Client(cluster.api_servers) as client:
        for obj in _app():
            await client.create(obj)

        async def web_ready() -> bool:
            d = await client.get(apps_pb2.Deployment, "echo")
            s = await client.get(apps_pb2.Deployment, "shadow")
            return d.status.ready_replicas == 1 == s.status.ready_replicas

        await _until("the echo Deployment ready", web_ready, 60)
        service = await client.get(core_pb2.Service, "echo")
        await client.create(_loadgen(service.spec.cluster_ip))
        for hpa in HPAS:
            await client.create(hpa)

        async def scaled() -> autoscaling_pb2.HorizontalPodAutoscaler | None:
            hpa = await client.get(autoscaling_pb2.HorizontalPodAutoscaler, "echo")
            return hpa if hpa.status.desired_replicas >= 4 else None

        hpa = await _until("the HPA scaled echo to 4 on its requests", scaled, 120)
        active = _condition(hpa, "ScalingActive")
        assert active is not None and active.status == "True", hpa.status
        assert active.reason == "ValidMetricFound"
        (current,) = hpa.status.current_metrics
        assert current.type == "Pods" and current.pods.metric.name == "requests_per_second"
        events = (await client.list_all(core_pb2.Event)).items
        rescales = [e.message for e in events if e.reason == "SuccessfulRescale"]
        assert any("pods metric requests_per_second above target" in m for m in rescales)

        async def by_service() -> autoscaling_pb2.HorizontalPodAutoscaler | None:
            got = await client.get(autoscaling_pb2.HorizontalPodAutoscaler, "by-service")
            return got if got.status.desired_replicas >= 2 else None

        got = await _until("the Service's requests scaled shadow", by_service, 120)
        (current,) = got.status.current_metrics
        assert current.type == "Object" and current.object.described_object.name == "echo"
        assert current.object.current.average_value, got.status

        for name, reason, text in (
            ("unknown-metric", "FailedGetPodsMetric", "unable to get metric queue_length"),
            ("missing-service", "FailedGetObjectMetric", 'services "nope" not found'),
        ):

            async def reported(name: str = name) -> autoscaling_pb2.HorizontalPodAutoscaler | None:
                got = await client.get(autoscaling_pb2.HorizontalPodAutoscaler, name)
                cond = _condition(got, "ScalingActive")
                return got if cond is not None and cond.status == "False" else None

            bad = await _until(f"{name} reported", reported, 60)
            cond = _condition(bad, "ScalingActive")
            assert cond is not None and cond.reason == reason and text in cond.message, cond
