"""The Pod row's rules: defaults, validation, graceful deletion, field selectors, binding.

The pod spec's defaults and checks are shared with the workloads whose template holds one
(`workloads.py`). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf.message import Message

from k8semu.api import timestamps
from k8semu.apiserver.errors import Conflict
from k8semu.apiserver.objects import FieldGetter
from k8semu.apiserver.registry.scheduling import validate_pod_scheduling
from k8semu.apiserver.validation import PROTOCOLS, FieldError, dns1123_label
from k8semu.pb.api.v1 import core_pb2

DEFAULT_GRACE_SECONDS = 30
_TERMINAL_PHASES = ("Succeeded", "Failed")
_RESTART_POLICIES = ("Always", "OnFailure", "Never")


TERMINATION_LOG = "/dev/termination-log"
TERMINATION_POLICIES = ("File", "FallbackToLogsOnError")


def default_spec(spec: core_pb2.PodSpec, *, restart_policy: str = "Always") -> None:
    """Kubernetes' pod spec defaults; `restart_policy` "" leaves an unset policy unset (a
    Job's template must name OnFailure or Never itself)."""
    if not spec.restart_policy:
        spec.restart_policy = restart_policy
    if not spec.HasField("termination_grace_period_seconds"):
        spec.termination_grace_period_seconds = 30
    if not spec.dns_policy:
        spec.dns_policy = "ClusterFirst"
    if not spec.scheduler_name:
        spec.scheduler_name = "default-scheduler"
    for container in [*spec.init_containers, *spec.containers]:
        container.termination_message_path = container.termination_message_path or TERMINATION_LOG
        if not container.termination_message_policy:
            container.termination_message_policy = "File"
        for port in container.ports:
            if not port.protocol:
                port.protocol = "TCP"


def defaults(pod: core_pb2.Pod) -> None:
    default_spec(pod.spec)
    # Kubernetes' ServiceAccount admission: a pod runs as its namespace's `default` account
    # unless it names one (templates are not defaulted: only pods).
    if not pod.spec.service_account_name:
        pod.spec.service_account_name = "default"


_HANDLER_TYPES = ("exec", "http_get", "tcp_socket")


def _handler(
    handler: core_pb2.Probe | core_pb2.LifecycleHandler, where: str, grace: int
) -> Iterator[FieldError]:
    """Exactly one action (Kubernetes' validateHandler wording); a lifecycle `sleep` within
    the pod's grace period, since the kubelet cuts a hook when the grace runs out."""
    types = _HANDLER_TYPES if isinstance(handler, core_pb2.Probe) else (*_HANDLER_TYPES, "sleep")
    given = [t for t in types if handler.HasField(t)]  # type: ignore[arg-type]
    if not given:
        yield FieldError(where, "Required value: must specify a handler type")
    elif len(given) > 1:
        yield FieldError(where, "Forbidden: may not specify more than 1 handler type")
    if isinstance(handler, core_pb2.LifecycleHandler) and handler.HasField("sleep"):
        seconds = handler.sleep.seconds
        if not 0 <= seconds <= grace:
            yield FieldError(
                f"{where}.sleep.seconds",
                f"Invalid value: {seconds}: must be non-negative and less than"
                f" terminationGracePeriodSeconds ({grace})",
            )


def _container_handlers(c: core_pb2.Container, where: str, grace: int) -> Iterator[FieldError]:
    for probe in ("liveness_probe", "readiness_probe", "startup_probe"):
        if c.HasField(probe):
            name = probe.split("_")[0] + "Probe"
            yield from _handler(getattr(c, probe), f"{where}.{name}", grace)
    if c.HasField("lifecycle"):
        for hook, name in (("post_start", "postStart"), ("pre_stop", "preStop")):
            if c.lifecycle.HasField(hook):  # type: ignore[arg-type]
                yield from _handler(getattr(c.lifecycle, hook), f"{where}.lifecycle.{name}", grace)


