"""The CronJob row (batch/v1): defaults and checks, as kube-apiserver's cronjob strategy.

Defaults: concurrencyPolicy Allow, suspend false, successfulJobsHistoryLimit 3,
failedJobsHistoryLimit 1; the job template's pod spec gets the pod defaults (but no
restartPolicy: a Job must name it). Checks: the schedule is a standard 5-field cron
expression or a descriptor (@yearly, @annually, @monthly, @weekly, @daily, @midnight,
@hourly), without a TZ=/CRON_TZ= prefix (`spec.timeZone` says the zone); the time zone is
an IANA name this machine knows; the name leaves room for the Jobs' `-<minutes>` suffix (52
characters); the job template is a valid Job spec. Pure: no I/O (the zone database is read
once per zone by zoneinfo; k8semu/api/cron.py reads schedules).
"""

from __future__ import annotations

from collections.abc import Iterator

from k8semu.api.cron import schedule_problem, zone
from k8semu.apiserver.registry.jobs import validate_job_spec
from k8semu.apiserver.registry.pods import default_spec
from k8semu.apiserver.validation import FieldError
from k8semu.pb.api.v1 import batch_pb2

CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")
MAX_NAME = 52  # Job names are <cronjob>-<minutes since the epoch>, at most 63 characters


def defaults(cj: batch_pb2.CronJob) -> None:
    spec = cj.spec
    if not spec.concurrency_policy:
        spec.concurrency_policy = "Allow"
    if not spec.HasField("suspend"):
        spec.suspend = False
    if not spec.HasField("successful_jobs_history_limit"):
        spec.successful_jobs_history_limit = 3
    if not spec.HasField("failed_jobs_history_limit"):
        spec.failed_jobs_history_limit = 1
    default_spec(spec.job_template.spec.template.spec, restart_policy="")


def validate(cj: batch_pb2.CronJob) -> Iterator[FieldError]:
    spec = cj.spec
    if len(cj.metadata.name) > MAX_NAME:
        yield FieldError(
            "metadata.name", f"Invalid value: must be no more than {MAX_NAME} characters"
        )
    if problem := schedule_problem(spec.schedule):
        yield FieldError("spec.schedule", problem)
    if spec.HasField("time_zone") and zone(spec.time_zone) is None:
        yield FieldError("spec.timeZone", f'Invalid value: "{spec.time_zone}": unknown time zone')
    if spec.concurrency_policy not in CONCURRENCY_POLICIES:
        yield FieldError(
            "spec.concurrencyPolicy",
            f'Unsupported value: "{spec.concurrency_policy}": supported values: "Allow",'
            ' "Forbid", "Replace"',
        )
    for name, value in (
        ("startingDeadlineSeconds", spec.starting_deadline_seconds),
        ("successfulJobsHistoryLimit", spec.successful_jobs_history_limit),
        ("failedJobsHistoryLimit", spec.failed_jobs_history_limit),
    ):
        if value < 0:
            yield FieldError(f"spec.{name}", f"Invalid value: {value}: must be >= 0")
    yield from validate_job_spec(spec.job_template.spec, "spec.jobTemplate.spec")
