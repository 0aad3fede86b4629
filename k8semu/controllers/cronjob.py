"""The CronJob controller (batch/v1): creates a Job at each time its schedule names, as
Kubernetes' cronjob controller (v2) does.

Per key, level-triggered, on an injectable clock:

1. the CronJob's Jobs (controlled by its uid) give `status.active` (the unfinished ones) and
   `status.lastSuccessfulTime`; finished Jobs beyond `successfulJobsHistoryLimit` (3) and
   `failedJobsHistoryLimit` (1) are deleted, oldest first (background: the garbage collector
   removes their pods);
2. a suspended or deleted CronJob stops there;
3. the most recent schedule time not yet run is the last one in (lastScheduleTime, or the
   creation time; or now - startingDeadlineSeconds when later; now], computed in
   `spec.timeZone` (else the controller manager's local zone). More than 100 missed times is
   a Warning `TooManyMissedTimes`; a time older than `startingDeadlineSeconds` is a Warning
   `MissSchedule` and is skipped;
4. concurrencyPolicy: Allow runs it beside the active Jobs, Forbid waits until none is
   active (the Job's completion brings the CronJob back), Replace deletes the active Jobs
   first;
5. the Job is `<cronjob>-<scheduled time in minutes since the epoch>` (so a retry after a
   crash finds the one it made: AlreadyExists counts as made), from `spec.jobTemplate`, with
   the annotation `batch.kubernetes.io/cronjob-scheduled-timestamp`; then `active` and
   `lastScheduleTime` are written, and the key comes back at the next schedule time.

Owns the Jobs it creates and the CronJob's status.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime, tzinfo

from k8semu.api import cron, timestamps
from k8semu.client import AlreadyExists, NotFound, object_key
from k8semu.client.events import NORMAL, WARNING
from k8semu.controllers import _pods
from k8semu.controllers.context import ControllerContext, KeyedController
from k8semu.controllers.job import finished
from k8semu.log import get_logger
from k8semu.pb.api.v1 import batch_pb2, meta_pb2

log = get_logger(__name__)

API_VERSION = "batch/v1"
KIND = "CronJob"
SCHEDULED_AT = "batch.kubernetes.io/cronjob-scheduled-timestamp"


def _zone(cj: batch_pb2.CronJob) -> tzinfo:
    found = cron.zone(cj.spec.time_zone) if cj.spec.HasField("time_zone") else None
    return found or cron.local_zone()


def _started(job: batch_pb2.Job) -> float:
    return timestamps.to_seconds(job.metadata.creation_timestamp)


def job_name(cj: batch_pb2.CronJob, scheduled: float) -> str:
    """Kubernetes' name of the Job for one schedule time: minutes since the epoch."""
    return f"{cj.metadata.name}-{int(scheduled // 60)}"


def new_job(cj: batch_pb2.CronJob, scheduled: float, tz: tzinfo) -> batch_pb2.Job:
    template = cj.spec.job_template
    job = batch_pb2.Job(api_version=API_VERSION, kind="Job")
    job.metadata.name = job_name(cj, scheduled)
    job.metadata.namespace = cj.metadata.namespace
    job.metadata.labels.update(template.metadata.labels)
    job.metadata.annotations.update(template.metadata.annotations)
    job.metadata.annotations[SCHEDULED_AT] = datetime.fromtimestamp(scheduled, tz).isoformat()
    job.metadata.owner_references.append(
        _pods.new_controller_ref(cj, api_version=API_VERSION, kind=KIND)
    )
    job.spec.CopyFrom(template.spec)
    return job


def _reference(job: batch_pb2.Job) -> meta_pb2.ObjectReference:
    m = job.metadata
    return meta_pb2.ObjectReference(
        kind="Job",
        api_version=API_VERSION,
        namespace=m.namespace,
        name=m.name,
        uid=m.uid,
        resource_version=m.resource_version,
    )


def over_history(
    jobs: Iterable[batch_pb2.Job], successful: int, failed: int
) -> list[batch_pb2.Job]:
    """Finished Jobs beyond the history limits, oldest first."""
    done = sorted(
        ((j, c.type) for j in jobs if (c := finished(j)) is not None), key=lambda d: _started(d[0])
    )
    ok = [j for j, type_ in done if type_ == "Complete"]
    bad = [j for j, type_ in done if type_ == "Failed"]
    return ok[: max(len(ok) - successful, 0)] + bad[: max(len(bad) - failed, 0)]


