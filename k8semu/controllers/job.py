"""The Job controller (batch/v1): runs a Job's pods to completion, counts failures against
its backoff limit, enforces its deadline, suspends and resumes it, and deletes it a TTL
after it finished (Kubernetes' job and ttl-after-finished controllers in one).

Per key (namespace/name), level-triggered; `plan` is the pure decision:

1. count the Job's pods (owned by its uid): active, succeeded, failed, ready, terminating,
   and for `completionMode: Indexed` which completion indexes succeeded or run;
2. a finished Job (a Complete or Failed condition) only loses its active pods and, with
   `ttlSecondsAfterFinished`, is deleted (background propagation: the garbage collector
   removes its pods) once the TTL has passed;
3. otherwise, in this order: failures (Failed pods, plus container restarts of active pods
   under restartPolicy OnFailure) above `backoffLimit` fail it (BackoffLimitExceeded);
   `activeDeadlineSeconds` after its start fails it (DeadlineExceeded); enough successes
   complete it (Complete, completionTime); a suspended Job has its active pods deleted
   (Suspended); else pods are created up to `parallelism` (never more than the completions
   still missing; Indexed: the lowest missing indexes, one pod each, named
   `<job>-<index>-xxxxx` with hostname `<job>-<index>`, the index in the annotation and label
   `batch.kubernetes.io/job-completion-index` and in `JOB_COMPLETION_INDEX`);
4. status (active, ready, terminating, succeeded, failed, completedIndexes, startTime,
   conditions) is written when it changed.

Differences from Kubernetes, on purpose: successes and failures are counted from the pods
that exist (Kubernetes tracks them with a pod finalizer, so a finished pod deleted by hand
still counts; here it does not, and a deleted successful pod is run again); no pod failure
policy, success policy or backoffLimitPerIndex; finished Jobs get Complete/Failed without the
interim SuccessCriteriaMet/FailureTarget conditions of 1.31+.

Owns the Job's pods and status; never writes a Job's spec.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from k8semu.api import timestamps
from k8semu.client import Conflict, NotFound, Preconditions, object_key
from k8semu.client.events import NORMAL, WARNING
from k8semu.controllers import _pods
from k8semu.controllers._podcontrol import PodOwnerController
from k8semu.controllers.context import ControllerContext
from k8semu.log import get_logger
from k8semu.pb.api.v1 import batch_pb2, core_pb2

log = get_logger(__name__)

API_VERSION = "batch/v1"
KIND = "Job"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
INDEX_ENV = "JOB_COMPLETION_INDEX"
INDEXED = "Indexed"
FINISHED = ("Complete", "Failed")
MAX_CREATES = 500  # pods created per reconcile (Kubernetes' MaxPodCreateDeletePerSync)


@dataclass(slots=True)
class Counts:
    """What a Job's pods say."""

    active: list[core_pb2.Pod] = field(default_factory=list)
    succeeded: int = 0
    failed: int = 0
    ready: int = 0
    terminating: int = 0
    restarts: int = 0  # container restarts of the active pods
    succeeded_indexes: set[int] = field(default_factory=set)
    active_indexes: dict[int, list[core_pb2.Pod]] = field(default_factory=dict)


def pod_index(pod: core_pb2.Pod) -> int | None:
    text = pod.metadata.annotations.get(INDEX_KEY, "")
    return int(text) if text.isdigit() else None


def count(job: batch_pb2.Job, pods: Iterable[core_pb2.Pod]) -> Counts:
    c = Counts()
    indexed = job.spec.completion_mode == INDEXED
    completions = job.spec.completions
    for pod in pods:
        index = pod_index(pod) if indexed else None
        if indexed and (index is None or index >= completions):
            index = None  # not one of ours to count by index; still active or finished
        phase = pod.status.phase
        if _pods.is_pod_terminating(pod) and phase not in ("Succeeded", "Failed"):
            c.terminating += 1
            continue
        if phase == "Succeeded":
            c.succeeded += 1
            if index is not None:
                c.succeeded_indexes.add(index)
        elif phase == "Failed":
            c.failed += 1
        else:
            c.active.append(pod)
            c.restarts += _pods.restart_count(pod)
            c.ready += 1 if _pods.is_pod_ready(pod) else 0
            if index is not None:
                c.active_indexes.setdefault(index, []).append(pod)
    return c


def format_indexes(indexes: Iterable[int]) -> str:
    """Kubernetes' completedIndexes text: sorted intervals, "1,3-5,7"."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(set(indexes)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def condition(job: batch_pb2.Job, type_: str) -> batch_pb2.JobCondition | None:
    for c in job.status.conditions:
        if c.type == type_:
            return c
    return None


def finished(job: batch_pb2.Job) -> batch_pb2.JobCondition | None:
    """The Job's Complete or Failed condition when it is true."""
    for c in job.status.conditions:
        if c.type in FINISHED and c.status == "True":
            return c
    return None


