"""Jobs on real processes: a store, an API server, a `k8semu kubelet` (process runtime) and
the job and garbage-collector controllers in a controller manager. The pods name their node
(no scheduler), run `sh`, and finish for real."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from k8semu.client import Client, NotFound
from k8semu.controllers.job import INDEX_KEY
from k8semu.controllers.manager import ControllerManager
from k8semu.pb.api.v1 import batch_pb2, core_pb2
from tests.controllers.conftest import controller_manager
from tests.kubelet.conftest import KubeletProcess, kubelets  # noqa: F401
from tests.support.poll import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
async def manager(client: Client) -> AsyncIterator[ControllerManager]:
    async with controller_manager(client, "job", "garbagecollector") as cm:
        yield cm


def shell_job(namespace: str, name: str, node: str, script: str, **spec: object) -> batch_pb2.Job:
    j = batch_pb2.Job(api_version="batch/v1", kind="Job")
    j.metadata.name, j.metadata.namespace = name, namespace
    pod = j.spec.template.spec
    pod.node_name = node
    pod.restart_policy = "Never"
    pod.containers.add(name="work", image="busybox", command=["sh", "-c", script])
    for key, value in spec.items():
        setattr(j.spec, key, value)
    return j


async def _job_when(
    client: Client, namespace: str, name: str, test: Callable[[batch_pb2.Job], bool]
) -> batch_pb2.Job | None:
    j = await client.get(batch_pb2.Job, name, namespace=namespace)
    return j if test(j) else None


def _has(type_: str, reason: str = "") -> Callable[[batch_pb2.Job], bool]:
    def test(j: batch_pb2.Job) -> bool:
        return any(
            c.type == type_ and c.status == "True" and (not reason or c.reason == reason)
            for c in j.status.conditions
        )

    return test


async def test_an_indexed_job_completes_and_a_failing_one_hits_its_backoff_limit(
    client: Client,
    namespace: str,
    manager: ControllerManager,
    kubelets: Callable[..., KubeletProcess],  # noqa: F811
) -> None:
    k = kubelets()
    await client.create(
        shell_job(
            namespace, "indexed", k.name, 'test "$JOB_COMPLETION_INDEX" -lt 3',
            completions=3, parallelism=2, completion_mode="Indexed",
        )
    )  # fmt: skip
    await client.create(shell_job(namespace, "broken", k.name, "exit 1", backoff_limit=1))

    def done(name: str, test: Callable[[batch_pb2.Job], bool]) -> Awaitable[batch_pb2.Job | None]:
        return _job_when(client, namespace, name, test)

    j = await eventually(lambda: done("indexed", _has("Complete")), 60, "the Job completes")
    assert (j.status.succeeded, j.status.failed, j.status.active) == (3, 0, 0)
    assert j.status.completed_indexes == "0-2" and j.status.HasField("completion_time")
    pods = (await client.list(core_pb2.Pod, namespace=namespace)).items
    mine = [p for p in pods if p.metadata.labels.get("batch.kubernetes.io/job-name") == "indexed"]
    assert sorted(p.metadata.annotations[INDEX_KEY] for p in mine) == ["0", "1", "2"]
    assert {p.status.phase for p in mine} == {"Succeeded"}

    failed = await eventually(
        lambda: done("broken", _has("Failed", "BackoffLimitExceeded")), 60, "the Job fails"
    )
    assert failed.status.failed == 2 and failed.status.succeeded == 0

    # A TTL set on a finished Job (that field is mutable): the Job is deleted in the
    # background and the garbage collector removes its pods.
    # A patch: the Job controller may still write the finished Job's status after the read.
    ttl = {"spec": {"ttlSecondsAfterFinished": 0}}
    await client.patch(batch_pb2.Job, "broken", ttl, namespace=namespace)

    async def gone() -> bool:
        try:
            await client.get(batch_pb2.Job, "broken", namespace=namespace)
        except NotFound:
            left = (await client.list(core_pb2.Pod, namespace=namespace)).items
            return not [p for p in left if p.metadata.name.startswith("broken-")]
        return False

    await eventually(gone, 60, "the Job and its pods deleted after the TTL")
