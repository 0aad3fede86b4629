"""Sync (Kubernetes' sync.go): find or create the new ReplicaSet of the current template
and sync its revision and annotations; resize ReplicaSets, proportionally when several are
active (a scaling event or a paused Deployment); the status-only sync of one being deleted."""

from __future__ import annotations

import math
from typing import cast

from k8semu.client import (
    AlreadyExists,
    Conflict,
    object_key,
)
from k8semu.client.events import NORMAL, WARNING
from k8semu.controllers import _pods
from k8semu.controllers.deployment.history import (
    REVISION,
    cleanup,
    copy_annotations,
    revision_of,
    set_revision,
)
from k8semu.controllers.deployment.progress import sync_status
from k8semu.controllers.deployment.syncer import Syncer
from k8semu.controllers.deployment.util import (
    API_VERSION,
    DESIRED_REPLICAS,
    FAILED_RS_CREATE,
    FOUND_NEW_RS,
    KIND,
    MAX_REPLICAS,
    NEW_RS_CREATED,
    PROGRESSING,
    by_creation,
    equal_ignore_hash,
    fenceposts,
    get_condition,
    has_progress_deadline,
    int_annotation,
    new_condition,
    replicas_of,
    set_condition,
    template_hash,
)
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apps_pb2

log = get_logger(__name__)


async def sync(s: Syncer, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]) -> None:
    """Scaling and paused deployments: resize, no rollout step."""
    d, new_rs, old = await get_all(s, d, rs_list, create=False)
    await scale(s, d, new_rs, old)
    if d.spec.paused:
        await cleanup(s, d, old)
    await sync_status(s, d, new_rs, old, rollout=False)


async def sync_status_only(
    s: Syncer, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]
) -> None:
    d, new_rs, old = await get_all(s, d, rs_list, create=False)
    await sync_status(s, d, new_rs, old, rollout=False)


async def get_all(
    s: Syncer, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet], *, create: bool
) -> tuple[apps_pb2.Deployment, apps_pb2.ReplicaSet | None, list[apps_pb2.ReplicaSet]]:
    """(deployment, new ReplicaSet or None, old ReplicaSets); syncs revisions and creates
    the new ReplicaSet when `create`. The deployment returned is the latest written."""
    new_rs = find_new(d, rs_list)
    old = [rs for rs in rs_list if rs is not new_rs]
    max_old = max((revision_of(rs) for rs in old), default=0)
    revision = max_old + 1
    if new_rs is not None:
        d = await sync_new_rs(s, d, new_rs, revision)
    elif create:
        d, new_rs = await create_new_rs(s, d, rs_list, old, revision)
    return d, new_rs, old


def find_new(
    d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]
) -> apps_pb2.ReplicaSet | None:
    same = [rs for rs in rs_list if equal_ignore_hash(rs.spec.template, d.spec.template)]
    return min(same, key=by_creation) if same else None


async def sync_new_rs(
    s: Syncer, d: apps_pb2.Deployment, new_rs: apps_pb2.ReplicaSet, revision: int
) -> apps_pb2.Deployment:
    changed = copy_annotations(d, new_rs)
    changed = set_revision(new_rs, revision) or changed
    if new_rs.spec.min_ready_seconds != d.spec.min_ready_seconds:
        new_rs.spec.min_ready_seconds = d.spec.min_ready_seconds
        changed = True
    if changed:
        updated = cast(apps_pb2.ReplicaSet, await s.client.update(new_rs))
        s.remember(updated)
        new_rs.CopyFrom(updated)
    d = await set_deployment_revision(s, d, revision_of(new_rs))
    if get_condition(d.status, PROGRESSING) is None and has_progress_deadline(d):
        set_condition(
            d.status,
            new_condition(
                PROGRESSING,
                "True",
                FOUND_NEW_RS,
                f'Found new replica set "{new_rs.metadata.name}"',
                s.clock(),
            ),
        )
        d = await s.write_status(d)
    return d


async def set_deployment_revision(
    s: Syncer, d: apps_pb2.Deployment, revision: int
) -> apps_pb2.Deployment:
    if d.metadata.annotations.get(REVISION) == str(revision):
        return d
    new = _pods.copy_of(d)
    new.metadata.annotations[REVISION] = str(revision)
    updated = cast(apps_pb2.Deployment, await s.client.update(new))
    s.remember(updated)
    updated.status.CopyFrom(d.status)  # keep conditions set but not yet written
    return updated


