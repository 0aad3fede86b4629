"""The API server's request metrics, as kube-apiserver names them
(staging/src/k8s.io/apiserver/pkg/endpoints/metrics): apiserver_request_total{verb,
resource,subresource,code}, apiserver_request_duration_seconds{verb,resource,subresource}
and apiserver_longrunning_requests{verb,resource} for watches in flight.

A gRPC interceptor (added in server.py), so the verbs know nothing of it. It sits inside
transport's malformed-request boundary: it sees decoded requests, which name the resource.
Our API speaks gRPC; `code` is the HTTP status Kubernetes would have answered (the table
below), so queries written for kube-apiserver work (code=~"5..").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

from k8semu import transport

REQUESTS = Counter(
    "apiserver_request",
    "Counter of apiserver requests broken out for each verb, resource, subresource and "
    "HTTP response code.",
    ["verb", "resource", "subresource", "code"],
)
# kube-apiserver's buckets for apiserver_request_duration_seconds.
_BUCKETS = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15,
    20, 30, 45, 60,
)  # fmt: skip
DURATION = Histogram(
    "apiserver_request_duration_seconds",
    "Response latency distribution in seconds for each verb, resource and subresource.",
    ["verb", "resource", "subresource"],
    buckets=_BUCKETS,
)
LONGRUNNING = Gauge(
    "apiserver_longrunning_requests",
    "Gauge of all active long-running apiserver requests (watches).",
    ["verb", "resource"],
)

# gRPC method -> (Kubernetes verb, subresource).
_VERBS: dict[str, tuple[str, str]] = {
    "Create": ("POST", ""),
    "Get": ("GET", ""),
    "List": ("LIST", ""),
    "Watch": ("WATCH", ""),
    "Update": ("PUT", ""),
    "UpdateStatus": ("PUT", "status"),
    "Delete": ("DELETE", ""),
    "Patch": ("PATCH", ""),
    "Bind": ("POST", "binding"),
    "GetScale": ("GET", "scale"),
    "UpdateScale": ("PUT", "scale"),
}
# The status code the API server's gRPC code stands for (apiserver/errors.py maps the other
# way); anything unlisted is a 500.
_HTTP: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "200",
    grpc.StatusCode.INVALID_ARGUMENT: "422",
    grpc.StatusCode.NOT_FOUND: "404",
    grpc.StatusCode.ALREADY_EXISTS: "409",
    grpc.StatusCode.ABORTED: "409",
    grpc.StatusCode.FAILED_PRECONDITION: "400",
    grpc.StatusCode.PERMISSION_DENIED: "403",
    grpc.StatusCode.UNAUTHENTICATED: "401",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "429",
    grpc.StatusCode.OUT_OF_RANGE: "410",
    grpc.StatusCode.UNAVAILABLE: "503",
    grpc.StatusCode.DEADLINE_EXCEEDED: "504",
    grpc.StatusCode.CANCELLED: "499",
}


def _code(context: Any, failed: bool) -> str:
    code = context.code()
    if code is None:
        return "500" if failed else "200"
    return _HTTP.get(code, "500")


class RequestMetrics(transport.HandlerInterceptor):
    """Counts and times the API service's calls; other services pass through untouched."""

    def __init__(self, service: str) -> None:
        self._prefix = f"/{service}/"

    def wrap(self, handler: Any, method: str) -> Any:
        if not method.startswith(self._prefix):
            return handler
        verb_sub = _VERBS.get(method[len(self._prefix) :])
        if verb_sub is None:
            return handler
        verb, subresource = verb_sub
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _timed(handler.unary_unary, verb, subresource),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _watched(handler.unary_stream, verb),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _resource(request: Any) -> str:
    # BindRequest names no resource: it is always the pods/binding subresource.
    return getattr(request, "resource", "") or "pods"


def _subresource(request: Any, subresource: str) -> str:
    # A status patch is the status subresource, as PUT .../status is.
    return "status" if not subresource and getattr(request, "status", False) else subresource


def _timed(call: Callable[[Any, Any], Awaitable[Any]], verb: str, subresource: str) -> Any:
    async def unary(request: Any, context: Any) -> Any:
        began = time.perf_counter()
        failed = True
        try:
            response = await call(request, context)
            failed = False
            return response
        finally:
            resource = _resource(request)
            sub = _subresource(request, subresource)
            DURATION.labels(verb, resource, sub).observe(time.perf_counter() - began)
            code = _code(context, failed)
            if code == "200" and verb == "POST" and not sub:
                code = "201"  # Created
            REQUESTS.labels(verb, resource, sub, code).inc()

    return unary


def _watched(call: Callable[[Any, Any], AsyncIterator[Any]], verb: str) -> Any:
    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        resource = request.resource
        in_flight = LONGRUNNING.labels(verb, resource)
        in_flight.inc()
        failed = True
        try:
            async for item in call(request, context):
                yield item
            failed = False
        except (asyncio.CancelledError, GeneratorExit):
            failed = False  # the watcher went away: how watches normally end
            raise
        finally:
            in_flight.dec()
            REQUESTS.labels(verb, resource, "", _code(context, failed)).inc()

    return stream
