"""The HPA status one controller pass builds: conditions keep their lastTransitionTime while
their status stays the same (Kubernetes' setCondition), so an unchanged pass writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from k8semu.pb.api.v1 import autoscaling_pb2 as pb

ABLE_TO_SCALE = "AbleToScale"
SCALING_ACTIVE = "ScalingActive"
SCALING_LIMITED = "ScalingLimited"


def timestamp(now: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(now * 1e9))
    return ts


class Status:
    """A copy of `hpa.status` to change; `result()` is the status to write."""

    def __init__(self, hpa: pb.HorizontalPodAutoscaler, now: float) -> None:
        self._status = pb.HorizontalPodAutoscalerStatus()
        self._status.CopyFrom(hpa.status)
        self._status.observed_generation = hpa.metadata.generation
        self._now = now

    def set(self, type_: str, status: bool, reason: str, message: str) -> None:
        text = "True" if status else "False"
        for cond in self._status.conditions:
            if cond.type == type_:
                if cond.status != text:
                    cond.last_transition_time.CopyFrom(timestamp(self._now))
                cond.status, cond.reason, cond.message = text, reason, message
                return
        self._status.conditions.append(
            pb.HorizontalPodAutoscalerCondition(
                type=type_,
                status=text,
                last_transition_time=timestamp(self._now),
                reason=reason,
                message=message,
            )
        )

    def metrics(self, statuses: Sequence[pb.MetricStatus]) -> None:
        del self._status.current_metrics[:]
        self._status.current_metrics.extend(statuses)

    def replicas(self, current: int, desired: int) -> None:
        self._status.current_replicas = current
        self._status.desired_replicas = desired

    def scaled(self, now: float) -> None:
        self._status.last_scale_time.CopyFrom(timestamp(now))

    def result(self) -> pb.HorizontalPodAutoscalerStatus:
        return self._status