def new_replica_set(
    d: apps_pb2.Deployment, h: str, revision: int, replicas: int
) -> apps_pb2.ReplicaSet:
    """The ReplicaSet `<deploy>-<h>` of `d`'s template (hash `h`) at `revision`: the hash
    label added to its labels, selector and template, owned by `d`, with `d`'s annotations
    and the desired/max replicas that tell a later scaling event from a rollout."""
    rs = apps_pb2.ReplicaSet(api_version=API_VERSION, kind="ReplicaSet")
    rs.metadata.name = f"{d.metadata.name}-{h}"
    rs.metadata.namespace = d.metadata.namespace
    rs.metadata.labels.update(d.spec.template.metadata.labels)
    rs.metadata.labels[_pods.POD_TEMPLATE_HASH_LABEL] = h
    rs.metadata.owner_references.append(
        _pods.new_controller_ref(d, api_version=API_VERSION, kind=KIND)
    )
    copy_annotations(d, rs)
    rs.metadata.annotations[REVISION] = str(revision)
    rs.spec.selector.CopyFrom(d.spec.selector)
    rs.spec.selector.match_labels[_pods.POD_TEMPLATE_HASH_LABEL] = h
    rs.spec.template.CopyFrom(d.spec.template)
    rs.spec.template.metadata.labels[_pods.POD_TEMPLATE_HASH_LABEL] = h
    rs.spec.min_ready_seconds = d.spec.min_ready_seconds
    rs.spec.replicas = replicas
    surge, _ = fenceposts(d)
    rs.metadata.annotations[DESIRED_REPLICAS] = str(replicas_of(d))
    rs.metadata.annotations[MAX_REPLICAS] = str(replicas_of(d) + surge)
    return rs


async def create_new_rs(
    s: Syncer,
    d: apps_pb2.Deployment,
    rs_list: list[apps_pb2.ReplicaSet],
    old: list[apps_pb2.ReplicaSet],
    revision: int,
) -> tuple[apps_pb2.Deployment, apps_pb2.ReplicaSet | None]:
    collisions = d.status.collision_count if d.status.HasField("collision_count") else 0
    replicas = new_rs_replicas(d, [*old], None)
    rs = new_replica_set(d, template_hash(d.spec.template, collisions), revision, replicas)
    try:
        created = cast(apps_pb2.ReplicaSet, await s.client.create(rs))
    except AlreadyExists:
        existing = cast(
            apps_pb2.ReplicaSet,
            await s.client.get(
                apps_pb2.ReplicaSet, rs.metadata.name, namespace=rs.metadata.namespace
            ),
        )
        ref = _pods.controller_ref(existing)
        if (
            ref is not None
            and ref.uid == d.metadata.uid
            and equal_ignore_hash(existing.spec.template, d.spec.template)
        ):
            # Ours, not yet in the cache: use it.
            return await sync_new_rs(s, d, existing, revision), existing
        # A hash collision: try the next name.
        d.status.collision_count = collisions + 1
        await s.write_status(d)
        raise Conflict(
            f'replicasets "{rs.metadata.name}": name taken by another template; '
            f"collisionCount now {collisions + 1}"
        ) from None
    except Exception as exc:
        if has_progress_deadline(d):
            set_condition(
                d.status,
                new_condition(PROGRESSING, "False", FAILED_RS_CREATE, str(exc), s.clock()),
            )
            await s.write_status(d)
        s.recorder.event(d, WARNING, FAILED_RS_CREATE, f"Failed to create new replica set "
                            f'"{rs.metadata.name}": {exc}')  # fmt: skip
        raise
    s.remember(created)
    rs_list.append(created)
    if replicas > 0:
        scaled_event(s, d, created, "up", replicas)
    if has_progress_deadline(d):
        set_condition(
            d.status,
            new_condition(
                PROGRESSING,
                "True",
                NEW_RS_CREATED,
                f'Created new replica set "{created.metadata.name}"',
                s.clock(),
            ),
        )
    d = await set_deployment_revision(s, d, revision)
    d = await s.write_status(d)
    return d, created


def scaled_event(
    s: Syncer, d: apps_pb2.Deployment, rs: apps_pb2.ReplicaSet, direction: str, to: int
) -> None:
    s.recorder.event(
        d, NORMAL, "ScalingReplicaSet", f"Scaled {direction} replica set {rs.metadata.name} "
        f"to {to}",
    )  # fmt: skip


