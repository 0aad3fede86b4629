"""RESTServer: Kubernetes' REST API on its own port, beside the gRPC one, in the same process.

Both faces call the same verbs (`service.APIServicer`): same registry rows, storage and watch
cache (DESIGN decision 11). aiohttp serves HTTP/1.1 (kubectl and client-go speak HTTP/2 only
over TLS, by ALPN; on a plain connection they speak HTTP/1.1), and a separate port keeps the
gRPC listener untouched (one listener would have to sniff each connection's first bytes).

Every handler is total: a bad path, query, media type or body is a metav1.Status with
Kubernetes' code (400, 404, 405, 406, 413, 415), decided before any verb runs, so nothing is
written; a verb's error is its Status; anything else is a logged 500, never a crash. While
the server drains, requests get 503 and watches end (clients watch again elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from k8semu import transport
from k8semu.apiserver import openapi
from k8semu.apiserver.errors import StatusError
from k8semu.apiserver.metrics import DURATION, LONGRUNNING, REQUESTS
from k8semu.apiserver.rest import codec, discovery, paths
from k8semu.apiserver.rest.handlers import Reply, Resources
from k8semu.apiserver.rest.paths import Target
from k8semu.apiserver.rest.proxy import Proxy
from k8semu.apiserver.rest.status import HTTPError, of_error, of_http, status
from k8semu.apiserver.rest.streams import Streams
from k8semu.apiserver.rest.watch import EventCodec, Stream
from k8semu.apiserver.service import APIServicer
from k8semu.dashboard.server import Dashboard
from k8semu.log import get_logger

log = get_logger(__name__)

# kube-apiserver refuses bodies over 3 MiB (its MaxRequestBodyBytes).
MAX_BODY_BYTES = 3 * 1024 * 1024
_WRITES = ("POST", "PUT", "PATCH", "DELETE")
# stop() comes after the API server's own grace period (requests in flight done, watches
# ended): what is still open by then gets this long, not aiohttp's default minute.
_SHUTDOWN_TIMEOUT = 0.5
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]
_V3_PREFIX = "/openapi/v3/"


def _json(code: int, body: Any, warnings: tuple[str, ...] = ()) -> web.Response:
    headers = {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)} if warnings else None
    data = body if isinstance(body, bytes) else codec.dumps(body)
    return web.Response(status=code, body=data, content_type=codec.JSON, headers=headers)


def _document(request: web.Request, body: bytes, content_type: str, etag: str) -> web.Response:
    """A cached document with its ETag; 304 when the client has this version already."""
    tag = f'"{etag}"'
    if request.headers.get("If-None-Match") == tag:
        return web.Response(status=304, headers={"ETag": tag})
    return web.Response(body=body, headers={"Content-Type": content_type, "ETag": tag})


def _status_response(doc: dict[str, Any]) -> web.Response:
    return _json(int(doc["code"]), doc)


class RESTServer:
    """Serves `verbs` over HTTP at `address` (HOST:PORT; port 0 picks a free one, `port`
    says which after start); `ready()` answers /readyz."""

    def __init__(
        self,
        verbs: APIServicer,
        address: str,
        ready: Callable[[], bool],
        middlewares: Sequence[Any] = (),
        *,
        tls: transport.ServerTLS | None = None,
        kubelet_tls: transport.ClientTLS | None = None,
    ) -> None:
        self.verbs = verbs
        # HTTP/1.1 only (aiohttp serves no HTTP/2): ALPN says so, and kubectl and the Python
        # client speak it. A client certificate is asked for, not required: a client may
        # authenticate with a token instead.
        self.ssl = None if tls is None else transport.server_ssl_context(tls, alpn=["http/1.1"])
        self.resources = Resources(verbs)
        self.streams = Streams(verbs, kubelet_tls=kubelet_tls)
        self.proxy = Proxy(self.streams)
        self.shared = EventCodec()
        host, _, port = transport.parse_url(address, flag="--rest-address").rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.ready = ready
        # `middlewares` (authentication, authorization, audit: apiserver/auth) run inside the
        # error boundary, so what they raise is a Status too.
        self.app = web.Application(
            client_max_size=MAX_BODY_BYTES, middlewares=[self._guard, *middlewares]
        )
        # The fixed routes; everything else (but /openapi/v3/<group-version>) is a resource path.
        self.routes: dict[str, Route] = {
            "/openapi/v2": self._openapi_v2,
            "/openapi/v3": self._openapi_v3_index,
            "/version": self._version,
            "/healthz": self._health,
            "/livez": self._health,
            "/readyz": self._readyz,
            "/api": self._api,
            "/apis": self._apis,
        }
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # The web dashboard, same-origin with this API (docs/dashboard.md).
        self.dashboard = Dashboard(verbs.store.endpoints, MAX_BODY_BYTES, verbs.store.tls)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "http" if self.ssl is None else "https"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl
        )
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise transport.AddressError(
                f"--rest-address: cannot listen on {self.host}:{self.port}: {exc}"
            ) from exc
        if self.port == 0:  # the port the system picked
            self.port = int(self._runner.addresses[0][1])
        log.info("rest api started", url=self.url)

    async def stop(self) -> None:
        await self.dashboard.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- the boundary ---------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Route) -> web.StreamResponse:
        """Every error as a Status; 503 while draining (nothing applied)."""
        if self.verbs.draining and request.path not in ("/livez", "/healthz"):
            return _status_response(
                status(503, "ServiceUnavailable", "the API server is shutting down; try another")
            )
        try:
            return await handler(request)
        except HTTPError as exc:
            return _status_response(of_http(exc))
        except web.HTTPRequestEntityTooLarge:
            return _status_response(
                status(
                    413, "RequestEntityTooLarge", f"the request body is over {MAX_BODY_BYTES} bytes"
                )
            )
        except StatusError as exc:
            target = request.get("target")
            resource = target.kind.resource if isinstance(target, Target) else ""
            name = target.name if isinstance(target, Target) else ""
            return _status_response(of_error(exc, resource, name))
        except (web.HTTPException, ConnectionResetError):
            raise
        except Exception as exc:
            log.exception("rest request failed", method=request.method, path=request.path)
            return _status_response(status(500, "InternalError", f"internal error: {exc!r}"))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.path.strip("/")
        if Dashboard.owns(path):
            return await self.dashboard.handle(request)
        route = self.routes.get(path)
        if route is None and path.startswith(_V3_PREFIX):
            route = self._openapi_v3
        if route is not None:
            if request.method not in ("GET", "HEAD"):
                raise HTTPError(405, "MethodNotAllowed", f"{request.method} {path}: only GET")
            return await route(request)
        parts = path.split("/")
        if len(parts) == 3 and parts[1] == "apis" and request.method == "GET":
            found = discovery.group(self.verbs.registry, parts[2])  # /apis/{group}
            if found is not None:
                return _json(200, found)
        group, version, rest = paths.parse(path)
        if not discovery.served(self.verbs.registry, group, version):
            raise HTTPError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        if not rest:
            if request.method != "GET":
                raise HTTPError(405, "MethodNotAllowed", f"{request.method} {path}: only GET")
            return _json(200, discovery.resource_list(self.verbs.registry, group, version))
        target = paths.target(path)
        request["target"] = target
        if target.subresource in paths.STREAMED:
            return await self.streams.serve(request, target)
        if target.subresource == paths.PROXY:
            return await self.proxy.serve(request, target)
        return await self._resource(request, target)

    # ---- fixed routes ---------------------------------------------------------------------

    async def _version(self, request: web.Request) -> web.StreamResponse:
        return _json(200, discovery.version())

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.StreamResponse:
        if self.ready() and not self.verbs.draining:
            return web.Response(text="ok")
        return web.Response(
            status=503, text="[-]api-server not ready: the system namespaces\nreadyz check failed"
        )

    async def _openapi_v2(self, request: web.Request) -> web.StreamResponse:
        body, content_type, etag = openapi.openapi_v2_for(request.headers.get("Accept", ""))
        return _document(request, body, content_type, etag)

    async def _openapi_v3_index(self, request: web.Request) -> web.StreamResponse:
        return _json(200, openapi.openapi_v3_index())

    async def _openapi_v3(self, request: web.Request) -> web.StreamResponse:
        found = openapi.openapi_v3_path(request.path.strip("/")[len(_V3_PREFIX) - 1 :])
        if found is None:
            raise HTTPError(404, "NotFound", f"no OpenAPI v3 document at {request.path}")
        body, digest = found
        return _document(request, body, "application/json", digest)

    async def _api(self, request: web.Request) -> web.StreamResponse:
        if aggregated := self._aggregated(request, core=True):
            return aggregated
        return _json(200, discovery.api_versions(f"{self.host}:{self.port}"))

    async def _apis(self, request: web.Request) -> web.StreamResponse:
        if aggregated := self._aggregated(request, core=False):
            return aggregated
        return _json(200, discovery.group_list(self.verbs.registry))

    def _aggregated(self, request: web.Request, *, core: bool) -> web.Response | None:
        """Aggregated discovery when the client asks for it (kubectl does): one round trip."""
        media = discovery.aggregated_media_type(request.headers.get("Accept", ""))
        if media is None:
            return None
        doc = discovery.aggregated(self.verbs.registry, media, core)
        return web.Response(body=codec.dumps(doc), headers={"Content-Type": media})

    # ---- resources ------------------------------------------------------------------------

    async def _resource(self, request: web.Request, target: Target) -> web.StreamResponse:
        method, query = request.method, request.query
        watching = target.watch or codec.media_type(query.get("watch", "")) in ("1", "true")
        verb = _verb(method, target, watching)
        if method in ("HEAD", "GET") and watching:
            return await self._watch(request, target)
        began = time.perf_counter()
        code = 500
        try:
            reply = await self._call(request, target, verb)
            code = reply.code
            body = reply.body
            if target.served_as is not None:  # asked for at another version (versions.py)
                body = target.served_as.outgoing_json(body)
            return _json(reply.code, body, reply.warnings)
        except (HTTPError, StatusError) as exc:
            code = exc.code if isinstance(exc, HTTPError) else int(of_error(exc)["code"])
            raise
        finally:
            resource, sub = target.kind.resource, target.subresource
            DURATION.labels(verb, resource, sub).observe(time.perf_counter() - began)
            REQUESTS.labels(verb, resource, sub, str(code)).inc()

    async def _call(self, request: web.Request, target: Target, verb: str) -> Reply:
        query = request.query
        wanted = codec.accepts(request.headers.get("Accept", ""))
        with self.verbs.call():
            if verb == "GET":
                return await self.resources.get(target, query, wanted)
            if verb == "LIST":
                return await self.resources.collection(target, query, wanted)
            raw = await request.read()
            agent = request.headers.get("User-Agent", "")  # the default field manager
            if verb == "PATCH":
                return await self.resources.patch(
                    target, query, raw, request.headers.get("Content-Type", ""), agent
                )
            body = codec.parse_body(raw, request.headers.get("Content-Type", "")) if raw else None
            if target.served_as is not None and verb in ("POST", "PUT"):
                body = target.served_as.incoming(body)
            if verb == "POST":
                return await self.resources.create(target, query, body, agent)
            if verb == "PUT":
                return await self.resources.update(target, query, body, agent)
            if verb == "DELETECOLLECTION":
                return await self.resources.delete_collection(target, query, body)
            return await self.resources.delete(target, query, body)

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        wanted = codec.accepts(request.headers.get("Accept", ""))
        stream = Stream(self.resources, self.shared, target, request.query, wanted)
        response = web.StreamResponse(headers={"Content-Type": codec.JSON})
        response.enable_chunked_encoding()
        gauge = LONGRUNNING.labels("WATCH", target.kind.resource)
        gauge.inc()
        try:
            await response.prepare(request)
            with contextlib.suppress(TimeoutError):
                async with (
                    asyncio.timeout(stream.timeout),
                    contextlib.aclosing(stream.lines()) as lines,
                ):
                    async for line in lines:
                        if target.served_as is not None:
                            line = target.served_as.outgoing_lines(line)
                        await response.write(line)
        finally:
            gauge.dec()
            REQUESTS.labels("WATCH", target.kind.resource, "", "200").inc()
        await response.write_eof()
        return response


def _verb(method: str, target: Target, watching: bool) -> str:
    """Kubernetes' request verb (the metrics label, and which handler serves it)."""
    collection = not target.name
    if method in ("GET", "HEAD"):
        if watching:
            return "WATCH"
        return "LIST" if collection else "GET"
    if method == "DELETE" and collection:
        return "DELETECOLLECTION"
    if method in _WRITES:
        return method
    raise HTTPError(405, "MethodNotAllowed", f"method {method} is not allowed")
