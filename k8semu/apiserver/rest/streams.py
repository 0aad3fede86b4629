"""Pods' streaming subresources over HTTP: `pods/log` (plain text, chunked), `pods/exec`,
`pods/attach` and `pods/portforward` (WebSocket, Kubernetes' channel protocols).

Every stream goes client -> API server -> kubelet: the pod's node is read from storage, its
kubelet's address from the Node's `k8semu.io/kubelet-endpoint` annotation, and the kubelet's
gRPC stream (Logs, Interact, PortForward) is called from here only (`_kubelet`), so when the
kubelet trusts only the API server (issue 16) its credentials are added in one place.

Options are checked (400 for what does not parse, 422 for what Kubernetes' validation
refuses) and the pod and container found before anything is opened; the kubelet's answer to
its first message decides the HTTP status, so an error is always a metav1.Status and never a
half-sent stream. The WebSocket framing is `channels.py`'s; this module owns the requests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from multidict import MultiMapping

from k8semu import transport
from k8semu.apiserver.metrics import LONGRUNNING, REQUESTS
from k8semu.apiserver.rest import channels, spdyupgrade, tunnel
from k8semu.apiserver.rest.paths import Target
from k8semu.apiserver.rest.status import HTTPError
from k8semu.apiserver.service import APIServicer
from k8semu.kubelet.containerlog import parse_time
from k8semu.kubelet.node import ENDPOINT_ANNOTATION
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc

if TYPE_CHECKING:
    from k8semu.pb.kubelet.v1.kubelet_pb2_grpc import KubeletAsyncStub

log = get_logger(__name__)

LOGS_TIMEOUT = 60.0  # seconds for a log that is not followed
# A followed log, an exec, an attach or a forwarded connection lasts at most this long
# (Kubernetes' --streaming-connection-idle-timeout default is 4h).
STREAM_TIMEOUT = 4 * 3600.0
_TRUE = ("true", "1", "True", "TRUE")
_FALSE = ("false", "0", "False", "FALSE", "")


@dataclass(frozen=True, slots=True)
class LogOptions:
    """Kubernetes' PodLogOptions from a query."""

    container: str
    follow: bool
    previous: bool
    timestamps: bool
    tail_lines: int | None
    limit_bytes: int | None
    since_seconds: int | None
    since_time: str  # RFC 3339, as given ("" for none)


def flag(query: MultiMapping[str], name: str, default: bool = False) -> bool:
    text = query.get(name)
    if text is None:
        return default
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise HTTPError(400, "BadRequest", f'{name}: invalid value "{text}": must be true or false')


def _number(query: MultiMapping[str], name: str) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise HTTPError(
            400, "BadRequest", f'{name}: invalid value "{text}": must be an integer'
        ) from None


def _invalid(name: str, field: str, value: object, why: str) -> HTTPError:
    return HTTPError(
        422, "Invalid", f'PodLogOptions "{name}" is invalid: {field}: Invalid value: {value}: {why}'
    )


def log_options(query: MultiMapping[str], pod: str) -> LogOptions:
    """The options of a pods/log request; HTTPError naming the field when one is bad."""
    tail, limit, since_s = (_number(query, n) for n in ("tailLines", "limitBytes", "sinceSeconds"))
    if tail is not None and tail < 0:
        raise _invalid(pod, "tailLines", tail, "must be greater than or equal to 0")
    if limit is not None and limit < 1:
        raise _invalid(pod, "limitBytes", limit, "must be greater than 0")
    if since_s is not None and since_s < 1:
        raise _invalid(pod, "sinceSeconds", since_s, "must be greater than 0")
    since_time = query.get("sinceTime")
    if since_time is not None:
        try:
            parse_time(since_time)
        except ValueError:
            raise HTTPError(
                400, "BadRequest", f'sinceTime: invalid value "{since_time}": must be RFC 3339'
            ) from None
        if since_s is not None:
            raise HTTPError(
                422,
                "Invalid",
                f'PodLogOptions "{pod}" is invalid: : Forbidden: at most one of `sinceTime` or'
                " `sinceSeconds` may be specified",
            )
    return LogOptions(
        container=query.get("container", ""),
        follow=flag(query, "follow"),
        previous=flag(query, "previous"),
        timestamps=flag(query, "timestamps"),
        tail_lines=tail,
        limit_bytes=limit,
        since_seconds=since_s,
        since_time=since_time or "",
    )