async def scale_rs(s: Syncer, d: apps_pb2.Deployment, rs: apps_pb2.ReplicaSet, to: int) -> bool:
    """Set `rs` (a copy, updated in place) to `to` replicas and the desired/max
    annotations of `d`; True when its size changed."""
    current = replicas_of(rs)
    surge, _ = fenceposts(d)
    desired, max_ = str(replicas_of(d)), str(replicas_of(d) + surge)
    annotations = rs.metadata.annotations
    if (
        current == to
        and annotations.get(DESIRED_REPLICAS) == desired
        and annotations.get(MAX_REPLICAS) == max_
    ):
        return False
    new = _pods.copy_of(rs)
    new.spec.replicas = to
    new.metadata.annotations[DESIRED_REPLICAS] = desired
    new.metadata.annotations[MAX_REPLICAS] = max_
    updated = cast(apps_pb2.ReplicaSet, await s.client.update(new))
    s.remember(updated)
    rs.CopyFrom(updated)
    if current != to:
        scaled_event(s, d, rs, "up" if to > current else "down", to)
        log.info(
            "scaled replica set",
            deployment=object_key(d),
            replicaset=rs.metadata.name,
            replicas=to,
            previous=current,
        )
    return current != to


def new_rs_replicas(
    d: apps_pb2.Deployment,
    all_rss: list[apps_pb2.ReplicaSet],
    new_rs: apps_pb2.ReplicaSet | None,
) -> int:
    """What the new ReplicaSet may grow to now (Kubernetes' NewRSNewReplicas)."""
    want = replicas_of(d)
    if d.spec.strategy.type == "Recreate":
        return want
    current_new = replicas_of(new_rs) if new_rs is not None else 0
    surge, _ = fenceposts(d)
    total = sum(replicas_of(rs) for rs in all_rss)
    if new_rs is not None and all(rs is not new_rs for rs in all_rss):
        total += current_new
    max_total = want + surge
    if total >= max_total:
        return current_new
    up = min(max_total - total, max(0, want - current_new))
    return current_new + up


async def is_scaling_event(d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]) -> bool:
    want = str(replicas_of(d))
    for rs in rs_list:
        if replicas_of(rs) <= 0:
            continue
        desired = rs.metadata.annotations.get(DESIRED_REPLICAS)
        if desired is not None and desired != want:
            return True
    return False


async def scale(
    s: Syncer,
    d: apps_pb2.Deployment,
    new_rs: apps_pb2.ReplicaSet | None,
    old: list[apps_pb2.ReplicaSet],
) -> None:
    """Kubernetes' scale(): bring the ReplicaSets to the Deployment's size, in proportion
    to their sizes when several are active."""
    want = replicas_of(d)
    all_rss = [*([new_rs] if new_rs is not None else []), *old]
    active = [rs for rs in all_rss if replicas_of(rs) > 0]
    if len(active) <= 1:
        target = active[0] if active else (new_rs or (max(old, key=by_creation) if old else None))
        if target is not None:
            await scale_rs(s, d, target, want)
        return
    if (
        new_rs is not None
        and replicas_of(new_rs) == want
        and new_rs.status.available_replicas == want
    ):
        for rs in old:
            if replicas_of(rs) > 0:
                await scale_rs(s, d, rs, 0)
        return
    if d.spec.strategy.type != "RollingUpdate":
        return
    surge, _ = fenceposts(d)
    allowed = want + surge if want > 0 else 0
    current = sum(replicas_of(rs) for rs in active)
    to_add = allowed - current
    if to_add > 0:
        ordered = sorted(active, key=lambda rs: (-replicas_of(rs), -by_creation(rs)[0]))
    else:
        ordered = sorted(active, key=lambda rs: (-replicas_of(rs), by_creation(rs)[0]))
    sizes: dict[str, int] = {}
    added = 0
    if to_add != 0:
        for rs in ordered:
            share = proportion(rs, d, to_add, added, surge)
            sizes[rs.metadata.uid] = replicas_of(rs) + share
            added += share
    for i, rs in enumerate(ordered):
        size = sizes.get(rs.metadata.uid, replicas_of(rs))
        if i == 0 and to_add != 0:
            size += to_add - added  # leftovers to the largest
            size = max(size, 0)
        await scale_rs(s, d, rs, size)


def proportion(
    rs: apps_pb2.ReplicaSet, d: apps_pb2.Deployment, to_add: int, added: int, surge: int
) -> int:
    if to_add == 0:
        return 0
    want = replicas_of(d)
    if want == 0:
        fraction = -replicas_of(rs)
    else:
        deployment_size = want + surge
        annotated = int_annotation(rs, MAX_REPLICAS)
        if annotated is None or annotated <= 0:
            annotated = d.status.replicas or deployment_size
        new_size = math.floor(replicas_of(rs) * deployment_size / annotated + 0.5)
        fraction = new_size - replicas_of(rs)
    allowed = to_add - added
    return min(allowed, fraction) if to_add > 0 else max(allowed, fraction)
