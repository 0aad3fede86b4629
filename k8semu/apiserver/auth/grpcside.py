"""The Guard on the gRPC face: credentials from a call's metadata and peer, and what each
API method asks to do (its Attributes).

Metadata: `authorization: Bearer TOKEN`, `impersonate-user`, `impersonate-group` (repeated),
as the HTTP headers of the REST face. The client certificate's subject comes from the
transport (`transport.peer_subject`, when the server serves TLS).

Methods map to Kubernetes' verbs: Get get, List list, Watch watch, Create create, Update
update, UpdateStatus update of `status`, Patch patch (of `status` when the request says),
Delete delete, Bind create of `pods/binding`, GetScale/UpdateScale get/update of `scale`,
Evict create of `pods/eviction`; Discovery is the non-resource `get /apis`.
"""

from __future__ import annotations

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
from k8semu.apiserver.auth.user import ANONYMOUS_USER, UserInfo
from k8semu.apiserver.errors import StatusError
from k8semu.apiserver.objects import meta, unpack

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


def peer_subject(context: Any) -> Any:
    """The verified client certificate's subject of a call, or None (plain connections, or a
    transport that does not offer it yet)."""
    find = getattr(transport, "peer_subject", None)
    return find(context) if find is not None else None


def credentials(context: Any) -> Credentials:
    token, user, groups = "", "", []
    for k, v in context.invocation_metadata() or ():
        if k == "authorization" and isinstance(v, str) and v.startswith("Bearer "):
            token = v[len("Bearer ") :].strip()
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
