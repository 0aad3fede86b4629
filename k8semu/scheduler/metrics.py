"""The scheduler's metrics, as kube-scheduler names them (pkg/scheduler/metrics):
scheduler_schedule_attempts_total{result,profile},
scheduler_scheduling_attempt_duration_seconds{result,profile} (one scheduling cycle: the
filters and scores, not the bind, which runs after it) and scheduler_pending_pods{queue}
(read from the leader's queue when scraped: a follower has no queue and reports 0).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from k8semu import metrics

if TYPE_CHECKING:
    from k8semu.scheduler.scheduler import Scheduler

SCHEDULED = "scheduled"
UNSCHEDULABLE = "unschedulable"
ERROR = "error"

ATTEMPTS = Counter(
    "scheduler_schedule_attempts",
    "Number of attempts to schedule pods, by the result.",
    ["result", "profile"],
)
# kube-scheduler's buckets: 1 ms doubling, 15 of them (to ~16 s).
ATTEMPT_DURATION = Histogram(
    "scheduler_scheduling_attempt_duration_seconds",
    "Scheduling attempt latency in seconds (scheduling algorithm + binding).",
    ["result", "profile"],
    buckets=tuple(0.001 * 2**i for i in range(15)),
)


class _Pending(Collector):
    """scheduler_pending_pods{queue}: active, backoff, unschedulable (one scheduler per
    process; in-process tests: the last one started)."""

    def __init__(self) -> None:
        self.scheduler: weakref.ref[Scheduler] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        scheduler = self.scheduler() if self.scheduler is not None else None
        queue = scheduler.queue if scheduler is not None else None
        lengths = queue.lengths() if queue is not None else (0, 0, 0)
        family = GaugeMetricFamily(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type.",
            labels=["queue"],
        )
        for name, length in zip(("active", "backoff", "unschedulable"), lengths, strict=True):
            family.add_metric([name], length)
        yield family


PENDING = _Pending()
metrics.live(PENDING)
