"""The Guard on the gRPC face: credentials from a call's metadata and peer, and what each
API method asks to do (its Attributes).

Metadata: `authorization: Bearer TOKEN`, `impersonate-user`, `impersonate-group` (repeated),
as the HTTP headers of the REST face. The client certificate's subject comes from the
transport (`transport.peer_subject`, when the server serves TLS).

Methods map to Kubernetes' verbs: Get get, List list, Watch watch, Create create, Update
update, UpdateStatus update of `status`, Patch patch (of `status` when the request says),
Delete delete, Bind create of `pods/binding`, GetScale/UpdateScale get/update of `scale`,
Evict create of `pods/eviction`; Discovery is the non-resource `get /apis`. Review
(SelfSubjectAccessReview) and CreateToken (serviceaccounts/token) are answered here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from k8semu import transport
from k8semu.api import kinds
from k8semu.api.errors import UnknownKindError
from k8semu.apiserver.auth.attributes import Attributes
from k8semu.apiserver.auth.audit import Record
from k8semu.apiserver.auth.authn import Credentials
from k8semu.apiserver.auth.guard import Guard
from k8semu.apiserver.auth.reviews import self_review, token_request
from k8semu.apiserver.auth.user import ANONYMOUS_USER, UserInfo
from k8semu.apiserver.errors import NotFound, StatusError
from k8semu.apiserver.objects import meta, unpack
from k8semu.pb.api.v1 import authentication_pb2, authorization_pb2

_VERBS = {
    "Get": ("get", ""),
    "List": ("list", ""),
    "Watch": ("watch", ""),
    "Create": ("create", ""),
    "Update": ("update", ""),
    "UpdateStatus": ("update", "status"),
    "Patch": ("patch", ""),
    "Delete": ("delete", ""),
    "Bind": ("create", "binding"),
    "GetScale": ("get", "scale"),
    "UpdateScale": ("update", "scale"),
    "Evict": ("create", "eviction"),
}


def peer_subject(context: Any) -> transport.PeerSubject | None:
    """The verified client certificate's subject of a call, or None (plain connections)."""
    return transport.peer_subject(context)


def bearer(header: str) -> str:
    """The token of an `Authorization: Bearer TOKEN` value; the scheme's case does not
    matter (RFC 7235: the Python kubernetes client sends "bearer"); "" for another scheme."""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def credentials(context: Any) -> Credentials:
    token, user, groups = "", "", []
    for k, v in context.invocation_metadata() or ():
        if k == "authorization" and isinstance(v, str):
            token = bearer(v)
        elif k == "impersonate-user":
            user = str(v)
        elif k == "impersonate-group":
            groups.append(str(v))
    return Credentials(token, peer_subject(context), user, tuple(groups))


def attributes(user: UserInfo, method: str, request: Any) -> Attributes:
    """What `request` to API method `method` asks to do."""
    if method not in _VERBS:
        return Attributes(user, "get", path="/apis", resource_request=False)
    verb, sub = _VERBS[method]
    resource = "pods" if method in ("Bind", "Evict") else request.resource
    try:
        kind: kinds.Kind | None = kinds.for_resource(resource)
    except UnknownKindError:
        kind = None
    if method == "Patch" and request.status:
        sub = "status"
    namespace = getattr(request, "namespace", "")
    name = getattr(request, "name", "")
    if kind is not None and method in ("Create", "Update", "UpdateStatus"):
        obj = _object(kind, request.object)
        if obj is not None:
            m = meta(obj)
            namespace = namespace or m.namespace
            name = m.name if method != "Create" else m.name if kind.plural in NAMED_CREATES else ""
    if kind is None:
        return Attributes(user, verb, resource, "", sub, namespace, name)
    if kind.namespaced and method not in ("List", "Watch"):
        namespace = namespace or "default"
    if not kind.namespaced:
        namespace = ""
    return Attributes(user, verb, kind.plural, kind.group, sub, namespace, name)