class CronJobController(KeyedController):
    """One instance per process; `run()` after the context's informers are started."""

    name = "cronjob"

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx, clock=clock)
        self.cron_informer = self.informer(batch_pb2.CronJob)
        self.job_informer = self.informer(batch_pb2.Job, owned=True)
        self.watch(self.cron_informer, self._enqueue, deleted=self._enqueue)
        self.watch(self.job_informer, self._job_changed, deleted=self._job_changed)

    def _job_changed(self, job: batch_pb2.Job) -> None:
        key = _pods.controller_key(job, KIND, self.cron_informer.cache.get_by_name)
        if key is not None:
            self.queue.add(key)

    async def reconcile(self, key: str) -> None:
        cj = self.cron_informer.cache.get(key)
        if cj is None:
            return
        jobs = self.controlled(self.job_informer, cj)
        status = batch_pb2.CronJobStatus()
        status.CopyFrom(cj.status)
        self._observe(status, jobs)
        for old in over_history(
            jobs, cj.spec.successful_jobs_history_limit, cj.spec.failed_jobs_history_limit
        ):
            await self._delete_job(cj, old, "SuccessfulDelete")
        if not cj.metadata.HasField("deletion_timestamp") and not cj.spec.suspend:
            await self._schedule(cj, status, jobs)
        await self.write_status(cj, status)

    def _observe(self, status: batch_pb2.CronJobStatus, jobs: list[batch_pb2.Job]) -> None:
        """`active` = the unfinished Jobs; lastSuccessfulTime from the completed ones."""
        running = sorted((j for j in jobs if finished(j) is None), key=_started)
        del status.active[:]
        status.active.extend(_reference(j) for j in running)
        completed = [
            timestamps.to_seconds(j.status.completion_time)
            for j in jobs
            if j.status.HasField("completion_time")
            and (f := finished(j)) is not None
            and f.type == "Complete"
        ]
        if completed:
            last = max(completed)
            if not status.HasField("last_successful_time") or last > timestamps.to_seconds(
                status.last_successful_time
            ):
                status.last_successful_time.CopyFrom(timestamps.time_at(last))

    async def _schedule(
        self, cj: batch_pb2.CronJob, status: batch_pb2.CronJobStatus, jobs: list[batch_pb2.Job]
    ) -> None:
        spec, now, tz = cj.spec, self.clock(), _zone(cj)
        key = object_key(cj)
        self.queue.add_after(key, max(cron.next_after(spec.schedule, tz, now) - now, 0.0) + 0.1)
        after = timestamps.to_seconds(
            status.last_schedule_time
            if status.HasField("last_schedule_time")
            else cj.metadata.creation_timestamp
        )
        deadline = (
            spec.starting_deadline_seconds if spec.HasField("starting_deadline_seconds") else None
        )
        if deadline is not None:
            after = max(after, now - deadline)
        scheduled, missed = cron.most_recent(spec.schedule, tz, after, now)
        if missed > cron.MAX_MISSED:
            self.recorder.event(
                cj, WARNING, "TooManyMissedTimes",
                f"too many missed start times: {missed}. Set or decrease"
                " .spec.startingDeadlineSeconds or check clock skew",
            )  # fmt: skip
        if scheduled is None:
            return
        if deadline is not None and scheduled + deadline < now:
            self.recorder.event(
                cj, WARNING, "MissSchedule",
                f"Missed scheduled time to start a job: {datetime.fromtimestamp(scheduled, tz)}",
            )  # fmt: skip
            return
        active = [j for j in jobs if finished(j) is None]
        if active and spec.concurrency_policy == "Forbid":
            return  # a Job's completion brings this key back, still within the deadline
        if active and spec.concurrency_policy == "Replace":
            for job in active:
                await self._delete_job(cj, job, "SuccessfulDelete")
            del status.active[:]
        job = new_job(cj, scheduled, tz)
        try:
            created = await self.client.create(job)
        except AlreadyExists:
            log.info("job for this schedule time exists", cronjob=key, job=job.metadata.name)
        else:
            self.recorder.event(cj, NORMAL, "SuccessfulCreate", f"Created job {job.metadata.name}")
            status.active.append(_reference(created))
        status.last_schedule_time.CopyFrom(timestamps.time_at(scheduled))

    async def _delete_job(self, cj: batch_pb2.CronJob, job: batch_pb2.Job, reason: str) -> None:
        try:
            await self.client.delete(
                batch_pb2.Job,
                job.metadata.name,
                namespace=job.metadata.namespace,
                propagation_policy="Background",
            )
        except NotFound:
            return
        self.recorder.event(cj, NORMAL, reason, f"Deleted job {job.metadata.name}")
