"""The Job row (batch/v1): defaults, the generated selector, checks, immutable fields.

As kube-apiserver's job strategy: unless `spec.manualSelector` is true, the selector is
generated from the Job's uid (`batch.kubernetes.io/controller-uid`) and the template gets the
labels it selects (plus `batch.kubernetes.io/job-name` and the legacy `controller-uid` and
`job-name`), so two Jobs never claim each other's pods. Defaults: parallelism 1, completions
1 when neither is set, backoffLimit 6, completionMode NonIndexed, suspend false. The
template's restartPolicy is not defaulted: a Job must say OnFailure or Never. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from k8semu.apiserver.registry.pods import default_spec, validate_spec
from k8semu.apiserver.registry.workloads import validate_selector
from k8semu.apiserver.validation import FieldError
from k8semu.pb.api.v1 import batch_pb2

CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
# The pre-1.27 names, still set by Kubernetes for selectors written against them.
LEGACY_CONTROLLER_UID = "controller-uid"
LEGACY_JOB_NAME = "job-name"
NON_INDEXED, INDEXED = "NonIndexed", "Indexed"
DEFAULT_BACKOFF_LIMIT = 6
_RESTART_POLICIES = ("OnFailure", "Never")


def defaults(job: batch_pb2.Job) -> None:
    spec = job.spec
    if not spec.HasField("parallelism"):
        if not spec.HasField("completions"):
            spec.completions = 1
        spec.parallelism = 1
    if not spec.HasField("backoff_limit"):
        spec.backoff_limit = DEFAULT_BACKOFF_LIMIT
    if not spec.completion_mode:
        spec.completion_mode = NON_INDEXED
    if not spec.HasField("suspend"):
        spec.suspend = False
    if not spec.manual_selector and job.metadata.uid:
        labels = spec.template.metadata.labels
        for key, value in (
            (CONTROLLER_UID, job.metadata.uid),
            (LEGACY_CONTROLLER_UID, job.metadata.uid),
            (JOB_NAME, job.metadata.name),
            (LEGACY_JOB_NAME, job.metadata.name),
        ):
            labels.setdefault(key, value)
        if not spec.selector.match_labels and not spec.selector.match_expressions:
            spec.selector.match_labels[CONTROLLER_UID] = job.metadata.uid
    default_spec(spec.template.spec, restart_policy="")


def validate(job: batch_pb2.Job) -> Iterator[FieldError]:
    spec = job.spec
    if not spec.manual_selector and spec.selector.match_labels.get(CONTROLLER_UID) != (
        job.metadata.uid
    ):
        yield FieldError(
            "spec.selector",
            "Invalid value: `selector` not auto-generated (set spec.manualSelector to choose one)",
        )
    yield from validate_selector(spec)
    yield from validate_job_spec(spec, "spec")


def validate_job_spec(spec: batch_pb2.JobSpec, path: str) -> Iterator[FieldError]:
    """A Job's spec, or a CronJob's job template's (`path` names where it is)."""
    for name, value in (
        ("parallelism", spec.parallelism),
        ("completions", spec.completions),
        ("backoffLimit", spec.backoff_limit),
        ("ttlSecondsAfterFinished", spec.ttl_seconds_after_finished),
    ):
        if value < 0:
            yield FieldError(f"{path}.{name}", f"Invalid value: {value}: must be >= 0")
    if spec.HasField("active_deadline_seconds") and spec.active_deadline_seconds <= 0:
        yield FieldError(
            f"{path}.activeDeadlineSeconds",
            f"Invalid value: {spec.active_deadline_seconds}: must be greater than 0",
        )
    if spec.completion_mode not in ("", NON_INDEXED, INDEXED):
        yield FieldError(
            f"{path}.completionMode",
            f'Unsupported value: "{spec.completion_mode}": supported values: "{NON_INDEXED}",'
            f' "{INDEXED}"',
        )
    elif spec.completion_mode == INDEXED and not spec.HasField("completions"):
        yield FieldError(f"{path}.completions", "Required value: when completion mode is Indexed")
    policy = spec.template.spec.restart_policy
    if policy not in _RESTART_POLICIES:
        yield FieldError(
            f"{path}.template.spec.restartPolicy",
            'Required value: valid values: "OnFailure", "Never"'
            if not policy
            else f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
        )
    yield from validate_spec(spec.template.spec, f"{path}.template.spec")


def validate_update(job: batch_pb2.Job, old: batch_pb2.Job) -> Iterator[FieldError]:
    """What a running Job's pods were made from does not change under them."""
    for name, field in (
        ("selector", "selector"),
        ("template", "template"),
        ("completions", "completions"),
        ("completionMode", "completion_mode"),
    ):
        if getattr(job.spec, field) != getattr(old.spec, field):
            yield FieldError(f"spec.{name}", "Invalid value: field is immutable")
