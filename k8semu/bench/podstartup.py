"""Pod startup latency as Kubernetes' SLI defines it: from a pod's creationTimestamp to the
moment a watcher sees it Running (all containers started), with the phases in between.

A `PodStartupTracker` watches pods (through k8semu.client) and stamps, per pod, the wall
clock when the watch first showed it bound (spec.nodeName set), started (phase Running) and
Ready. `created` is the pod's creationTimestamp; `scheduled` is the PodScheduled condition's
lastTransitionTime when the scheduler wrote it (else the bind observation); `started` is the
kubelet's status.startTime. Server-side stamps and watch stamps share one machine's clock.
Owns the measuring only: it creates nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf import timestamp_pb2

from k8semu.bench._common import Summary, cancel, summarize
from k8semu.client import Client, ClientError, EventType
from k8semu.pb.api.v1 import core_pb2

PHASES = ("scheduled", "bound", "started", "running", "ready")


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


@dataclass(slots=True)
class PodTimes:
    """Wall-clock seconds; 0.0 for a phase not (yet) seen."""

    created: float = 0.0
    scheduled: float = 0.0
    bound: float = 0.0
    started: float = 0.0
    running: float = 0.0
    ready: float = 0.0
    node: str = ""


@dataclass(slots=True)
class PodStartupTracker:
    """Tracks the pods of `namespace` (all when "") whose names start with `prefix`."""

    client: Client
    namespace: str = ""
    prefix: str = ""
    pods: dict[str, PodTimes] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _resource_version: str = ""

    async def start(self) -> None:
        """List (to start the watch from now), then watch in the background."""
        listed = await self.client.list(core_pb2.Pod, namespace=self.namespace or None, limit=1)
        self._resource_version = listed.resource_version
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)

    def count(self, phase: str) -> int:
        return sum(1 for t in self.pods.values() if getattr(t, phase))

    async def wait_for(self, phase: str, n: int, timeout: float) -> bool:
        """Until `n` pods reached `phase`; False if `timeout` passed first."""
        end = time.monotonic() + timeout
        while self.count(phase) < n:
            if time.monotonic() > end:
                return False
            await asyncio.sleep(0.05)
        return True

    def observe(self, pod: core_pb2.Pod, now: float) -> None:
        name = pod.metadata.name
        if self.prefix and not name.startswith(self.prefix):
            return
        t = self.pods.get(name)
        if t is None:
            t = self.pods[name] = PodTimes(created=_seconds(pod.metadata.creation_timestamp))
        if pod.spec.node_name and not t.bound:
            t.bound = now
            t.node = pod.spec.node_name
            for c in pod.status.conditions:
                if c.type == "PodScheduled" and c.status == "True":
                    t.scheduled = _seconds(c.last_transition_time)
            t.scheduled = t.scheduled or now
        if pod.status.HasField("start_time") and not t.started:
            t.started = _seconds(pod.status.start_time)
        if pod.status.phase == "Running" and not t.running:
            t.running = now
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
        if ready and not t.ready:
            t.ready = now

    async def _watch(self) -> None:
        while True:
            try:
                async for event in self.client.watch(
                    core_pb2.Pod,
                    namespace=self.namespace or None,
                    resource_version=self._resource_version,
                ):
                    if event.type == EventType.BOOKMARK:
                        self._resource_version = event.object.metadata.resource_version
                        continue
                    self._resource_version = event.object.metadata.resource_version
                    if event.type != EventType.DELETED:
                        self.observe(event.object, time.time())
            except ClientError:
                await asyncio.sleep(0.2)  # resume from the last resourceVersion seen


def breakdown(pods: Sequence[PodTimes]) -> dict[str, Summary]:
    """Per phase, seconds from the previous one; "startup" is created -> running (the SLI)."""
    done = [t for t in pods if t.running]
    out = {
        "startup": summarize([t.running - t.created for t in done]),
        "created->scheduled": summarize([t.scheduled - t.created for t in done if t.scheduled]),
        "scheduled->bound": summarize([t.bound - t.scheduled for t in done if t.scheduled]),
        "bound->started": summarize([t.started - t.bound for t in done if t.started]),
        "started->observed": summarize([t.running - t.started for t in done if t.started]),
    }
    return out
