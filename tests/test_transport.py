"""The shared server boundary: malformed requests, unexpected errors, long messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from k8semu import transport
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc


class _Broken(rpc_pb2_grpc.KVServicer):
    async def Put(self, request: Any, context: Any) -> Any:
        raise ValueError("a bug in a servicer")

    async def Range(self, request: Any, context: Any) -> Any:
        await transport.abort(context, grpc.StatusCode.NOT_FOUND, "x" * 50_000)


@pytest.fixture(params=["interceptor", "in handlers"])
async def channel(request: pytest.FixtureRequest) -> AsyncIterator[grpc.aio.Channel]:
    """Both ways of putting the boundary: an interceptor (the default), or around each handler
    at registration (`GenericOnly`, the store's client port); health answers on both."""
    in_handlers = request.param == "in handlers"
    server, _ = transport.server(boundary_in_handlers=in_handlers)
    registrar: Any = transport.GenericOnly(server) if in_handlers else server
    rpc_pb2_grpc.add_KVServicer_to_server(_Broken(), registrar)
    port = transport.bind(server, "127.0.0.1:0", flag="test")
    await server.start()
    async with transport.channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(0)


@pytest.fixture
def kv(channel: grpc.aio.Channel) -> rpc_pb2_grpc.KVStub:
    return rpc_pb2_grpc.KVStub(channel)


async def test_an_unexpected_servicer_error_is_internal_not_unknown(
    kv: rpc_pb2_grpc.KVStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await kv.Put(rpc_pb2.PutRequest(key=b"k"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "/etcdserverpb.KV/Put: internal error: ValueError" in (err.value.details() or "")


async def test_undecodable_request_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    raw = channel.unary_unary(
        "/etcdserverpb.KV/Put", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await raw(b"\xff\xff\xff\xff\x0f", timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_long_status_message_still_reaches_the_client(kv: rpc_pb2_grpc.KVStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND  # not RESOURCE_EXHAUSTED
    assert (err.value.details() or "").endswith("(48000 more characters)")


async def test_health_answers(channel: grpc.aio.Channel) -> None:
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    answer = await check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
