"""The gRPC face of pods' streams (k8semu.api.v1.PodStreams): `k8semu logs` and `k8semu exec`
call the API server, which finds the pod's kubelet and relays the kubelet's stream, as the
REST face's pods/log and pods/exec do (`rest/streams.py`, whose lookups and checks these
share). A refusal is the same message as over REST, with the matching gRPC code; the
kubelet's own refusals pass through unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from k8semu import transport
from k8semu.api import kinds
from k8semu.apiserver.auth import grpcside
from k8semu.apiserver.auth.attributes import Attributes
from k8semu.apiserver.auth.guard import Guard
from k8semu.apiserver.errors import StatusError
from k8semu.apiserver.rest.paths import Target
from k8semu.apiserver.rest.status import HTTPError
from k8semu.apiserver.rest.streams import LOGS_TIMEOUT, STREAM_TIMEOUT, Streams
from k8semu.pb.api.v1 import podstreams_pb2, podstreams_pb2_grpc
from k8semu.pb.kubelet.v1 import kubelet_pb2

SERVICE_NAME = podstreams_pb2.DESCRIPTOR.services_by_name["PodStreams"].full_name
Context = grpc.aio.ServicerContext[Any, Any]
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
}


class PodStreamsServicer(podstreams_pb2_grpc.PodStreamsServicer):
    def __init__(self, streams: Streams, guard: Guard | None = None) -> None:
        self.streams = streams
        self.guard = guard

    async def _authorize(self, context: Context, namespace: str, pod: str, sub: str) -> None:
        """As the REST face's pods/log (get) and pods/exec, pods/attach (create, as
        Kubernetes asks of a WebSocket exec): authenticated and authorized, else aborted."""
        if self.guard is None:
            return
        verb = "get" if sub == "log" else "create"
        try:
            user = await self.guard.authenticate(grpcside.credentials(context))
            attrs = Attributes(user, verb, "pods", "", sub, namespace or "default", pod)
            await self.guard.authorize(attrs)
        except StatusError as exc:
            await transport.abort(context, exc.code, exc.message)

    async def _endpoint(
        self, context: Context, namespace: str, pod: str, container: str, sub: str
    ) -> tuple[str, str]:
        """(kubelet address, container) of a running container, or the call aborted."""
        if not pod:
            await transport.abort(context, grpc.StatusCode.INVALID_ARGUMENT, "pod: Required value")
        await self._authorize(context, namespace, pod, sub)
        target = Target(kinds.for_resource("pods"), namespace or "default", pod, sub, False)
        try:
            _, endpoint, container = await self.streams.ready(target, container)
        except HTTPError as exc:
            await transport.abort(
                context, _CODES.get(exc.code, grpc.StatusCode.UNAVAILABLE), exc.message
            )
        except StatusError as exc:
            await transport.abort(context, exc.code, exc.message)
        return endpoint, container

    async def Logs(
        self, request: kubelet_pb2.LogsRequest, context: Context
    ) -> AsyncIterator[kubelet_pb2.LogsChunk]:
        endpoint, request.container = await self._endpoint(
            context, request.namespace, request.pod, request.container, "log"
        )
        request.namespace = request.namespace or "default"
        async with self.streams.kubelet(endpoint) as stub:
            call = stub.Logs(request, timeout=STREAM_TIMEOUT if request.follow else LOGS_TIMEOUT)
            try:
                async for chunk in call:
                    yield chunk
            except grpc.aio.AioRpcError as exc:
                await transport.abort(context, exc.code(), exc.details() or "")

    async def Interact(
        self, request_iterator: AsyncIterator[kubelet_pb2.InteractInput], context: Context
    ) -> AsyncIterator[kubelet_pb2.InteractOutput]:
        first = await anext(aiter(request_iterator), kubelet_pb2.InteractInput())
        if first.WhichOneof("input") != "start":
            await transport.abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "start: Required value"
            )
        start = first.start
        endpoint, start.container = await self._endpoint(
            context,
            start.namespace,
            start.pod,
            start.container,
            "attach" if start.attach else "exec",
        )
        start.namespace = start.namespace or "default"

        async def inputs() -> AsyncIterator[kubelet_pb2.InteractInput]:
            yield kubelet_pb2.InteractInput(start=start)
            async for msg in request_iterator:
                yield msg

        async with self.streams.kubelet(endpoint) as stub:
            try:
                async for out in stub.Interact(inputs(), timeout=STREAM_TIMEOUT):
                    yield out
            except grpc.aio.AioRpcError as exc:
                await transport.abort(context, exc.code(), exc.details() or "")


def add_to_server(server: grpc.aio.Server, streams: Streams, guard: Guard | None = None) -> None:
    servicer = PodStreamsServicer(streams, guard)
    podstreams_pb2_grpc.add_PodStreamsServicer_to_server(servicer, server)
