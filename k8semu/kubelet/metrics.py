"""The kubelet's metrics, as the kubelet names them (pkg/kubelet/metrics):
kubelet_pod_start_duration_seconds (from the kubelet first seeing a pod to its first
Running status), kubelet_running_pods and kubelet_running_containers{container_state}
(counted from the live node agents when scraped; a hollow kubelet's nodes add up).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from k8semu import metrics

if TYPE_CHECKING:
    from k8semu.kubelet.node import NodeAgent

# The kubelet's buckets for kubelet_pod_start_duration_seconds.
POD_START = Histogram(
    "kubelet_pod_start_duration_seconds",
    "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
    buckets=(
        *(0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600),
        *(900, 1200, 1800, 2700, 3600),
    ),
)


class _Running(Collector):
    def __init__(self) -> None:
        self.agents: weakref.WeakSet[NodeAgent] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pods = containers = 0
        for agent in list(self.agents):
            for worker in list(agent.workers.values()):
                running = sum(1 for rec in worker.records.values() if rec.handle is not None)
                containers += running
                pods += running > 0
        yield GaugeMetricFamily(
            "kubelet_running_pods", "Number of pods that have a running pod sandbox", value=pods
        )
        family = GaugeMetricFamily(
            "kubelet_running_containers",
            "Number of containers currently running",
            labels=["container_state"],
        )
        family.add_metric(["running"], containers)
        yield family


RUNNING = _Running()
metrics.live(RUNNING)