def container_of(pod: core_pb2.Pod, name: str) -> str:
    """The container a request means (the only one when `name` is empty), as Kubernetes
    checks it before asking the kubelet."""
    names = [c.name for c in pod.spec.containers]
    every = names + [c.name for c in pod.spec.init_containers]
    if not name:
        if len(names) == 1:
            return names[0]
        raise HTTPError(
            400,
            "BadRequest",
            f"a container name must be specified for pod {pod.metadata.name}, choose one of:"
            f" [{' '.join(names)}]",
        )
    if name not in every:
        raise HTTPError(
            400, "BadRequest", f"container {name} is not valid for pod {pod.metadata.name}"
        )
    return name


def waiting(pod: core_pb2.Pod, container: str) -> HTTPError | None:
    """Kubernetes' 400 for a container that has not started yet (the pod not on a node, or
    its status still waiting with no earlier run)."""
    if pod.spec.node_name:
        statuses = [*pod.status.container_statuses, *pod.status.init_container_statuses]
        found = next((s for s in statuses if s.name == container), None)
        if found is None or not found.state.HasField("waiting"):
            return None
        if found.restart_count > 0 or found.last_state.HasField("terminated"):
            return None
        reason = found.state.waiting.reason or "ContainerCreating"
    else:
        reason = "ContainerCreating"
    return HTTPError(
        400,
        "BadRequest",
        f'container "{container}" in pod "{pod.metadata.name}" is waiting to start: {reason}',
    )


def kubelet_error(exc: grpc.aio.AioRpcError, endpoint: str) -> HTTPError:
    """A kubelet's refusal as Kubernetes says it (the kubelet's own message)."""
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return HTTPError(
            500, "InternalError", f"error dialing the kubelet at {endpoint}: {exc.details()}"
        )
    if code == grpc.StatusCode.NOT_FOUND and "not on this node" in (exc.details() or ""):
        return HTTPError(404, "NotFound", exc.details() or "")
    return HTTPError(400, "BadRequest", exc.details() or str(code))


async def counted(
    verb: str, resource: str, sub: str, serving: Awaitable[web.StreamResponse]
) -> web.StreamResponse:
    """`serving` (a long-running request) counted in the API server's metrics: in flight
    while it runs, then by its HTTP code (500 when it failed otherwise)."""
    code = "500"
    gauge = LONGRUNNING.labels(verb, resource)
    gauge.inc()
    try:
        response = await serving
        code = str(response.status)
        return response
    except HTTPError as exc:
        code = str(exc.code)
        raise
    finally:
        gauge.dec()
        REQUESTS.labels(verb, resource, sub, code).inc()


