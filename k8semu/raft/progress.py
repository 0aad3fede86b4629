"""What a leader knows about each follower's log, and the flow control of replication.

Owns the probe / replicate / snapshot state machine of one follower (etcd-raft's Progress) and the
window of in-flight MSG_APP messages. It must not build messages or read the log; the core asks it
whether to send and tells it what was sent and acknowledged.
"""

from __future__ import annotations

import enum
from collections import deque

__all__ = ["Inflights", "Progress", "ProgressState"]


class ProgressState(enum.Enum):
    # One probe at a time until the follower's match index is found.
    PROBE = "probe"
    # Match is known: stream entries optimistically, bounded by the inflight window.
    REPLICATE = "replicate"
    # The follower needs entries the leader compacted away; wait for the snapshot transfer.
    SNAPSHOT = "snapshot"


class Inflights:
    """Last indexes of the MSG_APP messages sent but not yet acknowledged, oldest first."""

    __slots__ = ("_q", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._q: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._q)

    def full(self) -> bool:
        return len(self._q) >= self.size

    def add(self, last_index: int) -> None:
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        q = self._q
        while q and q[0] <= index:
            q.popleft()

    def free_first_one(self) -> None:
        if self._q:
            self._q.popleft()

    def reset(self) -> None:
        self._q.clear()


class Progress:
    """Replication state of one follower as seen by the leader.

    Invariants: ``match < next``; ``match`` only grows within a term; in SNAPSHOT state
    ``pending_snapshot`` is the index of the snapshot being transferred.
    """

    __slots__ = (
        "inflights",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        # In PROBE state: a probe is outstanding, wait for its answer (or a heartbeat reply).
        self.probe_sent = False
        self.pending_snapshot = 0
        # Heard from since the last check-quorum round (Raft thesis 6.2).
        self.recent_active = False
        self.inflights = Inflights(max_inflight)

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.value}, match={self.match}, next={self.next}, "
            f"inflight={len(self.inflights)}, paused={self.is_paused()})"
        )

    def is_paused(self) -> bool:
        state = self.state
        if state is ProgressState.REPLICATE:
            return self.inflights.full()
        if state is ProgressState.PROBE:
            return self.probe_sent
        return True

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # The snapshot (if it arrived) covers pending_snapshot; probe right after it.
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.probe_sent = False
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.pending_snapshot = 0
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.probe_sent = False
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """An append up to ``index`` was acknowledged; False if the ack is stale."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """An append whose previous index was ``rejected`` failed; False if stale.

        ``match_hint`` is the last index that may still match (fast back-up, see
        RaftLog.find_conflict_by_term), so the next probe skips everything after it.
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            # Entries after match were lost or reordered: fall back to match + 1.
            self.next = self.match + 1
            return True
        if self.state is ProgressState.SNAPSHOT or self.next - 1 != rejected:
            # Only the answer to the outstanding probe counts; anything else is stale.
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True
