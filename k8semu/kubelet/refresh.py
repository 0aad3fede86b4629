"""A running pod's configMap, secret, downwardAPI and projected volumes follow their objects
(Kubernetes' kubelet projects them again at every pod sync, at least every --sync-frequency).

Every `period` (`--sync-frequency`; each pod at a phase of its own within the period, from a
hash of its uid, so that the pods of one Deployment do not all read at once), and at once when
the pod's labels or annotations change (downwardAPI files), a pod worker whose running
containers mount such volumes (not through a subPath: those, like environment variables, keep
what their container started with) reads the ConfigMaps and Secrets the volumes use (an
immutable one only once) and has the runtime write each mount whose files changed, by an
atomic swap (kubelet/projection.py). This is Kubernetes' "Get" change detection strategy: the
Node authorizer lets a kubelet get the objects its pods use, not watch them.

A missing object or key keeps the files as they were, with one Warning event `FailedMount`
per new message (Kubernetes' wording), unless its source is optional: then its files go.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol

from k8semu.client import ClientError
from k8semu.kubelet.env import EnvError, PodFacts, volume_object_names
from k8semu.kubelet.runtime import Projection, RunAs, Runtime, StartError
from k8semu.kubelet.volumes import projection_of, refreshed_mounts
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2

log = get_logger(__name__)

Objects = tuple[dict[str, core_pb2.ConfigMap], dict[str, core_pb2.Secret]]


class RefreshHost(Protocol):
    """What a refresh needs of the node agent (a pod worker's PodHost is one)."""

    runtime: Runtime

    async def lookup_refs(
        self, pod: core_pb2.Pod, names: tuple[set[str], set[str]] | None = None
    ) -> Objects: ...


def _phase(uid: str) -> float:
    """Where in the period a pod's refreshes fall, 0..1, the same for a pod on every run."""
    return int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16) / 2**32


def _meta(pod: core_pb2.Pod) -> tuple[tuple[tuple[str, str], ...], ...]:
    return tuple(sorted(pod.metadata.labels.items())), tuple(
        sorted(pod.metadata.annotations.items())
    )


class VolumeRefresh:
    """One per pod worker. `due` says when to call `run`; `next_due` when to wake up for it."""

    def __init__(self, period: float, uid: str, now: float) -> None:
        self.period = period
        self.next_due = now + period * _phase(uid)
        self._meta: tuple[tuple[tuple[str, str], ...], ...] | None = None
        self._immutable: Objects = ({}, {})
        self._reported: dict[str, str] = {}  # mount path -> its last FailedMount message

    def due(self, pod: core_pb2.Pod, now: float) -> bool:
        return now >= self.next_due or (self._meta is not None and _meta(pod) != self._meta)

    async def _objects(self, host: RefreshHost, pod: core_pb2.Pod) -> Objects | None:
        cms, secrets = volume_object_names(pod)
        kept_cms, kept_secrets = self._immutable
        names = (cms - set(kept_cms), secrets - set(kept_secrets))
        try:
            got_cms, got_secrets = await host.lookup_refs(pod, names) if any(names) else ({}, {})
        except ClientError as exc:  # the API server is away: the next period tries again
            log.info("volumes not refreshed", pod=pod.metadata.name, error=str(exc))
            return None
        kept_cms.update({n: o for n, o in got_cms.items() if o.immutable})
        kept_secrets.update({n: o for n, o in got_secrets.items() if o.immutable})
        return {**got_cms, **kept_cms}, {**got_secrets, **kept_secrets}

    async def run(
        self,
        host: RefreshHost,
        pod: core_pb2.Pod,
        containers: Sequence[tuple[core_pb2.Container, str]],
        facts: PodFacts,
        warn: Callable[[str, str], None],
        now: float,
    ) -> None:
        """Write again what changed of the volumes `containers` (running, each with where
        it is in the spec) mount; `warn(reason, message)` records a Warning event."""
        self.next_due = now + self.period
        self._meta = _meta(pod)
        wanted = [(c, where, refreshed_mounts(pod, c)) for c, where in containers]
        if not any(idx for _, _, idx in wanted):
            return
        objects = await self._objects(host, pod)
        if objects is None:
            return
        seen: set[str] = set()
        for container, where, idx in wanted:
            projections: list[Projection] = []
            for i in idx:
                mount = container.volume_mounts[i]
                if mount.mount_path.rstrip("/") in seen:
                    continue
                seen.add(mount.mount_path.rstrip("/"))
                try:
                    projections.append(projection_of(pod, container, i, objects, facts, where))
                except EnvError as exc:
                    self._failed(mount, str(exc), warn)
            try:
                await host.runtime.project(pod.metadata.uid, projections, RunAs.of(pod, container))
            except StartError as exc:
                log.warning("volumes not refreshed", pod=pod.metadata.name, error=exc.message)
                continue
            for p in projections:
                self._reported.pop(p.path, None)

    def _failed(
        self, mount: core_pb2.VolumeMount, message: str, warn: Callable[[str, str], None]
    ) -> None:
        """The mount keeps its files; a new message is an event (once, not every period)."""
        path = mount.mount_path.rstrip("/")
        if self._reported.get(path) == message:
            return
        self._reported[path] = message
        log.info("volume kept as it was", volume=mount.name, error=message)
        warn("FailedMount", f'MountVolume.SetUp failed for volume "{mount.name}" : {message}')
