"""The Deployment controller: rolls a Deployment's pod template out through ReplicaSets.

Per key (namespace/name), level-triggered, following Kubernetes' deployment controller, and
split into modules as Kubernetes splits it:

    controller.py  informers, event handlers, adoption, `reconcile` (deployment_controller.go)
    sync.py        the new ReplicaSet of the template, and scaling (sync.go)
    rolling.py     the RollingUpdate strategy (rolling.go)
    recreate.py    the Recreate strategy (recreate.go)
    progress.py    status, the Available and Progressing conditions (progress.go)
    history.py     revisions and revisionHistoryLimit clean-up
    util.py        pure helpers: names, template hash, surge/unavailable, conditions
    syncer.py      `Syncer`: the client, recorder, clock, caches and queue the steps share

- The ReplicaSet of the current template is `<deploy>-<hash>`, the hash of the template (and
  `status.collisionCount`), with the label `pod-template-hash=<hash>` added to its selector and
  template; it carries `deployment.kubernetes.io/revision` (the highest revision so far + 1
  when it becomes the new one; the old numbers of a re-used ReplicaSet go to
  `revision-history`), the Deployment's annotations (`kubernetes.io/change-cause` among
  them), and `desired-replicas`/`max-replicas`, which tell a scaling event from a rollout.
  The Deployment gets the same revision annotation.
- RollingUpdate: scale the new ReplicaSet up while the total stays within replicas +
  maxSurge, and old ones down (unhealthy pods first) while the available pods stay at least
  replicas - maxUnavailable (percentages: surge rounds up, unavailable down; both 0 means
  maxUnavailable 1). Recreate: scale every old ReplicaSet to 0, wait until their pods are gone,
  then create/scale the new one.
- Paused: no rollout step; a change of replicas still scales the ReplicaSets proportionally
  (as does a replicas change in the middle of a rollout).
- Old ReplicaSets scaled to zero beyond `revisionHistoryLimit` are deleted, oldest first.
- Status: replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas,
  observedGeneration; conditions Available (MinimumReplicasAvailable/-Unavailable) and
  Progressing (NewReplicaSetCreated, FoundNewReplicaSet, ReplicaSetUpdated,
  NewReplicaSetAvailable, ProgressDeadlineExceeded, DeploymentPaused, DeploymentResumed).

Owns ReplicaSets (spec and annotations) and the Deployment's status and revision annotation;
never writes pods (the ReplicaSet controller does). Rollback is `k8semu rollout undo`, client
side, as kubectl does it.
"""

from k8semu.controllers.deployment.controller import DeploymentController
from k8semu.controllers.deployment.history import (
    CHANGE_CAUSE,
    LAST_APPLIED,
    REVISION,
    REVISION_HISTORY,
    SKIPPED_ANNOTATIONS,
    revision_of,
)
from k8semu.controllers.deployment.util import (
    API_VERSION,
    AVAILABLE,
    DESIRED_REPLICAS,
    FAILED_RS_CREATE,
    FOUND_NEW_RS,
    KIND,
    MAX_REPLICAS,
    MIN_AVAILABLE,
    MIN_UNAVAILABLE,
    NEW_RS_AVAILABLE,
    NEW_RS_CREATED,
    PAUSED,
    PROGRESSING,
    RESUMED,
    RS_UPDATED,
    TIMED_OUT,
    deployment_complete,
    deployment_progressing,
    deployment_timed_out,
    equal_ignore_hash,
    fenceposts,
    get_condition,
    has_progress_deadline,
    max_unavailable,
    new_condition,
    remove_condition,
    replicas_of,
    scaled_value,
    set_condition,
    template_hash,
)

__all__ = [
    "API_VERSION",
    "AVAILABLE",
    "CHANGE_CAUSE",
    "DESIRED_REPLICAS",
    "FAILED_RS_CREATE",
    "FOUND_NEW_RS",
    "KIND",
    "LAST_APPLIED",
    "MAX_REPLICAS",
    "MIN_AVAILABLE",
    "MIN_UNAVAILABLE",
    "NEW_RS_AVAILABLE",
    "NEW_RS_CREATED",
    "PAUSED",
    "PROGRESSING",
    "RESUMED",
    "REVISION",
    "REVISION_HISTORY",
    "RS_UPDATED",
    "SKIPPED_ANNOTATIONS",
    "TIMED_OUT",
    "DeploymentController",
    "deployment_complete",
    "deployment_progressing",
    "deployment_timed_out",
    "equal_ignore_hash",
    "fenceposts",
    "get_condition",
    "has_progress_deadline",
    "max_unavailable",
    "new_condition",
    "remove_condition",
    "replicas_of",
    "revision_of",
    "scaled_value",
    "set_condition",
    "template_hash",
]
