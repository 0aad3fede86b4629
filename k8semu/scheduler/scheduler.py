"""The scheduler component: informers of Pods and Nodes feed the cache and the scheduling queue;
while this instance leads (Lease kube-system/kube-scheduler), one loop pops a pending pod,
decides (algorithm.schedule), assumes it onto the node and binds it in the background, several
binds in flight at once.

Owns the wiring and the writes: pods/binding, Events (Scheduled, FailedScheduling) and the
pod's PodScheduled=False condition. The decision itself is algorithm.py's; the filters and
scores are plugins.py's; the bookkeeping is cache.py's and queue.py's.

Losing the Lease cancels the loop and every bind in flight at once, forgets what was assumed
and drops the queue; leading again rebuilds the queue from the informer's cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import secrets
import socket
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from k8semu import aio, transport
from k8semu.api import timestamps
from k8semu.client import (
    DEFAULT_LEADER_ELECTION,
    NODE_NAME_INDEX,
    Client,
    ClientError,
    Conflict,
    LeaderElectionConfig,
    LeaderElector,
    NotFound,
    SharedInformers,
    index_by_node_name,
)
from k8semu.client.events import NORMAL, WARNING, EventRecorder
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2, policy_pb2
from k8semu.scheduler import algorithm, preemption, preemptor
from k8semu.scheduler import metrics as sched_metrics
from k8semu.scheduler import queue as queue_mod
from k8semu.scheduler.cache import SchedulerCache, occupies_node
from k8semu.scheduler.framework import (
    PodInfo,
    PodSpecError,
    node_ready,
    pod_info,
    pod_key,
    with_volume_nodes,
)
from k8semu.scheduler.queue import QueueClosed, QueuedPod, SchedulingQueue

log = get_logger(__name__)

DEFAULT_SCHEDULER_NAME = "default-scheduler"
LEASE_NAME = "kube-scheduler"
LEASE_NAMESPACE = "kube-system"
DEFAULT_BIND_CONCURRENCY = 256
SCHEDULER_LEADER_ELECTION = dataclasses.replace(DEFAULT_LEADER_ELECTION, release_on_cancel=True)
# How long stop() waits for the loop's binds to end before handing the Lease back anyway.
_STOP_LOOP_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerConfig:
    """How one scheduler runs. Timings in seconds.

    - `scheduler_name`: pods whose spec.schedulerName is this are ours (and, when it is
      "default-scheduler", those with none).
    - `percentage_of_nodes_to_score`: 0 is kube-scheduler's adaptive rule.
    - `leader_elect`/`leader_election`: compete for Lease `lease_namespace/lease_name`.
      With `release_on_cancel` (the default here), `stop()` ends the scheduling loop and its
      binds first, then hands the Lease back, so a graceful restart fails over at once.
    - `listen_address`: gRPC health (SERVING once the caches synced); "" serves none.
      `tls`: its certificate and the CA its callers' certificates must be of (None: plain).
    - `bind_concurrency`: binds in flight at once.
    - `initial_backoff`/`max_backoff`/`max_unschedulable`: the queue's (queue.py).
    """

    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    percentage_of_nodes_to_score: int = 0
    leader_elect: bool = True
    leader_election: LeaderElectionConfig = field(default=SCHEDULER_LEADER_ELECTION)
    lease_name: str = LEASE_NAME
    lease_namespace: str = LEASE_NAMESPACE
    listen_address: str = "127.0.0.1:0"
    tls: transport.ServerTLS | None = None
    bind_concurrency: int = DEFAULT_BIND_CONCURRENCY
    initial_backoff: float = queue_mod.DEFAULT_INITIAL_BACKOFF
    max_backoff: float = queue_mod.DEFAULT_MAX_BACKOFF
    max_unschedulable: float = queue_mod.DEFAULT_MAX_UNSCHEDULABLE

    def __post_init__(self) -> None:
        if not self.scheduler_name:
            raise ValueError("scheduler_name: Required value")
        if not 0 <= self.percentage_of_nodes_to_score <= 100:
            raise ValueError(
                "percentage_of_nodes_to_score: must be 0..100 (0: adaptive), got "
                f"{self.percentage_of_nodes_to_score}"
            )
        if self.bind_concurrency < 1:
            raise ValueError(f"bind_concurrency: must be >= 1, got {self.bind_concurrency}")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ValueError("initial_backoff/max_backoff: need 0 < initial_backoff <= max_backoff")
        if self.max_unschedulable <= 0:
            raise ValueError(f"max_unschedulable: must be > 0, got {self.max_unschedulable}")


DEFAULT_SCHEDULER = SchedulerConfig()


def default_identity() -> str:
    """hostname_pid_random, unique per process start (as kube-scheduler's id + uuid)."""
    return f"{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(4)}"


def _node_changed(old: core_pb2.Node, new: core_pb2.Node) -> bool:
    """Whether a Node update may let a pending pod fit (heartbeats alone do not)."""
    return (
        old.spec.unschedulable != new.spec.unschedulable
        or list(old.spec.taints) != list(new.spec.taints)
        or old.metadata.labels != new.metadata.labels
        or old.status.allocatable != new.status.allocatable
        or node_ready(old) != node_ready(new)
    )


class Scheduler:
    """`await start()` serves health, starts the informers, waits for them, then competes for
    the Lease (or leads at once with `leader_elect=False`); `await stop()` undoes it.

    For tests: put objects into `pods.cache`/`nodes.cache`, call `prime()`, then
    `await schedule_pending()` and compare the client's actions.
    """

    def __init__(
        self,
        client: Client,
        config: SchedulerConfig = DEFAULT_SCHEDULER,
        *,
        informers: SharedInformers | None = None,
        recorder: EventRecorder | None = None,
        identity: str = "",
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.identity = identity or default_identity()
        self.informers = informers or SharedInformers(client)
        self.pods = self.informers.informer(
            core_pb2.Pod, indexers={NODE_NAME_INDEX: index_by_node_name}
        )
        self.nodes = self.informers.informer(core_pb2.Node)
        # Where bound volumes are (a local volume's node affinity): its pods go there.
        self.claims = self.informers.informer(core_pb2.PersistentVolumeClaim)
        self.volumes = self.informers.informer(core_pb2.PersistentVolume)
        # Preemption weighs budgets; affinity terms' namespaceSelector reads namespaces.
        self.budgets = self.informers.informer(policy_pb2.PodDisruptionBudget)
        self.namespaces = self.informers.informer(core_pb2.Namespace)
        self.nominations = preemptor.Nominations()
        self._own_recorder = recorder is None
        self.recorder = recorder or EventRecorder(client, config.scheduler_name)
        self.cache = SchedulerCache()
        self.queue: SchedulingQueue | None = None
        self._rng = rng or random.Random()
        self._next_start = 0
        self._bind_slots = asyncio.Semaphore(config.bind_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._leading: asyncio.Task[None] | None = None
        self._loop_idle = asyncio.Event()  # set while no scheduling loop runs
        self._loop_idle.set()
        self._elector: LeaderElector | None = None
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self.health_port = 0
        self.scheduled = 0  # binds that succeeded
        self.failed = 0  # scheduling cycles that found no node
        self.pods.add_event_handler(self.on_pod_add, self.on_pod_update, self.on_pod_delete)
        self.nodes.add_event_handler(self.on_node_add, self.on_node_update, self.on_node_delete)
        self.namespaces.add_event_handler(
            self._on_namespace, lambda old, new: self._on_namespace(new), self._on_namespace_gone
        )

    # ---- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        sched_metrics.PENDING.scheduler = weakref.ref(self)
        if self.config.listen_address:
            self._server, self._health = transport.server()
            self.health_port = transport.bind(
                self._server,
                self.config.listen_address,
                flag="--listen-address",
                tls=self.config.tls,
            )
            await self._server.start()
            await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._own_recorder:
            self.recorder.start()
        self.informers.start()
        await self.informers.wait_synced()
        if self._health is not None:
            await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "caches synced",
            nodes=self.cache.node_count(),
            scheduler_name=self.config.scheduler_name,
            identity=self.identity,
        )
        if self.config.leader_elect:
            self._elector = LeaderElector(
                self.client,
                name=self.config.lease_name,
                namespace=self.config.lease_namespace,
                identity=self.identity,
                config=self.config.leader_election,
                on_started_leading=self.run_leading,
                on_stopped_leading=lambda: log.warning("lost the lease; scheduling stopped"),
            )
            self._elector.start()
        else:
            self._leading = asyncio.get_running_loop().create_task(
                self.run_leading(), name="scheduling loop"
            )

    async def stop(self, grace: float) -> None:
        """End scheduling, hand the Lease back, stop the health server (`grace` for its
        calls in flight)."""
        queue = self.queue
        if queue is not None:
            # End scheduling (and cancel binds in flight) before the Lease can be released.
            queue.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_LOOP_TIMEOUT):
                    await self._loop_idle.wait()
        if self._elector is not None:
            await self._elector.stop()
            self._elector = None
        leading, self._leading = self._leading, None
        await aio.cancel_and_wait([leading])
        await self.informers.stop()
        if self._own_recorder:
            await self.recorder.stop()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    @property
    def is_leader(self) -> bool:
        if self._elector is not None:
            return self._elector.is_leader
        return self.queue is not None

    # ---- leading ----------------------------------------------------------------------------

    def prime(self) -> SchedulingQueue:
        """Rebuild the cache from the informers' caches and start a fresh queue with every
        pending pod that is ours."""
        self.cache = SchedulerCache()
        self.nominations = preemptor.Nominations()
        for ns in self.namespaces.cache.list():
            self._on_namespace(ns)
        for node in self.nodes.cache.list():
            self.cache.add_node(node)
        for pod in self.pods.cache.list():
            if pod.spec.node_name:
                self.cache.add_pod(pod)
        queue = SchedulingQueue(
            initial_backoff=self.config.initial_backoff,
            max_backoff=self.config.max_backoff,
            max_unschedulable=self.config.max_unschedulable,
        )
        for pod in self.pods.cache.by_index(NODE_NAME_INDEX, ""):
            if self._wants(pod):
                queue.add(pod)
        self.queue = queue
        return queue

    async def run_leading(self) -> None:
        """The scheduling loop, until cancelled (leadership lost, or stop)."""
        queue = self.prime()
        self._loop_idle.clear()
        log.info("leading: scheduling", pending=queue.lengths()[0], nodes=self.cache.node_count())
        try:
            while True:
                qp = await queue.pop()
                try:
                    await self.schedule_one(qp)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # A bug, not bad input (that is reported per pod): keep scheduling the
                    # others and retry this one later.
                    log.exception("scheduling cycle failed", pod=qp.key)
                    self.cache.forget(qp.key)
                    queue.add_backoff(qp)
                await asyncio.sleep(0)  # let informer events and binds in
        except QueueClosed:
            pass
        finally:
            self.queue = None
            queue.close()
            await aio.cancel_and_wait(list(self._tasks), ignore_errors=True)
            self.cache.forget_all_assumed()
            self._loop_idle.set()

    async def schedule_pending(self) -> int:
        """For tests: schedule every pod now active, then wait for their writes. Returns how
        many cycles ran."""
        queue = self.queue or self.prime()
        cycles = 0
        while queue.lengths()[0]:
            await self.schedule_one(await queue.pop())
            cycles += 1
        await self.wait_idle()
        return cycles

    async def wait_idle(self) -> None:
        """Until every bind and status write started so far has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _volume_affinities(self, pod: core_pb2.Pod) -> list[core_pb2.VolumeNodeAffinity]:
        """The node affinities of the volumes `pod`'s claims are bound to."""
        out = []
        for vol in pod.spec.volumes:
            if not vol.HasField("persistent_volume_claim"):
                continue
            key = f"{pod.metadata.namespace}/{vol.persistent_volume_claim.claim_name}"
            claim = self.claims.cache.get(key)
            pv = self.volumes.cache.get(claim.spec.volume_name) if claim is not None else None
            if pv is not None and pv.spec.HasField("node_affinity"):
                out.append(pv.spec.node_affinity)
        return out

    async def schedule_one(self, qp: QueuedPod) -> None:
        """One scheduling cycle for `qp` (popped from the queue)."""
        queue = self.queue
        assert queue is not None, "schedule_one needs a queue (prime() or run_leading())"
        current = self.pods.cache.get(qp.key)
        if current is None and self.pods.has_synced():
            queue.done(qp.key)  # deleted meanwhile
            return
        pod = current or qp.pod
        qp.pod = pod
        if (
            pod.spec.node_name
            or pod.metadata.HasField("deletion_timestamp")
            or self.cache.node_of(qp.key) is not None
        ):
            queue.done(qp.key)  # bound, being bound, or going away: nothing to do
            return
        began = time.perf_counter()
        try:
            info = pod_info(pod, self.cache.namespace_labels)
            if affinities := self._volume_affinities(pod):
                info = with_volume_nodes(info, affinities, f"pod {qp.key}: volumes' nodeAffinity")
        except PodSpecError as exc:
            self._attempted(sched_metrics.ERROR, began)
            self._unschedulable(qp, str(exc))
            return
        decision = algorithm.schedule(
            info,
            self.cache.nodes,
            self.cache.order,
            start=self._next_start,
            percentage=self.config.percentage_of_nodes_to_score,
            nodes_with_affinity=self.cache.affinity_nodes,
            nominated=self.nominations.by_node() if len(self.nominations) else None,
            label_keys=self.cache.label_keys,
            rng=self._rng,
            topology=self.cache.topology,
        )
        self._next_start = decision.next_start
        if not decision.node:
            self._attempted(sched_metrics.UNSCHEDULABLE, began)
            nominated = ""
            if self.cache.has_lower_priority(info.priority):
                nominated = self._preempt(qp, info)
            self._unschedulable(qp, decision.message, nominated)
            return
        self._attempted(sched_metrics.SCHEDULED, began)
        self.cache.assume(info, decision.node)
        await self._bind_slots.acquire()
        self._spawn(self._bind(qp, decision.node), release=True)

    def _preempt(self, qp: QueuedPod, info: PodInfo) -> str:
        """PostFilter: choose victims (preemption.py) and evict them in the background
        (preemptor.py); the node nominated for the pod, or ""."""
        nominated = self.nominations.node_of(qp.key) or qp.pod.status.nominated_node_name
        why = preemption.may_preempt(info, nominated, self.cache.nodes)
        outcome = None
        if not why:
            outcome = preemption.select(
                info,
                self.cache.nodes,
                self.cache.order,
                affinity_nodes=self.cache.affinity_nodes,
                budgets=preemptor.budgets(self.budgets.cache.list()),
            )
            why = outcome.why
        if outcome is None or outcome.candidate is None:
            log.info("no preemption", pod=qp.key, why=why)
            return nominated if why.startswith("waiting") else ""
        cand = outcome.candidate
        self.nominations.nominate(info, cand.node)
        log.info("preempting", pod=qp.key, node=cand.node, victims=[v.key for v in cand.victims])
        for victim in cand.victims:
            pod = self.pods.cache.get(victim.key)
            if pod is not None:
                self._spawn(
                    preemptor.evict_victim(
                        self.client, self.recorder, pod, qp.pod, cand.node,
                        self.config.scheduler_name,
                    )
                )  # fmt: skip
        return cand.node

    def _attempted(self, result: str, began: float) -> None:
        profile = self.config.scheduler_name
        sched_metrics.ATTEMPTS.labels(result, profile).inc()
        sched_metrics.ATTEMPT_DURATION.labels(result, profile).observe(time.perf_counter() - began)

    # ---- writes ---------------------------------------------------------------------------

    def _spawn(self, coro: Any, *, release: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if release:
                self._bind_slots.release()

        task.add_done_callback(finished)

    async def _bind(self, qp: QueuedPod, node: str) -> None:
        pod = qp.pod
        name, namespace = pod.metadata.name, pod.metadata.namespace
        queue = self.queue
        try:
            await self.client.bind(name, node, namespace=namespace)
        except (Conflict, NotFound) as exc:
            # Bound by someone else, or gone: the informer will tell the truth.
            self.cache.forget(qp.key)
            if queue is not None:
                queue.done(qp.key)
            log.info("bind refused; forgetting the pod", pod=qp.key, node=node, error=str(exc))
        except ClientError as exc:
            self.cache.forget(qp.key)
            log.warning("bind failed; will retry", pod=qp.key, node=node, error=str(exc))
            self.recorder.event(pod, WARNING, "FailedScheduling", f"Binding rejected: {exc}")
            if queue is not None:
                queue.add_backoff(qp)
        except asyncio.CancelledError:
            self.cache.forget(qp.key)
            raise
        else:
            self.scheduled += 1
            self.nominations.forget(qp.key)
            if queue is not None:
                queue.done(qp.key)
            self.recorder.event(
                pod, NORMAL, "Scheduled", f"Successfully assigned {namespace}/{name} to {node}"
            )

    def _unschedulable(self, qp: QueuedPod, message: str, nominated: str = "") -> None:
        self.failed += 1
        pod = qp.pod
        log.info("pod unschedulable", pod=qp.key, message=message, attempts=qp.attempts)
        self.recorder.event(pod, WARNING, "FailedScheduling", message)
        if self.queue is not None:
            self.queue.add_unschedulable(qp)
        if self._condition_differs(pod, message, nominated):
            self._spawn(self._set_unschedulable_condition(qp.key, message, nominated))

    @staticmethod
    def _condition_differs(pod: core_pb2.Pod, message: str, nominated: str = "") -> bool:
        if nominated and pod.status.nominated_node_name != nominated:
            return True
        for c in pod.status.conditions:
            if c.type == "PodScheduled":
                return not (
                    c.status == "False" and c.reason == "Unschedulable" and c.message == message
                )
        return True

    async def _set_unschedulable_condition(self, key: str, message: str, nominated: str) -> None:
        """PodScheduled=False, reason Unschedulable, as kube-scheduler writes it (CAS on the
        cached resourceVersion; a conflict means a newer pod, retried on its next cycle),
        with status.nominatedNodeName when preemption chose a node for it."""
        current = self.pods.cache.get(key)
        if (
            current is None
            or current.spec.node_name
            or not self._condition_differs(current, message, nominated)
        ):
            return
        pod = core_pb2.Pod()
        pod.CopyFrom(current)
        if nominated:
            pod.status.nominated_node_name = nominated
        for c in pod.status.conditions:
            if c.type == "PodScheduled":
                condition = c
                break
        else:
            condition = pod.status.conditions.add(type="PodScheduled")
        if condition.status != "False":
            condition.last_transition_time.CopyFrom(timestamps.now())
        condition.status = "False"
        condition.reason = "Unschedulable"
        condition.message = message
        condition.ClearField("last_probe_time")
        try:
            await self.client.update_status(pod)
        except ClientError as exc:
            log.info("pod status not updated", pod=key, error=str(exc))

    # ---- informer event handlers (they only touch the cache and the queue) -------------------

    def _wants(self, pod: core_pb2.Pod) -> bool:
        """Pending, ours, not being deleted."""
        if pod.spec.node_name or pod.metadata.HasField("deletion_timestamp"):
            return False
        if pod.status.phase in ("Succeeded", "Failed"):
            return False
        name = pod.spec.scheduler_name
        own = self.config.scheduler_name
        return name == own or (not name and own == DEFAULT_SCHEDULER_NAME)

    def on_pod_add(self, pod: core_pb2.Pod) -> None:
        if pod.spec.node_name:
            self.cache.add_pod(pod)
            if self.queue is not None:
                self.queue.delete(pod_key(pod))
        elif self.queue is not None and self._wants(pod):
            self.queue.add(pod)

    def on_pod_update(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        queue = self.queue
        if new.spec.node_name:
            self.cache.update_pod(new)
            if queue is not None:
                queue.delete(pod_key(new))
                if occupies_node(old) and not occupies_node(new):
                    queue.move_all_to_active("AssignedPodCompleted")
            return
        if queue is None:
            return
        if self._wants(new):
            queue.update(new)
        else:
            queue.delete(pod_key(new))

    def on_pod_delete(self, pod: core_pb2.Pod) -> None:
        key = pod_key(pod)
        self.nominations.forget(key)
        was_bound = self.cache.node_of(key) is not None and not self.cache.is_assumed(key)
        self.cache.remove_pod(pod)
        if self.queue is not None:
            self.queue.delete(key)
            if pod.spec.node_name or was_bound:
                self.queue.move_all_to_active("AssignedPodDelete")

    def _on_namespace(self, ns: core_pb2.Namespace) -> None:
        self.cache.namespace_labels[ns.metadata.name] = dict(ns.metadata.labels)

    def _on_namespace_gone(self, ns: core_pb2.Namespace) -> None:
        self.cache.namespace_labels.pop(ns.metadata.name, None)

    def on_node_add(self, node: core_pb2.Node) -> None:
        self.cache.add_node(node)
        if self.queue is not None:
            self.queue.move_all_to_active("NodeAdd")

    def on_node_update(self, old: core_pb2.Node, new: core_pb2.Node) -> None:
        self.cache.update_node(new)
        if self.queue is not None and _node_changed(old, new):
            self.queue.move_all_to_active("NodeUpdate")

    def on_node_delete(self, node: core_pb2.Node) -> None:
        self.cache.remove_node(node.metadata.name)
