"""The HorizontalPodAutoscaler controller (autoscaling/v2): every sync period (15 s), per HPA,
read the target's scale, ask each metric for a replica count, take the largest, normalize it
(stabilization, policies, min/max) and set the target's replicas; report what it saw in the
HPA's status (currentReplicas, desiredReplicas, currentMetrics, lastScaleTime, conditions
AbleToScale / ScalingActive / ScalingLimited) and Events (SuccessfulRescale,
FailedGetResourceMetric, FailedGetScale, ...), Kubernetes' reasons and messages.

Per key (namespace/name), level-triggered; the HPA is queued again one sync period after each
pass, and at once when it is created or its spec changes. Nothing an HPA or a metric says
crashes the loop: a bad spec, a missing target or a failing metric become conditions and
events, and the next period tries again.

The target's scale is read and written through its `scale` subresource (autoscaling/v1
Scale: replicas and the selector as a string), with the Scale's resourceVersion (the
target's) as precondition, as Kubernetes' HPA does. Metrics come from a `MetricsSource`
(see metrics.py): by default pod CPU and memory from the kubelets, requests per second
from the proxies; a metric no source serves is reported in the conditions, and
minReplicas/maxReplicas are enforced regardless.

Owns the HPA's status and the target's replica count; never writes anything else.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from k8semu.api import autoscaling as api
from k8semu.api.errors import SelectorError
from k8semu.api.selectors import LabelSelector, parse_label_selector
from k8semu.client import (
    NAMESPACE_INDEX,
    ClientError,
    Conflict,
    NotFound,
    object_key,
)
from k8semu.client.events import NORMAL, WARNING
from k8semu.controllers import _pods
from k8semu.controllers.context import ControllerContext, KeyedController
from k8semu.controllers.podautoscaler import status as st
from k8semu.controllers.podautoscaler.behavior import Bounds, ScalingHistory
from k8semu.controllers.podautoscaler.kubeletstats import KubeletSummaries
from k8semu.controllers.podautoscaler.metrics import Combined, MetricsSource
from k8semu.controllers.podautoscaler.replicas import ReplicaCalculator
from k8semu.controllers.podautoscaler.sources import MetricReader
from k8semu.controllers.podautoscaler.traffic import ProxyTraffic
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apps_pb2, autoscaling_pb2, core_pb2
from k8semu.pb.api.v1.apiserver_pb2 import Scale

log = get_logger(__name__)

# The kinds the API server serves a scale subresource for, by scaleTargetRef.kind.
SCALE_TARGETS: dict[str, type[apps_pb2.Deployment | apps_pb2.ReplicaSet]] = {
    "Deployment": apps_pb2.Deployment,
    "ReplicaSet": apps_pb2.ReplicaSet,
}


class ScaleError(Exception):
    """The target's scale could not be read or written."""


@dataclass(frozen=True, slots=True)
class _Decision:
    desired: int
    rescale: bool
    reason: str = ""