# Kinds whose create the Node authorizer judges by the name (a kubelet creates only its own
# Node and Lease, and the lease namespace).
NAMED_CREATES = ("nodes", "leases", "namespaces")


def _object(kind: kinds.Kind, packed: Any) -> Any:
    try:
        return unpack(kind, packed)
    except Exception:
        return None


async def admit(guard: Guard, method: str, request: Any, context: Any) -> Record:
    """Authenticate and authorize a call (Unauthorized/Forbidden otherwise); the audit
    record to finish with `done`."""
    path = f"/k8semu.api.v1.API/{method}"
    peer = str(context.peer() or "")
    record = Record(Attributes(ANONYMOUS_USER, "", path=path, resource_request=False), path, peer)
    try:
        user = await guard.authenticate(credentials(context))
        record.attrs = attributes(user, method, request)
        await guard.authorize(record.attrs)
    except StatusError as exc:
        done(guard, record, exc)
        raise
    if guard.audit is not None and guard.audit.level(record.attrs) in (
        "Request",
        "RequestResponse",
    ):
        record.request_object = json_format.MessageToDict(request)
    return record


def done(guard: Guard, record: Record, outcome: Exception | Message | None) -> None:
    """Write the call's audit line (when there is an audit log)."""
    if guard.audit is None:
        return
    if isinstance(outcome, StatusError):
        record.code = _HTTP.get(outcome.code, 500)
    elif isinstance(outcome, Exception):
        record.code = 500
    elif outcome is not None and guard.audit.level(record.attrs) == "RequestResponse":
        record.response_object = json_format.MessageToDict(outcome)
    guard.audit.write(record)


_HTTP = {
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.FAILED_PRECONDITION: 403,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}


GrpcHandler = Callable[[Any, Any], Awaitable[Message]]


def own_methods(guard: Guard | None) -> dict[str, GrpcHandler]:
    """The API methods answered here rather than by a verb: Review (SelfSubjectAccessReview)
    and CreateToken (serviceaccounts/token)."""

    async def review(request: Any, context: Any) -> Message:
        return await _answering(context, _review(guard, request, context))

    async def create_token(request: Any, context: Any) -> Message:
        return await _answering(context, _create_token(guard, request, context))

    return {"Review": review, "CreateToken": create_token}


async def _answering(context: Any, answer: Awaitable[Message]) -> Message:
    try:
        return await answer
    except StatusError as exc:
        await transport.abort(context, exc.code, exc.message)
    raise AssertionError("unreachable")  # pragma: no cover - abort raises


async def _review(guard: Guard | None, request: Any, context: Any) -> Message:
    out = authorization_pb2.SelfSubjectAccessReview()
    out.CopyFrom(request)
    out.api_version, out.kind = "authorization.k8s.io/v1", "SelfSubjectAccessReview"
    if guard is None:
        out.status.allowed = True
        out.status.reason = "the API server authorizes every request (no --authorization-mode)"
        return out
    user = await guard.authenticate(credentials(context))
    ask = Attributes(user, "create", "selfsubjectaccessreviews", "authorization.k8s.io")
    await guard.authorize(ask)
    answer = await self_review(guard, user, {"spec": json_format.MessageToDict(request.spec)})
    out.status.allowed = bool(answer["status"]["allowed"])
    out.status.reason = str(answer["status"].get("reason", ""))
    return out


async def _create_token(guard: Guard | None, request: Any, context: Any) -> Message:
    if guard is None:
        raise NotFound(
            "serviceaccounts/token: the API server has no --service-account-signing-key-file"
        )
    user = await guard.authenticate(credentials(context))
    ns, name = request.namespace or "default", request.name
    await guard.authorize(Attributes(user, "create", "serviceaccounts", "", "token", ns, name))
    body = json_format.MessageToDict(request.request)
    answer = await token_request(guard, ns, name, body, user)
    out = authentication_pb2.TokenRequest()
    json_format.ParseDict(answer, out, ignore_unknown_fields=True)
    return out
