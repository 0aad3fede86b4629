"""Revisions (Kubernetes' revision annotations and revisionHistoryLimit): the revision of
a ReplicaSet, what of a Deployment's annotations its ReplicaSets carry, and the clean-up of
old, empty ReplicaSets beyond the history limit. `k8semu rollout history/undo` reads these."""

from __future__ import annotations

from k8semu.client import (
    NotFound,
    object_key,
)
from k8semu.controllers.deployment.syncer import Syncer
from k8semu.controllers.deployment.util import (
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    by_creation,
    replicas_of,
)
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apps_pb2

log = get_logger(__name__)

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
CHANGE_CAUSE = "kubernetes.io/change-cause"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Deployment annotations never copied to its ReplicaSets (Kubernetes' annotationsToSkip).
SKIPPED_ANNOTATIONS = frozenset(
    {LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS}
)


def revision_of(rs: apps_pb2.ReplicaSet | apps_pb2.Deployment) -> int:
    try:
        return int(rs.metadata.annotations.get(REVISION, "0"))
    except ValueError:
        return 0


def copy_annotations(d: apps_pb2.Deployment, rs: apps_pb2.ReplicaSet) -> bool:
    changed = False
    for k, v in d.metadata.annotations.items():
        if k in SKIPPED_ANNOTATIONS:
            continue
        if rs.metadata.annotations.get(k) != v:
            rs.metadata.annotations[k] = v
            changed = True
    return changed


def set_revision(rs: apps_pb2.ReplicaSet, revision: int) -> bool:
    current = revision_of(rs)
    if current >= revision:
        return False
    if current > 0:
        history = [h for h in rs.metadata.annotations.get(REVISION_HISTORY, "").split(",") if h]
        history.append(str(current))
        rs.metadata.annotations[REVISION_HISTORY] = ",".join(history)
    rs.metadata.annotations[REVISION] = str(revision)
    return True


async def cleanup(s: Syncer, d: apps_pb2.Deployment, old: list[apps_pb2.ReplicaSet]) -> None:
    """Delete old, empty ReplicaSets beyond revisionHistoryLimit, lowest revision first."""
    if not d.spec.HasField("revision_history_limit"):
        return
    alive = [rs for rs in old if not rs.metadata.HasField("deletion_timestamp")]
    diff = len(alive) - d.spec.revision_history_limit
    if diff <= 0:
        return
    for rs in sorted(alive, key=lambda r: (revision_of(r), by_creation(r)))[:diff]:
        if (
            rs.status.replicas != 0
            or replicas_of(rs) != 0
            or rs.metadata.generation > rs.status.observed_generation
        ):
            continue
        try:
            await s.client.delete(
                apps_pb2.ReplicaSet, rs.metadata.name, namespace=rs.metadata.namespace
            )
        except NotFound:
            continue
        log.info("deleted old replica set", deployment=object_key(d), replicaset=rs.metadata.name)
