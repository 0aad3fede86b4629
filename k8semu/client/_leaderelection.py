"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

A candidate reads the Lease and takes it when nobody holds it or the holder let it expire
(`renewTime + leaseDurationSeconds < now`): it writes itself as `holderIdentity`, sets
`acquireTime` and `renewTime`, and increments `leaseTransitions` when the holder changes. The
leader writes `renewTime` every `retry_period`. Every write is an update carrying the
resourceVersion it read, so of two candidates racing for one expired Lease exactly one wins
(the other gets Conflict and stays a candidate).

A leader that has not renewed for `renew_deadline` (measured on its monotonic clock from the
start of its last successful renewal), or that finds another holder's valid Lease, stops
leading at once: its `on_started_leading` task is cancelled and `on_stopped_leading` runs,
before anybody else may consider the Lease expired (`renew_deadline < lease_duration`).
Like Kubernetes, this relies on the hosts' wall clocks agreeing to well under
`lease_duration - renew_deadline`; on one host they are the same clock.

Unlike client-go's Run, which returns after losing the lease (Kubernetes components then
exit), `run()` goes back to being a candidate, so an in-process component can lead again.
It knows nothing about what the leader does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from k8semu import aio
from k8semu.api import timestamps
from k8semu.client import metrics
from k8semu.client._client import Client
from k8semu.client._errors import AlreadyExists, ClientError, Conflict, NotFound
from k8semu.log import get_logger
from k8semu.pb.api.v1 import coordination_pb2

log = get_logger(__name__)

JITTER_FACTOR = 1.2


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaderElectionConfig:
    """Timings in seconds. Invariants (ValueError otherwise, as client-go checks):
    lease_duration > renew_deadline > JITTER_FACTOR * retry_period > 0, lease_duration >= 1.

    The Lease stores whole seconds, so `lease_duration` is written rounded up. With
    `release_on_cancel`, a leader whose `run()` is cancelled clears holderIdentity (lease of
    1 s) so another candidate takes over at once instead of after the lease expires.
    """

    lease_duration: float = 4.0
    renew_deadline: float = 3.0
    retry_period: float = 0.5
    release_on_cancel: bool = False

    def __post_init__(self) -> None:
        if self.lease_duration < 1:
            raise ValueError(f"lease_duration: must be >= 1 s, got {self.lease_duration}")
        if not self.lease_duration > self.renew_deadline:
            raise ValueError("lease_duration: must be greater than renew_deadline")
        if not self.renew_deadline > JITTER_FACTOR * self.retry_period:
            raise ValueError(f"renew_deadline: must be greater than {JITTER_FACTOR} x retry_period")
        if not self.retry_period > 0:
            raise ValueError(f"retry_period: must be > 0, got {self.retry_period}")

    @property
    def lease_duration_seconds(self) -> int:
        return max(1, math.ceil(self.lease_duration))


DEFAULT_LEADER_ELECTION = LeaderElectionConfig()
"""The emulator's defaults: fast enough that a demo shows fail-over (design decision 6)."""
KUBERNETES_LEADER_ELECTION = LeaderElectionConfig(
    lease_duration=15.0, renew_deadline=10.0, retry_period=2.0
)
"""kube-scheduler's and kube-controller-manager's defaults."""


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    return timestamps.micro_time_at(seconds)  # acquire/renewTime are metav1.MicroTime


