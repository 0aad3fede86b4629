"""The static configuration of one Raft node: its id, the membership and the core's limits.

Owns the knobs of the pure core (election and heartbeat ticks, pre-vote, check-quorum, flow
control) and their validation. It must not hold state that changes while the node runs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Config"]


@dataclass(frozen=True, slots=True)
class Config:
    """Static configuration of one node; ``voters`` is the whole (fixed) membership."""

    id: int
    voters: tuple[int, ...]  # includes id
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 16
    max_entries_per_msg: int = 4096
    max_bytes_per_msg: int = 4 * 1024 * 1024

    def validate(self) -> None:
        if self.id <= 0:
            raise ValueError("raft config: id must be > 0")
        if self.id not in self.voters or any(v <= 0 for v in self.voters):
            raise ValueError("raft config: voters must be positive ids and include id")
        if self.heartbeat_tick < 1 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("raft config: need 1 <= heartbeat_tick < election_tick")
        if self.max_inflight < 1 or self.max_entries_per_msg < 1 or self.max_bytes_per_msg < 1:
            raise ValueError("raft config: message and inflight limits must be >= 1")

    @property
    def peers(self) -> tuple[int, ...]:
        """The other voters, in id order."""
        return tuple(v for v in sorted(set(self.voters)) if v != self.id)

    @property
    def quorum(self) -> int:
        """Votes (or acknowledgements) that make a majority of the voters."""
        return len(set(self.voters)) // 2 + 1
