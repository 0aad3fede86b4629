"""`rollout history` and `rollout undo`: a Deployment's revisions are the
`deployment.kubernetes.io/revision` annotations of the ReplicaSets it controls (the
Deployment controller writes them); undo copies one revision's pod template back into the
Deployment, client side, as kubectl does.

Pure: the caller reads the objects and writes the result.
"""

from __future__ import annotations

from collections.abc import Iterable

from k8semu.api import manifest
from k8semu.cli._printers import render_table
from k8semu.cli._resources import UsageError
from k8semu.controllers._pods import POD_TEMPLATE_HASH_LABEL, controller_ref, copy_of
from k8semu.controllers.deployment import (
    CHANGE_CAUSE,
    REVISION,
    SKIPPED_ANNOTATIONS,
    equal_ignore_hash,
    revision_of,
)
from k8semu.pb.api.v1 import apps_pb2

__all__ = [
    "REVISION",
    "history_table",
    "owned",
    "revision_detail",
    "rollback_source",
    "rolled_back",
]


def owned(
    d: apps_pb2.Deployment, replica_sets: Iterable[apps_pb2.ReplicaSet]
) -> list[apps_pb2.ReplicaSet]:
    """The ReplicaSets `d` controls that carry a revision, lowest revision first."""
    out = []
    for rs in replica_sets:
        ref = controller_ref(rs)
        if ref is not None and ref.uid == d.metadata.uid and revision_of(rs) > 0:
            out.append(rs)
    return sorted(out, key=revision_of)


def history_table(d: apps_pb2.Deployment, replica_sets: list[apps_pb2.ReplicaSet]) -> str:
    """kubectl's REVISION / CHANGE-CAUSE table under the Deployment's name."""
    rows = [
        [str(revision_of(rs)), rs.metadata.annotations.get(CHANGE_CAUSE, "") or "<none>"]
        for rs in owned(d, replica_sets)
    ]
    head = f"deployment.apps/{d.metadata.name}\n"
    if not rows:
        return head + "No rollout history found.\n"
    return head + render_table(["REVISION", "CHANGE-CAUSE"], rows)


def revision_detail(
    d: apps_pb2.Deployment, replica_sets: list[apps_pb2.ReplicaSet], revision: int
) -> str:
    """One revision's pod template (`rollout history --revision N`)."""
    for rs in owned(d, replica_sets):
        if revision_of(rs) == revision:
            text = _indent(manifest.dump(rs.spec.template))
            head = f"deployment.apps/{d.metadata.name} with revision #{revision}"
            return f"{head}\nPod Template:\n{text}"
    raise UsageError(f"unable to find the specified revision {revision}")


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" if line else "\n" for line in text.splitlines())


def rollback_source(
    d: apps_pb2.Deployment, replica_sets: list[apps_pb2.ReplicaSet], to_revision: int
) -> apps_pb2.ReplicaSet:
    """The ReplicaSet of revision `to_revision` (0: the one before the latest)."""
    history = owned(d, replica_sets)
    if to_revision < 0:
        raise UsageError(f"--to-revision: must be >= 0, got {to_revision}")
    if to_revision == 0:
        if len(history) < 2:
            raise UsageError(f'no rollout history found for deployment "{d.metadata.name}"')
        return history[-2]
    for rs in history:
        if revision_of(rs) == to_revision:
            return rs
    raise UsageError(f"unable to find specified revision {to_revision} in history")


def rolled_back(d: apps_pb2.Deployment, rs: apps_pb2.ReplicaSet) -> apps_pb2.Deployment | None:
    """`d` with the template and annotations of `rs` (None: its template already matches)."""
    if equal_ignore_hash(d.spec.template, rs.spec.template):
        return None
    new = copy_of(d)
    new.spec.template.CopyFrom(rs.spec.template)
    new.spec.template.metadata.labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    for key, value in rs.metadata.annotations.items():
        if key not in SKIPPED_ANNOTATIONS:
            new.metadata.annotations[key] = value
    if CHANGE_CAUSE not in rs.metadata.annotations:
        new.metadata.annotations.pop(CHANGE_CAUSE, None)
    return new
