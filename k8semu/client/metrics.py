"""Metrics of what the client library runs inside each component, named as client-go names
them: the work queues' (k8s.io/client-go/util/workqueue, registered by
k8s.io/component-base/metrics/prometheus/workqueue) and leader election's
(leader_election_master_status).

Only named work queues report (client-go's rule too); several queues of one name in a
process (in-process tests) add up. Depth is read from the live queues when scraped.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from k8semu import metrics

if TYPE_CHECKING:
    from prometheus_client.metrics import Counter as CounterT
    from prometheus_client.metrics import Histogram as HistogramT

# client-go's buckets for both duration histograms: 10 ns to 10 s, by tens.
_BUCKETS = tuple(1e-8 * 10**i for i in range(10))

ADDS = Counter("workqueue_adds", "Total number of adds handled by workqueue", ["name"])
RETRIES = Counter("workqueue_retries", "Total number of retries handled by workqueue", ["name"])
QUEUE_DURATION = Histogram(
    "workqueue_queue_duration_seconds",
    "How long in seconds an item stays in workqueue before being requested.",
    ["name"],
    buckets=_BUCKETS,
)
WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds",
    "How long in seconds processing an item from workqueue takes.",
    ["name"],
    buckets=_BUCKETS,
)
LEADER = Gauge(
    "leader_election_master_status",
    "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, "
    "1 indicates master. 'name' is the string used to identify the lease.",
    ["name"],
)


class QueueMetrics:
    """One named queue's children, resolved once (a label lookup per add would cost more
    than the add)."""

    def __init__(self, name: str) -> None:
        self.adds: CounterT = ADDS.labels(name)
        self.retries: CounterT = RETRIES.labels(name)
        self.queue_duration: HistogramT = QUEUE_DURATION.labels(name)
        self.work_duration: HistogramT = WORK_DURATION.labels(name)


class _Depths(Collector):
    """workqueue_depth{name}: the keys ready to be handed out, per name, when scraped."""

    def __init__(self) -> None:
        self.queues: weakref.WeakSet[Any] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depths: dict[str, int] = defaultdict(int)
        for queue in list(self.queues):
            depths[queue.name] += queue.depth
        family = GaugeMetricFamily("workqueue_depth", "Current depth of workqueue", labels=["name"])
        for name, depth in sorted(depths.items()):
            family.add_metric([name], depth)
        yield family


DEPTHS = _Depths()
metrics.live(DEPTHS)
