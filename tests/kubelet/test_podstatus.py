"""The pod status from container records (k8semu/kubelet/podstatus.py): phase, container
states and conditions, as the pod worker reports them. Pure: records are built by hand."""

from __future__ import annotations

import asyncio

from k8semu.kubelet.backoff import Backoff
from k8semu.kubelet.podstatus import (
    ContainerRecord,
    PodConditions,
    container_status,
    pod_phase,
    terminated,
)
from k8semu.kubelet.runtime import ContainerHandle, ExitInfo
from k8semu.pb.api.v1 import core_pb2

T0 = 1_700_000_000.0


def record(name: str, *, init: bool = False) -> ContainerRecord:
    return ContainerRecord(
        spec=core_pb2.Container(name=name, image="busybox"),
        init=init,
        backoff=Backoff(),
        where=f"spec.containers[{name}]",
    )


def running(rec: ContainerRecord) -> ContainerRecord:
    """`rec` with a run in progress (called from a test's event loop)."""
    exited: asyncio.Future[ExitInfo] = asyncio.get_running_loop().create_future()
    rec.handle = ContainerHandle(
        pod_uid="u", name=rec.name, restart=0, container_id="process://1", started_at=T0,
        exited=exited,
    )  # fmt: skip
    return rec


def ended(rec: ContainerRecord, code: int) -> ContainerRecord:
    rec.before_last = rec.last
    rec.last = terminated(ExitInfo(exit_code=code, finished_at=T0 + 5), T0, "process://1")
    return rec


async def test_the_phase_follows_init_containers_then_containers() -> None:
    init, main = record("init", init=True), record("main")
    assert pod_phase("Always", [init], [main], failed_init=False) == "Pending"
    ended(init, 0)
    assert pod_phase("Always", [init], [main], failed_init=False) == "Pending"  # main not run
    running(main)
    assert pod_phase("Always", [init], [main], failed_init=False) == "Running"
    main.handle = None
    ended(main, 1)
    assert pod_phase("Always", [init], [main], failed_init=False) == "Running"  # restarting
    assert pod_phase("Never", [init], [main], failed_init=False) == "Failed"
    assert pod_phase("OnFailure", [init], [ended(record("ok"), 0)], failed_init=False) == (
        "Succeeded"
    )
    assert pod_phase("Always", [init], [main], failed_init=True) == "Failed"


async def test_container_states_running_terminated_waiting() -> None:
    main = running(record("main"))
    st = container_status(main, "Always", initializing=False, terminating=False)
    assert st.state.HasField("running") and st.container_id == "process://1"
    main.handle = None
    ended(main, 2)
    main.waiting_reason, main.waiting_message = "CrashLoopBackOff", "back-off 10s"
    st = container_status(main, "Always", initializing=False, terminating=False)
    assert (st.state.waiting.reason, st.last_state.terminated.exit_code) == ("CrashLoopBackOff", 2)
    st = container_status(main, "Never", initializing=False, terminating=False)
    assert st.state.terminated.exit_code == 2
    st = container_status(main, "Always", initializing=False, terminating=True)
    assert st.state.terminated.exit_code == 2  # a terminating pod shows how it ended
    st = container_status(record("next"), "Always", initializing=True, terminating=False)
    assert st.state.waiting.reason == "PodInitializing"


async def test_a_condition_keeps_its_transition_time_until_its_status_flips() -> None:
    stored = core_pb2.PodCondition(type="Ready", status="False", reason="ContainersNotReady")
    stored.last_transition_time.FromSeconds(int(T0))
    conditions = PodConditions([stored])
    main = record("main")
    first = conditions.of_pod([], [main], done=False)
    ready = next(c for c in first if c.type == "Ready")
    assert ready.status == "False" and ready.last_transition_time.seconds == int(T0)
    assert "containers with unready status: [main]" in ready.message
    running(main).ready = True
    ready = next(c for c in conditions.of_pod([], [main], done=False) if c.type == "Ready")
    assert ready.status == "True" and ready.last_transition_time.seconds > int(T0)
    assert [c.type for c in first] == ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
