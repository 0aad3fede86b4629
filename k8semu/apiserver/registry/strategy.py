"""A kind's strategy: the rules the generic verbs apply to its objects, as kube-apiserver's
registry strategies do (PrepareForCreate, Validate, PrepareForUpdate, ValidateUpdate, the
status subresource, field selectors, deletion rules), plus the hooks for what a kind holds
store-wide (a Service's addresses) and how long its objects live (Events).

A `Strategy` is one row of the registry (`registry/__init__.py`): it names the kind's own
rules (plain functions and small objects from the kind's module) and composes them with the
rules every kind shares (metadata, size, system fields) in the methods below. The verbs
(`service.py`) call only these; they never ask which kind they serve. Pure: no I/O.
"""

from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.message import Message

from k8semu.api import timestamps
from k8semu.api.kinds import Kind
from k8semu.api.selectors import LabelSelector
from k8semu.apiserver import validation
from k8semu.apiserver.allocation import Assignment, Taken
from k8semu.apiserver.deletion import DEFAULT_RULES, Rules
from k8semu.apiserver.errors import Invalid, NotFound
from k8semu.apiserver.objects import FieldGetter, Selector, describe, meta
from k8semu.apiserver.validation import FieldError, NameRule
from k8semu.pb.api.v1.apiserver_pb2 import Scale

_GENERATED_CHARS = string.ascii_lowercase + string.digits


class Allocation(Protocol):
    """Values an object holds exclusively, store-wide (a Service's clusterIP, nodePorts and
    load-balancer IP). Each value is one key under one of `prefixes`, valued with its holder
    (`allocation.owner`), created in the same Txn as the object (compared absent) and deleted
    in the same Txn as the object or the change that drops it."""

    @property
    def prefixes(self) -> tuple[bytes, ...]:
        """Where the keys live: one prefix per range (key = prefix + value)."""
        ...

    def assign(
        self, obj: Message, old: Message | None, taken: Taken, *, described: str
    ) -> Assignment:
        """Fill in `obj`'s values (in place; `old`: the stored object on update) avoiding
        `taken`; the keys the write creates and deletes."""
        ...

    def held(self, obj: Message) -> list[bytes]:
        """The keys a stored object holds (released with it)."""
        ...


class Reader(Protocol):
    """A kind served, not stored (the resource metrics): Get and List read from it; every
    other verb is refused (MethodNotAllowed)."""

    async def get(self, namespace: str, name: str) -> Message:
        """The object, or NotFound."""
        ...

    async def list(self, namespace: str) -> list[Message]:
        """The objects of one namespace ("" every namespace), before selectors."""
        ...


def _nothing(obj: Any) -> None:
    return None


def _no_errors(obj: Any) -> Iterator[FieldError]:
    return iter(())


def _no_update_errors(obj: Any, old: Any) -> Iterator[FieldError]:
    return iter(())


def _keep_nothing(obj: Any, old: Any) -> None:
    return None