@dataclass(slots=True)
class Plan:
    """What one reconcile does: `creates` new pods (an index each for Indexed Jobs, else
    None), `deletes`, the new status, Events to record, and when to look again."""

    status: batch_pb2.JobStatus
    creates: list[int | None] = field(default_factory=list)
    deletes: list[core_pb2.Pod] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    requeue_after: float | None = None


def _set_condition(
    status: batch_pb2.JobStatus, type_: str, state: str, reason: str, message: str, now: float
) -> None:
    for c in status.conditions:
        if c.type == type_:
            break
    else:
        c = status.conditions.add(type=type_)
    if c.status != state:
        c.last_transition_time.CopyFrom(timestamps.time_at(now))
    c.status, c.reason, c.message = state, reason, message
    c.last_probe_time.CopyFrom(timestamps.time_at(now))


def _complete(job: batch_pb2.Job, c: Counts) -> bool:
    spec = job.spec
    if spec.completion_mode == INDEXED:
        return len(c.succeeded_indexes) >= spec.completions
    if spec.HasField("completions"):
        return c.succeeded >= spec.completions
    return c.succeeded > 0 and not c.active  # a work queue: one success, nobody left working


def _wanted(job: batch_pb2.Job, c: Counts) -> tuple[list[int | None], list[core_pb2.Pod]]:
    """Pods to create and to delete for a running Job."""
    spec = job.spec
    parallelism = spec.parallelism
    if spec.completion_mode == INDEXED:
        extra = [p for pods in c.active_indexes.values() for p in pods[1:]]  # one per index
        counted = {id(pods[0]) for pods in c.active_indexes.values()}
        seen = counted | {id(p) for p in extra}
        unindexed = [p for p in c.active if id(p) not in seen]
        running = len(counted)
        missing = [
            i
            for i in range(spec.completions)
            if i not in c.succeeded_indexes and i not in c.active_indexes
        ]
        room = max(parallelism - running, 0)
        return list(missing[: min(room, MAX_CREATES)]), [*extra, *unindexed]
    if spec.HasField("completions"):
        want = min(parallelism, max(spec.completions - c.succeeded, 0))
    else:
        want = parallelism if c.succeeded == 0 else len(c.active)
    diff = want - len(c.active)
    if diff > 0:
        return [None] * min(diff, MAX_CREATES), []
    return [], _pods.pods_to_delete(c.active, -diff) if diff < 0 else []


def plan(job: batch_pb2.Job, pods: Iterable[core_pb2.Pod], now: float) -> Plan:
    """The pure decision of one reconcile at wall-clock time `now`."""
    spec = job.spec
    c = count(job, pods)
    status = batch_pb2.JobStatus()
    status.CopyFrom(job.status)
    p = Plan(status=status)
    done = finished(job)
    if done is None:
        failures = c.failed + (
            c.restarts if spec.template.spec.restart_policy == "OnFailure" else 0
        )
        deadline = spec.active_deadline_seconds if spec.HasField("active_deadline_seconds") else 0
        started = timestamps.to_seconds(status.start_time) if status.HasField("start_time") else 0
        if failures > spec.backoff_limit:
            _fail(p, "BackoffLimitExceeded", "Job has reached the specified backoff limit", now)
        elif deadline and started and now >= started + deadline:
            _fail(p, "DeadlineExceeded", "Job was active longer than specified deadline", now)
        elif _complete(job, c):
            _set_condition(status, "Complete", "True", "", "", now)
            status.completion_time.CopyFrom(timestamps.time_at(now))
            p.events.append((NORMAL, "Completed", "Job completed"))
        elif spec.suspend:
            _suspend(p, now)
        else:
            _run(job, p, c, now)
            if deadline:
                start = timestamps.to_seconds(status.start_time)
                p.requeue_after = max(start + deadline - now, 0.0) + 0.05
    if finished(batch_pb2.Job(status=status)) is not None or spec.suspend:
        p.deletes = list(c.active)
    status.active = len(c.active) - len(p.deletes) + len(p.creates)
    status.ready = c.ready
    status.terminating = c.terminating + len(p.deletes)
    status.succeeded, status.failed = c.succeeded, c.failed
    if spec.completion_mode == INDEXED:
        status.completed_indexes = format_indexes(c.succeeded_indexes)
    return p


def _fail(p: Plan, reason: str, message: str, now: float) -> None:
    _set_condition(p.status, "Failed", "True", reason, message, now)
    p.events.append((WARNING, reason, message))


