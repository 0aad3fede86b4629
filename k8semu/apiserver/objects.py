"""Objects as the API server stores and ships them: keys, Any packing, metadata, selectors.

Knows no kind by name: what is particular to a kind is its registry row's (`registry/`).

Storage layout (design decision 2): key `/registry/<plural>/<namespace>/<name>` (cluster-scoped
kinds: `/registry/<plural>/<name>`), value the serialized message with an empty
resourceVersion; resourceVersion is the key's mod_revision, filled in on every read.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from k8semu.api import kinds
from k8semu.api.errors import SelectorError, UnknownKindError
from k8semu.api.kinds import Kind
from k8semu.api.selectors import (
    FieldSelector,
    LabelSelector,
    parse_field_selector,
    parse_label_selector,
)
from k8semu.apiserver.errors import BadRequest, Invalid, NotFound
from k8semu.pb.api.v1 import meta_pb2

TYPE_URL_PREFIX = "type.googleapis.com/"
# etcd refuses requests over 1.5 MiB; keep room for the key and the Txn envelope.
MAX_OBJECT_BYTES = 1536 * 1024 - 16 * 1024


def resolve(resource: str) -> Kind:
    """The listable kind a request names; unknown names and Binding are NOT_FOUND."""
    try:
        kind = kinds.for_resource(resource)
    except UnknownKindError as exc:
        raise NotFound(str(exc)) from None
    if kind.list_message is None:
        raise NotFound(f'the server doesn\'t have a resource type "{resource}" (not stored)')
    return kind


def meta(obj: Message) -> meta_pb2.ObjectMeta:
    return cast(meta_pb2.ObjectMeta, cast(Any, obj).metadata)


def describe(kind: Kind, name: str) -> str:
    """How errors name an object: `pods "web"`."""
    return f'{kind.plural} "{name}"'


def prefix(kind: Kind, namespace: str) -> bytes:
    """The key prefix of every object of `kind` (in `namespace`, when given and namespaced)."""
    if kind.namespaced and namespace:
        return f"/registry/{kind.plural}/{namespace}/".encode()
    return f"/registry/{kind.plural}/".encode()


def key(kind: Kind, namespace: str, name: str) -> bytes:
    if kind.namespaced:
        return f"/registry/{kind.plural}/{namespace}/{name}".encode()
    return f"/registry/{kind.plural}/{name}".encode()


def range_end(start: bytes) -> bytes:
    """etcd's prefix end: the key just past every key starting with `start`."""
    return start[:-1] + bytes([start[-1] + 1])


def unchanged(new: Message, stored: Message) -> bool:
    """Whether `new` would store what `stored` holds (its resourceVersion aside). Compared as
    messages, not as bytes: maps (labels, managedFields' FieldsV1) serialize in no fixed
    order, so equal objects can encode differently."""
    a, b = meta(new), meta(stored)
    ra, rb = a.resource_version, b.resource_version
    a.resource_version = b.resource_version = ""
    try:
        return bool(new == stored)
    finally:
        a.resource_version, b.resource_version = ra, rb


def encode(obj: Message) -> bytes:
    """The stored bytes: resourceVersion is not stored (it is the key's mod_revision)."""
    m = meta(obj)
    rv = m.resource_version
    m.resource_version = ""
    try:
        return obj.SerializeToString()
    finally:
        m.resource_version = rv


def decode(kind: Kind, value: bytes, mod_revision: int) -> Message:
    obj = kind.message()
    obj.ParseFromString(value)
    kinds.stamp(obj)
    meta(obj).resource_version = str(mod_revision)
    return obj


def pack(obj: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(obj)
    return out


def unpack(kind: Kind, packed: any_pb2.Any) -> Message:
    """The request's object; INVALID_ARGUMENT for a missing, mistyped or undecodable one."""
    want = kind.message.DESCRIPTOR.full_name
    if not packed.type_url:
        raise Invalid(f"{kind.plural}: object: required (a google.protobuf.Any of {want})")
    got = packed.type_url.rpartition("/")[2]
    if got != want:
        raise Invalid(
            f"{kind.plural}: object: expected type {TYPE_URL_PREFIX}{want}, got {packed.type_url!r}"
        )
    obj = kind.message()
    try:
        obj.ParseFromString(packed.value)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise Invalid(f"{kind.plural}: object: cannot decode {want}: {exc}") from None
    kinds.stamp(obj)
    return obj


def parse_resource_version(text: str, *, field: str) -> int:
    if not text.isdigit() or len(text) > 19:
        raise Invalid(f"{field}: invalid resource version {text!r}: must be a decimal number")
    return int(text)


# ---- selectors -------------------------------------------------------------------------------


FieldGetter = Callable[[Message], str]
# Every kind's selectable fields; a kind's registry row adds its own (a pod's spec.nodeName).
COMMON_FIELDS: Mapping[str, FieldGetter] = {
    "metadata.name": lambda o: meta(o).name,
    "metadata.namespace": lambda o: meta(o).namespace,
}


class Selector:
    """A request's label and field selectors, checked against the kind's selectable fields
    (`fields`, beyond metadata.name and metadata.namespace)."""

    def __init__(
        self,
        kind: Kind,
        label_selector: str,
        field_selector: str,
        fields: Mapping[str, FieldGetter] | None = None,
    ) -> None:
        try:
            self.labels: LabelSelector = parse_label_selector(label_selector)
        except SelectorError as exc:
            raise BadRequest(f"labelSelector: {exc}") from None
        try:
            self.fields_: FieldSelector = parse_field_selector(field_selector)
        except SelectorError as exc:
            raise BadRequest(f"fieldSelector: {exc}") from None
        self.getters = {**COMMON_FIELDS, **(fields or {})}
        for name in sorted(self.fields_.fields):
            if name not in self.getters:
                raise BadRequest(
                    f'fieldSelector: field label "{name}" not supported for {kind.plural}'
                    f" (supported: {', '.join(sorted(self.getters))})"
                )

    @property
    def everything(self) -> bool:
        return self.labels.is_empty and self.fields_.is_empty

    def matches(self, obj: Message) -> bool:
        if not self.labels.matches(meta(obj).labels):
            return False
        return self.fields_.matches(lambda name: self.getters[name](obj))
