"""Lease clocks: when each lease expires, as seen by the current leader.

The MVCC store records which leases exist and their granted TTL (replicated state); this module
owns only their deadlines, which are leader-local and never replicated. It is pure: time comes
in as `now` (monotonic seconds) on every call, nothing here sleeps, proposes or revokes. The
leader's driver polls `expired(now)` and proposes a LeaseRevoke for each id it returns.

A follower holds every lease "forever"; `promote(now)` on becoming leader restarts every lease's
full TTL from `now`, so a lease never expires early because leadership moved (etcd does the
same). A lease may therefore live up to one extra TTL across a leader change, never less.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable


class Lessor:
    """Deadlines of leases, keyed by lease id.

    Invariants: every known lease has a granted TTL; only the `primary` (the leader) reports
    expiries; an id returned by `expired` is not returned again until it is renewed or revoked
    (or `retry_after` seconds pass, when set, in case the revoke proposal was lost).
    Followers keep deadlines too (from when they applied the grant or keep-alive), so any
    replica answers TimeToLive with a close estimate; they never act on them.
    """

    def __init__(
        self, leases: Iterable[tuple[int, int]] = (), *, retry_after: float | None = None
    ) -> None:
        self._ttl: dict[int, int] = dict(leases)
        self._deadline: dict[int, float] = {}
        # When each lease is next due to be reported; a heap of (due, id) with stale entries
        # skipped lazily (an entry is live only if it matches _due).
        self._due: dict[int, float] = {}
        self._heap: list[tuple[float, int]] = []
        self._primary = False
        self._retry_after = retry_after

    @property
    def primary(self) -> bool:
        return self._primary

    def __len__(self) -> int:
        return len(self._ttl)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._ttl

    def ttl(self, lease_id: int) -> int | None:
        """Granted TTL, or None for an unknown lease."""
        return self._ttl.get(lease_id)

    def grant(self, lease_id: int, ttl: int, now: float) -> None:
        """Record a granted lease (called for every applied LeaseGrant, on every replica)."""
        self._ttl[lease_id] = ttl
        self._set_deadline(lease_id, now + ttl)

    def renew(self, lease_id: int, now: float) -> int | None:
        """Restart the lease's TTL from `now`; return the TTL, None if the lease is unknown."""
        ttl = self._ttl.get(lease_id)
        if ttl is not None:
            self._set_deadline(lease_id, now + ttl)
        return ttl

    def revoke(self, lease_id: int) -> None:
        """Forget a lease (called for every applied LeaseRevoke); unknown ids are ignored."""
        self._ttl.pop(lease_id, None)
        self._deadline.pop(lease_id, None)
        self._due.pop(lease_id, None)

    def promote(self, now: float) -> None:
        """Become leader: every lease gets its full TTL from `now`."""
        self._primary = True
        self._deadline = {i: now + t for i, t in self._ttl.items()}
        self._due = dict(self._deadline)
        self._heap = [(d, i) for i, d in self._due.items()]
        heapq.heapify(self._heap)

    def demote(self) -> None:
        """Stop being leader: leases no longer expire here (deadlines stay as estimates)."""
        self._primary = False
        self._due.clear()
        self._heap.clear()

    def expired(self, now: float) -> list[int]:
        """Leases whose deadline is at or before `now` and that were not reported yet,
        earliest deadline first. Empty unless primary."""
        out: list[int] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, lease_id = heapq.heappop(heap)
            if self._due.get(lease_id) != due:
                continue  # renewed, revoked or already reported since this entry was pushed
            out.append(lease_id)
            if self._retry_after is None:
                del self._due[lease_id]
            else:
                self._due[lease_id] = again = now + self._retry_after
                heapq.heappush(heap, (again, lease_id))
        return out

    def remaining(self, lease_id: int, now: float) -> int:
        """Whole seconds left (rounded up, 0 once expired), -1 for an unknown lease; the
        granted TTL for a lease whose grant or last keep-alive this replica did not see."""
        ttl = self._ttl.get(lease_id)
        if ttl is None:
            return -1
        deadline = self._deadline.get(lease_id)
        if deadline is None:
            return ttl
        return max(0, math.ceil(deadline - now))

    def _set_deadline(self, lease_id: int, deadline: float) -> None:
        if self._primary:
            self._schedule(lease_id, deadline)
        else:
            self._deadline[lease_id] = deadline

    def _schedule(self, lease_id: int, deadline: float) -> None:
        self._deadline[lease_id] = deadline
        self._due[lease_id] = deadline
        heapq.heappush(self._heap, (deadline, lease_id))
        if len(self._heap) > 4 * len(self._due) + 64:
            # Frequent renewals leave stale entries behind; rebuild to keep memory bounded.
            self._heap = [(d, i) for i, d in self._due.items()]
            heapq.heapify(self._heap)
