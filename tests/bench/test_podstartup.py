"""Pod startup phases are stamped once, in order, from what the watch shows."""

from __future__ import annotations

from k8semu.bench.podstartup import PodStartupTracker, breakdown
from k8semu.pb.api.v1 import core_pb2


def _pod(name: str) -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name = name
    pod.metadata.creation_timestamp.FromSeconds(100)
    return pod


def test_phases_are_stamped_once_and_broken_down() -> None:
    tracker = PodStartupTracker(client=None)  # type: ignore[arg-type]  # observe() only
    pod = _pod("p-1")
    tracker.observe(pod, 100.2)
    pod.spec.node_name = "n1"
    cond = pod.status.conditions.add(type="PodScheduled", status="True")
    cond.last_transition_time.FromMilliseconds(100_100)
    tracker.observe(pod, 100.3)
    pod.status.start_time.FromMilliseconds(100_500)
    pod.status.phase = "Running"
    tracker.observe(pod, 100.7)
    tracker.observe(pod, 105.0)  # a later update changes nothing already stamped
    pod.status.conditions.add(type="Ready", status="True")
    tracker.observe(pod, 101.0)
    tracker.observe(_pod("other"), 100.0)
    t = tracker.pods["p-1"]
    assert (t.created, t.scheduled, t.bound, t.started, t.running, t.ready) == (
        100.0, 100.1, 100.3, 100.5, 100.7, 101.0,
    )  # fmt: skip
    assert t.node == "n1"
    assert tracker.count("running") == 1 and tracker.count("bound") == 1
    b = breakdown(list(tracker.pods.values()))
    assert round(b["startup"].p99, 3) == 0.7
    assert round(b["bound->started"].p50, 3) == 0.2
    assert b["startup"].count == 1  # "other" never ran


def test_prefix_filters_pods() -> None:
    tracker = PodStartupTracker(client=None, prefix="bench-")  # type: ignore[arg-type]
    tracker.observe(_pod("bench-1"), 1.0)
    tracker.observe(_pod("web-1"), 1.0)
    assert list(tracker.pods) == ["bench-1"]
