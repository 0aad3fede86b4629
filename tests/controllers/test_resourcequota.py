"""The resourcequota controller on a fake cluster: status.used recalculated from the
namespace's objects (informed kinds from the caches, others listed), usage given back when
objects go, nothing written when nothing changed."""

from __future__ import annotations

from k8semu.controllers.resourcequota import ResourceQuotaController
from k8semu.pb.api.v1 import core_pb2, quota_pb2
from tests.controllers.conftest import FakeCluster, deployment, pod


def resource_quota(**hard: str) -> quota_pb2.ResourceQuota:
    q = quota_pb2.ResourceQuota(api_version="v1", kind="ResourceQuota")
    q.metadata.name, q.metadata.namespace, q.metadata.uid = "q", "default", "uid-q"
    q.spec.hard.update(hard)
    return q


def with_cpu(p: core_pb2.Pod, cpu: str) -> core_pb2.Pod:
    p.spec.containers[0].resources.requests["cpu"] = cpu
    p.spec.containers[0].resources.limits["memory"] = "64Mi"
    return p


def used(cluster: FakeCluster) -> dict[str, str]:
    q = cluster.client.objects[("resourcequotas", "default", "q")]
    assert isinstance(q, quota_pb2.ResourceQuota)
    assert dict(q.status.hard) == dict(q.spec.hard)
    return dict(q.status.used)


async def test_status_counts_the_namespace_and_follows_deletions() -> None:
    cluster = FakeCluster()
    controller = ResourceQuotaController(cluster.ctx, settle=0)
    other_ns = with_cpu(pod("elsewhere", {}, namespace="other"), "1")
    cluster.add(
        resource_quota(**{"pods": "10", "requests.cpu": "2", "limits.memory": "1Gi",
                          "configmaps": "5", "count/deployments.apps": "3"}),
        with_cpu(pod("a", {}), "500m"),
        with_cpu(pod("b", {}), "250m"),
        with_cpu(pod("done", {}, phase="Succeeded"), "1"),
        other_ns,
        deployment("web", 1),
    )  # fmt: skip
    await cluster.drain(controller)
    assert used(cluster) == {
        "pods": "2",
        "requests.cpu": "750m",
        "limits.memory": "128Mi",
        "configmaps": "0",
        "count/deployments.apps": "1",
    }
    cluster.client.clear()
    await cluster.drain(controller)  # nothing changed: nothing written
    assert cluster.client.actions == []
    del cluster.client.objects[("pods", "default", "a")]
    cluster.sync()
    await cluster.drain(controller)
    assert used(cluster)["pods"] == "1" and used(cluster)["requests.cpu"] == "250m"
    assert [str(a) for a in cluster.client.actions] == ["update_status resourcequotas default/q"]


async def test_an_overcharge_is_corrected_once_the_quota_has_settled() -> None:
    cluster = FakeCluster()
    controller = ResourceQuotaController(cluster.ctx, settle=2.0, clock=cluster.clock)
    q = resource_quota(pods="3")
    q.status.hard["pods"] = "3"
    q.status.used["pods"] = "2"  # admission charged for a pod not written yet (or failed)
    cluster.add(q, pod("a", {}))
    await controller.reconcile("default/q")
    assert cluster.client.actions == []  # a create may be in flight: not yet
    cluster.clock.advance(1.0)
    charged = cluster.client.objects[("resourcequotas", "default", "q")]
    assert isinstance(charged, quota_pb2.ResourceQuota)
    charged.status.used["pods"] = "3"  # another charge: the wait starts again
    await cluster.client.update_status(charged)
    cluster.client.clear()
    cluster.clock.advance(1.5)
    await controller.reconcile("default/q")
    assert cluster.client.actions == []
    cluster.clock.advance(2.0)
    await controller.reconcile("default/q")
    assert used(cluster) == {"pods": "1"}
