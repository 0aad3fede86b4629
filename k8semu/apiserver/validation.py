"""Semantic validation every kind shares, after defaulting: metadata, size, immutable meta.

Each check yields `FieldError(path, message)` with Kubernetes' field path
(`spec.template.spec.containers[0].name`); `check` raises one Invalid naming the object and
every problem found, so a user fixes them all at once. What is particular to a kind (a pod's
containers, a Service's ports, a Deployment's selector) is its registry row's
(`registry/`), which yields FieldErrors the same way; `registry/strategy.py` puts the two
together. The schema (types, unknown fields) is the manifest loader's job; this is what the
schema cannot say: names, ranges, required fields, immutable fields. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

from google.protobuf.message import Message

from k8semu.api import names
from k8semu.api.errors import SelectorError
from k8semu.api.kinds import Kind
from k8semu.api.selectors import Operator, Requirement
from k8semu.apiserver.errors import Invalid
from k8semu.apiserver.objects import MAX_OBJECT_BYTES, describe, meta
from k8semu.pb.api.v1 import meta_pb2

PROTOCOLS = ("TCP", "UDP", "SCTP")  # of container and Service ports


class FieldError(NamedTuple):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _problem(value: str, errors: list[str]) -> str | None:
    """The first of Kubernetes' messages for `value`, naming the value unless it is too long."""
    if not errors:
        return None
    return (
        errors[0]
        if errors[0].startswith("must be no more")
        else f"invalid value {value!r}: {errors[0]}"
    )


def dns1123_label(value: str) -> str | None:
    """Why `value` is not a DNS-1123 label, or None."""
    return _problem(value, names.dns1123_label_errors(value))


def dns1123_subdomain(value: str) -> str | None:
    """Why `value` is not a DNS-1123 subdomain, or None."""
    return _problem(value, names.dns1123_subdomain_errors(value))


NameRule = Callable[[str], str | None]


def metadata(kind: Kind, m: meta_pb2.ObjectMeta, name_rule: NameRule) -> Iterator[FieldError]:
    """The name (by the kind's `name_rule`), namespace and labels."""
    if not m.name:
        yield FieldError("metadata.name", "Required value: name or generateName is required")
    else:
        if problem := name_rule(m.name):
            yield FieldError("metadata.name", problem)
    if kind.namespaced:
        if not m.namespace:
            yield FieldError("metadata.namespace", "Required value")
        elif problem := dns1123_label(m.namespace):
            yield FieldError("metadata.namespace", problem)
    elif m.namespace:
        yield FieldError("metadata.namespace", f"not allowed: {kind.plural} are cluster-scoped")
    for label, value in m.labels.items():
        try:
            Requirement(label, Operator.EQUALS, (value,))
        except SelectorError as exc:
            yield FieldError(f"metadata.labels[{label}]", str(exc).split(": ", 1)[-1])


def size(obj: Message) -> Iterator[FieldError]:
    """What fits in one etcd request."""
    n = obj.ByteSize()
    if n > MAX_OBJECT_BYTES:
        yield FieldError("object", f"Too long: {n} bytes, must be at most {MAX_OBJECT_BYTES}")


def check(kind: Kind, obj: Message, errors: list[FieldError]) -> None:
    """Raise one Invalid naming `obj` and every problem in `errors` (none: return)."""
    if errors:
        name = meta(obj).name or meta(obj).generate_name
        raise Invalid(
            f"{describe(kind, name)}: {'; '.join(map(str, errors))}",
            causes=[(e.path, e.message) for e in errors],
            kind=kind.kind,
            name=name,
        )


def immutable_metadata(obj: Message, old: Message) -> Iterator[FieldError]:
    """What no update may change in metadata (uid, creationTimestamp, new finalizers on an
    object being deleted)."""
    new_m, old_m = meta(obj), meta(old)
    if new_m.uid != old_m.uid:
        yield FieldError("metadata.uid", "field is immutable")
    if new_m.creation_timestamp != old_m.creation_timestamp:
        yield FieldError("metadata.creationTimestamp", "field is immutable")
    if old_m.HasField("deletion_timestamp"):
        added = [f for f in new_m.finalizers if f not in old_m.finalizers]
        if added:
            yield FieldError(
                "metadata.finalizers",
                "Forbidden: no new finalizers can be added if the object is being deleted,"
                f" found new finalizers {added}",
            )
