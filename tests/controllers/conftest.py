"""Fixtures and builders for controller tests.

- `FakeCluster`: sample-controller style. Controllers get a context around a RecordingClient;
  `sync()` makes the informer caches equal to what the client holds (as if the watches had
  delivered every write), `kubelet()` marks pods Running and Ready. Nothing runs by itself:
  the test calls `reconcile(key)` and looks at `client.actions`.
- Real processes: `store`/`apiserver`/`namespace` come from tests.support.fixtures, `client`
  is overridden here; `ControllerManagerProcess` runs `python -m k8semu controller-manager`.
- Object builders: `rs(...)`, `pod(...)`, `deployment(...)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from google.protobuf.message import Message

from k8semu.client import Client, ClientError, Informer, SharedInformers
from k8semu.client.events import EventRecorder
from k8semu.cluster.component import ComponentProcess
from k8semu.controllers.context import ControllerContext, ControllerManagerConfig
from k8semu.controllers.manager import ControllerManager
from k8semu.pb.api.v1 import (
    apps_pb2,
    autoscaling_pb2,
    batch_pb2,
    core_pb2,
    discovery_pb2,
    meta_pb2,
    policy_pb2,
    quota_pb2,
    storage_pb2,
)
from tests.scheduler.conftest import SchedulerProcess
from tests.support.apiserver import APIServerProcess
from tests.support.fakeclient import RecordingClient

T0 = 1_700_000_000.0  # the fake clock's start (seconds since the epoch)


# ---- fake time, events and cluster ----------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RecordedEvent:
    object_name: str
    type: str
    reason: str
    message: str


@dataclass
class FakeRecorder:
    """Stands in for EventRecorder: keeps the events in a list."""

    events: list[RecordedEvent] = field(default_factory=list)

    def event(self, obj: Message, type_: str, reason: str, message: str) -> None:
        self.events.append(RecordedEvent(cast(Any, obj).metadata.name, type_, reason, message))

    def messages(self, reason: str = "") -> list[str]:
        return [e.message for e in self.events if not reason or e.reason == reason]


class CapturingRecorder(EventRecorder):
    """An EventRecorder (where one is typed) that keeps (reason, object name, message)
    instead of writing Events."""

    def __init__(self) -> None:
        super().__init__(cast(Client, None), "test")
        self.events: list[tuple[str, str, str]] = []

    def event(self, obj: Message, type_: str, reason: str, message: str) -> None:
        self.events.append((reason, cast(Any, obj).metadata.name, message))


class ControllerHarness:
    """One controller's unit-test context: a RecordingClient and captured events. A test's
    harness builds its controller on `self.ctx` and calls `reconcile(key)` itself."""

    def __init__(self, config: ControllerManagerConfig | None = None) -> None:
        self.client = RecordingClient()
        self.recorder = CapturingRecorder()
        self.ctx = ControllerContext(
            client=cast(Client, self.client),
            informers=SharedInformers(cast(Client, self.client)),
            recorder=self.recorder,
            config=config or ControllerManagerConfig(),
        )

    def refresh(self, *informers: Informer[Any]) -> None:
        """The informers' caches catch up with what the client holds, as their watches
        would (without calling their handlers)."""
        for informer in informers:
            live = {
                (ns + "/" + name if ns else name): obj
                for (plural, ns, name), obj in self.client.objects.items()
                if plural == informer.kind.plural
            }
            for key in list(informer.cache.keys()):
                if key not in live:
                    informer.cache.remove(key)
            for obj in live.values():
                informer.cache.put(obj)


_KINDS: tuple[tuple[str, type[Message]], ...] = (
    ("pods", core_pb2.Pod),
    ("replicasets", apps_pb2.ReplicaSet),
    ("deployments", apps_pb2.Deployment),
    ("daemonsets", apps_pb2.DaemonSet),
    ("statefulsets", apps_pb2.StatefulSet),
    ("controllerrevisions", apps_pb2.ControllerRevision),
    ("persistentvolumeclaims", core_pb2.PersistentVolumeClaim),
    ("persistentvolumes", core_pb2.PersistentVolume),
    ("storageclasses", storage_pb2.StorageClass),
    ("nodes", core_pb2.Node),
    ("jobs", batch_pb2.Job),
    ("cronjobs", batch_pb2.CronJob),
    ("poddisruptionbudgets", policy_pb2.PodDisruptionBudget),
    ("horizontalpodautoscalers", autoscaling_pb2.HorizontalPodAutoscaler),
    ("resourcequotas", quota_pb2.ResourceQuota),
    ("services", core_pb2.Service),
    ("configmaps", core_pb2.ConfigMap),
    ("secrets", core_pb2.Secret),
    ("endpointslices", discovery_pb2.EndpointSlice),
)


class FakeCluster:
    def __init__(self, *, workers: int = 1) -> None:
        self.clock = FakeClock()
        self.client = RecordingClient()
        self.recorder = FakeRecorder()
        self.informers = SharedInformers(cast(Client, self.client))
        self.ctx = ControllerContext(
            client=cast(Client, self.client),
            informers=self.informers,
            recorder=cast(EventRecorder, self.recorder),
            config=ControllerManagerConfig(workers=workers),
        )
        self._created = 0

    def add(self, *objs: Message) -> None:
        """Seed objects (no action recorded) and sync the caches."""
        self.client.seed(*objs)
        self.sync()

    def sync(self) -> None:
        """Caches := the client's objects, with the add/update/delete events an informer
        would deliver to the controllers' handlers; objects created without a
        creationTimestamp get one, in creation order, from the fake clock."""
        for plural, kind in _KINDS:
            cache = self.informers.informer(kind).cache
            live = {
                (ns + "/" + name if ns else name): obj
                for (p, ns, name), obj in self.client.objects.items()
                if p == plural
            }
            informer = self.informers.informer(kind)
            for key in list(cache.keys()):
                if key not in live:
                    gone = cache.get(key)
                    assert gone is not None
                    informer._delete(gone)  # the watch's DELETED event, to the handlers
            for key, obj in live.items():
                m = cast(Any, obj).metadata
                if not m.HasField("creation_timestamp"):
                    self._created += 1
                    m.creation_timestamp.FromNanoseconds(
                        int((self.clock() + self._created * 1e-3) * 1e9)
                    )
                cached = cache.get(key)
                if cached is not None and cached == obj:
                    continue
                copy = type(obj)()
                copy.CopyFrom(obj)
                informer._upsert(copy)  # ADDED/MODIFIED, to the handlers

    async def drain(self, *controllers: Any, check: Callable[[], None] | None = None) -> int:
        """Act as the controllers' workers until no queue holds a ready key: take a key,
        reconcile it, sync the caches (every write is seen at once), run `check`. Returns
        the reconciles done. Errors re-queue the key, as the worker loop does."""
        done = 0
        while any(len(c.queue) for c in controllers):
            for c in controllers:
                while len(c.queue):
                    key = await c.queue.get()
                    try:
                        await c.reconcile(key)
                    except ClientError:
                        c.queue.add(key)
                    finally:
                        c.queue.done(key)
                    self.sync()
                    if check is not None:
                        check()
                    done += 1
                    if done > 2000:
                        raise AssertionError("controllers do not settle")
        return done

    async def start_pods_one_by_one(
        self, *controllers: Any, steps: int, check: Callable[[], None] | None = None
    ) -> None:
        """At most `steps` times: drain the controllers, then mark one waiting pod Running and
        Ready (a kubelet that brings up one pod at a time, so every step of a rollout
        shows), and run `check`; done when no pod waits."""
        for _ in range(steps):
            await self.drain(*controllers, check=check)
            waiting = [p for p in self.objects(core_pb2.Pod) if p.status.phase != "Running"]
            if not waiting:
                return
            name = waiting[0].metadata.name
            self.kubelet(only=lambda p, name=name: p.metadata.name == name)
            if check is not None:
                check()

    def objects(self, kind: type[Any]) -> list[Any]:
        plural = dict((k, p) for p, k in _KINDS)[kind]
        return [o for (p, _, _), o in sorted(self.client.objects.items()) if p == plural]

    def kubelet(self, *, ready: bool = True, only: Callable[[Any], bool] | None = None) -> None:
        """Mark pods Running (and Ready since now), as a kubelet would; then sync."""
        for pod in self.objects(core_pb2.Pod):
            if only is not None and not only(pod):
                continue
            if pod.status.phase == "Running":
                continue
            pod.status.phase = "Running"
            if ready:
                set_ready(pod, self.clock())
            self.client.seed(pod)
        self.sync()


def set_ready(pod: core_pb2.Pod, since: float) -> None:
    del pod.status.conditions[:]
    cond = pod.status.conditions.add(type="Ready", status="True")
    cond.last_transition_time.FromNanoseconds(int(since * 1e9))


# ---- builders ---------------------------------------------------------------------------------


def template(labels: dict[str, str], image: str = "nginx:1") -> core_pb2.PodTemplateSpec:
    t = core_pb2.PodTemplateSpec()
    t.metadata.labels.update(labels)
    t.spec.containers.add(name="c", image=image)
    t.spec.restart_policy = "Always"
    return t


def rs(
    name: str,
    replicas: int,
    labels: dict[str, str] | None = None,
    *,
    namespace: str = "default",
    uid: str = "",
    min_ready_seconds: int = 0,
    generation: int = 1,
) -> apps_pb2.ReplicaSet:
    labels = labels or {"app": name}
    out = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    out.metadata.name = name
    out.metadata.namespace = namespace
    out.metadata.uid = uid or f"uid-rs-{name}"
    out.metadata.generation = generation
    out.metadata.labels.update(labels)
    out.spec.replicas = replicas
    out.spec.min_ready_seconds = min_ready_seconds
    out.spec.selector.match_labels.update(labels)
    out.spec.template.CopyFrom(template(labels))
    return out


def pod(
    name: str,
    labels: dict[str, str],
    *,
    owner: Message | None = None,
    namespace: str = "default",
    node: str = "",
    phase: str = "Pending",
    ready_since: float | None = None,
    restarts: int = 0,
    created: float = T0 - 100,
) -> core_pb2.Pod:
    out = core_pb2.Pod(api_version="v1", kind="Pod")
    out.metadata.name = name
    out.metadata.namespace = namespace
    out.metadata.uid = f"uid-pod-{name}"
    out.metadata.labels.update(labels)
    out.metadata.creation_timestamp.FromNanoseconds(int(created * 1e9))
    if owner is not None:
        om = cast(Any, owner).metadata
        out.metadata.owner_references.add(
            api_version="apps/v1",
            kind=type(owner).DESCRIPTOR.name,
            name=om.name,
            uid=om.uid,
            controller=True,
            block_owner_deletion=True,
        )
    out.spec.node_name = node
    out.spec.containers.add(name="c", image="nginx:1")
    out.status.phase = phase
    if ready_since is not None:
        set_ready(out, ready_since)
    if restarts:
        out.status.container_statuses.add(name="c", restart_count=restarts)
    return out


def deployment(
    name: str,
    replicas: int,
    *,
    image: str = "nginx:1",
    strategy: str = "RollingUpdate",
    max_surge: int | str | None = None,
    max_unavailable: int | str | None = None,
    namespace: str = "default",
    revision_history_limit: int = 10,
    progress_deadline_seconds: int | None = 600,
    min_ready_seconds: int = 0,
    paused: bool = False,
) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name = name
    d.metadata.namespace = namespace
    d.metadata.uid = f"uid-deploy-{name}"
    d.metadata.generation = 1
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = name
    d.spec.template.CopyFrom(template({"app": name}, image))
    d.spec.strategy.type = strategy
    if strategy == "RollingUpdate":
        for field_name, value in (("max_surge", max_surge), ("max_unavailable", max_unavailable)):
            target = getattr(d.spec.strategy.rolling_update, field_name)
            if value is None:
                target.str_val = "25%"
            elif isinstance(value, int):
                target.int_val = value
            else:
                target.str_val = value
    d.spec.revision_history_limit = revision_history_limit
    if progress_deadline_seconds is not None:
        d.spec.progress_deadline_seconds = progress_deadline_seconds
    d.spec.min_ready_seconds = min_ready_seconds
    d.spec.paused = paused
    return d


def int_or_string(value: int | str) -> meta_pb2.IntOrString:
    out = meta_pb2.IntOrString()
    if isinstance(value, int):
        out.int_val = value
    else:
        out.str_val = value
    return out


# ---- real processes -------------------------------------------------------------------------


@pytest.fixture
async def client(apiserver: APIServerProcess) -> AsyncIterator[Client]:
    """The shared fixture's client with the default retries, as the controllers themselves
    use, rather than the shared fast ones."""
    async with Client([apiserver.address]) as c:
        yield c


# Fast leader election so a take-over happens within a couple of seconds.
FAST_ELECTION = (
    "--leader-elect-lease-duration", "2s",
    "--leader-elect-renew-deadline", "1500ms",
    "--leader-elect-retry-period", "250ms",
)  # fmt: skip


class ControllerManagerProcess(ComponentProcess):
    """`python -m k8semu controller-manager` on a free loopback health port, ended by pid."""

    component = "controller-manager"

    def __init__(
        self, server: str, log_path: Path, extra_args: Sequence[str] = (), *, start: bool = True
    ) -> None:
        self.server = server
        self.extra_args = tuple(extra_args)
        super().__init__(
            "controller-manager",
            ["--server", server, "--log-level", "info", *self.extra_args],
            log_path,
        )
        if start:
            self.start()


@contextlib.asynccontextmanager
async def controller_manager(client: Client, *controllers: str) -> AsyncIterator[ControllerManager]:
    """An in-process controller manager running only `controllers` (no leader election, no
    health server; the garbage collector re-scans every second)."""
    config = ControllerManagerConfig(controllers=controllers, gc_interval=1.0)
    cm = ControllerManager(config, client, leader_elect=False, listen_address=None)
    await cm.start()
    try:
        yield cm
    finally:
        await cm.stop(1.0)


@pytest.fixture
def scheduler(apiserver: APIServerProcess, tmp_path: Path) -> Iterator[SchedulerProcess]:
    s = SchedulerProcess(apiserver.address, tmp_path / "scheduler.log")
    try:
        s.wait_serving()
        yield s
    finally:
        s.close()
