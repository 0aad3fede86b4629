"""The `proxy` subresources: HTTP to a pod's or a Service's port through the API server.

    /api/v1/namespaces/{ns}/pods/[{scheme}:]{name}[:{port}]/proxy[/{path}]
    /api/v1/namespaces/{ns}/services/[{scheme}:]{name}[:{port}]/proxy[/{path}]

as Kubernetes serves them (what `kubectl proxy` users and the "Learn Kubernetes Basics"
tutorial curl): any method, the path after `proxy` and the query passed on, the answer
streamed back. A pod's port is a number or a container port's name (80 when none is given); a
Service's is a port's number or name (its only port when none is given), reaching the target
port of one ready endpoint, picked at random. Authorized as `get`/`create`/`update`/`patch`/
`delete` on `pods/proxy` or `services/proxy` (restside.attributes does that from the path).

The connection goes through the pod's kubelet (its `PortForward` call, the way
`kubectl port-forward` goes): the API server needs no route to pod IPs, and a kubelet on
another host is reached as for exec. One request per connection (`Connection: close`); h11
parses the pod's answer. A pod or port that does not answer is a 503 as on Kubernetes
("error trying to reach service"). Not served: `https:` targets, connection upgrades
(WebSocket) and `nodes/{name}/proxy` (the kubelets speak gRPC only).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import urllib.parse
from typing import Any

import grpc
import h11
from aiohttp import web

from k8semu.api import kinds
from k8semu.apiserver.rest.paths import Target
from k8semu.apiserver.rest.status import HTTPError
from k8semu.apiserver.rest.streams import Streams, counted
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.kubelet.v1 import kubelet_pb2

log = get_logger(__name__)

PROXY_TIMEOUT = 60.0  # seconds a proxied request may take, start to end
# Hop-by-hop headers (RFC 9110 7.6.1) and what the API server itself consumes: never passed on.
_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
     "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length", "authorization")
)  # fmt: skip
_HOP_ANSWER = _HOP - {"content-length"}  # the pod's length is the client's length
_SCHEMES = ("", "http", "https")


@dataclasses.dataclass(frozen=True, slots=True)
class Where:
    """The pod (its namespace and name), its IP and the port a request goes to."""

    pod: str
    ip: str
    port: int


def split_name(name: str) -> tuple[str, str, str]:
    """(scheme, name, port) of a proxy name: `name`, `name:port` or `scheme:name:port`;
    HTTPError 400 for anything else."""
    parts = name.split(":")
    if len(parts) == 1:
        return "", parts[0], ""
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3 and parts[0] in _SCHEMES:
        return parts[0], parts[1], parts[2]
    raise HTTPError(400, "BadRequest", f'invalid proxy name "{name}": want [scheme:]name[:port]')


def tail_of(raw_path: str, target: Target) -> str | None:
    """The path after `.../{name}/proxy` in the raw (still escaped) request path, "" when it
    ends at `proxy`, None when it is not there."""
    segments = raw_path.split("?", 1)[0].split("/")
    for i in range(2, len(segments)):
        if (
            segments[i] == "proxy"
            and segments[i - 2] == target.kind.plural
            and urllib.parse.unquote(segments[i - 1]) == target.name
        ):
            rest = segments[i + 1 :]
            return "/" + "/".join(rest) if rest else ""
    return None


def _unavailable(message: str) -> HTTPError:
    return HTTPError(503, "ServiceUnavailable", message)


def _pod_port(pod: core_pb2.Pod, port: str) -> int:
    """A pod's port by number or by a container port's name; 80 when none is given."""
    if not port:
        return 80
    if port.isdigit() and 0 < int(port) < 65536:
        return int(port)
    for container in pod.spec.containers:
        for p in container.ports:
            if p.name == port:
                return int(p.container_port)
    raise HTTPError(
        400, "BadRequest", f'pod "{pod.metadata.name}" has no container port named "{port}"'
    )


def _service_port_name(service: core_pb2.Service, port: str) -> str:
    """The name of the Service port `port` (a number or a name; "" for its only port)."""
    ports = list(service.spec.ports)
    name = service.metadata.name
    for p in ports:
        if (port.isdigit() and int(port) == p.port) or (port and p.name == port):
            return str(p.name)
    if not port and len(ports) == 1:
        return str(ports[0].name)
    what = f'no port "{port}"' if port else "more than one port: name one"
    raise HTTPError(503, "ServiceUnavailable", f'service "{name}" has {what}')


class Proxy:
    """Serves the proxy subresources over `streams`' way to the kubelets."""

    def __init__(self, streams: Streams) -> None:
        self.streams = streams
        self.verbs = streams.verbs

    async def serve(self, request: web.Request, target: Target) -> web.StreamResponse:
        resource = target.kind.plural
        return await counted("CONNECT", resource, "proxy", self._serve(request, target))

    async def _serve(self, request: web.Request, target: Target) -> web.StreamResponse:
        scheme, name, port = split_name(target.name)
        if scheme == "https":
            raise HTTPError(400, "BadRequest", "https: proxied targets are served over http only")
        tail = tail_of(request.raw_path, target)
        if tail is None:
            raise HTTPError(404, "NotFound", f"no proxy path in {request.path}")
        if not tail:
            if request.method in ("GET", "HEAD"):
                # As Kubernetes: `.../proxy` is redirected to `.../proxy/`.
                query = f"?{request.query_string}" if request.query_string else ""
                raise web.HTTPMovedPermanently(request.path + "/" + query)
            tail = "/"
        if request.headers.get("Upgrade"):
            raise HTTPError(400, "BadRequest", "connection upgrades are not proxied here")
        if target.kind.plural == "services":
            where = await self._endpoint(target.namespace, name, port)
        else:
            where = await self._pod(target.namespace, name, port)
        return await self._forward(request, target.namespace, where, tail)

    async def _get(self, resource: str, namespace: str, name: str, message: Any) -> Any:
        with self.verbs.call():
            got = await self.verbs.Get(
                api.GetRequest(resource=resource, namespace=namespace, name=name)
            )
        got.object.Unpack(message)
        return message

    async def _pod(self, namespace: str, name: str, port: str) -> Where:
        pod = await self._get("pods", namespace, name, core_pb2.Pod())
        if pod.status.phase != "Running" or not pod.status.pod_ip:
            phase = pod.status.phase or "Pending"
            raise _unavailable(f'pod "{name}" is not running (phase {phase}): no address to reach')
        return Where(name, pod.status.pod_ip, _pod_port(pod, port))

    async def _endpoint(self, namespace: str, name: str, port: str) -> Where:
        service = await self._get("services", namespace, name, core_pb2.Service())
        port_name = _service_port_name(service, port)
        try:
            endpoints = await self._get("endpoints", namespace, name, core_pb2.Endpoints())
        except Exception:
            endpoints = core_pb2.Endpoints()
        choices = [
            Where(address.target_ref.name, address.ip, p.port)
            for subset in endpoints.subsets
            for p in subset.ports
            if p.name == port_name
            for address in subset.addresses
            if address.target_ref.kind == "Pod" and address.target_ref.name
        ]
        if not choices:
            raise _unavailable(f'no endpoints available for service "{name}"')
        return random.choice(choices)

    async def _forward(
        self, request: web.Request, namespace: str, where: Where, tail: str
    ) -> web.StreamResponse:
        pod_target = Target(kinds.for_resource("pods"), namespace, where.pod, "", False)
        _, endpoint = await self.streams.locate(pod_target)
        if not endpoint:
            raise _unavailable(f'pod "{where.pod}" has no node yet')
        target = tail + (f"?{request.query_string}" if request.query_string else "")
        body = await request.read()
        head = _request_head(request, target, f"{where.ip}:{where.port}", len(body))
        client = h11.Connection(h11.CLIENT)
        data = client.send(head) + client.send(h11.Data(data=body)) if body else client.send(head)
        data += client.send(h11.EndOfMessage())
        async with self.streams.kubelet(endpoint) as stub:
            call = stub.PortForward(timeout=PROXY_TIMEOUT)
            try:
                start = kubelet_pb2.PortForwardStart(
                    namespace=namespace, pod=where.pod, port=where.port
                )
                # A kubelet that cannot be reached fails the call: its error comes with the
                # first read, as a 503 like any other way the pod cannot be reached.
                with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    await call.write(kubelet_pb2.PortForwardData(start=start, data=data))
                return await _relay(request, call, client, where)
            finally:
                call.cancel()


