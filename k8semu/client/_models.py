"""What the client hands back besides API objects: lists, watch events, preconditions, and
the Any packing of objects through the kinds registry. Pure: no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from k8semu.api import kinds
from k8semu.api.errors import UnknownKindError
from k8semu.api.kinds import Kind
from k8semu.client._errors import UnexpectedObject, UnknownKind
from k8semu.pb.api.v1 import meta_pb2

M = TypeVar("M", bound=Message)

KindRef = str | type[Message]
"""A kind as callers name it: a message class (`core_pb2.Pod`) or what a user types ("po")."""


class EventType(enum.StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"


@dataclass(frozen=True, slots=True)
class WatchEvent(Generic[M]):
    """One change. DELETED carries the last state; BOOKMARK an empty object of the kind whose
    only field is metadata.resourceVersion (nothing below it is still to come)."""

    type: EventType
    object: M


@dataclass(frozen=True, slots=True)
class ObjectList(Generic[M]):
    """One page of a list: the items, the store revision it was read at and the token of
    the next page ("" on the last page). Watch from `resource_version` to miss nothing."""

    items: list[M]
    resource_version: str
    continue_: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Preconditions:
    """Delete only if the object still has this uid and/or resourceVersion (else Conflict)."""

    uid: str = ""
    resource_version: str = ""


def resolve(ref: KindRef) -> Kind:
    """The registered kind `ref` names; UnknownKind otherwise."""
    try:
        if isinstance(ref, str):
            return kinds.for_resource(ref)
        return kinds.for_message(ref)
    except UnknownKindError as exc:
        raise UnknownKind(str(exc)) from exc


def meta(obj: Message) -> meta_pb2.ObjectMeta:
    """`obj.metadata`, typed (every top-level kind has one)."""
    return cast(meta_pb2.ObjectMeta, cast(Any, obj).metadata)


def object_key(obj: Message) -> str:
    """client-go's MetaNamespaceKeyFunc: "namespace/name", or "name" without a namespace."""
    m = meta(obj)
    return f"{m.namespace}/{m.name}" if m.namespace else m.name


def split_key(key: str) -> tuple[str, str]:
    """("namespace", "name") of an object key; namespace "" for cluster-scoped objects."""
    namespace, _, name = key.rpartition("/")
    return namespace, name


def pack(obj: Message) -> any_pb2.Any:
    resolve(type(obj))  # only registered kinds travel
    out = any_pb2.Any()
    out.Pack(obj)
    return out


def unpack(kind: Kind, packed: any_pb2.Any) -> Message:
    """The object in `packed`, which must be of `kind`."""
    want = kind.message.DESCRIPTOR.full_name
    got = packed.type_url.rpartition("/")[2]
    if got != want:
        raise UnexpectedObject(f"expected a {want}, the server sent {packed.type_url!r}")
    obj = kind.message()
    try:
        obj.ParseFromString(packed.value)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise UnexpectedObject(f"cannot decode the server's {want}: {exc}") from exc
    return obj