async def _admit_all(objects: Any, obj: Any) -> None:
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Strategy:
    """One kind's row. Every field but `kind` has the default most kinds want.

    Invariant: `status` only for a kind whose message has a status field; `scale` only for
    one with spec.replicas, spec.selector and status.replicas."""

    kind: Kind
    # metadata.name's rule: DNS-1123 subdomain, or label for names that become DNS labels.
    name_rule: NameRule = validation.dns1123_subdomain
    # What Kubernetes fills in when a request leaves it unset (create and update, in place).
    defaults: Callable[[Any], None] = _nothing
    # The kind's own checks, after defaulting, on create and update.
    validate: Callable[[Any], Iterator[FieldError]] = _no_errors
    # The kind's immutable fields: checks of an update of `old` (second argument).
    validate_update: Callable[[Any, Any], Iterator[FieldError]] = _no_update_errors
    # Server-owned values an update (status included) keeps from the stored object.
    prepare_update: Callable[[Any, Any], None] = _keep_nothing
    # The status subresource: UpdateStatus/Patch of status write only status, and an Update
    # keeps the stored status.
    status: bool = False
    # The scale subresource (autoscaling/v1 Scale): spec.replicas, status.replicas and
    # spec.selector, the paths Deployment and ReplicaSet share.
    scale: bool = False
    # pods/binding: sets the binding on a copy of the stored object (None: no such subresource).
    bind: Callable[[Any, str], None] | None = None
    # pods/eviction: a delete its PodDisruptionBudget must allow (apiserver/eviction.py).
    eviction: bool = False
    # Field selectors beyond metadata.name and metadata.namespace.
    field_selectors: Mapping[str, FieldGetter] = field(default_factory=dict)
    deletion: Rules = DEFAULT_RULES
    allocation: Allocation | None = None
    # Objects are written with the --event-ttl lease: the store deletes them when it lapses.
    expires: bool = False
    # A read-only kind's source (its kind is not stored); None for stored kinds.
    reader: Reader | None = None
    # Admission that reads other objects (priority: priorityClassName -> spec.priority):
    # called with the API servicer and the defaulted object before its checks on create.
    admit: Callable[[Any, Any], Awaitable[None]] = _admit_all

    def __post_init__(self) -> None:
        if self.status and "status" not in self.kind.message.DESCRIPTOR.fields_by_name:
            raise ValueError(f"{self.kind.plural}: status subresource without a status field")
        if self.scale and not _has_scale_paths(self.kind.message.DESCRIPTOR):
            raise ValueError(f"{self.kind.plural}: scale subresource without the replicas paths")
        if (self.reader is None) != self.kind.stored:
            raise ValueError(f"{self.kind.resource}: a reader exactly when the kind is not stored")

    def selector(self, label_selector: str, field_selector: str) -> Selector:
        """A request's selectors, checked against this kind's selectable fields."""
        return Selector(self.kind, label_selector, field_selector, self.field_selectors)

    def describe(self, name: str) -> str:
        return describe(self.kind, name)

    def require_status(self) -> None:
        if not self.status:
            raise NotFound(f"{self.kind.plural} have no status subresource")

    def require_scale(self) -> None:
        if not self.scale:
            raise NotFound(f"{self.kind.plural} have no scale subresource")

    def with_replicas(self, obj: Message, replicas: int) -> Message:
        """A copy of `obj` with spec.replicas set (UpdateScale's change)."""
        self.require_scale()
        new = type(obj)()
        new.CopyFrom(obj)
        getattr(new, "spec").replicas = replicas  # noqa: B009
        return new

    def scale_of(self, obj: Message) -> Scale:
        """The Scale view of a stored object: its name, uid and resourceVersion,
        spec.replicas (1 when unset, as defaulting makes it), status.replicas and
        spec.selector as a label-selector string."""
        self.require_scale()
        spec, status = getattr(obj, "spec"), getattr(obj, "status")  # noqa: B009
        sel = spec.selector
        selector = LabelSelector.from_match(
            dict(sel.match_labels),
            [(e.key, e.operator, list(e.values)) for e in sel.match_expressions],
        )
        m = meta(obj)
        return Scale(
            name=m.name,
            namespace=m.namespace,
            resource_version=m.resource_version,
            uid=m.uid,
            spec_replicas=spec.replicas if spec.HasField("replicas") else 1,
            status_replicas=status.replicas,
            selector=str(selector),
        )

    # ---- create ------------------------------------------------------------------------------

    def prepare_for_create(self, obj: Message, *, namespace: str, uid: str) -> None:
        """System fields (namespace from the request, generateName, uid, creationTimestamp,
        generation 1; no resourceVersion or deletion state), then defaults. In place."""
        m = meta(obj)
        if self.kind.namespaced:
            if namespace and m.namespace and namespace != m.namespace:
                raise Invalid(
                    f"{self.describe(m.name)}: metadata.namespace: {m.namespace!r} does not"
                    f" match the namespace of the request ({namespace!r})"
                )
            m.namespace = namespace or m.namespace or "default"
        if m.resource_version:
            raise Invalid(
                f"{self.describe(m.name)}: metadata.resourceVersion: must not be set on create"
            )
        if not m.name and m.generate_name:
            m.name = m.generate_name + "".join(secrets.choice(_GENERATED_CHARS) for _ in range(5))
        m.uid = uid or str(uuid.uuid4())
        m.creation_timestamp.CopyFrom(timestamps.now())
        m.generation = 1
        m.ClearField("deletion_timestamp")
        m.ClearField("deletion_grace_period_seconds")
        self.defaults(obj)

    def validate_create(self, obj: Message) -> None:
        """INVALID_ARGUMENT naming every problem of a new object (defaults applied)."""
        validation.check(self.kind, obj, self._errors(obj))

    def _errors(self, obj: Message) -> list[FieldError]:
        return [
            *validation.metadata(self.kind, meta(obj), self.name_rule),
            *self.validate(obj),
            *validation.size(obj),
        ]

    # ---- update ------------------------------------------------------------------------------

    def prepare_for_update(self, obj: Message, stored: Message) -> Message:
        """`obj` as an Update of `stored` writes it: uid and creationTimestamp filled in when
        empty, deletion state and status the stored ones, defaults, server-owned values
        kept, generation bumped when anything outside metadata and status changed."""
        m, sm = meta(obj), meta(stored)
        if not m.uid:
            m.uid = sm.uid
        if not m.HasField("creation_timestamp"):
            m.creation_timestamp.CopyFrom(sm.creation_timestamp)
        # Deletion state is the server's: only Delete sets it.
        if sm.HasField("deletion_timestamp"):
            m.deletion_timestamp.CopyFrom(sm.deletion_timestamp)
        else:
            m.ClearField("deletion_timestamp")
        if sm.HasField("deletion_grace_period_seconds"):
            m.deletion_grace_period_seconds = sm.deletion_grace_period_seconds
        else:
            m.ClearField("deletion_grace_period_seconds")
        if self.status:
            getattr(obj, "status").CopyFrom(getattr(stored, "status"))  # noqa: B009
        self.defaults(obj)
        self.prepare_update(obj, stored)
        m.generation = sm.generation + (1 if _content(obj) != _content(stored) else 0)
        return obj

    def prepare_for_status_update(self, obj: Message, stored: Message) -> Message:
        """The stored object with `obj`'s status (UpdateStatus): nothing else changes."""
        new = type(stored)()
        new.CopyFrom(stored)
        getattr(new, "status").CopyFrom(getattr(obj, "status"))  # noqa: B009
        self.prepare_update(new, stored)
        return new

    def validate_for_update(self, obj: Message, old: Message) -> None:
        """INVALID_ARGUMENT for an update of `old` to `obj`: the create checks and the
        immutable fields."""
        errors = [
            *self._errors(obj),
            *validation.immutable_metadata(obj, old),
            *self.validate_update(obj, old),
        ]
        validation.check(self.kind, obj, errors)


def _has_scale_paths(descriptor: Any) -> bool:  # a protobuf Descriptor (two runtimes' types)
    fields = descriptor.fields_by_name
    if "spec" not in fields or "status" not in fields:
        return False
    spec, status = fields["spec"].message_type, fields["status"].message_type
    return (
        spec is not None
        and status is not None
        and "replicas" in spec.fields_by_name
        and "selector" in spec.fields_by_name
        and "replicas" in status.fields_by_name
    )


def _content(obj: Message) -> bytes:
    """Everything but metadata and status: what a generation bump is about."""
    copy = type(obj)()
    copy.CopyFrom(obj)
    copy.ClearField("metadata")
    if "status" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("status")
    return copy.SerializeToString(deterministic=True)
