"""The scheduler (`k8semu scheduler`): binds pending pods to nodes by resources, selectors,
node affinity, taints, host ports, pod anti-affinity and spreading (docs/scheduler.md).

| module | owns |
| --- | --- |
| `framework.py` | `PodInfo`/`NodeInfo`: what a pod needs and a node has, precomputed |
| `plugins.py` | filters and scores: pure functions |
| `algorithm.py` | one decision: sample, filter, score, pick |
| `cache.py` | NodeInfos kept incrementally, and the assume cache |
| `queue.py` | active / backoff / unschedulable queues |
| `scheduler.py` | the component: informers, loop, binds, events, leader election |
"""

from k8semu.scheduler.scheduler import (
    DEFAULT_SCHEDULER,
    DEFAULT_SCHEDULER_NAME,
    Scheduler,
    SchedulerConfig,
    default_identity,
)

__all__ = [
    "DEFAULT_SCHEDULER",
    "DEFAULT_SCHEDULER_NAME",
    "Scheduler",
    "SchedulerConfig",
    "default_identity",
]
