"""The registry is what the verbs use: rows, not branches.

Pure checks of the table, then an in-process API servicer (real store, real gRPC server on a
free port) whose registry gives ConfigMaps rules of their own (an allocation hook and a field
selector): the generic verbs claim, keep, release and select through that row exactly as
they do for Services, with no code that names ConfigMaps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from k8semu import transport
from k8semu.api import kinds
from k8semu.apiserver import registry
from k8semu.apiserver.allocation import DEFAULT_RANGES, Assignment, Claim, Taken
from k8semu.apiserver.errors import MethodNotAllowed, NotFound
from k8semu.apiserver.grpcface import add_api_servicer
from k8semu.apiserver.registry import Registry
from k8semu.apiserver.registry.strategy import Strategy
from k8semu.apiserver.service import APIServicer
from k8semu.apiserver.store import Store
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.api.v1 import autoscaling_pb2, core_pb2
from tests.support.apiserver import APIServerProcess

from .conftest import Client, unpack

TABLE = registry.build(DEFAULT_RANGES)
COLORS = b"/registry/allocations/test-colors/"


def test_every_stored_kind_has_one_row_and_status_follows_the_message() -> None:
    stored = [k for k in kinds.all_kinds() if k.list_message is not None and k.stored]
    assert [row.kind for row in TABLE] == stored
    for row in TABLE:
        # Behaviour kept from before the registry: a kind with a status field has the
        # status subresource (Update keeps the stored status).
        assert row.status == ("status" in row.kind.message.DESCRIPTOR.fields_by_name), row
    rows = list(TABLE)
    with pytest.raises(ValueError, match="no row for configmaps"):
        Registry([r for r in rows if r.kind.plural != "configmaps"])
    with pytest.raises(ValueError, match="two rows"):
        Registry([*rows, rows[0]])
    with pytest.raises(ValueError, match="status subresource without a status field"):
        Strategy(kind=kinds.for_resource("configmaps"), status=True)


class _Nothing:
    async def get(self, namespace: str, name: str) -> Message:
        raise AssertionError("not read here")

    async def list(self, namespace: str) -> list[Message]:
        return []


def test_a_served_kind_is_read_only_and_optional() -> None:
    """metrics.k8s.io rows exist only when served; writes to them are MethodNotAllowed."""
    served = registry.build(DEFAULT_RANGES, served={"pods.metrics.k8s.io": _Nothing()})
    row = served.resolve_read("podmetrics")
    assert row.kind.kind == "PodMetrics" and row.reader is not None
    assert served.resolve_read("pods").kind.kind == "Pod"  # the bare name stays the core kind
    assert all(r.reader is None for r in served)  # repairs walk only stored kinds
    with pytest.raises(MethodNotAllowed, match="does not allow this method"):
        served.resolve("pods.metrics.k8s.io")
    with pytest.raises(NotFound, match="could not find the requested resource"):
        TABLE.resolve_read("nodes.metrics.k8s.io")
    with pytest.raises(ValueError, match="a reader exactly when"):
        Strategy(kind=kinds.for_resource("podmetrics"))


class Colors:
    """An allocation hook for ConfigMaps: data.color is held exclusively, store-wide."""

    prefixes = (COLORS,)

    def assign(
        self, obj: Message, old: Message | None, taken: Taken, *, described: str
    ) -> Assignment:
        before = set(self.held(old)) if old is not None else set()
        claims = [
            Claim(k, "data.color", k[len(COLORS) :].decode(), True)
            for k in self.held(obj)
            if k not in before
        ]
        return Assignment(claims, [k for k in before if k not in self.held(obj)])

    def held(self, obj: Message) -> list[bytes]:
        color = getattr(obj, "data").get("color", "")  # noqa: B009
        return [COLORS + color.encode()] if color else []


def _color(obj: Message) -> str:
    return str(getattr(obj, "data").get("color", ""))  # noqa: B009


def _with_colors(base: Registry) -> Registry:
    return Registry(
        [
            dataclasses.replace(row, allocation=Colors(), field_selectors={"data.color": _color})
            if row.kind.plural == "configmaps"
            else row
            for row in base
        ]
    )


@pytest.fixture
async def colors(
    store: K8semuStoreCluster, apiserver: APIServerProcess
) -> AsyncIterator[tuple[Client, Store]]:
    """A Client of an in-process servicer with the ConfigMap row above, on the module's store
    (`apiserver` made the system namespaces there)."""
    backend = Store(store.endpoints, deadline=10.0)
    servicer = APIServicer(
        backend, bookmark_interval=0.5, rows=_with_colors(registry.build(DEFAULT_RANGES))
    )
    server, _ = transport.server()
    add_api_servicer(servicer, server)
    port = transport.bind(server, "127.0.0.1:0", flag="--listen-address")
    await server.start()
    try:
        async with transport.channel(f"127.0.0.1:{port}") as channel:
            yield Client(channel), backend
    finally:
        await server.stop(0)
        await servicer.watch_caches.stop()
        await backend.close()


def _cm(name: str, color: str) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name = name
    cm.data["color"] = color
    return cm


async def _held(backend: Store) -> dict[str, str]:
    resp = await backend.scan(COLORS)
    return {kv.key[len(COLORS) :].decode(): kv.value.decode() for kv in resp.kvs}


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def test_a_row_is_what_the_verbs_use(colors: tuple[Client, Store]) -> None:
    client, backend = colors
    await client.create("cm", _cm("reg-a", "red"), "default")
    assert await _held(backend) == {"red": "default/reg-a"}
    # The key is claimed in the create's own Txn: a second holder is refused, nothing written.
    err = await _refused(client.create("cm", _cm("reg-b", "red"), "default"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'configmaps "reg-b": data.color: Invalid value: "red"' in (err.details() or "")
    await _refused(client.get("cm", "reg-b", "default"))
    # An update takes the new value and releases the old one, in one Txn.
    stored = unpack((await client.get("cm", "reg-a", "default")).object, core_pb2.ConfigMap)
    stored.data["color"] = "blue"
    await client.update("cm", stored)
    assert await _held(backend) == {"blue": "default/reg-a"}
    await client.create("cm", _cm("reg-b", "red"), "default")
    # The row's field selector.
    listed = await client.list("cm", "default", field_selector="data.color=blue")
    assert [unpack(i, core_pb2.ConfigMap).metadata.name for i in listed.items] == ["reg-a"]
    # Delete releases what the object held, in the delete's Txn.
    for name in ("reg-a", "reg-b"):
        await client.delete("cm", name, "default")
    assert await _held(backend) == {}


async def test_a_kind_without_status_refuses_status_writes(client: Client) -> None:
    """Through the real API server process: the rows' `status` decides."""
    cm = unpack(
        (await client.create("cm", _cm("no-status", "x"), "default")).object, core_pb2.ConfigMap
    )
    err = await _refused(client.update("cm", cm, status=True))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "configmaps have no status subresource"
    # An unknown field selector of a kind is refused naming the kind's own fields.
    err = await _refused(client.list("cm", "default", field_selector="data.color=x"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not supported for configmaps" in (err.details() or "")
    await client.delete("cm", "no-status", "default")


def _hpa(name: str, minimum: int, maximum: int) -> autoscaling_pb2.HorizontalPodAutoscaler:
    hpa = autoscaling_pb2.HorizontalPodAutoscaler(
        api_version="autoscaling/v2", kind="HorizontalPodAutoscaler"
    )
    hpa.metadata.name = name
    ref = hpa.spec.scale_target_ref
    ref.api_version, ref.kind, ref.name = "apps/v1", "Deployment", "web"
    hpa.spec.min_replicas, hpa.spec.max_replicas = minimum, maximum
    return hpa


async def test_the_hpa_row_defaults_and_refuses_bad_specs(client: Client) -> None:
    """The HPA's row: Kubernetes' defaults on create, and a bad spec refused naming its field
    (nothing stored) rather than left for the controller's conditions."""
    err = await _refused(client.create("hpa", _hpa("bad", 5, 2), "default"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'horizontalpodautoscalers "bad"' in (err.details() or "")
    assert "spec.maxReplicas" in (err.details() or "")
    await _refused(client.get("hpa", "bad", "default"))
    created = unpack(
        (await client.create("hpa", _hpa("good", 1, 3), "default")).object,
        autoscaling_pb2.HorizontalPodAutoscaler,
    )
    # No metric named: Kubernetes' default, CPU at 80% of the requests.
    [metric] = created.spec.metrics
    assert metric.resource.name == "cpu"
    assert metric.resource.target.average_utilization == 80
    await client.delete("hpa", "good", "default")