class LeaderElector:
    """Competes for the Lease `namespace/name` as `identity` until cancelled.

    `on_started_leading()` is started as a task when this elector becomes the leader and is
    cancelled when it stops; `on_stopped_leading()` and `on_new_leader(identity)` (whenever the
    observed holder changes, this elector included) are plain functions that must return
    quickly. `is_leader` and `leader` (the last observed holder) can be read at any time.
    """

    def __init__(
        self,
        client: Client,
        *,
        name: str,
        identity: str,
        namespace: str = "kube-system",
        config: LeaderElectionConfig = DEFAULT_LEADER_ELECTION,
        on_started_leading: Callable[[], Awaitable[None]] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        on_new_leader: Callable[[str], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not identity:
            raise ValueError("identity: required (e.g. hostname plus a random suffix)")
        self._client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.config = config
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._wall = wall_clock
        self._clock = clock
        self._observed: coordination_pb2.Lease | None = None
        self._leader = ""
        self._is_leader = False
        self._acquired_at = 0.0  # monotonic start of the attempt that won the Lease
        self._task: asyncio.Task[None] | None = None
        self._random = random.Random()

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    def _set_leading(self, leading: bool) -> None:
        self._is_leader = leading
        metrics.LEADER.labels(self.name).set(1 if leading else 0)

    @property
    def leader(self) -> str:
        """The holderIdentity last observed ("" when none was seen)."""
        return self._leader

    def start(self) -> None:
        if self._task is None or self._task.done():
            metrics.LEADER.labels(self.name).set(0)  # a candidate reports 0 until it leads
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"leader election {self.namespace}/{self.name}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        await aio.cancel_and_wait([task])

    async def run(self) -> None:
        """Be a candidate, lead while the Lease is ours, and again; until cancelled."""
        while True:
            await self._acquire()
            await self._lead()

    # ---- candidate and leader ----------------------------------------------------------------

    async def _acquire(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.config.renew_deadline):
                    if await self._try_acquire_or_renew():
                        return
            except (ClientError, TimeoutError) as exc:
                log.debug("lease acquire attempt failed", lease=self.name, error=str(exc))
            delay = self.config.retry_period * (1 + (JITTER_FACTOR - 1) * self._random.random())
            await asyncio.sleep(delay)

    async def _lead(self) -> None:
        last_renew = self._acquired_at
        self._set_leading(True)
        log.info("became leader", lease=self.name, identity=self.identity)
        work = (
            asyncio.get_running_loop().create_task(self._run_leading())
            if self._on_started is not None
            else None
        )
        try:
            while True:
                deadline = last_renew + self.config.renew_deadline
                await asyncio.sleep(
                    max(0.0, min(self.config.retry_period, deadline - self._clock()))
                )
                started = self._clock()
                if started >= deadline:
                    log.warning("failed to renew lease in time", lease=self.name)
                    return
                try:
                    async with asyncio.timeout(deadline - started):
                        renewed = await self._try_acquire_or_renew()
                except TimeoutError:
                    log.warning("lease renewal timed out", lease=self.name)
                    return
                except ClientError as exc:
                    log.info("lease renewal failed", lease=self.name, error=str(exc))
                    continue
                if renewed:
                    last_renew = started
                elif self._leader != self.identity:
                    log.warning("lease taken by another holder", holder=self._leader)
                    return
        except asyncio.CancelledError:
            # The leader's work ends before the Lease is handed back, so no other candidate
            # can start while it still runs.
            await self._stop_work(work)
            if self.config.release_on_cancel:
                await self._release()
            raise
        finally:
            await self._stop_work(work)
            if self._on_stopped is not None:
                self._call(self._on_stopped)

    async def _stop_work(self, work: asyncio.Task[None] | None) -> None:
        self._set_leading(False)
        if work is not None and not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work

    async def _run_leading(self) -> None:
        assert self._on_started is not None
        try:
            await self._on_started()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("on_started_leading failed", lease=self.name)

    # ---- the Lease -----------------------------------------------------------------------------

    async def _try_acquire_or_renew(self) -> bool:
        """One attempt; True when this elector holds the Lease afterwards."""
        attempt_started = self._clock()
        now = self._wall()
        lease = self._observed
        if lease is None or lease.spec.holder_identity != self.identity or not self._is_leader:
            try:
                lease = await self._client.get(
                    coordination_pb2.Lease, self.name, namespace=self.namespace
                )
            except NotFound:
                return await self._create(now, attempt_started)
            self._observe(lease)
            if lease.spec.holder_identity not in ("", self.identity) and not self._expired(
                lease, now
            ):
                return False
        new = coordination_pb2.Lease()
        new.CopyFrom(lease)
        spec = new.spec
        if spec.holder_identity != self.identity:
            spec.acquire_time.CopyFrom(_timestamp(now))
            spec.lease_transitions = (
                spec.lease_transitions + 1 if spec.HasField("lease_transitions") else 1
            )
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = self.config.lease_duration_seconds
        spec.renew_time.CopyFrom(_timestamp(now))
        try:
            updated = await self._client.update(new)
        except Conflict:
            self._observed = None  # read it again next time
            return False
        self._observe(updated)
        self._acquired_at = attempt_started
        return True

    async def _create(self, now: float, attempt_started: float) -> bool:
        lease = coordination_pb2.Lease()
        lease.metadata.name = self.name
        lease.metadata.namespace = self.namespace
        spec = lease.spec
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = self.config.lease_duration_seconds
        spec.acquire_time.CopyFrom(_timestamp(now))
        spec.renew_time.CopyFrom(_timestamp(now))
        spec.lease_transitions = 0
        try:
            created = await self._client.create(lease)
        except (AlreadyExists, Conflict):
            return False
        self._observe(created)
        self._acquired_at = attempt_started
        return True

    async def _release(self) -> None:
        """Best effort: hand the Lease back so another candidate need not wait for expiry."""
        lease = self._observed
        if lease is None or lease.spec.holder_identity != self.identity:
            return
        new = coordination_pb2.Lease()
        new.CopyFrom(lease)
        now = _timestamp(self._wall())
        new.spec.holder_identity = ""
        new.spec.lease_duration_seconds = 1
        new.spec.acquire_time.CopyFrom(now)
        new.spec.renew_time.CopyFrom(now)
        try:
            async with asyncio.timeout(self.config.retry_period):
                await self._client.update(new)
        except (ClientError, TimeoutError) as exc:
            log.info("lease release failed", lease=self.name, error=str(exc))

    def _expired(self, lease: coordination_pb2.Lease, now: float) -> bool:
        spec = lease.spec
        if not spec.HasField("renew_time"):
            return True
        renewed = spec.renew_time.ToNanoseconds() / 1e9
        duration = spec.lease_duration_seconds if spec.HasField("lease_duration_seconds") else 0
        return renewed + duration < now

    def _observe(self, lease: coordination_pb2.Lease) -> None:
        self._observed = lease
        holder = lease.spec.holder_identity
        if holder != self._leader:
            self._leader = holder
            if holder and self._on_new_leader is not None:
                self._call(self._on_new_leader, holder)

    def _call(self, callback: Callable[..., None], *args: str) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("leader election callback failed", lease=self.name)
