"""The Namespace row's rules: defaults, and deletion by termination.

A namespace is never deleted at once: a delete marks it (status.phase Terminating), creates
in it are refused from then on, and the API server deletes its contents and then the
namespace (`repair.Namespaces`). Pure: no I/O.
"""

from __future__ import annotations

from k8semu.pb.api.v1 import core_pb2


def defaults(obj: core_pb2.Namespace) -> None:
    if not obj.status.phase:
        obj.status.phase = "Active"


def mark(obj: core_pb2.Namespace) -> None:
    """What a delete's mark adds to deletionTimestamp."""
    obj.status.phase = "Terminating"
