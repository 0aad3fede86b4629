"""What the sync steps of a Deployment controller share (`Syncer`): the client, the event
recorder, the clock, the pods cache, the work queue, and the resourceVersions it wrote."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from k8semu.client import Client, Indexer
from k8semu.client.events import EventRecorder
from k8semu.client.workqueue import WorkQueue
from k8semu.pb.api.v1 import apps_pb2, core_pb2


@dataclass(slots=True, kw_only=True, eq=False)
class Syncer:
    """The state every sync step of one DeploymentController reads or writes.

    `pods` is the pods cache (Recreate waits for old pods to be gone); `queue` takes a
    Deployment back when its progress deadline would pass. `_written` maps a uid to the
    resourceVersion this controller wrote: a cached copy older than that is stale, and
    deciding on it could scale twice."""

    client: Client
    recorder: EventRecorder
    clock: Callable[[], float]
    pods: Indexer[core_pb2.Pod]
    queue: WorkQueue[str]
    _written: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def stale(self, obj: apps_pb2.Deployment | apps_pb2.ReplicaSet) -> bool:
        written = self._written.get(obj.metadata.uid)
        if written is None:
            return False
        try:
            current = int(obj.metadata.resource_version)
        except ValueError:
            return False
        if current >= written:
            del self._written[obj.metadata.uid]
            return False
        return True

    def remember(self, obj: apps_pb2.Deployment | apps_pb2.ReplicaSet) -> None:
        with contextlib.suppress(ValueError):
            self._written[obj.metadata.uid] = int(obj.metadata.resource_version)

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)

    async def write_status(self, d: apps_pb2.Deployment) -> apps_pb2.Deployment:
        updated = cast(apps_pb2.Deployment, await self.client.update_status(d))
        self.remember(updated)
        return updated
