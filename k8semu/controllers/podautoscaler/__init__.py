"""The HorizontalPodAutoscaler: the pure algorithm (`replicas`: one metric's proposal;
`behavior`: stabilization, policies, min/max) and the controller that applies it (`controller`,
reading metrics through a `metrics.MetricsSource`). See docs/controllers.md.
"""

from __future__ import annotations

from k8semu.controllers.podautoscaler.controller import HorizontalPodAutoscalerController

__all__ = ["HorizontalPodAutoscalerController"]
