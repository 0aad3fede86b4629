"""The typed client against real API server processes: verbs, errors, retries and fail-over."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from k8semu.client import (
    AlreadyExists,
    APIStatusError,
    Client,
    ClientError,
    Conflict,
    EventType,
    Gone,
    Invalid,
    NotFound,
    Preconditions,
    Retries,
    Timeouts,
    Unavailable,
    UnknownKind,
    object_key,
)
from k8semu.cluster.processes import K8semuStoreCluster, free_loopback_ports
from k8semu.pb.api.v1 import core_pb2

from .conftest import TEST_RETRIES, APIServerProcess, compact


def config_map(name: str, namespace: str, **data: str) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap()
    cm.metadata.name = name
    cm.metadata.namespace = namespace
    cm.data.update(data)
    return cm


def secret(name: str, namespace: str) -> core_pb2.Secret:
    s = core_pb2.Secret()
    s.metadata.name = name
    s.metadata.namespace = namespace
    return s


def pod(name: str, namespace: str) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = namespace
    container = p.spec.containers.add()
    container.name = "app"
    container.image = "nginx"
    return p


async def test_typed_crud(client: Client, namespace: str) -> None:
    created = await client.create(config_map("a", namespace, k="v"))
    assert isinstance(created, core_pb2.ConfigMap)
    assert created.metadata.uid and created.metadata.resource_version
    assert created.kind == "ConfigMap" and created.api_version == "v1"

    got = await client.get(core_pb2.ConfigMap, "a", namespace=namespace)
    assert got == created
    by_name = await client.get("cm", "a", namespace=namespace)
    assert isinstance(by_name, core_pb2.ConfigMap) and by_name == created

    got.data["k"] = "w"
    updated = await client.update(got)
    assert updated.data["k"] == "w"
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)

    with pytest.raises(Conflict) as conflict:
        await client.update(created)  # stale resourceVersion
    assert conflict.value.code == grpc.StatusCode.ABORTED
    assert isinstance(conflict.value.__cause__, grpc.aio.AioRpcError)

    with pytest.raises(AlreadyExists):
        await client.create(config_map("a", namespace))

    with pytest.raises(Conflict):
        await client.delete(
            core_pb2.ConfigMap,
            "a",
            namespace=namespace,
            preconditions=Preconditions(uid="not-the-uid"),
        )
    deleted = await client.delete(
        core_pb2.ConfigMap,
        "a",
        namespace=namespace,
        preconditions=Preconditions(resource_version=updated.metadata.resource_version),
    )
    assert deleted.metadata.name == "a"
    with pytest.raises(NotFound):
        await client.get(core_pb2.ConfigMap, "a", namespace=namespace)


async def test_errors_form_one_tree(client: Client, namespace: str) -> None:
    bad = config_map("Not_A_Name", namespace)
    with pytest.raises(Invalid) as invalid:
        await client.create(bad)
    assert isinstance(invalid.value, APIStatusError) and isinstance(invalid.value, ClientError)
    assert "Not_A_Name" in invalid.value.message
    with pytest.raises(UnknownKind):
        await client.get("widgets", "x")
    with pytest.raises(NotFound):
        await client.create(config_map("a", "no-such-namespace"))


async def test_update_status(client: Client, namespace: str) -> None:
    p = await client.create(pod("p", namespace))
    p.status.phase = "Running"
    p.spec.containers[0].image = "ignored-by-status-update"
    out = await client.update_status(p)
    assert out.status.phase == "Running"
    assert out.spec.containers[0].image == "nginx"


async def test_list_paging_and_selectors(client: Client, namespace: str) -> None:
    for i in range(7):
        cm = config_map(f"cm-{i}", namespace)
        cm.metadata.labels["parity"] = "even" if i % 2 == 0 else "odd"
        await client.create(cm)
    page = await client.list(core_pb2.ConfigMap, namespace=namespace, limit=3)
    assert [c.metadata.name for c in page.items] == ["cm-0", "cm-1", "cm-2"]
    assert page.continue_ and page.resource_version
    everything = await client.list_all(core_pb2.ConfigMap, namespace=namespace, page_size=2)
    assert [c.metadata.name for c in everything.items] == [f"cm-{i}" for i in range(7)]
    assert everything.resource_version and not everything.continue_
    odd = await client.list_all(
        core_pb2.ConfigMap, namespace=namespace, label_selector="parity=odd", page_size=2
    )
    assert [c.metadata.name for c in odd.items] == ["cm-1", "cm-3", "cm-5"]
    named = await client.list(
        "configmaps", namespace=namespace, field_selector="metadata.name=cm-4"
    )
    assert [object_key(c) for c in named.items] == [f"{namespace}/cm-4"]
    everywhere = await client.list(core_pb2.Namespace)
    assert namespace in {n.metadata.name for n in everywhere.items}


async def test_watch_in_order(client: Client, namespace: str) -> None:
    start = await client.list(core_pb2.ConfigMap, namespace=namespace)
    events = client.watch(
        core_pb2.ConfigMap, namespace=namespace, resource_version=start.resource_version
    )
    cm = await client.create(config_map("w", namespace, n="1"))
    cm.data["n"] = "2"
    cm = await client.update(cm)
    await client.delete(core_pb2.ConfigMap, "w", namespace=namespace)
    seen = []
    async with asyncio.timeout(10):
        async for event in events:
            seen.append((event.type, event.object.data.get("n")))
            if event.type is EventType.DELETED:
                break
    await events.aclose()  # type: ignore[attr-defined]
    assert seen == [
        (EventType.ADDED, "1"),
        (EventType.MODIFIED, "2"),
        (EventType.DELETED, "2"),
    ]


async def test_watch_bookmarks(client: Client, namespace: str) -> None:
    start = await client.create(config_map("b", namespace))
    events = client.watch(
        core_pb2.ConfigMap,
        namespace=namespace,
        resource_version=start.metadata.resource_version,
        allow_bookmarks=True,
    )
    async with asyncio.timeout(10):
        async for event in events:
            assert event.type is EventType.BOOKMARK
            assert event.object.metadata.resource_version
            break
    await events.aclose()  # type: ignore[attr-defined]


async def test_watch_too_old_is_gone(
    client: Client, namespace: str, store: K8semuStoreCluster
) -> None:
    # Secrets: no watch in this module has started the API server's watch cache for them, so
    # the watch asks the store for the compacted history (a cached kind may still serve it).
    first = await client.create(secret("g1", namespace))
    latest = await client.create(secret("g2", namespace))
    await compact(store, int(latest.metadata.resource_version))
    with pytest.raises(Gone):
        async with asyncio.timeout(10):
            async for _ in client.watch(
                core_pb2.Secret,
                namespace=namespace,
                resource_version=str(int(first.metadata.resource_version) - 1),
            ):
                pass


async def test_discovery(client: Client) -> None:
    # Names repeat across groups (metrics.k8s.io has "pods" too): keyed by group/version.
    resources = {(r.name, r.api_version): r for r in await client.discovery()}
    assert resources[("pods", "v1")].namespaced and "po" in resources[("pods", "v1")].short_names
    assert ("leases", "coordination.k8s.io/v1") in resources


async def test_deadline(client: Client) -> None:
    """A call to a server that never answers fails within the deadline, as Timeout or (for a
    port nobody listens on) Unavailable, after the retries."""
    silent = f"127.0.0.1:{free_loopback_ports(1)[0]}"
    async with Client(
        [silent], timeouts=Timeouts(call=0.5), retries=Retries(attempts=2, base_delay=0.01)
    ) as c:
        began = time.monotonic()
        with pytest.raises(APIStatusError):
            await c.get(core_pb2.Namespace, "default")
        assert time.monotonic() - began < 3


# ---- in-flight API server work: Patch, Bind, graceful delete --------------------------------


async def test_patch(client: Client, namespace: str) -> None:
    await client.create(config_map("p", namespace, keep="1", drop="2"))
    out = await client.patch(
        core_pb2.ConfigMap,
        "p",
        {"data": {"drop": None, "new": "3"}, "metadata": {"labels": {"x": "y"}}},
        namespace=namespace,
    )
    assert dict(out.data) == {"keep": "1", "new": "3"}
    assert out.metadata.labels["x"] == "y"
    created = await client.create(pod("pp", namespace))
    status = await client.patch(
        core_pb2.Pod, "pp", {"status": {"phase": "Running"}}, namespace=namespace, status=True
    )
    assert status.status.phase == "Running"
    assert status.spec == created.spec


async def test_bind(client: Client, namespace: str) -> None:
    await client.create(pod("b", namespace))
    bound = await client.bind("b", "node-1", namespace=namespace)
    assert bound.spec.node_name == "node-1"
    assert (await client.get(core_pb2.Pod, "b", namespace=namespace)).spec.node_name == "node-1"
    with pytest.raises(Conflict):
        await client.bind("b", "node-2", namespace=namespace)


async def test_delete_grace_period_zero(client: Client, namespace: str) -> None:
    await client.create(pod("d", namespace))
    await client.delete(
        core_pb2.Pod,
        "d",
        namespace=namespace,
        grace_period_seconds=0,
        propagation_policy="Background",
    )
    with pytest.raises(NotFound):
        await client.get(core_pb2.Pod, "d", namespace=namespace)


# ---- fail-over ------------------------------------------------------------------------------


async def test_failover_between_api_servers(live_apiservers: list[APIServerProcess]) -> None:
    first, second = live_apiservers
    async with Client([first.address, second.address], retries=TEST_RETRIES) as c:
        ns = core_pb2.Namespace()
        ns.metadata.name = "failover"
        await c.create(ns)
        for _ in range(4):  # round robin: both endpoints serve
            await c.get(core_pb2.Namespace, "failover")
        first.kill()
        began = time.monotonic()
        for _ in range(10):  # reads move on to the live endpoint and keep working
            got = await c.get(core_pb2.Namespace, "failover")
            assert got.metadata.name == "failover"
            await c.list(core_pb2.Namespace)
        assert time.monotonic() - began < 5
        # Writes move on too: nothing was sent to the dead endpoint (connection refused).
        for i in range(5):
            await c.create(config_map(f"after-kill-{i}", "failover"))
        second.kill()
        with pytest.raises(Unavailable):
            await c.get(core_pb2.Namespace, "failover")
        first.restart()
        # The client finds its way back once the cool-off of the restarted endpoint passes.
        deadline = time.monotonic() + 10
        while True:
            try:
                await c.get(core_pb2.Namespace, "failover")
                break
            except Unavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        second.restart()
