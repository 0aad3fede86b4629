"""Semantic validation of objects on create and update, after defaulting.

Each check yields `FieldError(path, message)` with Kubernetes' field path
(`spec.template.spec.containers[0].name`); `validate_create`/`validate_update` raise one
Invalid naming the object and every problem found, so a user fixes them all at once. The
schema (types, unknown fields) is the manifest loader's job; this is what the schema cannot
say: names, ranges, required fields, immutable fields. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from google.protobuf.message import Message

from k8semu.api import names
from k8semu.api.errors import SelectorError
from k8semu.api.kinds import Kind
from k8semu.api.selectors import LabelSelector, Operator, Requirement
from k8semu.apiserver.errors import Invalid
from k8semu.apiserver.objects import MAX_OBJECT_BYTES, describe, meta
from k8semu.pb.api.v1 import core_pb2, meta_pb2

# Kinds whose names must be DNS-1123 labels (they become DNS names themselves).
_LABEL_NAMED = frozenset({"Namespace", "Service"})
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_PROTOCOLS = ("TCP", "UDP", "SCTP")


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


def _metadata(kind: Kind, m: meta_pb2.ObjectMeta) -> Iterator[FieldError]:
    if not m.name:
        yield FieldError("metadata.name", "Required value: name or generateName is required")
    else:
        check = dns1123_label if kind.kind in _LABEL_NAMED else dns1123_subdomain
        if problem := check(m.name):
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


def _pod_spec(spec: core_pb2.PodSpec, path: str) -> Iterator[FieldError]:
    if not spec.containers:
        yield FieldError(f"{path}.containers", "Required value: at least one container")
    names: set[str] = set()
    for i, c in enumerate(spec.containers):
        where = f"{path}.containers[{i}]"
        if not c.name:
            yield FieldError(f"{where}.name", "Required value")
        elif problem := dns1123_label(c.name):
            yield FieldError(f"{where}.name", problem)
        elif c.name in names:
            yield FieldError(f"{where}.name", f"Duplicate value: {c.name!r}")
        names.add(c.name)
        if not c.image:
            yield FieldError(f"{where}.image", "Required value")
        for j, port in enumerate(c.ports):
            if not 1 <= port.container_port <= 65535:
                yield FieldError(
                    f"{where}.ports[{j}].containerPort", "must be between 1 and 65535, inclusive"
                )
            if port.protocol not in _PROTOCOLS:
                yield FieldError(
                    f"{where}.ports[{j}].protocol", f"Unsupported value: {port.protocol!r}"
                )
    if spec.restart_policy not in _RESTART_POLICIES:
        yield FieldError(f"{path}.restartPolicy", f"Unsupported value: {spec.restart_policy!r}")
    if spec.termination_grace_period_seconds < 0:
        yield FieldError(f"{path}.terminationGracePeriodSeconds", "must be >= 0")


def _workload(obj: Any) -> Iterator[FieldError]:
    """Deployment and ReplicaSet: replicas, selector, template."""
    spec = obj.spec
    if spec.replicas < 0:
        yield FieldError("spec.replicas", "must be >= 0")
    selector = spec.selector
    if not selector.match_labels and not selector.match_expressions:
        yield FieldError("spec.selector", "Required value")
    else:
        try:
            parsed = LabelSelector.from_match(
                dict(selector.match_labels),
                [(e.key, e.operator, list(e.values)) for e in selector.match_expressions],
            )
        except SelectorError as exc:
            yield FieldError("spec.selector", str(exc))
        else:
            if not parsed.matches(spec.template.metadata.labels):
                yield FieldError(
                    "spec.template.metadata.labels",
                    "Invalid value: `selector` does not match template `labels`",
                )
    yield from _pod_spec(spec.template.spec, "spec.template.spec")


def _service(obj: core_pb2.Service) -> Iterator[FieldError]:
    spec = obj.spec
    if spec.type not in _SERVICE_TYPES:
        yield FieldError("spec.type", f"Unsupported value: {spec.type!r}")
    for i, port in enumerate(spec.ports):
        if not 1 <= port.port <= 65535:
            yield FieldError(f"spec.ports[{i}].port", "must be between 1 and 65535, inclusive")
        if port.protocol not in _PROTOCOLS:
            yield FieldError(f"spec.ports[{i}].protocol", f"Unsupported value: {port.protocol!r}")
        if len(spec.ports) > 1 and not port.name:
            yield FieldError(f"spec.ports[{i}].name", "Required value (several ports)")


def _kind_checks(obj: Message) -> Iterator[FieldError]:
    name = obj.DESCRIPTOR.name
    if name == "Pod":
        assert isinstance(obj, core_pb2.Pod)
        yield from _pod_spec(obj.spec, "spec")
    elif name in ("Deployment", "ReplicaSet"):
        yield from _workload(obj)
    elif name == "Service":
        assert isinstance(obj, core_pb2.Service)
        yield from _service(obj)


def _errors(kind: Kind, obj: Message) -> list[FieldError]:
    errors = [*_metadata(kind, meta(obj)), *_kind_checks(obj)]
    size = obj.ByteSize()
    if size > MAX_OBJECT_BYTES:
        errors.append(
            FieldError("object", f"Too long: {size} bytes, must be at most {MAX_OBJECT_BYTES}")
        )
    return errors


def _raise(kind: Kind, obj: Message, errors: list[FieldError]) -> None:
    if errors:
        name = meta(obj).name or meta(obj).generate_name
        raise Invalid(f"{describe(kind, name)}: {'; '.join(map(str, errors))}")


def validate_create(kind: Kind, obj: Message) -> None:
    """Raise Invalid naming every problem of a new object (defaults already applied)."""
    _raise(kind, obj, _errors(kind, obj))


def _immutable(obj: Message, old: Message) -> Iterator[FieldError]:
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
    name = obj.DESCRIPTOR.name
    spec: Any = getattr(obj, "spec", None)
    old_spec: Any = getattr(old, "spec", None)
    if name == "Service" and old_spec.cluster_ip and spec.cluster_ip != old_spec.cluster_ip:
        yield FieldError("spec.clusterIP", "field is immutable")
    if name in ("Deployment", "ReplicaSet") and spec.selector != old_spec.selector:
        yield FieldError("spec.selector", "field is immutable")


def validate_update(kind: Kind, obj: Message, old: Message) -> None:
    """Raise Invalid for an update of `old` to `obj`: the create checks plus immutability."""
    _raise(kind, obj, [*_errors(kind, obj), *_immutable(obj, old)])
