"""The rows of the workloads whose spec holds a pod template: Deployment, ReplicaSet and
DaemonSet.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from k8semu.api.errors import SelectorError
from k8semu.api.selectors import LabelSelector
from k8semu.apiserver.registry.pods import default_spec, validate_spec
from k8semu.apiserver.validation import FieldError
from k8semu.pb.api.v1 import apps_pb2


def replica_set_defaults(obj: apps_pb2.ReplicaSet) -> None:
    if not obj.spec.HasField("replicas"):
        obj.spec.replicas = 1
    default_spec(obj.spec.template.spec)


def deployment_defaults(obj: apps_pb2.Deployment) -> None:
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
    default_spec(spec.template.spec)


def validate(obj: Any) -> Iterator[FieldError]:
    """replicas, selector (required, matching the template's labels), the pod template."""
    spec = obj.spec
    if spec.replicas < 0:
        yield FieldError("spec.replicas", "must be >= 0")
    yield from validate_selector(spec)
    yield from validate_spec(spec.template.spec, "spec.template.spec")


def validate_selector(spec: Any) -> Iterator[FieldError]:
    """spec.selector: required, well formed, and matching spec.template's labels."""
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


def validate_update(obj: Any, old: Any) -> Iterator[FieldError]:
    if obj.spec.selector != old.spec.selector:
        yield FieldError("spec.selector", "field is immutable")


def daemon_set_defaults(obj: apps_pb2.DaemonSet) -> None:
    spec = obj.spec
    if not spec.update_strategy.type:
        spec.update_strategy.type = "RollingUpdate"
    if spec.update_strategy.type == "RollingUpdate":
        rolling = spec.update_strategy.rolling_update
        if not rolling.HasField("max_unavailable"):
            rolling.max_unavailable.int_val = 1
        if not rolling.HasField("max_surge"):
            rolling.max_surge.int_val = 0
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = 10
    default_spec(spec.template.spec)


def _is_zero(value: Any) -> bool:
    which = value.WhichOneof("value")
    if which == "int_val":
        return bool(value.int_val == 0)
    return which == "str_val" and value.str_val.rstrip("%") in ("0", "")


def validate_daemon_set(obj: apps_pb2.DaemonSet) -> Iterator[FieldError]:
    """As Kubernetes: the selector and template, restartPolicy Always (a daemon never ends),
    a known update strategy, and a rolling update that can make progress."""
    spec = obj.spec
    yield from validate_selector(spec)
    yield from validate_spec(spec.template.spec, "spec.template.spec")
    policy = spec.template.spec.restart_policy
    if policy != "Always":
        yield FieldError(
            "spec.template.spec.restartPolicy",
            f'Unsupported value: "{policy}": supported values: "Always"',
        )
    strategy = spec.update_strategy
    if strategy.type not in ("RollingUpdate", "OnDelete"):
        yield FieldError(
            "spec.updateStrategy.type",
            f'Unsupported value: "{strategy.type}": supported values: "OnDelete", "RollingUpdate"',
        )
    elif strategy.type == "RollingUpdate":
        rolling = strategy.rolling_update
        if _is_zero(rolling.max_unavailable) and _is_zero(rolling.max_surge):
            yield FieldError(
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                "Invalid value: 0: may not be 0 when maxSurge is 0",
            )
