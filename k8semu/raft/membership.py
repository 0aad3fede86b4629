"""Raft membership: who votes, as changed by conf-change entries one server at a time.

Owns the decoding of ConfChange entries, the rules that turn a membership and a change into
the next membership, and the membership recorded in snapshot metadata. A membership maps each
member id to its context: bytes Raft never reads (the store's name and URLs of the member),
kept here so that snapshots and restarts carry them along with the ids.

Changes take effect when their entry is applied (handed out as committed), as in etcd, not
when appended (Raft thesis 4.1): a leader then never has to undo a change of a truncated
entry, at the price of allowing only one change in flight (the core refuses a second until
the first is applied). Every rule is idempotent and ids are never reused, so replaying a
suffix of the log over a later membership (a member that joined with the current membership
and replays the log from its start) ends in the same membership.

Nothing here does I/O; garbage from the network decodes to None and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from k8semu.pb.raft.raft_pb2 import (
    CONF_ADD_LEARNER,
    CONF_ADD_NODE,
    CONF_REMOVE_NODE,
    CONF_UPDATE_NODE,
    ENTRY_CONF_CHANGE,
    ConfChange,
    ConfMember,
    Entry,
    SnapshotMetadata,
)

__all__ = [
    "Conf",
    "MemberSet",
    "Members",
    "apply_change",
    "decode",
    "encode",
    "from_snapshot",
    "replay",
    "to_snapshot",
]

Members = dict[int, bytes]


def encode(change: ConfChange) -> bytes:
    return change.SerializeToString()


def decode(entry: Entry) -> ConfChange | None:
    """The ConfChange of a conf-change entry; None for other entries and for garbage."""
    if entry.type != ENTRY_CONF_CHANGE:
        return None
    try:
        change = ConfChange.FromString(entry.data)
    except Exception:
        return None
    if change.node_id == 0 or change.type not in (
        CONF_ADD_NODE,
        CONF_ADD_LEARNER,
        CONF_REMOVE_NODE,
        CONF_UPDATE_NODE,
    ):
        return None
    return change


@dataclass(slots=True)
class Conf:
    """A membership: each member's context, and which members are learners (replicated to,
    never voting nor counted for a quorum)."""

    members: Members = field(default_factory=dict)
    learners: set[int] = field(default_factory=set)

    def copy(self) -> Conf:
        return Conf(dict(self.members), set(self.learners))

    @property
    def voters(self) -> frozenset[int]:
        return frozenset(self.members.keys() - self.learners)


def apply_change(conf: Conf, change: ConfChange) -> bool:
    """Apply one change in place; True when the voters or the learners changed.

    Adding a member already there only refreshes its context (adding a learner as a voter
    promotes it; a voter is never made a learner); removing or updating one that is not
    there does nothing (replays and duplicates are harmless).
    """
    node, members, learners = change.node_id, conf.members, conf.learners
    if change.type == CONF_ADD_NODE:
        changed = node not in members or node in learners
        members[node] = change.context
        learners.discard(node)
        return changed
    if change.type == CONF_ADD_LEARNER:
        if node in members and node not in learners:
            return False
        changed = node not in members
        members[node] = change.context
        learners.add(node)
        return changed
    if change.type == CONF_REMOVE_NODE:
        learners.discard(node)
        return members.pop(node, None) is not None
    if node in members:
        members[node] = change.context
    return False


def replay(base: Conf, entries: Iterable[Entry]) -> Conf:
    """The membership after applying the conf changes among ``entries`` to ``base``."""
    conf = base.copy()
    for entry in entries:
        if entry.type == ENTRY_CONF_CHANGE:
            change = decode(entry)
            if change is not None:
                apply_change(conf, change)
    return conf


def from_snapshot(meta: SnapshotMetadata | None) -> Conf | None:
    """The membership a snapshot records; older snapshots only list the voters' ids."""
    if meta is None:
        return None
    if meta.members:
        return Conf(
            {m.id: m.context for m in meta.members}, {m.id for m in meta.members if m.learner}
        )
    if meta.voters:
        return Conf(dict.fromkeys(meta.voters, b""))
    return None


def to_snapshot(meta: SnapshotMetadata, conf: Conf) -> None:
    """Record ``conf`` in ``meta`` (voters and members, in id order)."""
    del meta.voters[:]
    del meta.members[:]
    meta.voters.extend(sorted(conf.voters))
    meta.members.extend(
        ConfMember(id=i, context=conf.members[i], learner=i in conf.learners)
        for i in sorted(conf.members)
    )


class MemberSet:
    """The membership one node has applied, and what follows from it: voters, the peers to
    campaign among (voters), the quorum (of voters).

    ``offset`` is the membership at the log's compacted offset (the snapshot's), kept so the
    membership at any index still in the log can be recomputed (snapshot metadata needs it).
    ``changed`` says the driver has not been told the current membership yet.
    """

    __slots__ = ("changed", "conf", "offset", "peers", "quorum", "self_id", "voters")

    def __init__(self, self_id: int, base: Conf, applied: Iterable[Entry]) -> None:
        self.self_id = self_id
        self.offset = base.copy()
        self.conf = replay(base, applied)
        self.changed = False
        self.voters: frozenset[int] = frozenset()
        self.peers: tuple[int, ...] = ()
        self.quorum = 1
        self._derive()

    @property
    def members(self) -> Members:
        return self.conf.members

    def _derive(self) -> None:
        self.voters = self.conf.voters
        self.peers = tuple(sorted(v for v in self.voters if v != self.self_id))
        self.quorum = len(self.voters) // 2 + 1

    def apply(self, committed: Iterable[Entry]) -> bool:
        """Apply the conf changes among entries handed out to be applied; True when the
        voters or learners changed."""
        changed = False
        for entry in committed:
            if entry.type == ENTRY_CONF_CHANGE:
                change = decode(entry)
                if change is not None:
                    changed |= apply_change(self.conf, change)
                    self.changed = True
        if changed:
            self._derive()
        return changed

    def restore(self, meta: SnapshotMetadata) -> bool:
        """A snapshot from the leader was installed; True when it records a membership."""
        restored = from_snapshot(meta)
        if restored is None:
            return False
        self.offset = restored
        self.conf = restored.copy()
        self.changed = True
        self._derive()
        return True

    def at(self, entries: Iterable[Entry]) -> Conf:
        """The membership at the offset followed by ``entries`` (the log from its start)."""
        return replay(self.offset, entries)
