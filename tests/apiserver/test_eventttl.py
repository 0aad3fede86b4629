"""Events expire (kube-apiserver's --event-ttl): written with an etcd lease, deleted by the store
after the TTL, watchers told; other kinds never get a lease. On our store and on a real etcd."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from k8semu.client import Client, NotFound
from k8semu.cluster.processes import ProcessCluster
from k8semu.pb.api.v1 import core_pb2
from tests.support.apiserver import APIServerProcess, one_replica, running, serving
from tests.support.poll import eventually

TTL = "2s"


@pytest.fixture(params=["k8semu", "etcd"])
def short_ttl_apiserver(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[APIServerProcess, ProcessCluster]]:
    store = one_replica(request.param, tmp_path / "store")
    with running(store), serving(store, tmp_path / "apiserver.log", ["--event-ttl", TTL]) as server:
        yield server, store


def _event(name: str) -> core_pb2.Event:
    ev = core_pb2.Event()
    ev.metadata.name, ev.metadata.namespace = name, "default"
    ev.involved_object.kind, ev.involved_object.name = "Pod", "p"
    ev.reason, ev.message, ev.type = "Tested", "an event", "Normal"
    return ev


def _lease_of(store: ProcessCluster, key: str) -> int:
    out = subprocess.run(
        ["etcdctl", "--endpoints", store.endpoints[0], "get", key, "-w", "json"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    kvs = json.loads(out).get("kvs", [])
    assert kvs, f"{key} not in the store"
    return int(kvs[0].get("lease", 0))


async def test_events_expire_after_the_ttl_and_other_kinds_stay(
    short_ttl_apiserver: tuple[APIServerProcess, ProcessCluster],
) -> None:
    server, store = short_ttl_apiserver
    async with Client([server.address]) as client:
        first = _event("e1")
        await client.create(first)
        await client.create(_event("e2"))
        cm = core_pb2.ConfigMap()
        cm.metadata.name, cm.metadata.namespace = "stays", "default"
        await client.create(cm)

        # A lease on each Event (one shared lease when written within the reuse window, 0.1 s
        # at this TTL: not asserted here, a loaded machine may take longer between the two
        # writes; the next test's hour-long TTL shows the reuse); none for the ConfigMap.
        lease = _lease_of(store, "/registry/events/default/e1")
        assert lease and _lease_of(store, "/registry/events/default/e2")
        assert _lease_of(store, "/registry/configmaps/default/stays") == 0

        async def gone() -> bool:
            try:
                await client.get(core_pb2.Event, "e1", namespace="default")
            except NotFound:
                return True
            return False

        await eventually(gone, what="the Event deleted by the store after its TTL")
        listed = await client.list(core_pb2.Event, namespace="default")
        assert [e.metadata.name for e in listed.items] == []
        assert (await client.get(core_pb2.ConfigMap, "stays", namespace="default")).data == {}

        # The expired lease is gone from the store: the next Event gets a fresh one.
        first.metadata.name = "e3"
        first.metadata.resource_version = ""
        await client.create(first)
        assert _lease_of(store, "/registry/events/default/e3") not in (0, lease)


def _revoke(store: ProcessCluster, lease: int) -> None:
    subprocess.run(
        ["etcdctl", "--endpoints", store.endpoints[0], "lease", "revoke", f"{lease:x}"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["k8semu", "etcd"])
async def test_an_event_lease_revoked_behind_the_api_servers_back_is_replaced(
    backend: str, tmp_path: Path
) -> None:
    """The API server reuses one lease for an hour's Events; when the store no longer knows it
    (revoked by an operator, or a restored store) the write is sent again with a fresh lease
    instead of failing."""
    store = one_replica(backend, tmp_path / "store")
    with running(store), serving(store, tmp_path / "apiserver.log", ["--event-ttl", "1h"]) as api:
        async with Client([api.address]) as client:
            await client.create(_event("before"))
            lease = _lease_of(store, "/registry/events/default/before")
            assert lease
            _revoke(store, lease)
            with pytest.raises(NotFound):  # the revoke took the Event with it
                await client.get(core_pb2.Event, "before", namespace="default")

            # Within the reuse window the server would attach the revoked lease: the store
            # refuses, the server forgets it and writes once more with a new one.
            await client.create(_event("after"))
            renewed = _lease_of(store, "/registry/events/default/after")
            assert renewed not in (0, lease)
            await client.create(_event("again"))
            assert _lease_of(store, "/registry/events/default/again") == renewed
