"""What every controller is built from: the client, the process's shared informers, the Events
recorder, and the controller manager's config (every timing in one place, design decision 6).

A controller is a class with a `name`, a constructor taking a `ControllerContext` (where it
asks `ctx.informers` for the informers it needs and registers its event handlers, which only
enqueue keys), `async reconcile(key)` (level-triggered: read the cache, write through the
client, compare-and-swap), and `async run()` that waits for its informers to sync and then
runs its workers until cancelled. Unit tests build a context around a RecordingClient, put
objects into the informers' caches and call `reconcile` directly (sample-controller style).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from google.protobuf.message import Message

from k8semu.client import (
    DEFAULT_LEADER_ELECTION,
    NAMESPACE_INDEX,
    OWNER_UID_INDEX,
    Client,
    Conflict,
    Informer,
    LeaderElectionConfig,
    SharedInformers,
    index_by_namespace,
    index_by_owner_uid,
    object_key,
)
from k8semu.client._models import meta
from k8semu.client.controller import run_workers
from k8semu.client.events import EventRecorder
from k8semu.client.workqueue import WorkQueue
from k8semu.controllers._pods import controller_ref
from k8semu.controllers.clusterautoscaler.pools import NodePool
from k8semu.log import get_logger

log = get_logger(__name__)

M = TypeVar("M", bound=Message)

# A controller manager stopped on purpose (SIGTERM, a rolling restart) ends its controllers and
# then clears the Lease, so the standby takes over at its next retry instead of waiting out
# the lease duration, as the scheduler does.
CONTROLLER_MANAGER_LEADER_ELECTION = dataclasses.replace(
    DEFAULT_LEADER_ELECTION, release_on_cancel=True
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerManagerConfig:
    """Timings in seconds; emulator defaults are fast, Kubernetes' own are noted.

    - `workers`: concurrent reconciles per controller (kube-controller-manager: 5).
    - `node_monitor_period`: how often node lifecycle checks node leases (Kubernetes: 5 s).
    - `node_monitor_grace_period`: a node whose Lease was not renewed for this long is marked
      NotReady/Unknown and tainted (Kubernetes: 40 s).
    - `pod_eviction_timeout`: pods on a node tainted not-ready/unreachable (NoExecute) are
      evicted after this, unless they tolerate the taint for longer (Kubernetes: the 300 s
      default tolerationSeconds).
    - `cluster_cidr`/`node_cidr_mask_size`: node IPAM hands each node one subnet of this size
      from the cluster CIDR; `service_cidr` is the Service range (for information).
    - `gc_interval`: how often the garbage collector re-scans for orphans besides its events.
    - `hpa_sync_period`: how often each HorizontalPodAutoscaler is evaluated (Kubernetes: 15 s).
    - `hpa_tolerance`: no scaling while the metric is within this fraction of its target (0.1).
    - `hpa_cpu_initialization_period`: after a pod starts, its CPU samples count only once it is
      ready and sampled after its readiness changed (Kubernetes: 5 min).
    - `hpa_initial_readiness_delay`: a pod that turned ready this soon after its start counts
      as having been ready from the start (Kubernetes: 30 s).
    - `hpa_downscale_stabilization`: a scale-down waits until every recommendation of this
      window agreed (Kubernetes: 5 min; an HPA's behavior may set its own window).
    - `node_pools`: the autoscaled node pools the cluster autoscaler sizes (none: it idles).
    - `scan_interval`: how often the cluster autoscaler looks at pending pods and node
      utilization (cluster-autoscaler's --scan-interval: 10 s).
    - `root_ca`: the cluster CA (PEM) the root-ca-cert-publisher writes into every
      namespace's kube-root-ca.crt ConfigMap ("": none, a plain cluster).
    - `signing_cert`, `signing_key`: the CA (PEM) csrsigning signs approved
      CertificateSigningRequests with ("": none, nothing is signed).
    - `controllers`: names to run; "*" is all.
    """

    workers: int = 5
    node_monitor_period: float = 0.5
    node_monitor_grace_period: float = 6.0
    pod_eviction_timeout: float = 5.0
    cluster_cidr: str = "127.244.0.0/16"
    node_cidr_mask_size: int = 24
    service_cidr: str = "127.96.0.0/16"
    gc_interval: float = 30.0
    hpa_sync_period: float = 15.0
    hpa_tolerance: float = 0.1
    hpa_cpu_initialization_period: float = 300.0
    hpa_initial_readiness_delay: float = 30.0
    hpa_downscale_stabilization: float = 300.0
    node_pools: tuple[NodePool, ...] = ()
    scan_interval: float = 1.0
    root_ca: str = ""
    signing_cert: str = ""
    signing_key: str = ""
    controllers: tuple[str, ...] = ("*",)
    leader_election: LeaderElectionConfig = field(default=CONTROLLER_MANAGER_LEADER_ELECTION)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers: must be >= 1, got {self.workers}")
        for name in (
            "node_monitor_period",
            "node_monitor_grace_period",
            "gc_interval",
            "hpa_sync_period",
            "scan_interval",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.pod_eviction_timeout < 0:
            raise ValueError(f"pod_eviction_timeout: must be >= 0, got {self.pod_eviction_timeout}")
        for name in (
            "hpa_tolerance",
            "hpa_cpu_initialization_period",
            "hpa_initial_readiness_delay",
            "hpa_downscale_stabilization",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not 8 <= self.node_cidr_mask_size <= 30:
            raise ValueError(f"node_cidr_mask_size: must be 8..30, got {self.node_cidr_mask_size}")


DEFAULT_CONTROLLER_MANAGER = ControllerManagerConfig()


@dataclass(slots=True)
class ControllerContext:
    client: Client
    informers: SharedInformers
    recorder: EventRecorder
    config: ControllerManagerConfig = DEFAULT_CONTROLLER_MANAGER


class Controller(Protocol):
    name: str

    async def reconcile(self, key: str) -> None: ...

    async def run(self) -> None: ...


async def run_when_synced(
    ctx: ControllerContext,
    name: str,
    queue: WorkQueue[str],
    reconcile: Callable[[str], Awaitable[None]],
) -> None:
    """The `run()` of a controller whose informers are all shared: once every shared
    informer has synced, `ctx.config.workers` workers on `queue` until cancelled
    (sample-controller's Run)."""
    await ctx.informers.wait_synced()
    log.info("controller started", controller=name, workers=ctx.config.workers)
    await run_workers(queue, reconcile, ctx.config.workers, name=name)


class KeyedController:
    """The body every controller with one work queue of keys shares: the context's client,
    recorder and clock, the queue (named after the controller), informers indexed the way
    reconcile reads them, handlers that only enqueue, and `run()`. A subclass sets `name`,
    calls this constructor first, asks for its informers, and defines `reconcile`."""

    name = ""

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.clock = clock
        self.queue: WorkQueue[str] = WorkQueue(name=self.name)

    def informer(self, kind: type[M], *, owned: bool = False) -> Informer[M]:
        """The shared informer of `kind`, indexed by namespace, and also by owner uid when
        `owned` (the objects this controller's keys control)."""
        if owned:
            return self.ctx.informers.informer(
                kind,
                indexers={NAMESPACE_INDEX: index_by_namespace, OWNER_UID_INDEX: index_by_owner_uid},
            )
        return self.ctx.informers.informer(kind, indexers={NAMESPACE_INDEX: index_by_namespace})

    def watch(
        self,
        informer: Informer[M],
        changed: Callable[[M], None],
        *,
        deleted: Callable[[M], None] | None = None,
    ) -> None:
        """`changed` on an add or update (with the new object), `deleted` on a delete."""
        informer.add_event_handler(
            on_add=changed, on_update=lambda old, new: changed(new), on_delete=deleted
        )

    @staticmethod
    def controlled(informer: Informer[M], owner: Message) -> list[M]:
        """The cached objects of an `owned=True` informer whose controller is `owner`."""
        uid = meta(owner).uid
        return [
            obj
            for obj in informer.cache.by_index(OWNER_UID_INDEX, uid)
            if (ref := controller_ref(obj)) is not None and ref.uid == uid
        ]

    def _enqueue(self, obj: Message) -> None:
        self.queue.add(object_key(obj))

    async def write_status(self, obj: Message, status: Message) -> None:
        """Write `status` as the status of `obj` (a cached object) when it differs,
        compare-and-swap on obj's resourceVersion; after a Conflict (obj changed meanwhile)
        its key comes back, to decide again on the new one."""
        if status == getattr(obj, "status"):  # noqa: B009
            return
        new = type(obj)()
        new.CopyFrom(obj)
        getattr(new, "status").CopyFrom(status)  # noqa: B009
        try:
            await self.client.update_status(new)
        except Conflict:
            self.queue.add(object_key(obj))

    async def run(self) -> None:
        await run_when_synced(self.ctx, self.name, self.queue, self.reconcile)

    async def reconcile(self, key: str) -> None:
        raise NotImplementedError
