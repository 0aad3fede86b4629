"""What the Raft core hands to its driver: roles, soft state, read states and the Ready batch.

Owns the output types and the ordering contract of ``Ready``. It must not hold behaviour: the
core (``k8semu.raft.core``) fills these, the driver consumes them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from k8semu.pb.raft.raft_pb2 import Entry, HardState, Message, SnapshotMetadata

__all__ = ["ReadState", "Ready", "SoftState", "StateRole"]


class StateRole(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting; never persisted."""

    leader: int  # 0 = none known
    role: StateRole


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine has applied ``index``."""

    index: int
    context: bytes


@dataclass(slots=True)
class Ready:
    """Contract: the driver persists hard_state, snapshot (if any) and entries to stable storage
    BEFORE sending messages; then applies committed_entries in order; then calls advance(rd).

    Only one Ready is outstanding: call advance(rd) before the next ready(). Other calls (step,
    tick, propose) may happen in between; their effects show up in the next Ready.
    """

    soft_state: SoftState | None  # set when leader or role changed since last Ready
    hard_state: HardState | None  # set when term/vote/commit changed
    # New entries to append durably; entries[0].index may be <= the last stored index: the
    # driver then truncates its stored log from entries[0].index before appending.
    entries: list[Entry] = field(default_factory=list)
    # A snapshot from the leader: the driver replaces its whole stored log with it (drops every
    # stored entry) and installs the state-machine data before applying committed_entries.
    snapshot: SnapshotMetadata | None = None
    committed_entries: list[Entry] = field(default_factory=list)  # apply in order
    messages: list[Message] = field(default_factory=list)  # send after persisting
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False  # False when only the commit index changed (fsync optional)
    # The membership (id -> context) when it changed since the last Ready: a conf change
    # among committed_entries, or a snapshot installed.
    members: dict[int, bytes] | None = None
