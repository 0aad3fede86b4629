"""Events expire (kube-apiserver's --event-ttl): written with an etcd lease, deleted by the store
after the TTL, watchers told; other kinds never get a lease. On our store and on a real etcd."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from k8semu.client import Client, NotFound
from k8semu.cluster.processes import EtcdCluster, K8semuStoreCluster, ProcessCluster
from k8semu.pb.api.v1 import core_pb2
from tests.support.apiserver import APIServerProcess, running, serving
from tests.support.poll import eventually

TTL = "2s"


@pytest.fixture(params=["k8semu", "etcd"])
def short_ttl_apiserver(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[APIServerProcess, ProcessCluster]]:
    store: ProcessCluster
    if request.param == "etcd":
        if not EtcdCluster.available():
            pytest.skip("no etcd binary at /usr/bin/etcd")
        store = EtcdCluster(tmp_path / "store", 1)
    else:
        store = K8semuStoreCluster(tmp_path / "store", 1)
    with running(store), serving(store, tmp_path / "apiserver.log", ["--event-ttl", TTL]) as server:
        yield server, store


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
        first, second = core_pb2.Event(), core_pb2.Event()
        for ev, name in ((first, "e1"), (second, "e2")):
            ev.metadata.name, ev.metadata.namespace = name, "default"
            ev.involved_object.kind, ev.involved_object.name = "Pod", "p"
            ev.reason, ev.message, ev.type = "Tested", "an event", "Normal"
            await client.create(ev)
        cm = core_pb2.ConfigMap()
        cm.metadata.name, cm.metadata.namespace = "stays", "default"
        await client.create(cm)

        # One lease for the Events written together; none for the ConfigMap.
        lease = _lease_of(store, "/registry/events/default/e1")
        assert lease and _lease_of(store, "/registry/events/default/e2") == lease
        assert _lease_of(store, "/registry/configmaps/default/stays") == 0

        async def gone() -> bool:
            try:
                await client.get(core_pb2.Event, "e1", namespace="default")
            except NotFound:
                return True
            return False

        await eventually(gone, 30, "the Event deleted by the store after its TTL")
        listed = await client.list(core_pb2.Event, namespace="default")
        assert [e.metadata.name for e in listed.items] == []
        assert (await client.get(core_pb2.ConfigMap, "stays", namespace="default")).data == {}

        # The expired lease is gone from the store: the next Event gets a fresh one.
        first.metadata.name = "e3"
        first.metadata.resource_version = ""
        await client.create(first)
        assert _lease_of(store, "/registry/events/default/e3") not in (0, lease)
