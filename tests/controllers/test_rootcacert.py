"""The root-ca-cert-publisher over the recording client: kube-root-ca.crt with the CA in each
active namespace, written back when changed, nothing when it already holds the CA, nothing
at all without --root-ca-file (a plain cluster)."""

from __future__ import annotations

import dataclasses

from k8semu.controllers.rootcacert import KEY, NAME, RootCACertPublisher
from k8semu.pb.api.v1 import core_pb2
from tests.controllers.conftest import FakeCluster
from tests.controllers.test_serviceaccounts import _namespace

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _map(namespace: str, ca: str) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name, cm.metadata.namespace, cm.metadata.resource_version = NAME, namespace, "5"
    cm.data[KEY] = ca
    return cm


def _publisher(ca: str = CA) -> tuple[FakeCluster, RootCACertPublisher]:
    cluster = FakeCluster()
    cluster.ctx = dataclasses.replace(
        cluster.ctx, config=dataclasses.replace(cluster.ctx.config, root_ca=ca)
    )
    return cluster, RootCACertPublisher(cluster.ctx)


async def test_publishes_the_ca_in_active_namespaces_only() -> None:
    cluster, ctrl = _publisher()
    ctrl.namespaces.cache.put(_namespace("team-a"))
    ctrl.namespaces.cache.put(_namespace("gone", terminating=True))
    for name in ("team-a", "gone", "missing"):
        await ctrl.reconcile(name)
    assert cluster.client.verbs() == [f"create configmaps team-a/{NAME}"]


async def test_rewrites_a_changed_map_and_leaves_a_right_one() -> None:
    cluster, ctrl = _publisher()
    ctrl.namespaces.cache.put(_namespace("team-a"))
    ctrl.maps.cache.put(_map("team-a", CA))
    await ctrl.reconcile("team-a")
    assert cluster.client.verbs() == []
    ctrl.maps.cache.put(_map("team-a", "tampered"))
    await ctrl.reconcile("team-a")
    assert cluster.client.verbs() == [f"update configmaps team-a/{NAME}"]


async def test_nothing_without_a_root_ca() -> None:
    cluster, ctrl = _publisher("")
    ns = _namespace("team-a")
    ctrl.namespaces.cache.put(ns)
    ctrl._namespace(ns)
    assert len(ctrl.queue) == 0
    await ctrl.reconcile("team-a")
    assert cluster.client.verbs() == []
