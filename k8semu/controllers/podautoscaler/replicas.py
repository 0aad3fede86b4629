"""The replica calculator: how many replicas one metric asks for, by Kubernetes' rules.

    desired = ceil(current * currentMetric / target)

with these refinements (Kubernetes' "Algorithm details"):

- nothing changes while |ratio - 1| <= tolerance (0.1);
- pods being deleted and failed/succeeded pods are ignored; Pending pods are not ready;
- for CPU, a pod is not yet ready while its Ready condition is False or missing, or, within the
  CPU initialization period (5 min) of its start, while its newest sample predates its last
  readiness change; after that period, only a pod that has never been ready since the initial
  readiness delay (30 s) after its start counts as not ready;
- the ratio is first computed from the ready pods with metrics; then, if pods lack metrics or
  some are not ready while scaling up, it is recomputed assuming pods without metrics use 0% on
  a scale-up and 100% (of the request for a Resource, of the target for other metrics) on a
  scale-down, and not-ready pods 0%; a recomputation that flips the direction, or lands
  within the tolerance, or points the other way than the first ratio, changes nothing.

Usages and targets are integer thousandths (milli-units), as Kubernetes compares MilliValues;
utilization is an integer percentage of the pods' requests. Pure: pods and samples in, a
`Proposal` out, time passed in as `now`. `MetricError` for what cannot be computed (its text
becomes the HPA's condition message).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from k8semu.api.errors import QuantityError
from k8semu.api.quantity import milli_value
from k8semu.controllers._pods import is_pod_ready, ready_condition
from k8semu.pb.api.v1 import core_pb2

CPU = "cpu"
DEFAULT_TOLERANCE = 0.1
DEFAULT_CPU_INITIALIZATION_PERIOD = 300.0  # seconds
DEFAULT_INITIAL_READINESS_DELAY = 30.0  # seconds


class MetricError(Exception):
    """A metric that yields no proposal; the text says why."""


@dataclass(frozen=True, slots=True)
class PodMetric:
    """One pod's sample: `value` in milli-units, taken at `timestamp` over `window` seconds."""

    value: int
    timestamp: float = 0.0
    window: float = 0.0


@dataclass(frozen=True, slots=True)
class Proposal:
    """What one metric asks for: `replicas`; `usage` the current value it saw (milli-units,
    a per-pod average for pod metrics); `utilization` the percentage of requests (Resource
    Utilization targets only)."""

    replicas: int
    usage: int
    utilization: int | None = None


@dataclass(frozen=True, slots=True)
class _Groups:
    ready: int
    unready: frozenset[str]
    missing: frozenset[str]
    ignored: frozenset[str]


def _ts(ts: object) -> float | None:
    seconds = getattr(ts, "seconds", 0)
    nanos = getattr(ts, "nanos", 0)
    if not seconds and not nanos:
        return None
    return float(seconds) + float(nanos) / 1e9


