"""The scheduling queue (kube-scheduler's PriorityQueue): pending pods wait in one of three
places.

- **active**: ready to be scheduled, highest spec.priority first, then oldest first (by when
  the pod first entered the queue), as kube-scheduler's PrioritySort;
- **backoff**: failed recently; moves to active when its back-off ends. The n-th failed
  attempt waits `initial_backoff * 2**(n-1)`, at most `max_backoff`;
- **unschedulable**: no node fitted. Nothing is retried until the cluster changes in a way
  that may help (a node added or updated, a pod deleted): `move_all_to_active(event)` then
  sends each to active, or to backoff while its back-off lasts. A pod left there longer than
  `max_unschedulable` is retried anyway (Kubernetes' periodic flush).

A pod handed out by `pop()` is *in flight* until `done(key)`. If the cluster changed while it
was being scheduled (a move request during its cycle) or the pod itself was updated, a failure
sends it to backoff rather than unschedulable, so that change is not missed (kube-scheduler's
moveRequestCycle). Deleting a pod in flight makes its later `add_unschedulable` a no-op.

Keys are "namespace/name"; the queue holds the latest Pod for each. Time is injected (`clock`)
and nothing here runs a task: `pop()` waits on the loop until a pod is active or the next
back-off ends. Single event loop only.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from k8semu.pb.api.v1 import core_pb2
from k8semu.scheduler.framework import pod_key

Clock = Callable[[], float]

DEFAULT_INITIAL_BACKOFF = 0.25  # seconds (Kubernetes: 1 s)
DEFAULT_MAX_BACKOFF = 5.0  # seconds (Kubernetes: 10 s)
DEFAULT_MAX_UNSCHEDULABLE = 60.0  # seconds (Kubernetes: 5 min)


class QueueClosed(Exception):
    """`pop()` on a closed queue."""


@dataclass(slots=True)
class QueuedPod:
    """A pending pod and its history in the queue. `attempts` counts scheduling cycles;
    `timestamp` orders the active queue (kept across retries, so older pods go first)."""

    pod: core_pb2.Pod
    key: str
    timestamp: float
    attempts: int = 0
    cycle: int = 0  # the scheduling cycle that popped it last
    backoff_until: float = 0.0
    unschedulable_since: float = 0.0
    updated_in_flight: bool = False
    deleted: bool = False
    seq: int = field(default=0)


def _may_fit_now(old: core_pb2.Pod, new: core_pb2.Pod) -> bool:
    """Whether an update can change where the pod fits: its spec or labels changed (a status
    update, such as the scheduler's own PodScheduled condition, cannot)."""
    return old.spec != new.spec or old.metadata.labels != new.metadata.labels


class SchedulingQueue:
    def __init__(
        self,
        *,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_unschedulable: float = DEFAULT_MAX_UNSCHEDULABLE,
        clock: Clock = time.monotonic,
    ) -> None:
        if not 0 < initial_backoff <= max_backoff:
            raise ValueError("initial_backoff/max_backoff: need 0 < initial <= max")
        if max_unschedulable <= 0:
            raise ValueError(f"max_unschedulable: must be > 0, got {max_unschedulable}")
        self._initial = initial_backoff
        self._max = max_backoff
        self._max_unschedulable = max_unschedulable
        self._clock = clock
        self._seq = itertools.count(1)
        self._active: dict[str, QueuedPod] = {}
        self._active_heap: list[tuple[int, float, int, str]] = []  # (-priority, ...)
        self._backoff: dict[str, QueuedPod] = {}
        self._backoff_heap: list[tuple[float, int, str]] = []
        self._unschedulable: dict[str, QueuedPod] = {}
        self._in_flight: dict[str, QueuedPod] = {}
        self.scheduling_cycle = 0
        self._move_request_cycle = -1
        self._wakeup = asyncio.Event()
        self._closed = False

    # ---- sizes, for tests and metrics ------------------------------------------------------

    def lengths(self) -> tuple[int, int, int]:
        """(active, backoff, unschedulable)."""
        return len(self._active), len(self._backoff), len(self._unschedulable)

    def where(self, key: str) -> str:
        """ "active", "backoff", "unschedulable", "in flight" or "" (for tests and logs)."""
        for name, place in (
            ("active", self._active),
            ("backoff", self._backoff),
            ("unschedulable", self._unschedulable),
            ("in flight", self._in_flight),
        ):
            if key in place:
                return name
        return ""

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.where(key) != ""

    # ---- informer events ------------------------------------------------------------------

    def add(self, pod: core_pb2.Pod) -> None:
        """A new pending pod (or one seen again): to active unless already queued."""
        key = pod_key(pod)
        if key in self._in_flight:
            self.update(pod)
            return
        for place in (self._active, self._backoff, self._unschedulable):
            if key in place:
                place[key].pod = pod
                return
        self._push_active(QueuedPod(pod, key, self._clock()))

    def update(self, pod: core_pb2.Pod) -> None:
        """The pending pod changed: an unschedulable pod whose spec or labels changed may fit
        now, so it is retried (backoff or active); elsewhere the queue just keeps the update."""
        key = pod_key(pod)
        qp = self._in_flight.get(key)
        if qp is not None:
            if _may_fit_now(qp.pod, pod):
                qp.updated_in_flight = True
            qp.pod = pod
            return
        for place in (self._active, self._backoff):
            if key in place:
                place[key].pod = pod
                return
        qp = self._unschedulable.get(key)
        if qp is None:
            self._push_active(QueuedPod(pod, key, self._clock()))
            return
        changed = _may_fit_now(qp.pod, pod)
        qp.pod = pod
        if changed:
            del self._unschedulable[key]
            self._requeue(qp)

    def delete(self, key: str) -> None:
        """The pod is gone or bound: forget it wherever it is."""
        qp = self._in_flight.get(key)
        if qp is not None:
            qp.deleted = True
        self._active.pop(key, None)
        self._backoff.pop(key, None)
        self._unschedulable.pop(key, None)

    def move_all_to_active(self, event: str = "") -> int:
        """The cluster changed (`event`, for logs): retry every unschedulable pod. Returns how
        many moved."""
        self._move_request_cycle = self.scheduling_cycle
        moved = list(self._unschedulable.values())
        self._unschedulable.clear()
        for qp in moved:
            self._requeue(qp)
        return len(moved)

    # ---- the scheduling loop ----------------------------------------------------------------

    async def pop(self) -> QueuedPod:
        """The active pod of highest priority (oldest first among equals), waiting for one;
        it is in flight until `done(key)`."""
        while True:
            if self._closed:
                raise QueueClosed("scheduling queue closed")
            self.flush()
            while self._active_heap:
                _, _, seq, key = heapq.heappop(self._active_heap)
                qp = self._active.get(key)
                if qp is None or qp.seq != seq:
                    continue  # stale heap entry
                del self._active[key]
                self.scheduling_cycle += 1
                qp.cycle = self.scheduling_cycle
                qp.attempts += 1
                qp.updated_in_flight = False
                qp.deleted = False
                self._in_flight[key] = qp
                return qp
            self._wakeup.clear()
            timeout = self._next_due()
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def done(self, key: str) -> None:
        """The cycle of `key` is over (bound, gone, or put back by add_* first)."""
        self._in_flight.pop(key, None)

    def add_unschedulable(self, qp: QueuedPod) -> None:
        """No node fitted `qp`: park it until the cluster changes (or back off when it already
        has during the cycle). Ends its flight."""
        self._in_flight.pop(qp.key, None)
        if qp.deleted or self._queued(qp.key):
            return
        now = self._clock()
        qp.backoff_until = now + self.backoff_duration(qp.attempts)
        if qp.updated_in_flight or self._move_request_cycle >= qp.cycle:
            self._push_backoff(qp)
        else:
            qp.unschedulable_since = now
            self._unschedulable[qp.key] = qp

    def add_backoff(self, qp: QueuedPod) -> None:
        """The cycle failed for another reason (a bind error): retry after the back-off."""
        self._in_flight.pop(qp.key, None)
        if qp.deleted or self._queued(qp.key):
            return
        qp.backoff_until = self._clock() + self.backoff_duration(qp.attempts)
        self._push_backoff(qp)

    def backoff_duration(self, attempts: int) -> float:
        return min(self._max, self._initial * 2.0 ** max(0, min(attempts - 1, 60)))

    def flush(self) -> None:
        """Move due back-offs to active, and long-unschedulable pods to backoff/active."""
        now = self._clock()
        while self._backoff_heap and self._backoff_heap[0][0] <= now:
            _, seq, key = heapq.heappop(self._backoff_heap)
            qp = self._backoff.get(key)
            if qp is None or qp.seq != seq:
                continue
            del self._backoff[key]
            self._push_active(qp)
        if self._unschedulable:
            stale = [
                qp
                for qp in self._unschedulable.values()
                if now - qp.unschedulable_since >= self._max_unschedulable
            ]
            for qp in stale:
                del self._unschedulable[qp.key]
                self._requeue(qp)

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    # ---- internals -------------------------------------------------------------------------

    def _queued(self, key: str) -> bool:
        return key in self._active or key in self._backoff or key in self._unschedulable

    def _requeue(self, qp: QueuedPod) -> None:
        if qp.backoff_until > self._clock():
            self._push_backoff(qp)
        else:
            self._push_active(qp)

    def _push_active(self, qp: QueuedPod) -> None:
        qp.seq = next(self._seq)
        self._active[qp.key] = qp
        priority = -qp.pod.spec.priority
        heapq.heappush(self._active_heap, (priority, qp.timestamp, qp.seq, qp.key))
        self._wakeup.set()

    def _push_backoff(self, qp: QueuedPod) -> None:
        qp.seq = next(self._seq)
        self._backoff[qp.key] = qp
        heapq.heappush(self._backoff_heap, (qp.backoff_until, qp.seq, qp.key))
        self._wakeup.set()

    def _next_due(self) -> float | None:
        """Seconds until a back-off ends or an unschedulable pod is due (None: no timer)."""
        now = self._clock()
        due: list[float] = []
        while self._backoff_heap:
            until, seq, key = self._backoff_heap[0]
            qp = self._backoff.get(key)
            if qp is None or qp.seq != seq:
                heapq.heappop(self._backoff_heap)
                continue
            due.append(until)
            break
        if self._unschedulable:
            due.append(
                min(q.unschedulable_since for q in self._unschedulable.values())
                + self._max_unschedulable
            )
        if not due:
            return None
        return max(0.001, min(due) - now)
