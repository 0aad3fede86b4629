"""The Guard on the REST face: an aiohttp middleware, inside the server's error boundary
(so Unauthorized and Forbidden become kube-apiserver's 401 and 403 Status).

Credentials: `Authorization: Bearer TOKEN`, `Impersonate-User`, `Impersonate-Group`, the
client certificate (`transport.peer_subject` of the request). A resource path's verb is
kube-apiserver's: GET get/list/watch, POST create, PUT update, PATCH patch, DELETE
delete/deletecollection; any other path (discovery, /version, /healthz, /openapi) is a
non-resource request with the lower-cased HTTP method as its verb.

Two POSTs are answered here, having no stored kind: SelfSubjectAccessReview (what may I
do? `kubectl auth can-i`) and the TokenRequest subresource serviceaccounts/NAME/token.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from k8semu.apiserver.auth import grpcside
from k8semu.apiserver.auth.attributes import Attributes
from k8semu.apiserver.auth.audit import Record
from k8semu.apiserver.auth.authn import Credentials
from k8semu.apiserver.auth.guard import Guard
from k8semu.apiserver.auth.reviews import (
    PROTOBUF,
    from_protobuf,
    self_review,
    token_request,
)
from k8semu.apiserver.auth.user import ANONYMOUS_USER, UserInfo
from k8semu.apiserver.errors import StatusError
from k8semu.apiserver.rest import codec, paths
from k8semu.apiserver.rest.status import HTTPError, of_error
from k8semu.dashboard.server import STORE_PATH, Dashboard

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def credentials(request: web.Request) -> Credentials:
    return Credentials(
        grpcside.bearer(request.headers.get("Authorization", "")),
        grpcside.peer_subject(request),
        request.headers.get("Impersonate-User", ""),
        tuple(request.headers.getall("Impersonate-Group", [])),
    )


def _token_target(parts: list[str]) -> tuple[str, str] | None:
    """(namespace, serviceaccount) of .../namespaces/NS/serviceaccounts/NAME/token."""
    if (
        len(parts) == 7
        and parts[:3] == ["api", "v1", "namespaces"]
        and parts[4:7:2]
        == [
            "serviceaccounts",
            "token",
        ]
    ):
        return parts[3], parts[5]
    return None


def attributes(user: UserInfo, request: web.Request) -> Attributes:
    """What an HTTP request asks to do."""
    path = "/" + request.path.strip("/")
    method = request.method
    parts = [p for p in path.split("/") if p]
    if (found := _token_target(parts)) is not None:
        return Attributes(user, "create", "serviceaccounts", "", "token", found[0], found[1])
    if path == SSAR_PATH:
        return Attributes(user, "create", "selfsubjectaccessreviews", "authorization.k8s.io")
    try:
        target = paths.target(path)
    except HTTPError:
        return Attributes(user, method.lower(), path=path, resource_request=False)
    request["target"] = target
    kind = target.kind
    watching = target.watch or codec.media_type(request.query.get("watch", "")) in ("1", "true")
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "")
    if method in ("GET", "HEAD"):
        verb = "watch" if watching else "get" if target.name else "list"
    elif method == "DELETE":
        verb = "delete" if target.name else "deletecollection"
    if target.subresource in ("exec", "attach", "portforward"):
        # A WebSocket upgrade is a GET, but it opens a shell: Kubernetes (since 1.31) asks
        # for create on pods/exec, pods/attach and pods/portforward, whatever the method.
        verb = "create"
    namespace = target.namespace
    return Attributes(
        user, verb or method.lower(), kind.plural, kind.group, target.subresource, namespace,
        target.name,
    )  # fmt: skip


async def _named(attrs: Attributes, request: web.Request) -> Attributes:
    """A create of a kind the Node authorizer judges by name, named from its body (aiohttp
    keeps the body read, for the handler)."""
    if attrs.verb != "create" or attrs.resource not in grpcside.NAMED_CREATES or attrs.subresource:
        return attrs
    doc = _json_or_none(await request.read())
    name = doc.get("metadata", {}).get("name", "") if isinstance(doc, dict) else ""
    return dataclasses.replace(attrs, name=str(name)) if isinstance(name, str) else attrs


def _public_asset(request: web.Request) -> bool:
    """The dashboard's page, scripts and styles: the same files for everyone, holding no
    cluster data, so a browser loads them without credentials and then asks the API (and
    the store status at STORE_PATH) with the token the user enters, or its client
    certificate, each request authorized as any other."""
    path = "/" + request.path.strip("/")
    return request.method in ("GET", "HEAD") and Dashboard.owns(path) and path != STORE_PATH


def middleware(guard: Guard) -> Any:
    """The middleware of `guard` (put it inside the server's error boundary)."""

    @web.middleware
    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _public_asset(request):
            return await handler(request)
        record = Record(
            Attributes(ANONYMOUS_USER, request.method.lower(), path=request.path,
                       resource_request=False),
            request.path_qs,
            request.remote or "",
            request.headers.get("User-Agent", ""),
        )  # fmt: skip
        outcome: Exception | web.StreamResponse | None = None
        try:
            user = await guard.authenticate(credentials(request))
            record.attrs = await _named(attributes(user, request), request)
            await guard.authorize(record.attrs)
            outcome = await _answer(guard, record, request, handler)
            return outcome
        except Exception as exc:
            outcome = exc
            raise
        finally:
            _audit(guard, record, outcome)

    return guarded


async def _answer(
    guard: Guard, record: Record, request: web.Request, handler: Handler
) -> web.StreamResponse:
    attrs = record.attrs
    audit = guard.audit
    if (
        audit is not None
        and request.can_read_body
        and request.method != "GET"
        and (audit.level(attrs) in ("Request", "RequestResponse"))
    ):
        record.request_object = _json_or_none(await request.read())
    if attrs.resource == "selfsubjectaccessreviews" and request.method == "POST":
        body = await _body(request, "SelfSubjectAccessReview")
        return web.json_response(await self_review(guard, attrs.user, body), status=201)
    if attrs.subresource == "token" and attrs.resource == "serviceaccounts":
        if request.method != "POST":
            raise HTTPError(405, "MethodNotAllowed", "serviceaccounts/token: only POST")
        body = await _body(request, "TokenRequest")
        answer = await token_request(guard, attrs.namespace, attrs.name, body, attrs.user)
        return web.json_response(answer, status=201)
    return await handler(request)


async def _body(request: web.Request, kind: str) -> Any:
    """A POSTed review or token request: JSON, YAML or (kubectl's) Kubernetes protobuf."""
    raw, content_type = await request.read(), request.headers.get("Content-Type", "")
    if not raw:
        return {}
    if codec.media_type(content_type) == PROTOBUF:
        return from_protobuf(raw, kind)
    return codec.parse_body(raw, content_type)


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _audit(guard: Guard, record: Record, outcome: Exception | web.StreamResponse | None) -> None:
    if guard.audit is None:
        return
    if isinstance(outcome, HTTPError):
        record.code = outcome.code
    elif isinstance(outcome, StatusError):
        record.code = int(of_error(outcome)["code"])
    elif isinstance(outcome, Exception):
        record.code = 500
    elif outcome is not None:
        record.code = outcome.status
        if isinstance(outcome, web.Response) and guard.audit.level(record.attrs) == (
            "RequestResponse"
        ):
            record.response_object = _json_or_none(
                outcome.body if isinstance(outcome.body, bytes) else b""
            )
    guard.audit.write(record)
