"""The scale subresource (autoscaling/v1 Scale) of deployments and replicasets, through a
real API server and k8semu.client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from k8semu.api import manifest
from k8semu.client import Client, Conflict, Invalid, NotFound
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from tests.support.apiserver import APIServerProcess

from .conftest import NGINX_APP


@pytest.fixture
async def kclient(apiserver: APIServerProcess) -> AsyncIterator[Client]:
    # tests/apiserver's `client` is the raw stub; these read through k8semu.client.
    async with Client([apiserver.address]) as c:
        yield c


def _deployment(name: str) -> apps_pb2.Deployment:
    deploy = manifest.load_all(NGINX_APP, source="app.yaml")[0]
    assert isinstance(deploy, apps_pb2.Deployment)
    deploy.metadata.name = name
    return deploy


async def test_scale_reads_and_sets_replicas_of_a_deployment(kclient: Client) -> None:
    name = f"scale-{uuid.uuid4().hex[:8]}"
    created = await kclient.create(_deployment(name))
    scale = await kclient.get_scale("deployments", name, namespace="default")
    assert (scale.name, scale.namespace, scale.uid) == (name, "default", created.metadata.uid)
    assert scale.resource_version == created.metadata.resource_version
    assert (scale.spec_replicas, scale.status_replicas, scale.selector) == (3, 0, "app=nginx")

    scaled = await kclient.update_scale(
        "deploy", name, 5, namespace="default", resource_version=scale.resource_version
    )
    assert scaled.spec_replicas == 5
    stored = await kclient.get(apps_pb2.Deployment, name, namespace="default")
    assert stored.spec.replicas == 5
    assert stored.metadata.generation == created.metadata.generation + 1
    assert scaled.resource_version == stored.metadata.resource_version

    # The Scale's resourceVersion is the parent's: a stale one is a conflict, nothing written.
    with pytest.raises(Conflict):
        await kclient.update_scale(
            "deployments", name, 7, namespace="default", resource_version=scale.resource_version
        )
    # Without one the last write wins.
    assert (
        await kclient.update_scale("deployments", name, 0, namespace="default")
    ).spec_replicas == 0
    assert (await kclient.get(apps_pb2.Deployment, name, namespace="default")).spec.replicas == 0


async def test_scale_of_a_replicaset_and_refusals(kclient: Client) -> None:
    name = f"scale-rs-{uuid.uuid4().hex[:8]}"
    deploy = _deployment(name)
    rs = apps_pb2.ReplicaSet()
    rs.metadata.name = name
    rs.spec.replicas = 2
    rs.spec.selector.CopyFrom(deploy.spec.selector)
    rs.spec.template.CopyFrom(deploy.spec.template)
    await kclient.create(rs)
    assert (await kclient.update_scale("rs", name, 4, namespace="default")).spec_replicas == 4
    scale = await kclient.get_scale("replicasets", name, namespace="default")
    assert (scale.spec_replicas, scale.selector) == (4, "app=nginx")

    # Validation is the parent's: a negative count is refused, naming the field.
    with pytest.raises(Invalid, match=r"spec\.replicas"):
        await kclient.update_scale("replicasets", name, -1, namespace="default")
    with pytest.raises(NotFound, match="not found"):
        await kclient.get_scale("deployments", "no-such", namespace="default")
    cm = core_pb2.ConfigMap()
    cm.metadata.name = name
    await kclient.create(cm)
    with pytest.raises(NotFound, match="configmaps have no scale subresource"):
        await kclient.get_scale("configmaps", name, namespace="default")
    with pytest.raises(NotFound, match="scale subresource"):
        await kclient.update_scale("configmaps", name, 1, namespace="default")
