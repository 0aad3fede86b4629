"""The Service row's rules: defaults, validation, and its allocation hook.

A Service holds addresses no other may hold (clusterIP, nodePorts, load-balancer IP):
`Allocation` puts `allocation.py`'s pure allocator behind the registry's allocation protocol,
which the generic write path uses (one key per value, in the Service's own Txn). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from google.protobuf.message import Message

from k8semu.apiserver import allocation
from k8semu.apiserver.allocation import Allocator, Assignment, Taken
from k8semu.apiserver.validation import PROTOCOLS, FieldError
from k8semu.pb.api.v1 import core_pb2

_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")


def defaults(obj: core_pb2.Service) -> None:
    spec = obj.spec
    if not spec.type:
        spec.type = "ClusterIP"
    if not spec.session_affinity:
        spec.session_affinity = "None"
    for port in spec.ports:
        if not port.protocol:
            port.protocol = "TCP"
        if not port.HasField("target_port"):
            port.target_port.int_val = port.port


def validate(obj: core_pb2.Service) -> Iterator[FieldError]:
    spec = obj.spec
    if spec.type not in _TYPES:
        yield FieldError("spec.type", f"Unsupported value: {spec.type!r}")
    for i, port in enumerate(spec.ports):
        if not 1 <= port.port <= 65535:
            yield FieldError(f"spec.ports[{i}].port", "must be between 1 and 65535, inclusive")
        if port.protocol not in PROTOCOLS:
            yield FieldError(f"spec.ports[{i}].protocol", f"Unsupported value: {port.protocol!r}")
        if len(spec.ports) > 1 and not port.name:
            yield FieldError(f"spec.ports[{i}].name", "Required value (several ports)")


def validate_update(obj: core_pb2.Service, old: core_pb2.Service) -> Iterator[FieldError]:
    if old.spec.cluster_ip and obj.spec.cluster_ip != old.spec.cluster_ip:
        yield FieldError("spec.clusterIP", "field is immutable")


def prepare_update(new: core_pb2.Service, old: core_pb2.Service) -> None:
    """Allocated values an update leaves unset are kept (`allocation.keep_allocated`)."""
    allocation.keep_allocated(new, old)


class Allocation:
    """The registry's allocation hook for Services (see `registry/strategy.py`)."""

    prefixes = allocation.PREFIXES

    def __init__(self, allocator: Allocator) -> None:
        self.allocator = allocator

    def assign(
        self, obj: Message, old: Message | None, taken: Taken, *, described: str
    ) -> Assignment:
        return self.allocator.assign(
            cast(core_pb2.Service, obj),
            cast("core_pb2.Service | None", old),
            taken,
            described=described,
        )

    def held(self, obj: Message) -> list[bytes]:
        return allocation.held(cast(core_pb2.Service, obj))
