"""Status and progress (Kubernetes' progress.go and syncDeploymentStatus): the counts, the
Available condition, Progressing with its deadline (ProgressDeadlineExceeded) and pause/resume,
and the requeue for when a deadline would pass."""

from __future__ import annotations

from k8semu.api import timestamps
from k8semu.client import object_key
from k8semu.client.events import WARNING
from k8semu.controllers.deployment.syncer import Syncer
from k8semu.controllers.deployment.util import (
    AVAILABLE,
    MIN_AVAILABLE,
    MIN_UNAVAILABLE,
    NEW_RS_AVAILABLE,
    PAUSED,
    PROGRESSING,
    RESUMED,
    RS_UPDATED,
    TIMED_OUT,
    deployment_complete,
    deployment_progressing,
    deployment_timed_out,
    get_condition,
    has_progress_deadline,
    max_unavailable,
    new_condition,
    remove_condition,
    replicas_of,
    set_condition,
)
from k8semu.pb.api.v1 import apps_pb2


async def check_paused_condition(s: Syncer, d: apps_pb2.Deployment) -> apps_pb2.Deployment:
    if not has_progress_deadline(d):
        return d
    cond = get_condition(d.status, PROGRESSING)
    if cond is not None and cond.reason == TIMED_OUT:
        return d
    paused = cond is not None and cond.reason == PAUSED
    now = s.clock()
    if d.spec.paused and not paused:
        set_condition(
            d.status, new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", now)
        )
    elif not d.spec.paused and paused:
        set_condition(
            d.status,
            new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", now),
        )
    else:
        return d
    return await s.write_status(d)


def calculate_status(
    s: Syncer,
    d: apps_pb2.Deployment,
    new_rs: apps_pb2.ReplicaSet | None,
    old: list[apps_pb2.ReplicaSet],
) -> apps_pb2.DeploymentStatus:
    all_rss = [*([new_rs] if new_rs is not None else []), *old]
    status = apps_pb2.DeploymentStatus()
    status.CopyFrom(d.status)
    status.observed_generation = d.metadata.generation
    status.replicas = sum(rs.status.replicas for rs in all_rss)
    status.updated_replicas = new_rs.status.replicas if new_rs is not None else 0
    status.ready_replicas = sum(rs.status.ready_replicas for rs in all_rss)
    status.available_replicas = sum(rs.status.available_replicas for rs in all_rss)
    total = sum(replicas_of(rs) for rs in all_rss)
    status.unavailable_replicas = max(0, total - status.available_replicas)
    now = s.clock()
    if status.available_replicas >= replicas_of(d) - max_unavailable(d):
        cond = new_condition(
            AVAILABLE, "True", MIN_AVAILABLE, "Deployment has minimum availability.", now
        )
    else:
        cond = new_condition(
            AVAILABLE,
            "False",
            MIN_UNAVAILABLE,
            "Deployment does not have minimum availability.",
            now,
        )
    set_condition(status, cond)
    return status


async def sync_status(
    s: Syncer,
    d: apps_pb2.Deployment,
    new_rs: apps_pb2.ReplicaSet | None,
    old: list[apps_pb2.ReplicaSet],
    *,
    rollout: bool = True,
) -> None:
    """calculateStatus, then (for a rollout) Kubernetes' syncRolloutStatus conditions."""
    status = calculate_status(s, d, new_rs, old)
    now = s.clock()
    if not has_progress_deadline(d):
        remove_condition(status, PROGRESSING)
    elif rollout and new_rs is not None:
        current = get_condition(status, PROGRESSING)
        name = new_rs.metadata.name
        if deployment_complete(d, status):
            set_condition(
                status,
                new_condition(
                    PROGRESSING,
                    "True",
                    NEW_RS_AVAILABLE,
                    f'ReplicaSet "{name}" has successfully progressed.',
                    now,
                ),
            )
        elif deployment_progressing(d, status):
            cond = new_condition(
                PROGRESSING, "True", RS_UPDATED, f'ReplicaSet "{name}" is progressing.', now
            )
            if current is not None:
                if current.status == "True":
                    cond.last_transition_time.CopyFrom(current.last_transition_time)
                remove_condition(status, PROGRESSING)
            # Same reason, new lastUpdateTime: progress restarts the deadline.
            status.conditions.append(cond)
        elif deployment_timed_out(d, status, now):
            set_condition(
                status,
                new_condition(
                    PROGRESSING,
                    "False",
                    TIMED_OUT,
                    f'ReplicaSet "{name}" has timed out progressing.',
                    now,
                ),
            )
            if current is None or current.reason != TIMED_OUT:
                s.recorder.event(
                    d, WARNING, TIMED_OUT, f'Deployment "{d.metadata.name}" has timed out '
                    "progressing.",
                )  # fmt: skip
        requeue_stuck(s, d, status, now)
    if status != d.status:
        d.status.CopyFrom(status)
        await s.write_status(d)


def requeue_stuck(
    s: Syncer, d: apps_pb2.Deployment, status: apps_pb2.DeploymentStatus, now: float
) -> None:
    """Come back when the progress deadline would pass, if nothing happens before."""
    cond = get_condition(status, PROGRESSING)
    if cond is None or cond.reason in (NEW_RS_AVAILABLE, TIMED_OUT) or d.spec.paused:
        return
    if deployment_complete(d, status):
        return
    updated = timestamps.to_seconds(cond.last_update_time)
    after = updated + d.spec.progress_deadline_seconds - now
    s.queue.add_after(object_key(d), max(0.0, after) + 0.1)
