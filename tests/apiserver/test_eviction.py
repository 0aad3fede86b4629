"""The pods/eviction decision (pure), against Kubernetes' rules for disruption budgets."""

from __future__ import annotations

import pytest

from k8semu.api import timestamps
from k8semu.apiserver.errors import StatusError, TooManyRequests
from k8semu.apiserver.eviction import decide
from k8semu.pb.api.v1 import core_pb2, policy_pb2

NOW = 1_700_000_000.0


def pod(name: str = "web-1", *, ready: bool = True, phase: str = "Running") -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, "default"
    p.metadata.labels["app"] = "web"
    p.status.phase = phase
    p.status.conditions.add(type="Ready", status="True" if ready else "False")
    return p


def budget(
    allowed: int, *, healthy: int = 3, desired: int = 2, name: str = "web"
) -> policy_pb2.PodDisruptionBudget:
    b = policy_pb2.PodDisruptionBudget()
    b.metadata.name, b.metadata.generation = name, 1
    b.spec.selector.match_labels["app"] = "web"
    b.status.observed_generation = 1
    b.status.disruptions_allowed = allowed
    b.status.current_healthy, b.status.desired_healthy = healthy, desired
    return b


def test_no_budget_or_a_finished_or_deleted_pod_is_evicted_at_once() -> None:
    assert decide(pod(), [], NOW).budget is None
    other = budget(0)
    other.spec.selector.match_labels["app"] = "db"
    assert decide(pod(), [other], NOW).budget is None
    assert decide(pod(phase="Succeeded"), [budget(0)], NOW).budget is None
    going = pod()
    going.metadata.deletion_timestamp.CopyFrom(timestamps.time_at(NOW))
    assert decide(going, [budget(0)], NOW).budget is None


def test_an_allowed_eviction_spends_one_disruption_and_records_the_pod() -> None:
    d = decide(pod(), [budget(1)], NOW)
    assert d.budget is not None
    assert d.budget.status.disruptions_allowed == 0
    assert d.budget.status.disrupted_pods["web-1"].seconds == int(NOW)


def test_refusals_are_429_with_kubernetes_message() -> None:
    with pytest.raises(TooManyRequests) as refused:
        decide(pod(), [budget(0, healthy=2, desired=2)], NOW)
    assert str(refused.value) == (
        "Cannot evict pod as it would violate the pod's disruption budget. The disruption"
        " budget web needs 2 healthy pods and has 2 currently"
    )
    stale = budget(1)
    stale.metadata.generation = 2  # the controller has not seen the latest spec
    with pytest.raises(TooManyRequests, match="still being processed"):
        decide(pod(), [stale], NOW)
    with pytest.raises(StatusError, match="more than one PodDisruptionBudget"):
        decide(pod(), [budget(1), budget(1, name="web2")], NOW)


def test_an_unready_pod_goes_when_the_budget_is_met_or_always_allowed() -> None:
    assert decide(pod(ready=False), [budget(0, healthy=2, desired=2)], NOW).budget is None
    with pytest.raises(TooManyRequests):
        decide(pod(ready=False), [budget(0, healthy=1, desired=2)], NOW)
    always = budget(0, healthy=1, desired=2)
    always.spec.unhealthy_pod_eviction_policy = "AlwaysAllow"
    assert decide(pod(ready=False), [always], NOW).budget is None
