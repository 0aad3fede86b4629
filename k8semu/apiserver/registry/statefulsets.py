"""The StatefulSet row (apps/v1): defaults, checks, and the fields an update may change.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from k8semu.apiserver.registry.pods import default_spec, validate_spec
from k8semu.apiserver.registry.storage import pvc_defaults, validate_pvc_spec
from k8semu.apiserver.registry.workloads import validate_selector
from k8semu.apiserver.validation import FieldError, dns1123_label
from k8semu.pb.api.v1 import apps_pb2

POLICIES = ("OrderedReady", "Parallel")
STRATEGIES = ("RollingUpdate", "OnDelete")
RETENTION = ("Retain", "Delete")
# What kube-apiserver lets an update change; the rest of the spec is fixed at creation.
MUTABLE = (
    "replicas",
    "template",
    "update_strategy",
    "persistent_volume_claim_retention_policy",
    "min_ready_seconds",
    "revision_history_limit",
)


def defaults(sts: apps_pb2.StatefulSet) -> None:
    spec = sts.spec
    if not spec.HasField("replicas"):
        spec.replicas = 1
    if not spec.pod_management_policy:
        spec.pod_management_policy = "OrderedReady"
    if not spec.update_strategy.type:
        spec.update_strategy.type = "RollingUpdate"
    if spec.update_strategy.type == "RollingUpdate":
        rolling = spec.update_strategy.rolling_update
        if not rolling.HasField("partition"):
            rolling.partition = 0
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = 10
    retention = spec.persistent_volume_claim_retention_policy
    retention.when_deleted = retention.when_deleted or "Retain"
    retention.when_scaled = retention.when_scaled or "Retain"
    for claim in spec.volume_claim_templates:
        pvc_defaults(claim)
        claim.ClearField("status")
    default_spec(spec.template.spec)


def _supported(path: str, value: str, allowed: tuple[str, ...]) -> Iterator[FieldError]:
    if value not in allowed:
        quoted = ", ".join(f'"{v}"' for v in sorted(allowed))
        yield FieldError(path, f'Unsupported value: "{value}": supported values: {quoted}')


def validate(sts: apps_pb2.StatefulSet) -> Iterator[FieldError]:
    spec = sts.spec
    if spec.replicas < 0:
        yield FieldError("spec.replicas", "Invalid value: must be greater than or equal to 0")
    if spec.service_name and (problem := dns1123_label(spec.service_name)):
        yield FieldError("spec.serviceName", problem)
    yield from validate_selector(spec)
    yield from validate_spec(spec.template.spec, "spec.template.spec")
    if spec.template.spec.restart_policy != "Always":
        yield FieldError(
            "spec.template.spec.restartPolicy",
            f'Unsupported value: "{spec.template.spec.restart_policy}": supported values: "Always"',
        )
    yield from _supported("spec.podManagementPolicy", spec.pod_management_policy, POLICIES)
    yield from _supported("spec.updateStrategy.type", spec.update_strategy.type, STRATEGIES)
    if spec.update_strategy.rolling_update.partition < 0:
        yield FieldError(
            "spec.updateStrategy.rollingUpdate.partition",
            "Invalid value: must be greater than or equal to 0",
        )
    retention = spec.persistent_volume_claim_retention_policy
    where = "spec.persistentVolumeClaimRetentionPolicy"
    yield from _supported(f"{where}.whenDeleted", retention.when_deleted, RETENTION)
    yield from _supported(f"{where}.whenScaled", retention.when_scaled, RETENTION)
    volumes = {v.name for v in spec.template.spec.volumes}
    for i, claim in enumerate(spec.volume_claim_templates):
        path = f"spec.volumeClaimTemplates[{i}]"
        if not claim.metadata.name:
            yield FieldError(f"{path}.metadata.name", "Required value")
        elif problem := dns1123_label(claim.metadata.name):
            yield FieldError(f"{path}.metadata.name", problem)
        elif claim.metadata.name in volumes:
            yield FieldError(
                f"{path}.metadata.name",
                f'Duplicate value: "{claim.metadata.name}": a pod volume has this name',
            )
        yield from validate_pvc_spec(claim.spec, f"{path}.spec")


def validate_update(sts: apps_pb2.StatefulSet, old: apps_pb2.StatefulSet) -> Iterator[FieldError]:
    new, before = apps_pb2.StatefulSetSpec(), apps_pb2.StatefulSetSpec()
    new.CopyFrom(sts.spec)
    before.CopyFrom(old.spec)
    for name in MUTABLE:
        new.ClearField(name)  # type: ignore[arg-type]
        before.ClearField(name)  # type: ignore[arg-type]
    if new != before:
        yield FieldError(
            "spec",
            "Forbidden: updates to statefulset spec for fields other than 'replicas',"
            " 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy'"
            " and 'minReadySeconds' are forbidden",
        )
