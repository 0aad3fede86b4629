"""Eviction for an emptyDir over its sizeLimit, as Kubernetes' kubelet does: the pod's
containers stop and the pod is Failed, reason Evicted, with Kubernetes' message. Checked by
the pod worker after each sync and every SIZE_CHECK_INTERVAL while the pod has such a volume
(a process runtime only: the simulated one has no files).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence

from k8semu.api.errors import QuantityError
from k8semu.kubelet.runtime import Runtime
from k8semu.kubelet.volumes import size_limits
from k8semu.pb.api.v1 import core_pb2

SIZE_CHECK_INTERVAL = 1.0  # seconds between checks of a pod's emptyDir sizeLimits


def bytes_under(dirs: Sequence[str]) -> int:
    """The size of the regular files under `dirs` (links not followed)."""
    total = 0
    for top in dirs:
        for root, _, files in os.walk(top):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, f)).st_size
    return total


async def exceeded_size_limit(pod: core_pb2.Pod, uid: str, runtime: Runtime) -> tuple[str, bool]:
    """(the eviction message, or "" when every emptyDir is within its limit; whether the
    pod has limits to check again)."""
    pod_dir = getattr(runtime, "pod_dir", None)
    if pod_dir is None:
        return "", False
    try:
        limits = size_limits(pod, str(pod_dir(uid)))
    except (QuantityError, ValueError):
        return "", False  # the API server checked the quantity: nothing to enforce
    for name, dirs, limit, text in limits:
        if await asyncio.to_thread(bytes_under, dirs) > limit:
            return f'Usage of EmptyDir volume "{name}" exceeds the limit "{text}". ', False
    return "", bool(limits)
