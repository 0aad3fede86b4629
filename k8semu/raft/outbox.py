"""What one Raft node has to say since its last Ready: messages to send, reads to answer.

Owns building outgoing messages (one dict, one constructor call: the cheapest way to build a
message in upb) and collecting them until the core hands them to the driver. Both roles
write here: the core for every role, the leader object for what only a leader sends. It must
not decide anything: callers say what to send, to whom and at which term.
"""

from __future__ import annotations

from typing import Any

from k8semu.pb.raft.raft_pb2 import Message
from k8semu.raft.ready import ReadState

__all__ = ["Outbox"]


class Outbox:
    """Messages and read states in the order they were produced; `take` empties it."""

    __slots__ = ("_from", "messages", "read_states")

    def __init__(self, node_id: int) -> None:
        self._from = node_id
        self.messages: list[Message] = []
        self.read_states: list[ReadState] = []

    def __bool__(self) -> bool:
        return bool(self.messages or self.read_states)

    def send(self, mtype: int, to: int, term: int, **fields: Any) -> None:
        fields["type"] = mtype
        fields["to"] = to
        fields["from"] = self._from
        fields["term"] = term
        self.messages.append(Message(**fields))

    def take(self) -> tuple[list[Message], list[ReadState]]:
        out = self.messages, self.read_states
        self.messages, self.read_states = [], []
        return out
