"""Defaulting: the values Kubernetes fills in when a request leaves a field unset.

Applied to every create and update before validation, in place. One function per kind, each
a short list of "if unset, set"; `tests/apiserver/test_defaults.py` is the table of what is
defaulted. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from k8semu.pb.api.v1 import apps_pb2, core_pb2


def _pod_spec(spec: core_pb2.PodSpec) -> None:
    if not spec.restart_policy:
        spec.restart_policy = "Always"
    if not spec.HasField("termination_grace_period_seconds"):
        spec.termination_grace_period_seconds = 30
    if not spec.dns_policy:
        spec.dns_policy = "ClusterFirst"
    if not spec.scheduler_name:
        spec.scheduler_name = "default-scheduler"
    for container in [*spec.init_containers, *spec.containers]:
        for port in container.ports:
            if not port.protocol:
                port.protocol = "TCP"


def _pod(obj: core_pb2.Pod) -> None:
    _pod_spec(obj.spec)


def _service(obj: core_pb2.Service) -> None:
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


def _replica_set(obj: apps_pb2.ReplicaSet) -> None:
    if not obj.spec.HasField("replicas"):
        obj.spec.replicas = 1
    _pod_spec(obj.spec.template.spec)


def _deployment(obj: apps_pb2.Deployment) -> None:
    spec = obj.spec
    if not spec.HasField("replicas"):
        spec.replicas = 1
    if not spec.strategy.type:
        spec.strategy.type = "RollingUpdate"
    if spec.strategy.type == "RollingUpdate":
        rolling = spec.strategy.rolling_update
        if not rolling.HasField("max_unavailable"):
            rolling.max_unavailable.str_val = "25%"
        if not rolling.HasField("max_surge"):
            rolling.max_surge.str_val = "25%"
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = 10
    if not spec.HasField("progress_deadline_seconds"):
        spec.progress_deadline_seconds = 600
    _pod_spec(spec.template.spec)


def _namespace(obj: core_pb2.Namespace) -> None:
    if not obj.status.phase:
        obj.status.phase = "Active"


_DEFAULTERS: dict[str, Callable[[Any], None]] = {
    "Pod": _pod,
    "Service": _service,
    "ReplicaSet": _replica_set,
    "Deployment": _deployment,
    "Namespace": _namespace,
}


def apply(obj: Message) -> None:
    """Fill in `obj`'s unset defaulted fields, in place."""
    defaulter = _DEFAULTERS.get(obj.DESCRIPTOR.name)
    if defaulter is not None:
        defaulter(obj)
