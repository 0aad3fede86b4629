"""The storage rows: PersistentVolume, PersistentVolumeClaim (core/v1) and StorageClass
(storage.k8s.io/v1): defaults and checks as kube-apiserver's, the immutable fields.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from k8semu.api.errors import QuantityError
from k8semu.api.quantity import parse_quantity
from k8semu.apiserver.validation import FieldError
from k8semu.pb.api.v1 import core_pb2, storage_pb2

ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
RECLAIM_POLICIES = ("Delete", "Retain")
BINDING_MODES = ("Immediate", "WaitForFirstConsumer")


def _supported(path: str, value: str, allowed: tuple[str, ...]) -> Iterator[FieldError]:
    if value not in allowed:
        quoted = ", ".join(f'"{v}"' for v in sorted(allowed))
        yield FieldError(path, f'Unsupported value: "{value}": supported values: {quoted}')


def _access_modes(modes: list[str], path: str) -> Iterator[FieldError]:
    if not modes:
        yield FieldError(path, "Required value: at least 1 access mode is required")
    for i, mode in enumerate(modes):
        yield from _supported(f"{path}[{i}]", mode, ACCESS_MODES)


def _storage(value: str, path: str) -> Iterator[FieldError]:
    if not value:
        yield FieldError(path, "Required value")
        return
    try:
        parse_quantity(value, field=path)
    except QuantityError as exc:
        yield FieldError(path, str(exc))


def pv_defaults(pv: core_pb2.PersistentVolume) -> None:
    if not pv.spec.persistent_volume_reclaim_policy:
        pv.spec.persistent_volume_reclaim_policy = "Retain"
    if not pv.spec.volume_mode:
        pv.spec.volume_mode = "Filesystem"
    if not pv.status.phase:
        pv.status.phase = "Pending"


def validate_pv(pv: core_pb2.PersistentVolume) -> Iterator[FieldError]:
    """A capacity, access modes, exactly one source (hostPath or local, a directory), a
    known reclaim policy; a local volume needs a node affinity (the node that has it)."""
    spec = pv.spec
    yield from _storage(spec.capacity.get("storage", ""), "spec.capacity[storage]")
    yield from _access_modes(list(spec.access_modes), "spec.accessModes")
    sources = [s for s in ("host_path", "local") if spec.HasField(s)]
    if len(sources) != 1:
        yield FieldError("spec", "must specify exactly 1 volume type (hostPath or local)")
    elif not (spec.host_path.path or spec.local.path).startswith("/"):
        where = "spec.hostPath.path" if sources == ["host_path"] else "spec.local.path"
        yield FieldError(where, "Invalid value: must be an absolute path")
    if spec.HasField("local") and not spec.node_affinity.required.node_selector_terms:
        yield FieldError("spec.nodeAffinity", "Required value: Local volume requires node affinity")
    yield from _supported(
        "spec.persistentVolumeReclaimPolicy", spec.persistent_volume_reclaim_policy,
        RECLAIM_POLICIES,
    )  # fmt: skip


def validate_pv_update(
    pv: core_pb2.PersistentVolume, old: core_pb2.PersistentVolume
) -> Iterator[FieldError]:
    for name, path in (("host_path", "hostPath"), ("local", "local")):
        if getattr(pv.spec, name) != getattr(old.spec, name):
            yield FieldError(f"spec.{path}", "field is immutable")
    if old.spec.HasField("node_affinity") and pv.spec.node_affinity != old.spec.node_affinity:
        yield FieldError("spec.nodeAffinity", "field is immutable once set")


def pvc_defaults(pvc: core_pb2.PersistentVolumeClaim) -> None:
    if not pvc.spec.volume_mode:
        pvc.spec.volume_mode = "Filesystem"
    if not pvc.status.phase:
        pvc.status.phase = "Pending"


def validate_pvc_spec(spec: core_pb2.PersistentVolumeClaimSpec, path: str) -> Iterator[FieldError]:
    yield from _access_modes(list(spec.access_modes), f"{path}.accessModes")
    yield from _storage(
        spec.resources.requests.get("storage", ""), f"{path}.resources.requests[storage]"
    )


def validate_pvc(pvc: core_pb2.PersistentVolumeClaim) -> Iterator[FieldError]:
    yield from validate_pvc_spec(pvc.spec, "spec")


def validate_pvc_update(
    pvc: core_pb2.PersistentVolumeClaim, old: core_pb2.PersistentVolumeClaim
) -> Iterator[FieldError]:
    """As Kubernetes: the spec is immutable once created, except volumeName while it was
    unset (the binder sets it) and a storage request that grows (here, nothing resizes)."""
    new, before = core_pb2.PersistentVolumeClaimSpec(), core_pb2.PersistentVolumeClaimSpec()
    new.CopyFrom(pvc.spec)
    before.CopyFrom(old.spec)
    if not before.volume_name:
        new.volume_name = ""
    if new != before:
        yield FieldError(
            "spec",
            "Forbidden: spec is immutable after creation except resources.requests and"
            " volumeAttributesClassName for bound claims",
        )


def class_defaults(sc: storage_pb2.StorageClass) -> None:
    if not sc.HasField("reclaim_policy"):
        sc.reclaim_policy = "Delete"
    if not sc.HasField("volume_binding_mode"):
        sc.volume_binding_mode = "Immediate"


def validate_class(sc: storage_pb2.StorageClass) -> Iterator[FieldError]:
    if not sc.provisioner:
        yield FieldError("provisioner", "Required value")
    yield from _supported("reclaimPolicy", sc.reclaim_policy, RECLAIM_POLICIES)
    yield from _supported("volumeBindingMode", sc.volume_binding_mode, BINDING_MODES)


def validate_class_update(
    sc: storage_pb2.StorageClass, old: storage_pb2.StorageClass
) -> Iterator[FieldError]:
    for name, path in (
        ("provisioner", "provisioner"),
        ("parameters", "parameters"),
        ("reclaim_policy", "reclaimPolicy"),
        ("volume_binding_mode", "volumeBindingMode"),
    ):
        if getattr(sc, name) != getattr(old, name):
            yield FieldError(path, "Forbidden: updates to " + path + " are forbidden.")
