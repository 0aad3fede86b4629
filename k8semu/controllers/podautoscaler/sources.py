"""From an HPA's metric specs to one proposal: each metric is read from the `MetricsSource`,
turned into a replica count by the `ReplicaCalculator`, and the largest count wins
(Kubernetes' computeReplicasForMetrics).

A metric that fails is reported (its status left empty, printed `<unknown>`, a Warning reason
such as FailedGetResourceMetric); the HPA acts on the others only when they do not ask for
fewer replicas than it has: a failing metric may be the one that would have said "more".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from k8semu.api import autoscaling as api
from k8semu.api.errors import QuantityError
from k8semu.api.selectors import LabelSelector
from k8semu.controllers.podautoscaler.metrics import MetricsSource
from k8semu.controllers.podautoscaler.replicas import MetricError, Proposal, ReplicaCalculator
from k8semu.pb.api.v1 import autoscaling_pb2 as pb
from k8semu.pb.api.v1 import core_pb2

FAILED_REASON = {
    api.RESOURCE: "FailedGetResourceMetric",
    api.CONTAINER_RESOURCE: "FailedGetContainerResourceMetric",
    api.PODS: "FailedGetPodsMetric",
    api.OBJECT: "FailedGetObjectMetric",
    api.EXTERNAL: "FailedGetExternalMetric",
}


def milli_text(value: int) -> str:
    """A milli-value as Kubernetes prints a DecimalSI milli quantity: 250m, 1, 1500m."""
    return str(value // 1000) if value % 1000 == 0 else f"{value}m"


@dataclass(slots=True)
class Outcome:
    """The metrics' verdict: `replicas` (None: no usable proposal), the ScalingActive
    condition's (reason, message), one status per metric spec, and (reason, message) of
    each failed metric for Warning events."""

    replicas: int | None = None
    metric_name: str = ""
    condition: tuple[str, str] = ("", "")
    statuses: list[pb.MetricStatus] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Query:
    """What every metric of one HPA pass is asked about."""

    namespace: str
    current: int
    selector: LabelSelector
    pods: Sequence[core_pb2.Pod]
    now: float


class MetricReader:
    def __init__(self, source: MetricsSource, calculator: ReplicaCalculator) -> None:
        self.source = source
        self.calculator = calculator

    async def propose(
        self,
        hpa: pb.HorizontalPodAutoscaler,
        current: int,
        selector: LabelSelector,
        pods: Sequence[core_pb2.Pod],
        now: float,
    ) -> Outcome:
        query = _Query(hpa.metadata.namespace, current, selector, pods, now)
        outcome = Outcome()
        best = 0
        invalid = 0
        first_failure: tuple[str, str] | None = None
        for spec in hpa.spec.metrics:
            try:
                proposal, name, status = await self._one(query, spec)
            except (MetricError, QuantityError) as exc:
                reason = FAILED_REASON.get(spec.type, "InvalidMetricSourceType")
                outcome.statuses.append(pb.MetricStatus())
                outcome.failures.append((reason, str(exc)))
                if first_failure is None:
                    first_failure = (
                        reason,
                        f"the HPA was unable to compute the replica count: {exc}",
                    )
                invalid += 1
                continue
            outcome.statuses.append(status)
            if best == 0 or proposal > best:
                best, outcome.metric_name = proposal, name
        if first_failure is not None and (invalid >= len(hpa.spec.metrics) or best < current):
            outcome.condition = first_failure
            return outcome
        if not hpa.spec.metrics:
            outcome.condition = ("InvalidMetricSourceType", "the HPA names no metric")
            return outcome
        outcome.replicas = best
        outcome.condition = (
            "ValidMetricFound",
            "the HPA was able to successfully calculate a replica count from "
            + outcome.metric_name,
        )
        return outcome

    async def _one(self, q: _Query, spec: pb.MetricSpec) -> tuple[int, str, pb.MetricStatus]:
        """(replicas, the metric's name in messages, its status) for one metric spec."""
        if spec.type in (api.RESOURCE, api.CONTAINER_RESOURCE):
            return await self._resource(q, spec)
        if spec.type == api.PODS:
            samples = await self.source.pod_metric(q.namespace, q.selector, spec.pods.metric)
            target = api.target_milli(spec.pods.target)
            proposal = self.calculator.plain(q.current, target, samples, q.pods, q.now)
            status = pb.MetricStatus(
                type=api.PODS,
                pods=pb.PodsMetricStatus(
                    metric=spec.pods.metric,
                    current=pb.MetricValueStatus(average_value=milli_text(proposal.usage)),
                ),
            )
            return proposal.replicas, f"pods metric {spec.pods.metric.name}", status
        if spec.type == api.OBJECT:
            usage = await self.source.object_metric(
                q.namespace, spec.object.described_object, spec.object.metric
            )
            proposal, current_value = self._whole(q, spec.object.target, usage)
            status = pb.MetricStatus(
                type=api.OBJECT,
                object=pb.ObjectMetricStatus(
                    metric=spec.object.metric,
                    current=current_value,
                    described_object=spec.object.described_object,
                ),
            )
            ref = spec.object.described_object
            return proposal.replicas, f"{ref.kind} metric {spec.object.metric.name}", status
        if spec.type == api.EXTERNAL:
            values = await self.source.external_metric(q.namespace, spec.external.metric)
            proposal, current_value = self._whole(q, spec.external.target, sum(values))
            status = pb.MetricStatus(
                type=api.EXTERNAL,
                external=pb.ExternalMetricStatus(
                    metric=spec.external.metric, current=current_value
                ),
            )
            return proposal.replicas, f"external metric {spec.external.metric.name}", status
        raise MetricError(f"unknown metric source type {spec.type!r}")

    async def _resource(self, q: _Query, spec: pb.MetricSpec) -> tuple[int, str, pb.MetricStatus]:
        container_source = spec.type == api.CONTAINER_RESOURCE
        source = spec.container_resource if container_source else spec.resource
        container = spec.container_resource.container if container_source else ""
        samples = await self.source.pod_resources(q.namespace, q.selector, source.name, container)
        word = "container resource" if container_source else "resource"
        current_value = pb.MetricValueStatus()
        proposal: Proposal
        if source.target.type == api.UTILIZATION:
            proposal = self.calculator.resource_utilization(
                q.current,
                source.target.average_utilization,
                source.name,
                samples,
                q.pods,
                q.now,
                container=container,
            )
            current_value.average_utilization = proposal.utilization or 0
            name = f"{source.name} {word} utilization (percentage of request)"
        else:
            target = api.target_milli(source.target)
            proposal = self.calculator.plain(
                q.current, target, samples, q.pods, q.now, resource=source.name
            )
            name = f"{source.name} {word}"
        current_value.average_value = milli_text(proposal.usage)
        if container_source:
            status = pb.MetricStatus(
                type=spec.type,
                container_resource=pb.ContainerResourceMetricStatus(
                    name=source.name, current=current_value, container=container
                ),
            )
        else:
            status = pb.MetricStatus(
                type=spec.type,
                resource=pb.ResourceMetricStatus(name=source.name, current=current_value),
            )
        return proposal.replicas, name, status

    def _whole(
        self, q: _Query, target: pb.MetricTarget, usage: int
    ) -> tuple[Proposal, pb.MetricValueStatus]:
        """An Object or External metric: one value for the whole target."""
        goal = api.target_milli(target)
        if target.type == api.AVERAGE_VALUE:
            proposal = self.calculator.average_value(q.current, goal, usage)
            return proposal, pb.MetricValueStatus(average_value=milli_text(proposal.usage))
        proposal = self.calculator.object_value(q.current, goal, usage, q.pods)
        return proposal, pb.MetricValueStatus(value=milli_text(proposal.usage))
