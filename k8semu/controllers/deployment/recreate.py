"""Recreate (Kubernetes' recreate.go): scale every old ReplicaSet to 0, wait until their
pods are gone, then create or scale the new one."""

from __future__ import annotations

from k8semu.client import OWNER_UID_INDEX
from k8semu.controllers.deployment.history import cleanup
from k8semu.controllers.deployment.progress import (
    calculate_status,
    sync_status,
)
from k8semu.controllers.deployment.rolling import reconcile_new_rs
from k8semu.controllers.deployment.sync import (
    get_all,
    scale_rs,
)
from k8semu.controllers.deployment.syncer import Syncer
from k8semu.controllers.deployment.util import (
    deployment_complete,
    replicas_of,
)
from k8semu.pb.api.v1 import apps_pb2


async def rollout_recreate(
    s: Syncer, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]
) -> None:
    d, new_rs, old = await get_all(s, d, rs_list, create=False)
    scaled = False
    for rs in old:
        if replicas_of(rs) > 0:
            scaled = await scale_rs(s, d, rs, 0) or scaled
    if scaled:
        await sync_status(s, d, new_rs, old)
        return
    if old_pods_running(s, old):
        await sync_status(s, d, new_rs, old)
        return
    if new_rs is None:
        d, new_rs, old = await get_all(s, d, rs_list, create=True)
        assert new_rs is not None
    await reconcile_new_rs(s, d, [new_rs, *old], new_rs)
    status = calculate_status(s, d, new_rs, old)
    if deployment_complete(d, status):
        await cleanup(s, d, old)
    await sync_status(s, d, new_rs, old)


def old_pods_running(s: Syncer, old: list[apps_pb2.ReplicaSet]) -> bool:
    for rs in old:
        if rs.status.replicas > 0:
            return True
        for pod in s.pods.by_index(OWNER_UID_INDEX, rs.metadata.uid):
            if pod.status.phase not in ("Succeeded", "Failed"):
                return True
    return False
