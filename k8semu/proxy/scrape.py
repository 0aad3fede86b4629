"""The other side of `Proxy.GetMetrics` for readers outside the proxy (the HPA's traffic
metrics): where a node's proxy serves it, and one bounded call.

Each proxy names its gRPC address on its Node (annotation `k8semu.io/proxy-endpoint`, kept
there by `ProxyServer`), as the kubelet does with `k8semu.io/kubelet-endpoint`. Every failure
(no annotation, the proxy unreachable, too slow, an error) is one `ScrapeError` naming the
node, so callers treat a proxy that did not answer as absent.
"""

from __future__ import annotations

import grpc

from k8semu import transport
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.proxy.v1 import proxy_pb2, proxy_pb2_grpc

ENDPOINT_ANNOTATION = "k8semu.io/proxy-endpoint"
DEFAULT_TIMEOUT = 5.0  # seconds per proxy


class ScrapeError(Exception):
    """A proxy's metrics could not be read; the message names the node and why."""


async def get_metrics(
    address: str,
    *,
    namespace: str = "",
    service: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    tls: transport.ClientTLS | None = None,
) -> proxy_pb2.ProxyMetrics:
    """The metrics of the proxy whose `--listen-address` is `address` (for one namespace /
    service when given). Raises grpc.aio.AioRpcError when it does not answer. `tls`: the
    cluster CA and a client certificate of it (a proxy serving TLS requires one)."""
    async with transport.channel(address, tls) as channel:
        stub = proxy_pb2_grpc.ProxyStub(channel)
        request = proxy_pb2.GetMetricsRequest(namespace=namespace, service=service)
        return await stub.GetMetrics(request, timeout=timeout)


async def node_metrics(
    node: core_pb2.Node,
    *,
    namespace: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    tls: transport.ClientTLS | None = None,
) -> proxy_pb2.ProxyMetrics:
    """The metrics of the proxy of `node`, or ScrapeError within about `timeout` seconds."""
    address = node.metadata.annotations.get(ENDPOINT_ANNOTATION, "")
    if not address:
        raise ScrapeError(f"node {node.metadata.name}: no proxy endpoint")
    try:
        return await get_metrics(address, namespace=namespace, timeout=timeout, tls=tls)
    except grpc.aio.AioRpcError as exc:
        raise ScrapeError(
            f"node {node.metadata.name}: proxy at {address}: {exc.details()}"
        ) from exc
