"""Where the HPA controller reads metrics from: a small protocol, Kubernetes' three metrics
APIs in one (metrics.k8s.io for pod resources, custom.metrics.k8s.io for pod and object
metrics, external.metrics.k8s.io).

Values are milli-units (CPU in millicores, memory in thousandths of a byte, a rate in
thousandths per second), as `PodMetric` carries them. A source raises `MetricsUnavailable`
when it cannot answer; the controller turns that into the HPA's ScalingActive=False condition
and a Warning event (FailedGetResourceMetric, ...), as Kubernetes does without metrics-server.

The controller's default source is a `Combined` one: pod CPU and memory from
`kubeletstats.KubeletSummaries` (the kubelets' Summary RPC, as metrics-server reads them),
Pods and Object metrics from `traffic.ProxyTraffic` (requests per second from the proxies'
per-endpoint counters), no External metrics. Other sources (a metrics.k8s.io view in the API
server, say) plug in by passing another source to `HorizontalPodAutoscalerController`.
"""

from __future__ import annotations

from typing import Protocol

from k8semu.api.selectors import LabelSelector
from k8semu.controllers.podautoscaler.replicas import MetricError, PodMetric
from k8semu.pb.api.v1 import autoscaling_pb2 as pb


class MetricsUnavailable(MetricError):
    """The source could not give the metric (not served, no samples, an error on the way)."""


class ResourceMetrics(Protocol):
    """metrics.k8s.io: pod CPU and memory."""

    async def pod_resources(
        self, namespace: str, selector: LabelSelector, resource: str, container: str = ""
    ) -> dict[str, PodMetric]:
        """Usage of `resource` (cpu, memory) per pod name, of the pods `selector` selects
        (of `container` only when named)."""
        ...


class CustomMetrics(Protocol):
    """custom.metrics.k8s.io: metrics of pods and of other objects."""

    async def pod_metric(
        self, namespace: str, selector: LabelSelector, metric: pb.MetricIdentifier
    ) -> dict[str, PodMetric]:
        """A custom metric per pod name (e.g. requests per second served)."""
        ...

    async def object_metric(
        self, namespace: str, described: pb.CrossVersionObjectReference, metric: pb.MetricIdentifier
    ) -> int:
        """A custom metric of one object (e.g. a Service's requests per second)."""
        ...


class MetricsSource(ResourceMetrics, CustomMetrics, Protocol):
    """All three metrics APIs."""

    async def external_metric(self, namespace: str, metric: pb.MetricIdentifier) -> list[int]:
        """The values of an external metric's series matching its selector (summed by the
        caller)."""
        ...


class Combined:
    """Resource metrics from `resources`, Pods and Object metrics from `custom`; External
    metrics from nowhere (k8semu has no external metrics API)."""

    def __init__(self, resources: ResourceMetrics, custom: CustomMetrics) -> None:
        self.resources = resources
        self.custom = custom

    async def pod_resources(
        self, namespace: str, selector: LabelSelector, resource: str, container: str = ""
    ) -> dict[str, PodMetric]:
        return await self.resources.pod_resources(namespace, selector, resource, container)

    async def pod_metric(
        self, namespace: str, selector: LabelSelector, metric: pb.MetricIdentifier
    ) -> dict[str, PodMetric]:
        return await self.custom.pod_metric(namespace, selector, metric)

    async def object_metric(
        self, namespace: str, described: pb.CrossVersionObjectReference, metric: pb.MetricIdentifier
    ) -> int:
        return await self.custom.object_metric(namespace, described, metric)

    async def external_metric(self, namespace: str, metric: pb.MetricIdentifier) -> list[int]:
        raise MetricsUnavailable(
            f"unable to get external metric {metric.name}: no external metrics API"
        )