def _suspend(p: Plan, now: float) -> None:
    """Kubernetes stops a suspended Job's clock: its startTime is cleared, and set anew when
    it resumes, so activeDeadlineSeconds counts only running time since the last resume."""
    suspended = next((c for c in p.status.conditions if c.type == "Suspended"), None)
    if suspended is None or suspended.status != "True":
        _set_condition(p.status, "Suspended", "True", "JobSuspended", "Job suspended", now)
        p.events.append((NORMAL, "Suspended", "Job suspended"))
    p.status.ClearField("start_time")


def _run(job: batch_pb2.Job, p: Plan, c: Counts, now: float) -> None:
    suspended = next((x for x in p.status.conditions if x.type == "Suspended"), None)
    if suspended is not None and suspended.status == "True":
        _set_condition(p.status, "Suspended", "False", "JobResumed", "Job resumed", now)
        p.events.append((NORMAL, "Resumed", "Job resumed"))
        p.status.ClearField("start_time")
    if not p.status.HasField("start_time"):
        p.status.start_time.CopyFrom(timestamps.time_at(now))
    p.creates, p.deletes = _wanted(job, c)


def new_pod(job: batch_pb2.Job, index: int | None) -> core_pb2.Pod:
    """A pod of `job` from its template; for an Indexed Job, the pod of completion `index`."""
    pod = _pods.pod_from_template(job.spec.template, job, api_version=API_VERSION, kind=KIND)
    if index is not None:
        name = f"{job.metadata.name}-{index}"
        pod.metadata.generate_name = f"{name}-"
        pod.metadata.annotations[INDEX_KEY] = str(index)
        pod.metadata.labels[INDEX_KEY] = str(index)
        if not pod.spec.hostname:
            pod.spec.hostname = name
        for container in [*pod.spec.init_containers, *pod.spec.containers]:
            container.env.add(name=INDEX_ENV, value=str(index))
    return pod


class JobController(PodOwnerController):
    """One instance per process; `run()` after the context's informers are started."""

    name = "job"

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx, clock=clock)
        self.job_informer = self.informer(batch_pb2.Job)
        self.pod_informer = self.informer(core_pb2.Pod, owned=True)
        self.watch(self.job_informer, self._enqueue, deleted=self._owner_deleted)
        self.pod_informer.add_event_handler(
            on_add=self._pod_added,
            on_update=lambda old, new: self._pod_changed(new),
            on_delete=self._pod_deleted,
        )

    # ---- event handlers: only enqueue ------------------------------------------------------

    def _owner_key(self, pod: core_pb2.Pod) -> str | None:
        return _pods.controller_key(pod, KIND, self.job_informer.cache.get_by_name)

    def _pod_added(self, pod: core_pb2.Pod) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            self.queue.add(key)

    def _pod_changed(self, pod: core_pb2.Pod) -> None:
        key = self._owner_key(pod)
        if key is not None:
            if _pods.is_pod_terminating(pod):
                self.expectations.deletion_observed(key, object_key(pod))
            self.queue.add(key)

    # ---- running -------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        job = self.job_informer.cache.get(key)
        if job is None:
            self.expectations.forget(key)
            return
        if job.metadata.HasField("deletion_timestamp") or not self.expectations.satisfied(key):
            return
        now = self.clock()
        if await self._expired(job, now):
            return
        p = plan(job, self.controlled(self.pod_informer, job), now)
        error = await self.pods.apply(
            job, self.expectations, p.deletes, [new_pod(job, i) for i in p.creates]
        )
        for type_, reason, message in p.events:
            self.recorder.event(job, type_, reason, message)
        await self.write_status(job, p.status)
        if p.requeue_after is not None:
            self.queue.add_after(key, p.requeue_after)
        if finished(batch_pb2.Job(status=p.status)) is not None:
            await self._expired(job, now, p.status)
        if error is not None:
            raise error

    async def _expired(
        self, job: batch_pb2.Job, now: float, status: batch_pb2.JobStatus | None = None
    ) -> bool:
        """ttlSecondsAfterFinished: True when the finished Job was deleted now; a Job not
        yet due is looked at again when it is."""
        done = finished(batch_pb2.Job(status=status or job.status))
        if done is None or not job.spec.HasField("ttl_seconds_after_finished"):
            return False
        due = timestamps.to_seconds(done.last_transition_time) + job.spec.ttl_seconds_after_finished
        if now < due:
            self.queue.add_after(object_key(job), due - now + 0.05)
            return False
        try:
            await self.client.delete(
                batch_pb2.Job,
                job.metadata.name,
                namespace=job.metadata.namespace,
                propagation_policy="Background",
                preconditions=Preconditions(uid=job.metadata.uid),
            )
        except (NotFound, Conflict):
            return True
        log.info("finished job deleted after its TTL", job=object_key(job))
        return True
