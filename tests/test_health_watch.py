"""`grpc.health.v1.Health/Watch` on every `transport.server`: the current status at once,
then each change, as grpc-health-probe's watch mode and grpcio's health servicer expect
(its Watch writes with `context.write()`; the shared boundary used to iterate it as an
async generator and failed every call)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from k8semu import transport
from k8semu.cluster.processes import K8semuStoreCluster
from tests.support.apiserver import APIServerProcess, running

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
WATCH = "/grpc.health.v1.Health/Watch"


@pytest.fixture(params=["interceptor", "in handlers"])
async def served(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[grpc.aio.Channel, health.aio.HealthServicer]]:
    """Both ways of putting the boundary; the interceptor one also behind an allow-list that
    names Watch (the anonymous caller of a plain channel is allowed), so both wrappers run."""
    if request.param == "in handlers":
        server, servicer = transport.server(boundary_in_handlers=True)
    else:
        allow = transport.PeerAllowList({WATCH: {"anonymous"}}, component="test")
        server, servicer = transport.server(interceptors=[allow])
    port = transport.bind(server, "127.0.0.1:0", flag="test")
    await server.start()
    async with transport.channel(f"127.0.0.1:{port}") as ch:
        yield ch, servicer
    await server.stop(0)


async def test_watch_streams_the_status_and_its_changes(
    served: tuple[grpc.aio.Channel, health.aio.HealthServicer],
) -> None:
    channel, servicer = served
    stub = health_pb2_grpc.HealthStub(channel)
    whole = stub.Watch(health_pb2.HealthCheckRequest(), timeout=30)
    named = stub.Watch(health_pb2.HealthCheckRequest(service="k8semu.Later"), timeout=30)
    assert (await whole.read()).status == SERVING
    assert (await named.read()).status == UNKNOWN  # not an error: it may appear later
    await servicer.set("", NOT_SERVING)
    await servicer.set("k8semu.Later", SERVING)
    assert (await whole.read()).status == NOT_SERVING
    assert (await named.read()).status == SERVING
    whole.cancel()
    named.cancel()
    check = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert check.status == NOT_SERVING


def _statuses(watch: Any) -> Any:
    for answer in watch:
        yield answer.status


def test_a_real_api_server_watched_through_start_and_stop(tmp_path: Path) -> None:
    """The API server says NOT_SERVING while its store is not there, SERVING once the system
    namespaces exist, NOT_SERVING again on SIGTERM, then ends the stream by stopping; a
    one-shot Check (what grpc_health_probe does) agrees at each step."""
    store = K8semuStoreCluster(tmp_path / "store", 1)
    server = APIServerProcess(store, tmp_path / "apiserver.log", ["--shutdown-grace-period", "1s"])
    try:
        with grpc.insecure_channel(server.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=60)
            statuses = _statuses(watch)
            assert next(statuses) == NOT_SERVING
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == NOT_SERVING
            with running(store):
                assert next(statuses) == SERVING
                check = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert check.status == SERVING
                proc = server.proc
                assert proc is not None
                proc.terminate()
                assert next(statuses) == NOT_SERVING
                with pytest.raises(grpc.RpcError) as ended:
                    next(statuses)
                assert ended.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
                assert proc.wait(30) == 0
    finally:
        server.close()