class Streams:
    """The streaming subresources of pods, served for `verbs`' storage."""

    def __init__(
        self, verbs: APIServicer, *, kubelet_tls: transport.ClientTLS | None = None
    ) -> None:
        """`kubelet_tls`: the kubelets' CA and this server's kubelet-client certificate."""
        self.verbs = verbs
        self.kubelet_tls = kubelet_tls

    async def serve(self, request: web.Request, target: Target) -> web.StreamResponse:
        sub = target.subresource
        if target.kind.resource != "pods" or not target.namespace:
            raise HTTPError(
                404,
                "NotFound",
                f"the server could not find the requested resource ({request.path})",
            )
        allowed = ("GET",) if sub == "log" else ("GET", "POST")
        if request.method not in allowed:
            raise HTTPError(
                405, "MethodNotAllowed", f"{request.method} pods/{sub}: only {', '.join(allowed)}"
            )
        if sub == "log":
            serve = self._log
        elif sub == "portforward":
            serve = self._portforward
        else:
            serve = self._interact
        verb = "GET" if sub == "log" else "CONNECT"
        return await counted(verb, "pods", sub, serve(request, target))

    async def locate(self, target: Target) -> tuple[core_pb2.Pod, str]:
        """The pod and its kubelet's address; the pod's NotFound is a 404 Status."""
        with self.verbs.call():
            got = await self.verbs.Get(
                api.GetRequest(resource="pods", namespace=target.namespace, name=target.name)
            )
        pod = core_pb2.Pod()
        got.object.Unpack(pod)
        node_name = pod.spec.node_name
        if not node_name:
            return pod, ""
        try:
            with self.verbs.call():
                got = await self.verbs.Get(api.GetRequest(resource="nodes", name=node_name))
        except Exception as exc:
            raise HTTPError(
                500, "InternalError", f'node "{node_name}" of pod "{target.name}": {exc}'
            ) from None
        node = core_pb2.Node()
        got.object.Unpack(node)
        endpoint = node.metadata.annotations.get(ENDPOINT_ANNOTATION, "")
        if not endpoint:
            raise HTTPError(
                400,
                "BadRequest",
                f'node "{node_name}" has no kubelet endpoint (annotation {ENDPOINT_ANNOTATION}):'
                " its pods run no processes",
            )
        return pod, endpoint

    @contextlib.asynccontextmanager
    async def kubelet(self, endpoint: str) -> AsyncIterator[KubeletAsyncStub]:
        """The one way to a kubelet: as the API server (its kubelet-client certificate), the
        kubelet's serving certificate checked against the kubelets' CA."""
        async with transport.channel(endpoint, self.kubelet_tls) as channel:
            stub: KubeletAsyncStub = kubelet_pb2_grpc.KubeletStub(channel)
            yield stub

    async def ready(self, target: Target, container: str) -> tuple[core_pb2.Pod, str, str]:
        """(pod, kubelet address, container) of a request to a running container."""
        pod, endpoint = await self.locate(target)
        container = container_of(pod, container)
        if not endpoint:
            problem = waiting(pod, container)
            assert problem is not None  # a pod with no node always waits
            raise problem
        return pod, endpoint, container

    # ---- pods/log -------------------------------------------------------------------------

    async def _log(self, request: web.Request, target: Target) -> web.StreamResponse:
        opts = log_options(request.query, target.name)
        _, endpoint, container = await self.ready(target, opts.container)
        req = kubelet_pb2.LogsRequest(namespace=target.namespace, pod=target.name)
        req.container, req.since_time = container, opts.since_time
        req.previous, req.follow, req.timestamps = opts.previous, opts.follow, opts.timestamps
        for name in ("tail_lines", "limit_bytes", "since_seconds"):
            if (value := getattr(opts, name)) is not None:
                setattr(req, name, value)
        async with self.kubelet(endpoint) as stub:
            call = stub.Logs(req, timeout=STREAM_TIMEOUT if opts.follow else LOGS_TIMEOUT)
            try:
                await call.read()  # the kubelet's empty first chunk: the request is accepted
            except grpc.aio.AioRpcError as exc:
                raise kubelet_error(exc, endpoint) from None
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            response.enable_chunked_encoding()
            try:
                await response.prepare(request)
                async for chunk in _chunks(call):
                    await response.write(chunk)
            except grpc.aio.AioRpcError as exc:
                # The status is sent: the stream just ends (as a kubelet going away does).
                log.info("log stream ended", pod=target.name, error=exc.details())
            finally:
                call.cancel()
        await response.write_eof()
        return response

    # ---- pods/exec, pods/attach -----------------------------------------------------------

    async def _interact(self, request: web.Request, target: Target) -> web.StreamResponse:
        query = request.query
        attach = target.subresource == "attach"
        command = query.getall("command", [])
        if not attach and not command:
            raise HTTPError(
                400, "BadRequest", "command: Required value: you must specify a command"
            )
        start = kubelet_pb2.ExecStart(
            namespace=target.namespace,
            pod=target.name,
            command=command,
            attach=attach,
            stdin=flag(query, "stdin"),
            stdout=flag(query, "stdout", default=not attach),
            stderr=flag(query, "stderr", default=not attach),
            tty=flag(query, "tty"),
        )
        if not (start.stdin or start.stdout or start.stderr):
            raise HTTPError(
                400, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr"
            )
        _, endpoint, start.container = await self.ready(target, query.get("container", ""))
        # After the pod's checks: kubectl retries a refused WebSocket over SPDY, and the
        # pod's error is what it should print, not SPDY's.
        spdy = spdyupgrade.is_spdy(request)
        if spdy:
            spdyupgrade.negotiate(request, spdyupgrade.EXEC_VERSIONS)
        else:
            protocol = channels.choose(request, channels.EXEC_PROTOCOLS)
        async with self.kubelet(endpoint) as stub:
            call = stub.Interact(timeout=STREAM_TIMEOUT)
            try:
                await call.write(kubelet_pb2.InteractInput(start=start))
                await call.read()  # the kubelet's empty first message: started
            except grpc.aio.AioRpcError as exc:
                raise kubelet_error(exc, endpoint) from None
            try:
                if spdy:
                    return await spdyupgrade.Exec(call, start, command).serve(request)
                return await channels.Exec(call, protocol, command).serve(request)
            finally:
                call.cancel()

    # ---- pods/portforward -----------------------------------------------------------------

    async def _portforward(self, request: web.Request, target: Target) -> web.StreamResponse:
        spdy = spdyupgrade.is_spdy(request)
        if spdy:
            protocol = spdyupgrade.negotiate(request, spdyupgrade.PORTFORWARD_VERSIONS)
        else:
            protocol = channels.choose(request, (tunnel.PROTOCOL, *channels.PORTFORWARD_PROTOCOLS))
        # kubectl's tunnel names its ports in each stream; the channel protocol in the query.
        ports = [] if spdy or protocol == tunnel.PROTOCOL else _ports(request.query)
        pod, endpoint = await self.locate(target)
        if not endpoint or pod.status.phase != "Running":
            raise HTTPError(
                400,
                "BadRequest",
                f"unable to forward ports of pod {target.name}: it is not running"
                f" (phase {pod.status.phase or 'Pending'})",
            )
        async with self.kubelet(endpoint) as stub:

            async def open_call(port: int) -> Any:
                call = stub.PortForward(timeout=STREAM_TIMEOUT)
                where = kubelet_pb2.PortForwardStart(
                    namespace=target.namespace, pod=target.name, port=port
                )
                await call.write(kubelet_pb2.PortForwardData(start=where))
                return call

            if spdy:
                return await spdyupgrade.portforward(request, tunnel.Tunnel(open_call))
            if protocol == tunnel.PROTOCOL:
                return await tunnel.Tunnel(open_call).serve(request)
            calls = [await open_call(port) for port in ports]
            try:
                return await channels.PortForward(calls, ports, protocol).serve(request)
            finally:
                for call in calls:
                    call.cancel()


def _ports(query: MultiMapping[str]) -> list[int]:
    ports = [_port(p) for value in query.getall("ports", []) for p in value.split(",")]
    if not ports:
        raise HTTPError(400, "BadRequest", "ports: Required value: at least one port")
    if len(ports) > channels.MAX_PORTS:
        raise HTTPError(
            400, "BadRequest", f"ports: Too many: {len(ports)}: at most {channels.MAX_PORTS}"
        )
    return ports


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise HTTPError(400, "BadRequest", f'ports: invalid value "{text}": must be 1-65535')
    return port


async def _chunks(call: Any) -> AsyncIterator[bytes]:
    while True:
        msg = await call.read()
        if msg is grpc.aio.EOF:
            return
        if msg.data:
            yield msg.data
