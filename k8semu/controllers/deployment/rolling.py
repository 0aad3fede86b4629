"""RollingUpdate (Kubernetes' rolling.go): scale the new ReplicaSet up within
replicas + maxSurge, old ones down (unhealthy pods first) while at least
replicas - maxUnavailable pods stay available."""

from __future__ import annotations

from k8semu.controllers.deployment.history import cleanup
from k8semu.controllers.deployment.progress import (
    calculate_status,
    sync_status,
)
from k8semu.controllers.deployment.sync import (
    get_all,
    new_rs_replicas,
    scale_rs,
)
from k8semu.controllers.deployment.syncer import Syncer
from k8semu.controllers.deployment.util import (
    by_creation,
    deployment_complete,
    max_unavailable,
    replicas_of,
)
from k8semu.pb.api.v1 import apps_pb2


async def rollout_rolling(
    s: Syncer, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]
) -> None:
    d, new_rs, old = await get_all(s, d, rs_list, create=True)
    assert new_rs is not None
    all_rss = [new_rs, *old]
    if await reconcile_new_rs(s, d, all_rss, new_rs):
        await sync_status(s, d, new_rs, old)
        return
    if await reconcile_old_rss(s, d, all_rss, old, new_rs):
        await sync_status(s, d, new_rs, old)
        return
    status = calculate_status(s, d, new_rs, old)
    if deployment_complete(d, status):
        await cleanup(s, d, old)
    await sync_status(s, d, new_rs, old)


async def reconcile_new_rs(
    s: Syncer,
    d: apps_pb2.Deployment,
    all_rss: list[apps_pb2.ReplicaSet],
    new_rs: apps_pb2.ReplicaSet,
) -> bool:
    want = replicas_of(d)
    current = replicas_of(new_rs)
    if current == want:
        return False
    if current > want:
        return await scale_rs(s, d, new_rs, want)
    return await scale_rs(s, d, new_rs, new_rs_replicas(d, all_rss, new_rs))


async def reconcile_old_rss(
    s: Syncer,
    d: apps_pb2.Deployment,
    all_rss: list[apps_pb2.ReplicaSet],
    old: list[apps_pb2.ReplicaSet],
    new_rs: apps_pb2.ReplicaSet,
) -> bool:
    if sum(replicas_of(rs) for rs in old) == 0:
        return False
    all_pods = sum(replicas_of(rs) for rs in all_rss)
    min_available = replicas_of(d) - max_unavailable(d)
    new_unavailable = replicas_of(new_rs) - new_rs.status.available_replicas
    max_scaled_down = all_pods - min_available - new_unavailable
    if max_scaled_down <= 0:
        return False
    cleaned = await cleanup_unhealthy(s, d, old, max_scaled_down)
    scaled = await scale_down_old_for_rolling(s, d, all_rss, old)
    return cleaned + scaled > 0


async def cleanup_unhealthy(
    s: Syncer, d: apps_pb2.Deployment, old: list[apps_pb2.ReplicaSet], max_cleanup: int
) -> int:
    """Scale old ReplicaSets down by their unavailable pods first (oldest first): they
    add nothing to availability."""
    total = 0
    for rs in sorted(old, key=by_creation):
        if total >= max_cleanup:
            break
        size = replicas_of(rs)
        if size == 0:
            continue
        unhealthy = size - rs.status.available_replicas
        if unhealthy <= 0:
            continue
        down = min(max_cleanup - total, unhealthy)
        await scale_rs(s, d, rs, size - down)
        total += down
    return total


async def scale_down_old_for_rolling(
    s: Syncer,
    d: apps_pb2.Deployment,
    all_rss: list[apps_pb2.ReplicaSet],
    old: list[apps_pb2.ReplicaSet],
) -> int:
    min_available = replicas_of(d) - max_unavailable(d)
    available = sum(rs.status.available_replicas for rs in all_rss)
    if available <= min_available:
        return 0
    to_scale = available - min_available
    total = 0
    for rs in sorted(old, key=by_creation):
        if total >= to_scale:
            break
        size = replicas_of(rs)
        if size == 0:
            continue
        down = min(size, to_scale - total)
        await scale_rs(s, d, rs, size - down)
        total += down
    return total
