"""CronJob controller on a fake cluster with a fake clock (no test waits for a minute to
turn), and the API's checks of schedules and time zones."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from k8semu.api import cron
from k8semu.apiserver import registry
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.errors import Invalid
from k8semu.controllers.cronjob import SCHEDULED_AT, CronJobController, job_name
from k8semu.pb.api.v1 import batch_pb2
from tests.controllers.conftest import T0, FakeCluster

ROW = registry.build(DEFAULT_RANGES).resolve("cronjobs")
FIRST = T0 + 100  # T0 is 22:13:20 UTC: the first */5 time after it is 22:15:00


def cronjob(
    name: str = "hello", schedule: str = "*/5 * * * *", *, zone: str | None = "UTC", **spec: object
) -> batch_pb2.CronJob:
    cj = batch_pb2.CronJob(api_version="batch/v1", kind="CronJob")
    cj.metadata.name = name
    cj.spec.schedule = schedule
    if zone is not None:
        cj.spec.time_zone = zone
    tmpl = cj.spec.job_template.spec.template.spec
    tmpl.restart_policy = "OnFailure"
    tmpl.containers.add(name="hello", image="busybox", command=["date"])
    cj.spec.job_template.metadata.labels["app"] = name
    for key, value in spec.items():
        setattr(cj.spec, key, value)
    ROW.prepare_for_create(cj, namespace="default", uid=f"uid-cj-{name}")
    ROW.validate_create(cj)
    cj.metadata.creation_timestamp.FromNanoseconds(int(T0 * 1e9))
    return cj


def jobs(cluster: FakeCluster) -> list[batch_pb2.Job]:
    return sorted(cluster.objects(batch_pb2.Job), key=lambda j: j.metadata.name)


def status(cluster: FakeCluster, name: str = "hello") -> batch_pb2.CronJobStatus:
    obj = cluster.client.objects[("cronjobs", "default", name)]
    assert isinstance(obj, batch_pb2.CronJob)
    return obj.status


def complete(cluster: FakeCluster, job: batch_pb2.Job, type_: str = "Complete") -> None:
    job.status.conditions.add(type=type_, status="True")
    if type_ == "Complete":
        job.status.completion_time.FromNanoseconds(int(cluster.clock() * 1e9))
    cluster.client.seed(job)
    cluster.sync()


async def tick(cluster: FakeCluster, ctrl: CronJobController, to: float) -> None:
    cluster.clock.advance(to - cluster.clock())
    await ctrl.reconcile("default/hello")
    cluster.sync()


def test_schedules_and_zones_are_checked_as_kubernetes_does() -> None:
    cj = cronjob()
    assert (cj.spec.concurrency_policy, cj.spec.suspend) == ("Allow", False)
    assert (cj.spec.successful_jobs_history_limit, cj.spec.failed_jobs_history_limit) == (3, 1)
    for schedule, error in [
        ("* * * *", 'spec.schedule: Invalid value: "* * * *": expected a 5-field cron'),
        ("61 * * * *", "expected a 5-field cron expression"),
        ("@fortnightly", "unrecognized descriptor: @fortnightly"),
        ("TZ=UTC 0 * * * *", "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
    ]:
        with pytest.raises(Invalid, match=re.escape(error)):
            cronjob(schedule=schedule)
    with pytest.raises(Invalid, match=re.escape('spec.timeZone: Invalid value: "Mars/Olympus"')):
        cronjob(zone="Mars/Olympus")
    with pytest.raises(Invalid, match=re.escape("spec.concurrencyPolicy: Unsupported value")):
        cronjob(concurrency_policy="Sometimes")
    with pytest.raises(Invalid, match="must be no more than 52 characters"):
        cronjob(name="x" * 53)
    with pytest.raises(
        Invalid, match=re.escape("spec.jobTemplate.spec.template.spec.restartPolicy")
    ):
        bad = batch_pb2.CronJob(api_version="batch/v1", kind="CronJob")
        bad.metadata.name = "bad"
        bad.spec.schedule = "@hourly"
        bad.spec.job_template.spec.template.spec.containers.add(name="c", image="busybox")
        ROW.prepare_for_create(bad, namespace="default", uid="u")
        ROW.validate_create(bad)
    assert cronjob(schedule="@hourly", zone=None).spec.schedule == "@hourly"


def test_most_recent_counts_missed_times_and_includes_now() -> None:
    utc = ZoneInfo("UTC")
    assert cron.most_recent("*/5 * * * *", utc, T0, T0 + 99) == (None, 0)
    assert cron.most_recent("*/5 * * * *", utc, T0, FIRST) == (FIRST, 1)
    assert cron.most_recent("*/5 * * * *", utc, T0, FIRST + 601) == (FIRST + 600, 3)
    latest, missed = cron.most_recent("* * * * *", utc, T0, T0 + 200 * 60)
    assert missed == cron.MAX_MISSED + 1 and latest == (T0 + 200 * 60) // 60 * 60


async def test_a_job_at_each_schedule_time_named_by_its_minute() -> None:
    cluster = FakeCluster()
    ctrl = CronJobController(cluster.ctx, clock=cluster.clock)
    cluster.add(cronjob())
    await tick(cluster, ctrl, FIRST - 1)
    assert jobs(cluster) == []
    await tick(cluster, ctrl, FIRST + 3)
    (job,) = jobs(cluster)
    assert job.metadata.name == f"hello-{int(FIRST // 60)}" == job_name(cronjob(), FIRST)
    assert job.metadata.annotations[SCHEDULED_AT] == "2023-11-14T22:15:00+00:00"
    assert job.metadata.labels["app"] == "hello"
    (ref,) = job.metadata.owner_references
    assert (ref.kind, ref.uid, ref.controller) == ("CronJob", "uid-cj-hello", True)
    assert job.spec.template.spec.containers[0].command == ["date"]
    st = status(cluster)
    assert [a.name for a in st.active] == [job.metadata.name]
    assert st.last_schedule_time.seconds == FIRST
    await tick(cluster, ctrl, FIRST + 30)  # nothing new until the next time
    assert len(jobs(cluster)) == 1
    complete(cluster, job)
    await tick(cluster, ctrl, FIRST + 300)  # Allow: the next one
    assert len(jobs(cluster)) == 2
    st = status(cluster)
    assert len(st.active) == 1 and st.last_successful_time.seconds == FIRST + 30
    assert cluster.recorder.messages("SuccessfulCreate")[0] == f"Created job {job.metadata.name}"


async def test_forbid_waits_for_the_active_job_and_replace_deletes_it() -> None:
    for policy in ("Forbid", "Replace"):
        cluster = FakeCluster()
        ctrl = CronJobController(cluster.ctx, clock=cluster.clock)
        cluster.add(cronjob(concurrency_policy=policy))
        await tick(cluster, ctrl, FIRST)
        (first,) = jobs(cluster)
        await tick(cluster, ctrl, FIRST + 300)
        names = [j.metadata.name for j in jobs(cluster)]
        if policy == "Forbid":
            assert names == [first.metadata.name], "no second Job while one runs"
            complete(cluster, first)
            await tick(cluster, ctrl, FIRST + 320)  # its completion brings the key back
            assert len(jobs(cluster)) == 2
        else:
            assert names == [f"hello-{int((FIRST + 300) // 60)}"], "the running one replaced"
            assert cluster.recorder.messages("SuccessfulDelete") == [
                f"Deleted job {first.metadata.name}"
            ]


async def test_history_limits_delete_the_oldest_finished_jobs() -> None:
    cluster = FakeCluster()
    ctrl = CronJobController(cluster.ctx, clock=cluster.clock)
    cluster.add(cronjob(successful_jobs_history_limit=2, failed_jobs_history_limit=1))
    for i in range(5):
        await tick(cluster, ctrl, FIRST + 300 * i)
        newest = jobs(cluster)[-1]
        complete(cluster, newest, "Failed" if i in (1, 3) else "Complete")
    await tick(cluster, ctrl, FIRST + 1201)
    kept = [j.metadata.name for j in jobs(cluster)]
    minute = int(FIRST // 60)
    # Successful: +0, +10, +20 (keep 2); failed: +5, +15 (keep 1).
    assert kept == [f"hello-{minute + 10}", f"hello-{minute + 15}", f"hello-{minute + 20}"]


async def test_starting_deadline_skips_late_times_and_suspend_runs_nothing() -> None:
    cluster = FakeCluster()
    ctrl = CronJobController(cluster.ctx, clock=cluster.clock)
    cluster.add(cronjob(starting_deadline_seconds=10, schedule="0 * * * *"))
    await tick(cluster, ctrl, T0 + 2800 + 60)  # 23:00 passed a minute ago: too late
    assert jobs(cluster) == []
    await tick(cluster, ctrl, T0 + 2800 + 3605)  # 00:00 five seconds ago: within 10 s
    assert [j.metadata.name for j in jobs(cluster)] == [f"hello-{int((T0 + 2800 + 3600) // 60)}"]
    paused = FakeCluster()
    ctrl = CronJobController(paused.ctx, clock=paused.clock)
    paused.add(cronjob(suspend=True))
    await tick(paused, ctrl, FIRST + 3600)
    assert jobs(paused) == []


async def test_the_time_zone_decides_when_it_runs() -> None:
    cluster = FakeCluster()
    ctrl = CronJobController(cluster.ctx, clock=cluster.clock)
    cluster.add(cronjob(schedule="30 7 * * *", zone="Asia/Tokyo"))
    tokyo = ZoneInfo("Asia/Tokyo")
    due = datetime(2023, 11, 15, 7, 30, tzinfo=tokyo).timestamp()  # 22:30 UTC on the 14th
    await tick(cluster, ctrl, due - 1)
    assert jobs(cluster) == []
    await tick(cluster, ctrl, due)
    (job,) = jobs(cluster)
    assert job.metadata.annotations[SCHEDULED_AT] == "2023-11-15T07:30:00+09:00"


async def test_too_many_missed_times_are_reported_and_the_latest_runs() -> None:
    cluster = FakeCluster()
    ctrl = CronJobController(cluster.ctx, clock=cluster.clock)
    cluster.add(cronjob(schedule="* * * * *"))
    await tick(cluster, ctrl, T0 + 200 * 60 + 5)
    (job,) = jobs(cluster)
    assert job.metadata.name == f"hello-{int((T0 + 200 * 60) // 60)}"
    assert cluster.recorder.messages("TooManyMissedTimes")[0].startswith(
        "too many missed start times: 101"
    )
