"""Events expire, as kube-apiserver's ``--event-ttl`` makes them: every Event is written with an
etcd lease, so the store itself deletes it a TTL after its last write (watchers see a DELETED
event) and the history a busy cluster's Events leave behind stays bounded.

One lease serves every Event written within a reuse window (5% of the TTL, at most a
minute; kube-apiserver's lease manager reuses leases the same way), so a burst of Events costs
one LeaseGrant. The lease is granted for TTL + window, so an Event lives between TTL and
TTL + window. The store's own lease machinery (grant through the log, expiry decided by the
leader, revoke through the log) does the rest, on our store as on a real etcd.

Owns only the lease bookkeeping; which kinds get a lease is the servicer's decision.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import grpc

from k8semu.apiserver.store import translate
from k8semu.log import get_logger
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

log = get_logger(__name__)

DEFAULT_EVENT_TTL = 3600.0  # kube-apiserver's --event-ttl (1h)
_MAX_REUSE = 60.0
_REUSE_FRACTION = 0.05


def lease_not_found(message: str) -> bool:
    """True for etcd's answer to a write naming a lease that expired or was revoked."""
    return "requested lease not found" in message


class EventLeases:
    """The lease to attach to the next Event write; ``ttl`` <= 0 means Events never expire."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        ttl: float,
        *,
        deadline: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.reuse = min(_MAX_REUSE, ttl * _REUSE_FRACTION)
        self._stub = rpc_pb2_grpc.LeaseStub(channel)
        self._deadline = deadline
        self._clock = clock
        self._lease = 0
        self._granted_at = 0.0
        self._lock = asyncio.Lock()

    def _current(self) -> int:
        if self._lease and self._clock() < self._granted_at + self.reuse:
            return self._lease
        return 0

    async def lease(self) -> int:
        """A lease id for an Event write (0 when Events do not expire)."""
        if self.ttl <= 0:
            return 0
        if lease := self._current():
            return lease
        async with self._lock:
            if lease := self._current():
                return lease
            granted_at = self._clock()
            request = rpc_pb2.LeaseGrantRequest(TTL=math.ceil(self.ttl + self.reuse))
            try:
                resp = await self._stub.LeaseGrant(request, timeout=self._deadline)
            except grpc.aio.AioRpcError as exc:
                raise translate(exc, "event lease grant") from None
            self._lease, self._granted_at = resp.ID, granted_at
            log.debug("event lease granted", lease=resp.ID, ttl=request.TTL)
            return self._lease

    def forget(self, lease: int) -> None:
        """The store no longer knows `lease` (revoked, or the store was restored): grant anew."""
        if self._lease == lease:
            self._lease = 0
