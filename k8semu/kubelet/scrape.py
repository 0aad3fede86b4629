"""The other side of `Kubelet.Summary`: how a reader outside the kubelet (the API server's
resource metrics, the HPA's kubelet source, `k8semu top`'s source through them) finds a
node's kubelet and asks it for its usage summary, with a bounded deadline.

A node's kubelet is named by its Node's `k8semu.io/kubelet-endpoint` annotation. Every
failure (no endpoint, the kubelet unreachable, too slow, an error) is one `ScrapeError`
naming the node, so callers treat a node that did not answer as absent. The figures read
are the ones metrics-server reads from /stats/summary: CPU as the kubelet's rate
(`usage_nano_cores`, unset until it has two samples) and memory as the working set.
"""

from __future__ import annotations

import grpc

from k8semu import transport
from k8semu.kubelet.node import ENDPOINT_ANNOTATION
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc

DEFAULT_TIMEOUT = 5.0  # seconds per kubelet


class ScrapeError(Exception):
    """A node's summary could not be read; the message names the node and why."""


def endpoint(node: core_pb2.Node) -> str:
    found = node.metadata.annotations.get(ENDPOINT_ANNOTATION, "")
    if not found:
        raise ScrapeError(f"node {node.metadata.name}: no kubelet endpoint")
    return found


async def summary(
    node: core_pb2.Node,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    tls: transport.ClientTLS | None = None,
) -> kubelet_pb2.Summary:
    """The node's kubelet's summary, or ScrapeError within about `timeout` seconds. `tls`:
    the kubelets' CA and a certificate they take for summaries (the API server's
    kubelet-client, the controller manager's)."""
    name = node.metadata.name
    address = endpoint(node)
    try:
        async with transport.channel(address, tls) as channel:
            stub = kubelet_pb2_grpc.KubeletStub(channel)
            request = kubelet_pb2.SummaryRequest(node=name)
            return await stub.Summary(request, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise ScrapeError(f"node {name}: kubelet at {address}: {exc.details()}") from exc


def cpu_nano_cores(cpu: kubelet_pb2.CPUStats) -> int | None:
    """CPU in nanocores, None when the kubelet had no rate yet."""
    return cpu.usage_nano_cores if cpu.HasField("usage_nano_cores") else None


def working_set(memory: kubelet_pb2.MemoryStats) -> int | None:
    return memory.working_set_bytes if memory.HasField("working_set_bytes") else None


def measured_at(stats: kubelet_pb2.CPUStats | kubelet_pb2.MemoryStats) -> float:
    """When the kubelet took the sample (seconds since the epoch)."""
    return stats.time.seconds + stats.time.nanos / 1e9
