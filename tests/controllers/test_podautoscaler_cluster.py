"""The HPA controller on a real store and API server: through the controller manager (its
default source, the kubelets, has nothing to say about pods that do not exist: min/max
enforced, the missing metrics and a missing target reported), and built directly with an
in-memory metrics source (the seam other metrics sources plug into), scaling a ReplicaSet on
CPU. No kubelet: the test writes the pods' status (Running, Ready) as a kubelet would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable

import pytest

from k8semu import aio
from k8semu.api.selectors import LabelSelector
from k8semu.client import Client, SharedInformers
from k8semu.client.events import EventRecorder
from k8semu.controllers.context import ControllerContext, ControllerManagerConfig
from k8semu.controllers.manager import ControllerManager
from k8semu.controllers.podautoscaler import HorizontalPodAutoscalerController
from k8semu.controllers.podautoscaler.metrics import MetricsSource, MetricsUnavailable
from k8semu.controllers.podautoscaler.replicas import PodMetric
from k8semu.pb.api.v1 import apps_pb2, autoscaling_pb2, core_pb2
from tests.support.apiserver import APIServerProcess
from tests.support.poll import eventually

pytestmark = pytest.mark.slow

FAST = ControllerManagerConfig(controllers=("horizontalpodautoscaling",), hpa_sync_period=0.3)


def replica_set(namespace: str, replicas: int) -> apps_pb2.ReplicaSet:
    rs = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name = "web"
    rs.metadata.namespace = namespace
    rs.spec.replicas = replicas
    rs.spec.selector.match_labels["app"] = "web"
    rs.spec.template.metadata.labels["app"] = "web"
    c = rs.spec.template.spec.containers.add(name="app", image="registry.k8s.io/hpa-example")
    c.resources.requests["cpu"] = "200m"
    return rs


def autoscaler(
    namespace: str, target: str = "web", *, min_replicas: int = 1
) -> autoscaling_pb2.HorizontalPodAutoscaler:
    h = autoscaling_pb2.HorizontalPodAutoscaler(
        api_version="autoscaling/v2", kind="HorizontalPodAutoscaler"
    )
    h.metadata.name = target
    h.metadata.namespace = namespace
    h.spec.scale_target_ref.api_version = "apps/v1"
    h.spec.scale_target_ref.kind = "ReplicaSet"
    h.spec.scale_target_ref.name = target
    h.spec.min_replicas = min_replicas
    h.spec.max_replicas = 5
    m = h.spec.metrics.add(type="Resource")
    m.resource.name = "cpu"
    m.resource.target.type = "Utilization"
    m.resource.target.average_utilization = 50
    return h


async def condition(client: Client, namespace: str, name: str, type_: str) -> str:
    h = await client.get(autoscaling_pb2.HorizontalPodAutoscaler, name, namespace=namespace)
    return next((f"{c.status}/{c.reason}" for c in h.status.conditions if c.type == type_), "")


async def spec_replicas(client: Client, namespace: str) -> int:
    return (await client.get(apps_pb2.ReplicaSet, "web", namespace=namespace)).spec.replicas


@pytest.fixture
async def manager(client: Client) -> AsyncIterator[ControllerManager]:
    cm = ControllerManager(FAST, client, leader_elect=False, listen_address=None)
    await cm.start()
    try:
        yield cm
    finally:
        await cm.stop(1.0)


async def test_through_the_manager_min_is_enforced_and_missing_metrics_reported(
    apiserver: APIServerProcess, namespace: str, client: Client, manager: ControllerManager
) -> None:
    await client.create(replica_set(namespace, 1))
    await client.create(autoscaler(namespace, min_replicas=2))
    await client.create(autoscaler(namespace, "nothing"))
    await eventually(lambda: _eq(spec_replicas(client, namespace), 2), what="scaled to min")
    await eventually(
        lambda: _eq(
            condition(client, namespace, "web", "ScalingActive"), "False/FailedGetResourceMetric"
        ),
        20,
        "no metrics reported",
    )
    await eventually(
        lambda: _eq(condition(client, namespace, "nothing", "AbleToScale"), "False/FailedGetScale"),
        20,
        "missing target reported",
    )
    events = (await client.list_all(core_pb2.Event, namespace=namespace)).items
    reasons = {e.reason for e in events}
    assert {"SuccessfulRescale", "FailedGetResourceMetric", "FailedGetScale"} <= reasons
    assert manager.leading


class CPUSamples:
    """Every pod of the namespace at `millicores`."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.millicores = 0

    async def pod_resources(
        self, namespace: str, selector: LabelSelector, resource: str, container: str = ""
    ) -> dict[str, PodMetric]:
        pods = (await self.client.list_all(core_pb2.Pod, namespace=namespace)).items
        at = time.time() - 1
        return {p.metadata.name: PodMetric(self.millicores, at, 15.0) for p in pods}

    async def pod_metric(self, *args: object) -> dict[str, PodMetric]:
        raise MetricsUnavailable("none")

    async def object_metric(self, *args: object) -> int:
        raise MetricsUnavailable("none")

    async def external_metric(self, *args: object) -> list[int]:
        raise MetricsUnavailable("none")


async def running_pod(client: Client, namespace: str, name: str) -> None:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name = name
    p.metadata.namespace = namespace
    p.metadata.labels["app"] = "web"
    c = p.spec.containers.add(name="app", image="registry.k8s.io/hpa-example")
    c.resources.requests["cpu"] = "200m"
    created = await client.create(p)
    long_ago = time.time_ns() - 600 * 10**9
    created.status.phase = "Running"
    created.status.start_time.FromNanoseconds(long_ago)
    ready = created.status.conditions.add(type="Ready", status="True")
    ready.last_transition_time.FromNanoseconds(long_ago + 10**9)
    await client.update_status(created)


async def test_scales_a_replicaset_on_cpu_with_a_metrics_source(
    apiserver: APIServerProcess, namespace: str, client: Client
) -> None:
    await client.create(replica_set(namespace, 2))
    for name in ("web-a", "web-b"):
        await running_pod(client, namespace, name)
    samples = CPUSamples(client)
    samples.millicores = 200  # 100% of the request against 50%: twice the replicas
    async with running_controller(client, FAST, samples):
        await client.create(autoscaler(namespace))
        await eventually(lambda: _eq(spec_replicas(client, namespace), 4), what="scaled to 4")

        async def status_shows_it() -> bool:
            h = await client.get(
                autoscaling_pb2.HorizontalPodAutoscaler, "web", namespace=namespace
            )
            cur = h.status.current_metrics
            return bool(cur) and cur[0].resource.current.average_utilization == 100

        await eventually(status_shows_it, what="current metrics in the status")


@contextlib.asynccontextmanager
async def running_controller(
    client: Client, config: ControllerManagerConfig, metrics: MetricsSource | None = None
) -> AsyncIterator[HorizontalPodAutoscalerController]:
    """The HPA controller running in this process on its own informers and recorder (the
    default metrics source when `metrics` is None), until the block ends."""
    informers = SharedInformers(client)
    recorder = EventRecorder(client, "controller-manager")
    ctx = ControllerContext(client=client, informers=informers, recorder=recorder, config=config)
    controller = HorizontalPodAutoscalerController(ctx, metrics=metrics)
    informers.start()
    recorder.start()
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        await aio.cancel_and_wait([task])
        await informers.stop()
        await recorder.stop()


async def _eq(value: Awaitable[object], want: object) -> bool:
    return bool((await value) == want)