def is_ready_and_running(pod: core_pb2.Pod) -> bool:
    """Running with a Ready condition that is True (what Object/External metrics count)."""
    return pod.status.phase == "Running" and is_pod_ready(pod)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaCalculator:
    """Kubernetes' replica calculator with its three settings (the controller manager's
    --horizontal-pod-autoscaler-tolerance, -cpu-initialization-period and
    -initial-readiness-delay)."""

    tolerance: float = DEFAULT_TOLERANCE
    cpu_initialization_period: float = DEFAULT_CPU_INITIALIZATION_PERIOD
    initial_readiness_delay: float = DEFAULT_INITIAL_READINESS_DELAY

    # ---- Resource and Pods metrics: one sample per pod ----------------------------------------

    def resource_utilization(
        self,
        current: int,
        target_utilization: int,
        resource: str,
        metrics: Mapping[str, PodMetric],
        pods: Sequence[core_pb2.Pod],
        now: float,
        *,
        container: str = "",
    ) -> Proposal:
        """A Resource (or ContainerResource) metric with a Utilization target: the pods'
        usage as a percentage of their requests against `target_utilization`."""
        samples, groups = self._usable_samples(pods, metrics, resource, now)
        requests = pod_requests(pods, resource, container)

        def measure(values: Mapping[str, PodMetric]) -> tuple[Proposal, float]:
            ratio, utilization, raw = _utilization_ratio(values, requests, target_utilization)
            return Proposal(current, raw, utilization), ratio

        # A scale-down assumes the silent pods use all they asked for: they may be busy, so
        # do not remove too much on a guess.
        return self._propose(current, samples, groups, measure, requests.__getitem__)

    def plain(
        self,
        current: int,
        target: int,
        metrics: Mapping[str, PodMetric],
        pods: Sequence[core_pb2.Pod],
        now: float,
        *,
        resource: str = "",
    ) -> Proposal:
        """An average per pod against `target` (milli-units): a Pods metric, or a Resource
        metric with an AverageValue target (then `resource` names it, for the CPU rules)."""
        samples, groups = self._usable_samples(pods, metrics, resource, now)

        def measure(values: Mapping[str, PodMetric]) -> tuple[Proposal, float]:
            ratio, usage = _usage_ratio(values, target)
            return Proposal(current, usage), ratio

        return self._propose(current, samples, groups, measure, lambda _name: target)

    def _propose(
        self,
        current: int,
        samples: dict[str, PodMetric],
        groups: _Groups,
        measure: Callable[[Mapping[str, PodMetric]], tuple[Proposal, float]],
        assumed_busy: Callable[[str], int],
    ) -> Proposal:
        """The rule both per-pod forms share: the ratio over the ready pods with samples;
        then, when pods lack samples or some are not ready while scaling up, the ratio again
        with those filled in (missing: `assumed_busy(pod)` on a scale-down, 0 on a scale-up;
        not ready: 0), kept only if it still points the same way."""
        first, ratio = measure(samples)
        scale_up_with_unready = bool(groups.unready) and ratio > 1.0
        if not scale_up_with_unready and not groups.missing:
            if self._within_tolerance(ratio):
                return first
            return Proposal(math.ceil(ratio * groups.ready), first.usage, first.utilization)
        if ratio != 1.0:
            for name in groups.missing:
                samples[name] = PodMetric(assumed_busy(name) if ratio < 1.0 else 0)
        if scale_up_with_unready:
            for name in groups.unready:
                samples[name] = PodMetric(0)
        _, new_ratio = measure(samples)
        return self._conservative(first, ratio, new_ratio, len(samples))

    # ---- Object and External metrics: one value for the whole target -----------------------

    def object_value(
        self, current: int, target: int, usage: int, pods: Sequence[core_pb2.Pod]
    ) -> Proposal:
        """A Value target (an Object metric, or the sum of an External one's series): the
        ratio applied to the ready pods."""
        if target <= 0:
            raise MetricError(f"target value must be positive, got {target}m")
        ratio = usage / target
        if current == 0:
            return Proposal(math.ceil(ratio), usage)
        if self._within_tolerance(ratio):
            return Proposal(current, usage)
        if not pods:
            raise MetricError("no pods returned by selector while calculating replica count")
        ready = sum(1 for p in pods if is_ready_and_running(p))
        return Proposal(math.ceil(ratio * ready), usage)

    def average_value(self, current: int, target: int, usage: int) -> Proposal:
        """An AverageValue target of an Object or External metric: `usage` shared among the
        replicas; the proposal is usage / target once outside the tolerance."""
        if target <= 0:
            raise MetricError(f"target average value must be positive, got {target}m")
        replicas = current
        if current == 0 or not self._within_tolerance(usage / (target * current)):
            replicas = math.ceil(usage / target)
        per_pod = math.ceil(usage / current) if current else usage
        return Proposal(replicas, per_pod)

    # ---- helpers -------------------------------------------------------------------------------

    def _within_tolerance(self, ratio: float) -> bool:
        return abs(1.0 - ratio) <= self.tolerance

    def _conservative(
        self, first: Proposal, ratio: float, new_ratio: float, count: int
    ) -> Proposal:
        """The recomputed proposal, unless it is within the tolerance or turned around."""
        if (
            self._within_tolerance(new_ratio)
            or (ratio < 1.0 < new_ratio)
            or (ratio > 1.0 > new_ratio)
        ):
            return first
        replicas = math.ceil(new_ratio * count)
        if (new_ratio < 1.0 and replicas > first.replicas) or (
            new_ratio > 1.0 and replicas < first.replicas
        ):
            return first
        return Proposal(replicas, first.usage, first.utilization)

    def _usable_samples(
        self,
        pods: Sequence[core_pb2.Pod],
        metrics: Mapping[str, PodMetric],
        resource: str,
        now: float,
    ) -> tuple[dict[str, PodMetric], _Groups]:
        """The samples of the ready pods (a copy to fill in), and how the pods were sorted."""
        if not pods:
            raise MetricError("no pods returned by selector while calculating replica count")
        groups = self._group(pods, metrics, resource, now)
        left_out = groups.ignored | groups.unready
        samples = {name: m for name, m in metrics.items() if name not in left_out}
        if not samples:
            raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
        return samples, groups

    def _group(
        self,
        pods: Sequence[core_pb2.Pod],
        metrics: Mapping[str, PodMetric],
        resource: str,
        now: float,
    ) -> _Groups:
        """Sort pods into ready (with a sample), not yet ready, without a sample, ignored."""
        ready = 0
        unready: set[str] = set()
        missing: set[str] = set()
        ignored: set[str] = set()
        for pod in pods:
            name = pod.metadata.name
            if pod.metadata.HasField("deletion_timestamp") or pod.status.phase in (
                "Failed",
                "Succeeded",
            ):
                ignored.add(name)
                continue
            if pod.status.phase == "Pending":
                unready.add(name)
                continue
            sample = metrics.get(name)
            if sample is None:
                missing.add(name)
                continue
            if resource == CPU and self._cpu_unready(pod, sample, now):
                unready.add(name)
                continue
            ready += 1
        return _Groups(ready, frozenset(unready), frozenset(missing), frozenset(ignored))

    def _cpu_unready(self, pod: core_pb2.Pod, sample: PodMetric, now: float) -> bool:
        """Whether a pod's CPU sample should not count yet: start-up burns CPU that says
        nothing about load."""
        cond = ready_condition(pod)
        started = _ts(pod.status.start_time)
        if cond is None or started is None:
            return True
        changed = _ts(cond.last_transition_time) or started
        if started + self.cpu_initialization_period > now:
            return cond.status == "False" or sample.timestamp < changed + sample.window
        return cond.status == "False" and started + self.initial_readiness_delay > changed


