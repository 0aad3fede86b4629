"""The ControllerRevision row (apps/v1): checks as kube-apiserver's. `data` is required and
immutable (a revision is a snapshot); `revision` is >= 0 and may change (the DaemonSet and
StatefulSet controllers renumber a revision they roll back to). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from k8semu.apiserver.validation import FieldError
from k8semu.pb.api.v1 import apps_pb2


def validate(cr: apps_pb2.ControllerRevision) -> Iterator[FieldError]:
    if not cr.HasField("data"):
        yield FieldError("data", "Required value: data is mandatory")
    if cr.revision < 0:
        yield FieldError(
            "revision", f"Invalid value: {cr.revision}: must be greater than or equal to 0"
        )


def validate_update(
    new: apps_pb2.ControllerRevision, old: apps_pb2.ControllerRevision
) -> Iterator[FieldError]:
    if new.data != old.data:
        yield FieldError("data", "Invalid value: the revision's data: field is immutable")
