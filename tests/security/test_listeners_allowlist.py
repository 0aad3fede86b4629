"""`transport.PeerAllowList` in-process (the kubelet's rule "only the API server", short
version of the live test): over mutual TLS, a method a rule names answers only the users it
lists (a unary and a streaming call alike), others PERMISSION_DENIED naming who asked and
who may."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from k8semu import transport
from k8semu.cluster.processes import free_loopback_ports
from tests.security.conftest import PKIFiles

CHECK = "/grpc.health.v1.Health/Check"
REFLECT = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
async def server(cluster_pki: PKIFiles) -> AsyncIterator[str]:
    rules = transport.PeerAllowList(
        {CHECK: ("kubernetes-admin",), REFLECT: ("system:node:node1",)}, component="test"
    )
    assert rules.allowed("/grpc.health.v1.Health/Watch") is None  # no rule: passes through
    srv, health = transport.server(interceptors=[rules])
    own = cluster_pki["server"]
    tls = transport.ServerTLS(cert_file=own.cert, key_file=own.key, client_ca_file=own.ca)
    address = f"127.0.0.1:{free_loopback_ports(1)[0]}"
    transport.bind(srv, address, flag="--listen-address", tls=tls)
    await health.set("", SERVING)
    await srv.start()
    yield address
    await srv.stop(0)


def _as(cluster_pki: PKIFiles, name: str) -> transport.ClientTLS:
    files = cluster_pki[name]
    return transport.ClientTLS(ca_file=cluster_pki.ca, cert_file=files.cert, key_file=files.key)


async def _reflect(channel: grpc.aio.Channel) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    async for answer in stub.ServerReflectionInfo(iter([ask]), timeout=10):
        return answer
    raise AssertionError("no answer")


async def test_only_the_listed_users_reach_the_named_methods(
    server: str, cluster_pki: PKIFiles
) -> None:
    request = health_pb2.HealthCheckRequest()
    async with transport.channel(server, _as(cluster_pki, "admin")) as channel:
        assert (await health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)).status == (
            SERVING
        )
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            await _reflect(channel)
        assert streamed.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with transport.channel(server, _as(cluster_pki, "node1")) as channel:
        assert (await _reflect(channel)).list_services_response.service
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.details() == (
            f"test: user 'system:node:node1' may not call {CHECK} (only kubernetes-admin)"
        )
