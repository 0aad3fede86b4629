"""Pending linearizable reads of a leader (Raft thesis 6.4, ReadIndex).

Owns the queue of read requests, their grouping into heartbeat rounds and the counting of
heartbeat acknowledgements per round. It must not send messages or decide leadership: the core
broadcasts the heartbeats and turns released requests into ReadStates or MSG_READ_INDEX_RESP.

Batching: requests recorded between two Readys form one batch; sealing the batch gives it a
round id that travels as the heartbeats' context. Any quorum of acknowledgements for a round
proves the leader was still the leader after every request of that round and of every earlier
round was recorded, so one round releases all rounds up to it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["ReadOnly", "ReadRequest"]

_ROUND_BYTES = 8


@dataclass(frozen=True, slots=True)
class ReadRequest:
    index: int  # the leader's commit index when the request was recorded
    origin: int  # node that asked (the leader itself for local reads)
    context: bytes  # the caller's correlation context, returned unchanged


@dataclass(slots=True)
class _Round:
    id: int
    requests: list[ReadRequest]
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    """Read requests waiting for a heartbeat quorum, oldest round first."""

    __slots__ = ("_batch", "_next_round", "_quorum", "_rounds", "_self_id")

    def __init__(self, self_id: int, quorum: int) -> None:
        self._self_id = self_id
        self._quorum = quorum
        self._batch: list[ReadRequest] = []
        self._rounds: deque[_Round] = deque()
        self._next_round = 1

    def __len__(self) -> int:
        return len(self._batch) + sum(len(r.requests) for r in self._rounds)

    def add(self, request: ReadRequest) -> None:
        self._batch.append(request)

    def has_batch(self) -> bool:
        return bool(self._batch)

    def seal(self) -> bytes:
        """Turn the current batch into a round; returns the context for its heartbeats."""
        rnd = _Round(self._next_round, self._batch, {self._self_id})
        self._next_round += 1
        self._batch = []
        self._rounds.append(rnd)
        return rnd.id.to_bytes(_ROUND_BYTES, "big")

    def last_context(self) -> bytes:
        """Context for periodic heartbeats: re-asks for the newest round if acks were lost."""
        if not self._rounds:
            return b""
        return self._rounds[-1].id.to_bytes(_ROUND_BYTES, "big")

    def ack(self, context: bytes, origin: int) -> list[ReadRequest]:
        """Record a heartbeat acknowledgement; returns the requests it releases, in order."""
        if len(context) != _ROUND_BYTES or not self._rounds:
            return []
        round_id = int.from_bytes(context, "big")
        for rnd in self._rounds:
            if rnd.id > round_id:
                break
            rnd.acks.add(origin)
        released: list[ReadRequest] = []
        rounds = self._rounds
        while rounds and len(rounds[0].acks) >= self._quorum:
            released.extend(rounds.popleft().requests)
        return released

    def set_members(self, quorum: int, members: frozenset[int]) -> None:
        """The membership changed: count acknowledgements of current members only."""
        self._quorum = quorum
        for rnd in self._rounds:
            rnd.acks &= members

    def reset(self) -> None:
        """Leadership lost or gained: pending requests are dropped (callers time out)."""
        self._batch = []
        self._rounds.clear()