def pod_requests(
    pods: Sequence[core_pb2.Pod], resource: str, container: str = ""
) -> dict[str, int]:
    """Each pod's request of `resource` in milli-units (summed over its containers, or the one
    named `container`); MetricError naming the container that has none."""
    out: dict[str, int] = {}
    for pod in pods:
        total = 0
        for c in pod.spec.containers:
            if container and c.name != container:
                continue
            text = c.resources.requests.get(resource)
            if not text:
                raise MetricError(
                    f"missing request for {resource} in container {c.name} "
                    f"of Pod {pod.metadata.name}"
                )
            try:
                total += milli_value(text)
            except QuantityError as exc:
                raise MetricError(
                    f"bad request for {resource} in container {c.name} "
                    f"of Pod {pod.metadata.name}: {exc}"
                ) from None
        out[pod.metadata.name] = total
    return out


def _utilization_ratio(
    samples: Mapping[str, PodMetric], requests: Mapping[str, int], target: int
) -> tuple[float, int, int]:
    """(ratio to target, utilization %, average raw usage) over pods with a request."""
    used = requested = count = 0
    for name, sample in samples.items():
        request = requests.get(name)
        if request is None:
            continue  # a sample of a pod not selected: not ours
        used += sample.value
        requested += request
        count += 1
    if requested == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = used * 100 // requested
    return utilization / target, utilization, used // count


def _usage_ratio(samples: Mapping[str, PodMetric], target: int) -> tuple[float, int]:
    """(ratio to target, average usage per pod)."""
    if target <= 0:
        raise MetricError(f"target average value must be positive, got {target}m")
    average = sum(s.value for s in samples.values()) // len(samples)
    return average / target, average
