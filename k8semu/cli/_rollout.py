"""`rollout history` and `rollout undo`: a Deployment's revisions are the
`deployment.kubernetes.io/revision` annotations of the ReplicaSets it controls (the
Deployment controller writes them); a DaemonSet's or StatefulSet's are the
ControllerRevisions it controls (k8semu/controllers/history.py). Undo copies one revision's
pod template back into its owner, client side, as kubectl does.

Pure: the caller reads the objects and writes the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

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
from k8semu.controllers.history import Owner, owned_revisions, template_of
from k8semu.pb.api.v1 import apps_pb2, core_pb2

__all__ = [
    "REVISION",
    "controller_history_table",
    "controller_revision_detail",
    "controller_rollback",
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
    rows = [(revision_of(rs), rs.metadata.annotations) for rs in owned(d, replica_sets)]
    return _table(f"deployment.apps/{d.metadata.name}", rows)


def _table(label: str, rows: Sequence[tuple[int, Mapping[str, str]]]) -> str:
    """`label` over a REVISION / CHANGE-CAUSE table of (revision, annotations) rows."""
    if not rows:
        return f"{label}\nNo rollout history found.\n"
    cells = [[str(n), notes.get(CHANGE_CAUSE, "") or "<none>"] for n, notes in rows]
    return f"{label}\n" + render_table(["REVISION", "CHANGE-CAUSE"], cells)


def revision_detail(
    d: apps_pb2.Deployment, replica_sets: list[apps_pb2.ReplicaSet], revision: int
) -> str:
    """One revision's pod template (`rollout history --revision N`)."""
    for rs in owned(d, replica_sets):
        if revision_of(rs) == revision:
            return _detail(f"deployment.apps/{d.metadata.name}", revision, rs.spec.template)
    raise UsageError(f"unable to find the specified revision {revision}")


def _detail(label: str, revision: int, template: core_pb2.PodTemplateSpec) -> str:
    text = _indent(manifest.dump(template))
    return f"{label} with revision #{revision}\nPod Template:\n{text}"


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


# ---- DaemonSets and StatefulSets: ControllerRevisions ------------------------------------


def _label(owner: Owner) -> str:
    return f"{type(owner).__name__.lower()}.apps/{owner.metadata.name}"


def controller_history_table(owner: Owner, revisions: Iterable[apps_pb2.ControllerRevision]) -> str:
    rows = [(cr.revision, cr.metadata.annotations) for cr in owned_revisions(owner, revisions)]
    return _table(_label(owner), rows)


def controller_revision_detail(
    owner: Owner, revisions: Iterable[apps_pb2.ControllerRevision], revision: int
) -> str:
    for cr in owned_revisions(owner, revisions):
        template = template_of(cr)
        if cr.revision == revision and template is not None:
            return _detail(_label(owner), revision, template)
    raise UsageError("unable to find the specified revision")


def controller_rollback(
    owner: Owner, revisions: Iterable[apps_pb2.ControllerRevision], to_revision: int
) -> tuple[int, core_pb2.PodTemplateSpec | None]:
    """kubectl's DaemonSet/StatefulSet rollback: the revision (0: the one before the
    newest) and its template, None when the owner already has it."""
    if to_revision < 0:
        raise UsageError(f"--to-revision: must be >= 0, got {to_revision}")
    history = owned_revisions(owner, revisions)
    if to_revision == 0:
        source = history[-2] if len(history) > 1 else None
    else:
        source = next((cr for cr in history if cr.revision == to_revision), None)
    template = None if source is None else template_of(source)
    if source is None or template is None:
        raise UsageError(f"unable to find specified revision {to_revision} in history")
    return source.revision, None if template == owner.spec.template else template