def _request_head(request: web.Request, target: str, host: str, length: int) -> h11.Request:
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP and v.isascii()]
    headers += [("Host", host), ("Connection", "close")]
    if length or request.method in ("POST", "PUT", "PATCH"):
        headers.append(("Content-Length", str(length)))
    peer = request.remote or ""
    if peer:
        headers.append(("X-Forwarded-For", peer))
    return h11.Request(method=request.method, target=target.encode(), headers=headers)


async def _next_event(call: Any, client: h11.Connection, where: Where) -> Any:
    """The pod's next HTTP event; a 503 HTTPError when it cannot be reached or breaks off
    before its answer began."""
    while True:
        try:
            event = client.next_event()
        except h11.RemoteProtocolError as exc:
            raise _unavailable(f"error trying to reach service: bad answer: {exc}") from None
        if event is not h11.NEED_DATA:
            return event
        try:
            msg = await call.read()
        except grpc.aio.AioRpcError as exc:
            why = exc.details() or str(exc.code())
            raise _unavailable(f"error trying to reach service: {why}") from None
        if msg is grpc.aio.EOF:
            client.receive_data(b"")
        elif msg.data:
            client.receive_data(msg.data)


async def _relay(
    request: web.Request, call: Any, client: h11.Connection, where: Where
) -> web.StreamResponse:
    """Stream the pod's answer to the client."""
    event = await _next_event(call, client, where)
    while isinstance(event, h11.InformationalResponse):
        event = await _next_event(call, client, where)
    if not isinstance(event, h11.Response):
        raise _unavailable(f"error trying to reach service: {where.ip}:{where.port} closed")
    response = web.StreamResponse(status=event.status_code, reason=event.reason.decode() or None)
    for key, value in event.headers:
        name = key.decode("latin-1")
        if name.lower() not in _HOP_ANSWER:
            response.headers.add(name, value.decode("latin-1"))
    await response.prepare(request)
    try:
        while True:
            event = await _next_event(call, client, where)
            if isinstance(event, h11.Data):
                await response.write(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
    except HTTPError as exc:
        # The status is sent: the answer just ends short.
        log.info("proxied answer broke off", pod=where.pod, error=str(exc))
    await response.write_eof()
    return response