class HorizontalPodAutoscalerController(KeyedController):
    """One instance per process; `run()` after the context's informers are started."""

    name = "horizontalpodautoscaling"

    def __init__(
        self,
        ctx: ControllerContext,
        *,
        metrics: MetricsSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(ctx, clock=clock)
        config = ctx.config
        # Where the proxies are (their Nodes' annotations), shared with the node controllers.
        self.node_informer = ctx.informers.informer(core_pb2.Node)
        self.sync_period = config.hpa_sync_period
        self.downscale_window = config.hpa_downscale_stabilization
        self.reader = MetricReader(
            metrics
            if metrics is not None
            else Combined(
                KubeletSummaries(ctx.client),
                # Rates over one sync period: what changed since the last evaluation.
                ProxyTraffic(
                    ctx.client,
                    window=config.hpa_sync_period,
                    nodes=self.node_informer.cache.list,
                ),
            ),
            ReplicaCalculator(
                tolerance=config.hpa_tolerance,
                cpu_initialization_period=config.hpa_cpu_initialization_period,
                initial_readiness_delay=config.hpa_initial_readiness_delay,
            ),
        )
        self.history = ScalingHistory()
        self.hpa_informer = ctx.informers.informer(autoscaling_pb2.HorizontalPodAutoscaler)
        self.pod_informer = self.informer(core_pb2.Pod)
        self.hpa_informer.add_event_handler(
            on_add=self._enqueue,
            on_update=self._hpa_updated,
            on_delete=self._hpa_deleted,
        )

    # ---- event handlers: only enqueue ------------------------------------------------------

    def _hpa_updated(
        self,
        old: autoscaling_pb2.HorizontalPodAutoscaler,
        new: autoscaling_pb2.HorizontalPodAutoscaler,
    ) -> None:
        # Our own status writes come back as updates: only a new spec is worth a pass now;
        # everything else waits for the sync period.
        if old.spec != new.spec:
            self.queue.add(object_key(new))

    def _hpa_deleted(self, hpa: autoscaling_pb2.HorizontalPodAutoscaler) -> None:
        self.history.forget(object_key(hpa))

    # ---- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        log.info("horizontal pod autoscaler", sync_period=self.sync_period)
        await super().run()

    async def reconcile(self, key: str) -> None:
        hpa = self.hpa_informer.cache.get(key)
        if hpa is None:  # deleted: nothing to evaluate, and nothing to come back for
            self.history.forget(key)
        else:
            try:
                await self._reconcile(hpa)
            finally:
                self.queue.add_after(key, self.sync_period)

    async def _reconcile(self, stored: autoscaling_pb2.HorizontalPodAutoscaler) -> None:
        # Evaluated with Kubernetes' defaults applied (minReplicas 1, CPU at 80%, the unset
        # parts of a behavior), whether or not the API server filled them in.
        hpa = _pods.copy_of(stored)
        api.default_hpa(hpa)
        now = self.clock()
        status = st.Status(hpa, now)
        problems = api.validate_hpa(hpa)
        if problems:
            text = "; ".join(f"{path}: {message}" for path, message in problems)
            status.set(st.SCALING_ACTIVE, False, "InvalidSpec", f"the HPA spec is invalid: {text}")
            self._warn(hpa, "InvalidSpec", text)
            await self._write_status(stored, status)
            return
        scale = await self._read_target(hpa, status)
        if scale is None:
            await self._write_status(stored, status)
            return
        target, current, selector = scale
        decision = await self._decide(hpa, status, current, selector, now)
        desired = current
        if (
            decision is not None
            and decision.rescale
            and await self._rescale(hpa, status, target, current, decision, now)
        ):
            desired = decision.desired
        status.replicas(current, desired)
        await self._write_status(stored, status)

    async def _read_target(
        self, hpa: autoscaling_pb2.HorizontalPodAutoscaler, status: st.Status
    ) -> tuple[Scale, int, LabelSelector] | None:
        """The target's Scale, its replica count and its pod selector; None (conditions
        set) when they cannot be had."""
        try:
            target = await self._get_scale(hpa)
        except ScaleError as exc:
            status.set(
                st.ABLE_TO_SCALE,
                False,
                "FailedGetScale",
                f"the HPA controller was unable to get the target's current scale: {exc}",
            )
            self._warn(hpa, "FailedGetScale", str(exc))
            return None
        status.set(
            st.ABLE_TO_SCALE,
            True,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        )
        if not target.selector:
            message = "selector is required"
        else:
            try:
                return target, target.spec_replicas, parse_label_selector(target.selector)
            except SelectorError as exc:
                message = (
                    "couldn't convert selector into a corresponding internal selector "
                    f"object: {exc}"
                )
        status.set(st.SCALING_ACTIVE, False, "InvalidSelector", message)
        self._warn(hpa, "InvalidSelector", message)
        return None

    async def _decide(
        self,
        hpa: autoscaling_pb2.HorizontalPodAutoscaler,
        status: st.Status,
        current: int,
        selector: LabelSelector,
        now: float,
    ) -> _Decision | None:
        """What to scale to, or None when the metrics gave no usable answer."""
        minimum, maximum = api.min_replicas(hpa), hpa.spec.max_replicas
        if current == 0 and minimum != 0:
            status.set(
                st.SCALING_ACTIVE,
                False,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            )
            return _Decision(0, rescale=False)
        if current > maximum:
            return _Decision(maximum, True, "Current number of replicas above Spec.MaxReplicas")
        if current < minimum:
            return _Decision(minimum, True, "Current number of replicas below Spec.MinReplicas")
        pods = self._pods(hpa.metadata.namespace, selector)
        result = await self.reader.propose(hpa, current, selector, pods, now)
        status.metrics(result.statuses)
        for reason, message in result.failures:
            self._warn(hpa, reason, message)
        if result.replicas is None:
            status.set(st.SCALING_ACTIVE, False, *result.condition)
            self._warn(hpa, "FailedComputeMetricsReplicas", result.condition[1])
            return None
        status.set(st.SCALING_ACTIVE, True, *result.condition)
        key = object_key(hpa)
        behavior = (
            api.effective_behavior(hpa, int(self.downscale_window))
            if hpa.spec.HasField("behavior")
            else None
        )
        normalized = self.history.normalize(
            key,
            Bounds(current, result.replicas, minimum, maximum),
            now,
            behavior=behavior,
            downscale_window=self.downscale_window,
        )
        able = normalized.able_to_scale
        status.set(st.ABLE_TO_SCALE, able.status, able.reason, able.message)
        limited = normalized.scaling_limited
        status.set(st.SCALING_LIMITED, limited.status, limited.reason, limited.message)
        desired = normalized.replicas
        reason = (
            f"{result.metric_name} above target"
            if desired > current
            else "All metrics below target"
        )
        return _Decision(desired, desired != current, reason)

    async def _rescale(
        self,
        hpa: autoscaling_pb2.HorizontalPodAutoscaler,
        status: st.Status,
        target: Scale,
        current: int,
        decision: _Decision,
        now: float,
    ) -> bool:
        """Set the target's replicas; whether that worked (conditions and events say so)."""
        try:
            await self._set_scale(hpa, target, decision.desired)
        except ScaleError as exc:
            status.set(
                st.ABLE_TO_SCALE,
                False,
                "FailedUpdateScale",
                f"the HPA controller was unable to update the target scale: {exc}",
            )
            self._warn(
                hpa,
                "FailedRescale",
                f"New size: {decision.desired}; reason: {decision.reason}; error: {exc}",
            )
            return False
        status.set(
            st.ABLE_TO_SCALE,
            True,
            "SucceededRescale",
            f"the HPA controller was able to update the target scale to {decision.desired}",
        )
        self.recorder.event(
            hpa,
            NORMAL,
            "SuccessfulRescale",
            f"New size: {decision.desired}; reason: {decision.reason}",
        )
        behavior = (
            api.effective_behavior(hpa, int(self.downscale_window))
            if hpa.spec.HasField("behavior")
            else None
        )
        self.history.record_scale(object_key(hpa), current, decision.desired, now, behavior)
        status.scaled(now)
        log.info(
            "rescaled",
            hpa=object_key(hpa),
            target=f"{hpa.spec.scale_target_ref.kind}/{hpa.spec.scale_target_ref.name}",
            replicas=decision.desired,
            previous=current,
            reason=decision.reason,
        )
        return True

    # ---- the target's scale -----------------------------------------------------------------

    async def _get_scale(self, hpa: autoscaling_pb2.HorizontalPodAutoscaler) -> Scale:
        ref = hpa.spec.scale_target_ref
        kind = SCALE_TARGETS.get(ref.kind)
        if kind is None:
            known = ", ".join(SCALE_TARGETS)
            raise ScaleError(f"unsupported scale target kind {ref.kind!r} (supported: {known})")
        try:
            return await self.client.get_scale(kind, ref.name, namespace=hpa.metadata.namespace)
        except NotFound:
            raise ScaleError(f'{ref.kind.lower()}s "{ref.name}" not found') from None
        except ClientError as exc:
            raise ScaleError(str(exc)) from exc

    async def _set_scale(
        self, hpa: autoscaling_pb2.HorizontalPodAutoscaler, scale: Scale, replicas: int
    ) -> None:
        """spec.replicas = `replicas` on the version `scale` was read from; one retry on a
        fresh Scale when the target changed meanwhile (a rollout touching its status, say)."""
        kind = SCALE_TARGETS[hpa.spec.scale_target_ref.kind]
        for attempt in range(2):
            try:
                await self.client.update_scale(
                    kind,
                    scale.name,
                    replicas,
                    namespace=scale.namespace,
                    resource_version=scale.resource_version,
                )
                return
            except Conflict as exc:
                if attempt:
                    raise ScaleError(str(exc)) from exc
            except ClientError as exc:
                raise ScaleError(str(exc)) from exc
            scale = await self._get_scale(hpa)

    # ---- helpers ---------------------------------------------------------------------------------

    def _pods(self, namespace: str, selector: LabelSelector) -> list[core_pb2.Pod]:
        return [
            p
            for p in self.pod_informer.cache.by_index(NAMESPACE_INDEX, namespace)
            if selector.matches(p.metadata.labels)
        ]

    def _warn(
        self, hpa: autoscaling_pb2.HorizontalPodAutoscaler, reason: str, message: str
    ) -> None:
        self.recorder.event(hpa, WARNING, reason, message)

    async def _write_status(
        self, hpa: autoscaling_pb2.HorizontalPodAutoscaler, status: st.Status
    ) -> None:
        if status.result() == hpa.status:
            return
        new = _pods.copy_of(hpa)
        new.status.CopyFrom(status.result())
        # Conflict: the spec changed meanwhile, and its update event brings the HPA back at
        # once; NotFound: it is gone. Either way this pass's status is moot.
        with contextlib.suppress(Conflict, NotFound):
            await self.client.update_status(new)
