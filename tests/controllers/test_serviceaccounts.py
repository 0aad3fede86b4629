"""The serviceaccount controller over the recording client (sample-controller style): a
`default` ServiceAccount appears in each active namespace, again after it is deleted, never
in a namespace being terminated, and nothing is written when it exists."""

from __future__ import annotations

from k8semu.client import AlreadyExists
from k8semu.controllers.serviceaccounts import ServiceAccountsController
from k8semu.pb.api.v1 import core_pb2
from tests.controllers.conftest import FakeCluster


def _namespace(name: str, *, terminating: bool = False) -> core_pb2.Namespace:
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = name
    if terminating:
        ns.status.phase = "Terminating"
    return ns


def _account(namespace: str) -> core_pb2.ServiceAccount:
    sa = core_pb2.ServiceAccount(api_version="v1", kind="ServiceAccount")
    sa.metadata.name, sa.metadata.namespace = "default", namespace
    return sa


def _controller(
    *namespaces: core_pb2.Namespace, accounts: tuple[core_pb2.ServiceAccount, ...] = ()
) -> tuple[FakeCluster, ServiceAccountsController]:
    cluster = FakeCluster()
    ctrl = ServiceAccountsController(cluster.ctx)
    for ns in namespaces:
        ctrl.namespaces.cache.put(ns)
    for sa in accounts:
        ctrl.accounts.cache.put(sa)
    return cluster, ctrl


async def test_creates_the_default_account() -> None:
    cluster, ctrl = _controller(_namespace("team-a"), _namespace("gone", terminating=True))
    for name in ("team-a", "gone", "missing"):
        await ctrl.reconcile(name)
    assert cluster.client.verbs() == ["create serviceaccounts team-a/default"]


async def test_nothing_written_when_it_exists_and_recreated_after_delete() -> None:
    cluster, ctrl = _controller(_namespace("team-a"), accounts=(_account("team-a"),))
    await ctrl.reconcile("team-a")
    assert cluster.client.verbs() == []
    sa = ctrl.accounts.cache.remove("team-a/default")
    assert sa is not None
    ctrl._account_deleted(sa)  # the DELETED event's handler queues the namespace
    assert len(ctrl.queue) == 1
    await ctrl.reconcile("team-a")
    assert cluster.client.verbs() == ["create serviceaccounts team-a/default"]


async def test_already_exists_is_done() -> None:
    cluster, ctrl = _controller(_namespace("team-a"))
    cluster.client.fail_on[("create", "serviceaccounts")] = AlreadyExists("exists")
    await ctrl.reconcile("team-a")  # another manager won: no error, no retry
