"""Job controller, sample-controller style (caches pre-filled, reconcile called directly, pods
finished by the test as a kubelet would), and its pure parts: counting and completedIndexes."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from k8semu.apiserver import registry
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.errors import Invalid
from k8semu.controllers import job as jobs
from k8semu.controllers.job import INDEX_KEY, JobController, format_indexes
from k8semu.pb.api.v1 import batch_pb2, core_pb2
from tests.controllers.conftest import T0, FakeCluster, template

ROW = registry.build(DEFAULT_RANGES).resolve("jobs")


def job(
    name: str = "pi",
    *,
    completions: int | None = None,
    parallelism: int | None = None,
    policy: str = "Never",
    **spec: object,
) -> batch_pb2.Job:
    """A Job as the API server stores it: created through the registry row (uid, generated
    selector and labels, defaults)."""
    out = batch_pb2.Job(api_version="batch/v1", kind="Job")
    out.metadata.name = name
    out.spec.template.CopyFrom(template({"app": name}))
    out.spec.template.spec.restart_policy = policy
    if completions is not None:
        out.spec.completions = completions
    if parallelism is not None:
        out.spec.parallelism = parallelism
    for key, value in spec.items():
        setattr(out.spec, key, value)
    ROW.prepare_for_create(out, namespace="default", uid=f"uid-job-{name}")
    ROW.validate_create(out)
    out.metadata.creation_timestamp.FromNanoseconds(int(T0 * 1e9))
    return out


def make(cluster: FakeCluster) -> JobController:
    return JobController(cluster.ctx, clock=cluster.clock)


def stored(cluster: FakeCluster, name: str = "pi") -> batch_pb2.Job:
    obj = cluster.client.objects[("jobs", "default", name)]
    assert isinstance(obj, batch_pb2.Job)
    return obj


def finish(
    cluster: FakeCluster, phase: str, *, only: Callable[[core_pb2.Pod], bool] | None = None
) -> None:
    """The kubelet ran the pods to `phase` (Succeeded or Failed)."""
    for p in cluster.objects(core_pb2.Pod):
        if p.status.phase in ("Succeeded", "Failed") or (only is not None and not only(p)):
            continue
        p.status.phase = phase
        cluster.client.seed(p)
    cluster.sync()


def conditions(j: batch_pb2.Job) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in j.status.conditions}


def test_the_registry_generates_the_selector_and_refuses_bad_jobs() -> None:
    j = job(completions=3)
    assert dict(j.spec.selector.match_labels) == {
        "batch.kubernetes.io/controller-uid": "uid-job-pi"
    }
    labels = j.spec.template.metadata.labels
    assert labels["batch.kubernetes.io/job-name"] == "pi" and labels["job-name"] == "pi"
    assert (j.spec.parallelism, j.spec.backoff_limit, j.spec.completion_mode) == (
        1,
        6,
        "NonIndexed",
    )
    assert not job("queue", parallelism=4).spec.HasField("completions")  # a work queue
    with pytest.raises(
        Invalid,
        match=re.escape(
            'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"'
        ),
    ):
        job(policy="")
    with pytest.raises(Invalid, match=re.escape('restartPolicy: Unsupported value: "Always"')):
        job(policy="Always")
    with pytest.raises(
        Invalid,
        match=re.escape("spec.completions: Required value: when completion mode is Indexed"),
    ):
        job(parallelism=2, completion_mode="Indexed")
    with pytest.raises(Invalid, match=re.escape("spec.activeDeadlineSeconds: Invalid value: 0")):
        job(active_deadline_seconds=0)
    with pytest.raises(
        Invalid, match=re.escape("spec.backoffLimit: Invalid value: -1: must be >= 0")
    ):
        job(backoff_limit=-1)
    changed = batch_pb2.Job()
    changed.CopyFrom(j)
    changed.spec.completions = 5
    with pytest.raises(
        Invalid, match=re.escape("spec.completions: Invalid value: field is immutable")
    ):
        ROW.validate_for_update(changed, j)


def test_completed_indexes_are_intervals() -> None:
    assert format_indexes([]) == ""
    assert format_indexes([7, 1, 3, 4, 5]) == "1,3-5,7"
    assert format_indexes([0, 1, 2]) == "0-2"


async def test_runs_parallelism_pods_until_completions_succeed() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(job(completions=5, parallelism=2))
    await cluster.drain(ctrl)
    pods = cluster.objects(core_pb2.Pod)
    assert len(pods) == 2
    (ref,) = pods[0].metadata.owner_references
    assert (ref.kind, ref.api_version, ref.uid, ref.controller) == (
        "Job",
        "batch/v1",
        "uid-job-pi",
        True,
    )
    assert pods[0].metadata.generate_name == "pi-"
    assert pods[0].metadata.labels["batch.kubernetes.io/controller-uid"] == "uid-job-pi"
    st = stored(cluster).status
    assert (st.active, st.succeeded) == (2, 0) and st.HasField("start_time")
    for _ in range(10):
        finish(cluster, "Succeeded")
        await cluster.drain(ctrl)
        if "Complete" in conditions(stored(cluster)):
            break
    st = stored(cluster).status
    assert (st.succeeded, st.active) == (5, 0)
    assert conditions(stored(cluster))["Complete"] == ("True", "")
    assert st.HasField("completion_time")
    assert len(cluster.objects(core_pb2.Pod)) == 5  # never more pods than completions
    assert cluster.recorder.messages("Completed") == ["Job completed"]


async def test_backoff_limit_fails_the_job_and_deletes_its_active_pods() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(job(completions=1, parallelism=2, backoff_limit=1))
    await cluster.drain(ctrl)
    first = cluster.objects(core_pb2.Pod)[0].metadata.name
    finish(cluster, "Failed", only=lambda p: p.metadata.name == first)
    await cluster.drain(ctrl)  # one failure: within the limit, a replacement is made
    assert conditions(stored(cluster)) == {}
    assert stored(cluster).status.failed == 1
    second = next(
        p.metadata.name for p in cluster.objects(core_pb2.Pod) if p.status.phase != "Failed"
    )
    finish(cluster, "Failed", only=lambda p: p.metadata.name == second)
    await cluster.drain(ctrl)
    j = stored(cluster)
    assert conditions(j)["Failed"] == ("True", "BackoffLimitExceeded")
    assert j.status.failed == 2 and j.status.active == 0
    left = [p for p in cluster.objects(core_pb2.Pod) if p.status.phase not in ("Failed",)]
    assert left == [], "the still-running pod is deleted"
    assert cluster.recorder.messages("BackoffLimitExceeded") == [
        "Job has reached the specified backoff limit"
    ]


async def test_on_failure_restarts_count_against_the_backoff_limit() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(job(policy="OnFailure", backoff_limit=2))
    await cluster.drain(ctrl)
    (p,) = cluster.objects(core_pb2.Pod)
    p.status.phase = "Running"
    p.status.container_statuses.add(name="c", restart_count=3)
    cluster.client.seed(p)
    cluster.sync()
    await cluster.drain(ctrl)
    assert conditions(stored(cluster))["Failed"] == ("True", "BackoffLimitExceeded")


async def test_active_deadline_fails_a_running_job() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(job(active_deadline_seconds=30))
    await cluster.drain(ctrl)
    assert conditions(stored(cluster)) == {}
    cluster.clock.advance(31)
    await ctrl.reconcile("default/pi")
    cluster.sync()
    j = stored(cluster)
    assert conditions(j)["Failed"] == ("True", "DeadlineExceeded")
    assert cluster.objects(core_pb2.Pod) == []


async def test_indexed_job_runs_each_index_once_with_its_index() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(job(completions=4, parallelism=2, completion_mode="Indexed"))
    await cluster.drain(ctrl)
    pods = cluster.objects(core_pb2.Pod)
    assert sorted(p.metadata.annotations[INDEX_KEY] for p in pods) == ["0", "1"]
    for p in pods:
        i = p.metadata.annotations[INDEX_KEY]
        assert p.metadata.generate_name == f"pi-{i}-" and p.spec.hostname == f"pi-{i}"
        assert [(e.name, e.value) for e in p.spec.containers[0].env] == [
            ("JOB_COMPLETION_INDEX", i)
        ]
    finish(cluster, "Succeeded", only=lambda p: p.metadata.annotations[INDEX_KEY] == "1")
    await cluster.drain(ctrl)
    assert stored(cluster).status.completed_indexes == "1"
    running = sorted(
        p.metadata.annotations[INDEX_KEY]
        for p in cluster.objects(core_pb2.Pod)
        if p.status.phase != "Succeeded"
    )
    assert running == ["0", "2"]  # the lowest missing index next
    for _ in range(6):
        finish(cluster, "Succeeded")
        await cluster.drain(ctrl)
    j = stored(cluster)
    assert j.status.completed_indexes == "0-3" and conditions(j)["Complete"][0] == "True"


async def test_suspend_deletes_pods_and_resume_restarts_the_clock() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(job(completions=2, parallelism=2))
    await cluster.drain(ctrl)
    assert len(cluster.objects(core_pb2.Pod)) == 2
    j = stored(cluster)
    j.spec.suspend = True
    cluster.client.seed(j)
    cluster.sync()
    await cluster.drain(ctrl)
    j = stored(cluster)
    assert conditions(j)["Suspended"] == ("True", "JobSuspended")
    assert not j.status.HasField("start_time") and j.status.active == 0
    assert cluster.objects(core_pb2.Pod) == []
    cluster.clock.advance(60)
    j.spec.suspend = False
    cluster.client.seed(j)
    cluster.sync()
    await cluster.drain(ctrl)
    j = stored(cluster)
    assert conditions(j)["Suspended"] == ("False", "JobResumed")
    assert j.status.start_time.seconds == int(cluster.clock())
    assert len(cluster.objects(core_pb2.Pod)) == 2


async def test_a_work_queue_job_completes_when_one_pod_succeeded_and_none_runs() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(job(parallelism=3))
    await cluster.drain(ctrl)
    names = [p.metadata.name for p in cluster.objects(core_pb2.Pod)]
    assert len(names) == 3
    finish(cluster, "Succeeded", only=lambda p: p.metadata.name == names[0])
    await cluster.drain(ctrl)
    assert len(cluster.objects(core_pb2.Pod)) == 3, "no new pod once one succeeded"
    assert "Complete" not in conditions(stored(cluster))
    finish(cluster, "Succeeded")
    await cluster.drain(ctrl)
    assert conditions(stored(cluster))["Complete"][0] == "True"
    assert stored(cluster).status.succeeded == 3


async def test_ttl_after_finished_deletes_the_job_in_the_background() -> None:
    cluster = FakeCluster()
    ctrl = make(cluster)
    cluster.add(job(ttl_seconds_after_finished=10))
    await cluster.drain(ctrl)
    finish(cluster, "Succeeded")
    await cluster.drain(ctrl)
    assert conditions(stored(cluster))["Complete"][0] == "True"
    cluster.clock.advance(11)
    await ctrl.reconcile("default/pi")
    assert "delete jobs default/pi" in cluster.client.verbs()
    assert ("jobs", "default", "pi") not in cluster.client.objects


def test_plan_never_touches_a_finished_jobs_counts() -> None:
    j = job(completions=1)
    j.status.conditions.add(type="Complete", status="True")
    p = jobs.plan(j, [], T0)
    assert p.creates == [] and p.deletes == [] and p.events == []
