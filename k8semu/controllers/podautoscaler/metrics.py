"""Where the HPA controller reads metrics from: a small protocol, Kubernetes' three metrics
APIs in one (metrics.k8s.io for pod resources, custom.metrics.k8s.io for pod and object
metrics, external.metrics.k8s.io).

Values are milli-units (CPU in millicores, memory in thousandths of a byte, a rate in
thousandths per second), as `PodMetric` carries them. A source raises `MetricsUnavailable`
when it cannot answer; the controller turns that into the HPA's ScalingActive=False condition
and a Warning event (FailedGetResourceMetric, ...), as Kubernetes does without metrics-server.

The controller's default source is `kubeletstats.KubeletSummaries` (pod CPU and memory from
the kubelets' Summary RPC, as metrics-server reads them); a metrics.k8s.io view in the API
server, or custom metrics (requests per second from the proxies), plug in by passing another
source to `HorizontalPodAutoscalerController`.
"""

from __future__ import annotations

from typing import Protocol

from k8semu.api.selectors import LabelSelector
from k8semu.controllers.podautoscaler.replicas import MetricError, PodMetric
from k8semu.pb.api.v1 import autoscaling_pb2 as pb


class MetricsUnavailable(MetricError):
    """The source could not give the metric (not served, no samples, an error on the way)."""


class MetricsSource(Protocol):
    async def pod_resources(
        self, namespace: str, selector: LabelSelector, resource: str, container: str = ""
    ) -> dict[str, PodMetric]:
        """Usage of `resource` (cpu, memory) per pod name, of the pods `selector` selects
        (of `container` only when named)."""
        ...

    async def pod_metric(
        self, namespace: str, selector: LabelSelector, metric: pb.MetricIdentifier
    ) -> dict[str, PodMetric]:
        """A custom metric per pod name (e.g. requests per second served)."""
        ...

    async def object_metric(
        self, namespace: str, described: pb.CrossVersionObjectReference, metric: pb.MetricIdentifier
    ) -> int:
        """A custom metric of one object (e.g. an Ingress's requests per second)."""
        ...

    async def external_metric(self, namespace: str, metric: pb.MetricIdentifier) -> list[int]:
        """The values of an external metric's series matching its selector (summed by the
        caller)."""
        ...