def validate_spec(spec: core_pb2.PodSpec, path: str) -> Iterator[FieldError]:
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
            if port.protocol not in PROTOCOLS:
                yield FieldError(
                    f"{where}.ports[{j}].protocol", f"Unsupported value: {port.protocol!r}"
                )
        if c.termination_message_policy not in ("", *TERMINATION_POLICIES):
            yield FieldError(
                f"{where}.terminationMessagePolicy",
                f'Unsupported value: "{c.termination_message_policy}": supported values:'
                ' "File", "FallbackToLogsOnError"',
            )
        grace = spec.termination_grace_period_seconds
        yield from _container_handlers(c, where, grace if grace >= 0 else DEFAULT_GRACE_SECONDS)
        yield from _ids(c.security_context, f"{where}.securityContext")
    if spec.restart_policy not in _RESTART_POLICIES:
        yield FieldError(f"{path}.restartPolicy", f"Unsupported value: {spec.restart_policy!r}")
    if spec.termination_grace_period_seconds < 0:
        yield FieldError(f"{path}.terminationGracePeriodSeconds", "must be >= 0")
    yield from _ids(spec.security_context, f"{path}.securityContext")
    yield from validate_pod_scheduling(spec, path)


_MAX_ID = 2**31 - 1


def _ids(
    sc: core_pb2.PodSecurityContext | core_pb2.SecurityContext, path: str
) -> Iterator[FieldError]:
    """User and group ids: 0..2147483647, as Kubernetes' validation."""
    named = [("runAsUser", "run_as_user"), ("runAsGroup", "run_as_group")]
    if isinstance(sc, core_pb2.PodSecurityContext):
        named.append(("fsGroup", "fs_group"))
        for i, gid in enumerate(sc.supplemental_groups):
            if not 0 <= gid <= _MAX_ID:
                yield FieldError(
                    f"{path}.supplementalGroups[{i}]", f"must be between 0 and {_MAX_ID}, inclusive"
                )
    for json_name, field in named:
        if sc.HasField(field) and not 0 <= getattr(sc, field) <= _MAX_ID:  # type: ignore[arg-type]
            yield FieldError(f"{path}.{json_name}", f"must be between 0 and {_MAX_ID}, inclusive")


def validate(pod: core_pb2.Pod) -> Iterator[FieldError]:
    yield from validate_spec(pod.spec, "spec")


def grace_period(pod: core_pb2.Pod, requested: int | None) -> int:
    """A delete's grace: the request's, else spec.terminationGracePeriodSeconds, else 30; 0
    for a pod no kubelet will ever finish (not bound to a node, or Succeeded/Failed)."""
    if not pod.spec.node_name or pod.status.phase in _TERMINAL_PHASES:
        return 0
    if requested is not None:
        return requested
    if pod.spec.HasField("termination_grace_period_seconds"):
        return int(pod.spec.termination_grace_period_seconds)
    return DEFAULT_GRACE_SECONDS


def _node_name(obj: Message) -> str:
    return str(getattr(obj, "spec").node_name)  # noqa: B009 - Message has no typed field


def _phase(obj: Message) -> str:
    return str(getattr(obj, "status").phase)  # noqa: B009


FIELDS: dict[str, FieldGetter] = {"spec.nodeName": _node_name, "status.phase": _phase}


def bind(pod: Any, node_name: str) -> None:
    """pods/binding on `pod` (a copy of the stored one): spec.nodeName and the
    PodScheduled=True condition, as Kubernetes' binding REST sets them, and
    status.nominatedNodeName cleared (kube-apiserver does since 1.34, whoever nominated the
    pod: a bound pod's nomination is stale); ABORTED when the pod is bound already or being
    deleted."""
    name = pod.metadata.name
    if pod.metadata.HasField("deletion_timestamp"):
        raise Conflict(f"pod {name} is being deleted, cannot be assigned to a host")
    if pod.spec.node_name:
        raise Conflict(f"pod {name} is already assigned to node {pod.spec.node_name!r}")
    pod.spec.node_name = node_name
    pod.status.ClearField("nominated_node_name")
    for condition in pod.status.conditions:
        if condition.type == "PodScheduled":
            break
    else:
        condition = pod.status.conditions.add(type="PodScheduled")
    if condition.status != "True":
        condition.status = "True"
        condition.last_transition_time.CopyFrom(timestamps.now())
