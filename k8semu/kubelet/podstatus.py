"""What the API sees of a pod on this node: the pod's status computed from its containers'
records (Kubernetes' generateAPIPodStatus): the phase, each container's state, the
conditions and the QoS class.

A `ContainerRecord` is a pod worker's memory of one container across its runs; the worker
(podworker.py) changes records, this module only reads them. Pure apart from the wall clock
that stamps a condition's transition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import timestamp_pb2

from k8semu.api import timestamps
from k8semu.kubelet.backoff import Backoff
from k8semu.kubelet.runtime import ContainerHandle, ExitInfo
from k8semu.pb.api.v1 import core_pb2


def should_restart(policy: str, exit_code: int, *, init: bool) -> bool:
    """Whether a container that ended with `exit_code` runs again under `policy`."""
    if init:
        return exit_code != 0 and policy != "Never"
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False


def terminated(info: ExitInfo, started_at: float, container_id: str) -> Any:
    """The ContainerStateTerminated of a run that ended."""
    t = core_pb2.ContainerStateTerminated(
        exit_code=info.exit_code,
        signal=info.signal,
        reason=info.reason,
        message=info.message,
        container_id=container_id,
    )
    t.finished_at.CopyFrom(timestamps.time_at(info.finished_at))
    if started_at:
        t.started_at.CopyFrom(timestamps.time_at(started_at))
    return t


def qos_class(pod: core_pb2.Pod) -> str:
    """Kubernetes' QoS class from the containers' requests and limits (cpu, memory)."""
    containers = [*pod.spec.init_containers, *pod.spec.containers]
    if not any(c.resources.requests or c.resources.limits for c in containers):
        return "BestEffort"
    for c in containers:
        for res in ("cpu", "memory"):
            limit = c.resources.limits.get(res)
            request = c.resources.requests.get(res, limit)
            if not limit or request != limit:
                return "Burstable"
    return "Guaranteed"


@dataclass(eq=False)
class ContainerRecord:
    spec: core_pb2.Container
    init: bool
    backoff: Backoff
    where: str  # field path, for messages
    restart_count: int = 0
    handle: ContainerHandle | None = None
    last: Any = None  # ContainerStateTerminated of the most recent run that ended
    before_last: Any = None  # ... and of the one before it
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    next_start: float = 0.0  # loop time before which it must not start
    start_failures: int = 0  # config/image errors in a row (their own back-off)
    ready: bool = False
    started: bool = False
    started_event: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # of the current or last run, for exec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def succeeded(self) -> bool:
        """Its last run ended with exit code 0 and it is not running again."""
        return self.handle is None and self.last is not None and self.last.exit_code == 0

    def cancel_tasks(self) -> None:
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        self.tasks = []


def pod_phase(
    policy: str,
    inits: Sequence[ContainerRecord],
    containers: Sequence[ContainerRecord],
    *,
    failed_init: bool,
) -> str:
    """Pending until every init container succeeded and every container ran once; Running
    while one runs (or restarts); then Succeeded or Failed."""
    if failed_init:
        return "Failed"
    if not all(rec.succeeded for rec in inits):
        return "Pending"
    waiting = running = failed = 0
    for rec in containers:
        if rec.handle is not None:
            running += 1
        elif rec.last is None:
            waiting += 1
        elif should_restart(policy, rec.last.exit_code, init=False):
            running += 1  # restarting (CrashLoopBackOff): still a running pod
        elif rec.last.exit_code != 0:
            failed += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    return "Failed" if failed else "Succeeded"


def container_status(
    rec: ContainerRecord,
    policy: str,
    *,
    initializing: bool,
    terminating: bool,
) -> core_pb2.ContainerStatus:
    """Running, terminated for good (or while the pod terminates), else waiting (with the
    back-off's reason); while `initializing` (an init container runs or has yet to run), a
    waiting container is PodInitializing."""
    st = core_pb2.ContainerStatus(
        name=rec.name,
        image=rec.spec.image,
        image_id=rec.spec.image,
        restart_count=rec.restart_count,
        ready=rec.ready and rec.handle is not None,
        started=rec.started and rec.handle is not None,
    )
    if rec.handle is not None:
        st.state.running.started_at.CopyFrom(timestamps.time_at(rec.handle.started_at))
        st.container_id = rec.handle.container_id
        if rec.last is not None:
            st.last_state.terminated.CopyFrom(rec.last)
    elif rec.last is not None and (
        (rec.init and rec.last.exit_code == 0)
        or not should_restart(policy, rec.last.exit_code, init=rec.init)
        or terminating
    ):
        st.state.terminated.CopyFrom(rec.last)
        st.container_id = rec.last.container_id
        if rec.before_last is not None:
            st.last_state.terminated.CopyFrom(rec.before_last)
    else:
        reason, message = rec.waiting_reason, rec.waiting_message
        if not rec.init and initializing:
            reason, message = "PodInitializing", ""
        st.state.waiting.reason = reason
        if message:
            st.state.waiting.message = message
        if rec.last is not None:
            st.last_state.terminated.CopyFrom(rec.last)
    return st


class PodConditions:
    """The pod's conditions, each keeping its lastTransitionTime until its status flips
    (seeded from the stored status, so a kubelet restart keeps the times)."""

    def __init__(self, stored: Sequence[core_pb2.PodCondition]) -> None:
        self._seen: dict[str, tuple[str, str, str, timestamp_pb2.Timestamp]] = {
            c.type: (c.status, c.reason, c.message, c.last_transition_time) for c in stored
        }

    def condition(
        self, type_: str, ok: bool, reason: str = "", message: str = ""
    ) -> core_pb2.PodCondition:
        status = "True" if ok else "False"
        if ok:
            reason = message = ""
        old = self._seen.get(type_)
        if old is None or old[0] != status or old[1] != reason or old[2] != message:
            ts = old[3] if old is not None and old[0] == status else timestamps.time_at(time.time())
            self._seen[type_] = (status, reason, message, ts)
        _, _, _, ts = self._seen[type_]
        cond = core_pb2.PodCondition(type=type_, status=status, reason=reason, message=message)
        cond.last_transition_time.CopyFrom(ts)
        return cond

    def of_pod(
        self,
        inits: Sequence[ContainerRecord],
        containers: Sequence[ContainerRecord],
        *,
        done: bool,
    ) -> list[core_pb2.PodCondition]:
        """Initialized, Ready, ContainersReady and PodScheduled, as the kubelet reports them."""
        pending_inits = [r.name for r in inits if not r.succeeded]
        unready = [r.name for r in containers if not (r.ready and r.handle is not None)]
        ready_reason = "PodCompleted" if done else "ContainersNotReady"
        ready_message = "" if done else f"containers with unready status: [{' '.join(unready)}]"
        ready = not unready and not done
        return [
            self.condition(
                "Initialized",
                not pending_inits,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending_inits)}]",
            ),
            self.condition("Ready", ready, ready_reason, ready_message),
            self.condition("ContainersReady", ready, ready_reason, ready_message),
            self.condition("PodScheduled", True),
        ]
