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

from collections.abc import Iterable, Mapping

from k8semu.pb.raft.raft_pb2 import (
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
    "Members",
    "apply_change",
    "decode",
    "encode",
    "from_snapshot",
    "quorum",
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
        CONF_REMOVE_NODE,
        CONF_UPDATE_NODE,
    ):
        return None
    return change


def apply_change(members: Members, change: ConfChange) -> bool:
    """Apply one change in place; True when the set of voters changed.

    Adding a member already there only refreshes its context; removing or updating one that
    is not there does nothing (replays and duplicates are harmless).
    """
    node = change.node_id
    if change.type == CONF_ADD_NODE:
        added = node not in members
        members[node] = change.context
        return added
    if change.type == CONF_REMOVE_NODE:
        return members.pop(node, None) is not None
    if node in members:
        members[node] = change.context
    return False


def replay(base: Mapping[int, bytes], entries: Iterable[Entry]) -> Members:
    """The membership after applying the conf changes among ``entries`` to ``base``."""
    members = dict(base)
    for entry in entries:
        if entry.type == ENTRY_CONF_CHANGE:
            change = decode(entry)
            if change is not None:
                apply_change(members, change)
    return members


def quorum(members: Mapping[int, bytes]) -> int:
    """Votes that make a majority of the members."""
    return len(members) // 2 + 1


def from_snapshot(meta: SnapshotMetadata | None) -> Members | None:
    """The membership a snapshot records; older snapshots only list the voters' ids."""
    if meta is None:
        return None
    if meta.members:
        return {m.id: m.context for m in meta.members}
    if meta.voters:
        return dict.fromkeys(meta.voters, b"")
    return None


def to_snapshot(meta: SnapshotMetadata, members: Mapping[int, bytes]) -> None:
    """Record ``members`` in ``meta`` (voters and members, in id order)."""
    del meta.voters[:]
    del meta.members[:]
    ids = sorted(members)
    meta.voters.extend(ids)
    meta.members.extend(ConfMember(id=i, context=members[i]) for i in ids)


class MemberSet:
    """The membership one node has applied, and what follows from it: voters, peers, quorum.

    ``offset`` is the membership at the log's compacted offset (the snapshot's), kept so the
    membership at any index still in the log can be recomputed (snapshot metadata needs it).
    ``changed`` says the driver has not been told the current membership yet.
    """

    __slots__ = ("changed", "members", "offset", "peers", "quorum", "self_id", "voters")

    def __init__(self, self_id: int, base: Mapping[int, bytes], applied: Iterable[Entry]) -> None:
        self.self_id = self_id
        self.offset: Members = dict(base)
        self.members = replay(base, applied)
        self.changed = False
        self.voters: frozenset[int] = frozenset()
        self.peers: tuple[int, ...] = ()
        self.quorum = 1
        self._derive()

    def _derive(self) -> None:
        self.voters = frozenset(self.members)
        self.peers = tuple(sorted(v for v in self.voters if v != self.self_id))
        self.quorum = quorum(self.members)

    def apply(self, committed: Iterable[Entry]) -> bool:
        """Apply the conf changes among entries handed out to be applied; True when the
        voters changed."""
        voters_changed = False
        for entry in committed:
            if entry.type == ENTRY_CONF_CHANGE:
                change = decode(entry)
                if change is not None:
                    voters_changed |= apply_change(self.members, change)
                    self.changed = True
        if voters_changed:
            self._derive()
        return voters_changed

    def restore(self, meta: SnapshotMetadata) -> bool:
        """A snapshot from the leader was installed; True when it records a membership."""
        restored = from_snapshot(meta)
        if restored is None:
            return False
        self.offset = restored
        self.members = dict(restored)
        self.changed = True
        self._derive()
        return True

    def at(self, entries: Iterable[Entry]) -> Members:
        """The membership at the offset followed by ``entries`` (the log from its start)."""
        return replay(self.offset, entries)
