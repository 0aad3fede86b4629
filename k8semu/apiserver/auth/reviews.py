"""The two requests answered by authorization itself, not by a stored kind:
SelfSubjectAccessReview ("may I?", what `kubectl auth can-i` POSTs) and TokenRequest
(serviceaccounts/NAME/token: a signed token for an existing ServiceAccount)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from k8semu.api.timestamps import format_time, time_at
from k8semu.apiserver.auth.attributes import Attributes
from k8semu.apiserver.auth.guard import Guard
from k8semu.apiserver.auth.tokens import TokenClaims, check_expiration
from k8semu.apiserver.auth.user import UserInfo
from k8semu.apiserver.errors import BadRequest, Forbidden, Invalid, NotFound
from k8semu.pb.api.v1 import authentication_pb2, authorization_pb2

PROTOBUF = "application/vnd.kubernetes.protobuf"
_MAGIC = b"k8s\x00"


def from_protobuf(raw: bytes, kind: str) -> dict[str, Any]:
    """The JSON form (its spec) of a SelfSubjectAccessReview or TokenRequest sent as
    Kubernetes' protobuf (what kubectl's typed client sends)."""
    if not raw.startswith(_MAGIC):
        raise BadRequest("the body is not Kubernetes protobuf (no k8s\\0 prefix)")
    message: Any = (
        authentication_pb2.KubeTokenRequest
        if kind == "TokenRequest"
        else authorization_pb2.KubeSelfSubjectAccessReview
    )
    try:
        envelope = authorization_pb2.KubeProtobufEnvelope.FromString(raw[len(_MAGIC) :])
        obj = message.FromString(envelope.raw)
    except DecodeError as exc:
        raise BadRequest(f"cannot decode the {kind}: {exc}") from None
    return {"spec": json_format.MessageToDict(obj.spec)}


def review_attributes(user: UserInfo, spec: Any) -> Attributes:
    """The Attributes a SelfSubjectAccessReview's spec asks about."""
    if not isinstance(spec, dict):
        raise BadRequest("spec: Required value")
    res, nonres = spec.get("resourceAttributes") or {}, spec.get("nonResourceAttributes") or {}
    if bool(res) == bool(nonres):
        raise Invalid(
            "spec.resourceAttributes: Invalid value: exactly one of nonResourceAttributes or"
            " resourceAttributes must be specified"
        )
    if nonres:
        return Attributes(
            user, str(nonres.get("verb", "")), path=str(nonres.get("path", "")),
            resource_request=False,
        )  # fmt: skip

    def get(field: str) -> str:
        return str(res.get(field, "") or "")

    return Attributes(
        user, get("verb"), get("resource"), get("group"), get("subresource"), get("namespace"),
        get("name"),
    )  # fmt: skip


async def self_review(guard: Guard, user: UserInfo, body: Any) -> dict[str, Any]:
    spec = body.get("spec") if isinstance(body, dict) else None
    attrs = review_attributes(user, spec)
    allowed, reason = await guard.decide(attrs)
    status: dict[str, Any] = {"allowed": allowed}
    if reason:
        status["reason"] = reason
    return {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": spec,
        "status": status,
    }


async def token_request(
    guard: Guard, namespace: str, name: str, body: Any, user: UserInfo | None = None
) -> dict[str, Any]:
    """A token for ServiceAccount NAME in NAMESPACE (NotFound when it does not exist). A
    kubelet (`user` a node) gets only tokens bound to pods bound to its node, as
    Kubernetes' NodeRestriction admission allows."""
    if guard.issuer is None:
        raise NotFound(
            "the server could not find the requested resource (serviceaccounts/token): the API"
            " server has no --service-account-signing-key-file"
        )
    spec = (body or {}).get("spec") or {}
    if not isinstance(spec, dict):
        raise BadRequest("spec: must be an object")
    uid = await guard.uid("serviceaccounts", namespace, name)
    if uid is None:
        raise NotFound(f'serviceaccounts "{name}" not found')
    seconds = spec.get("expirationSeconds")
    try:  # protobuf's JSON gives int64 as a string
        expiration = check_expiration(None if seconds is None else int(seconds))
    except (TypeError, ValueError):
        raise Invalid(f"spec.expirationSeconds: Invalid value: {seconds!r}: not a number") from None
    ref = spec.get("boundObjectRef") or {}
    pod_name, pod_uid = "", ""
    if ref:
        if ref.get("kind") != "Pod":
            raise Invalid(
                f'spec.boundObjectRef.kind: Unsupported value: "{ref.get("kind")}": supported'
                ' values: "Pod"'
            )
        pod_name = str(ref.get("name", ""))
        found = await guard.uid("pods", namespace, pod_name)
        if found is None or (ref.get("uid") and ref.get("uid") != found):
            raise NotFound(f'pods "{pod_name}" not found')
        pod_uid = found
    node = user.node_name if user is not None else ""
    if node and (not pod_name or _node_of(guard, namespace, pod_name) != node):
        raise Forbidden(
            f'serviceaccounts "{name}" is forbidden: node "{node}" may only request tokens'
            " bound to pods scheduled to it"
        )
    audiences = tuple(str(a) for a in spec.get("audiences") or ())
    token, expires = guard.issuer.sign(
        TokenClaims(namespace, name, uid, pod_name, pod_uid),
        audiences=audiences,
        expiration=expiration,
    )
    spec_out = {**spec, "audiences": list(audiences or guard.issuer.audiences),
                "expirationSeconds": expiration}  # fmt: skip
    return {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
        "spec": spec_out,
        "status": {"token": token, "expirationTimestamp": format_time(time_at(expires))},
    }


def _node_of(guard: Guard, namespace: str, pod: str) -> str:
    found = guard.pod(namespace, pod)
    return found.spec.node_name if found is not None else ""
