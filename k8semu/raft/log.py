"""The in-memory Raft log of one node: entries after the last snapshot, commit and stability marks.

Owns the index arithmetic (offset of the compacted prefix, the Log Matching checks of Raft paper
5.3, fast back-up by term) and the bookkeeping of which entries the driver has durably stored.
It must not do I/O, know about roles or peers, or copy entries: entries are shared protobuf
objects that nobody mutates once they are in the log.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from k8semu.pb.raft.raft_pb2 import Entry, SnapshotMetadata

__all__ = ["RaftLog"]


def _term_of(e: Entry) -> int:
    return e.term


class RaftLog:
    """Entries ``(offset, last_index]`` plus the term of the compacted entry at ``offset``.

    Invariants: ``_ents[i].index == offset + 1 + i``; ``offset <= applied <= committed <=
    last_index``; entries below ``unstable`` are durably stored by the driver (so they may be
    applied and compacted), entries from ``unstable`` on still have to go out in a Ready.
    """

    __slots__ = (
        "_ents",
        "_offset",
        "_offset_term",
        "applied",
        "committed",
        "pending_snapshot",
        "unstable",
    )

    def __init__(self, snap_index: int, snap_term: int, entries: Sequence[Entry]) -> None:
        self._offset = snap_index
        self._offset_term = snap_term
        self._ents: list[Entry] = list(entries)
        self.committed = snap_index
        self.applied = snap_index
        self.unstable = snap_index + len(self._ents) + 1
        # A snapshot received from the leader that the driver has not installed yet.
        self.pending_snapshot: SnapshotMetadata | None = None

    # -- reading -------------------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Index of the last compacted entry (the snapshot index); 0 for a fresh log."""
        return self._offset

    @property
    def first_index(self) -> int:
        return self._offset + 1

    @property
    def last_index(self) -> int:
        return self._offset + len(self._ents)

    @property
    def last_term(self) -> int:
        return self._ents[-1].term if self._ents else self._offset_term

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when compacted away or not (yet) present."""
        i = index - self._offset
        if i == 0:
            return self._offset_term
        if 0 < i <= len(self._ents):
            return self._ents[i - 1].term
        return None

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft paper 5.4.1: the later term wins; with equal terms the longer log wins."""
        my_term = self.last_term
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``[lo, hi)``; the caller keeps ``first_index <= lo <= hi <= last_index + 1``."""
        base = self._offset + 1
        return self._ents[lo - base : hi - base]

    def entries_for_send(self, lo: int, max_count: int, max_bytes: int) -> list[Entry]:
        """Entries from ``lo`` bounded by count and (approximate) size; at least one if any."""
        base = self._offset + 1
        ents = self._ents[lo - base : lo - base + max_count]
        size = 0
        for n, e in enumerate(ents):
            # 16 bytes stand in for the per-entry framing (term, index, tags).
            size += len(e.data) + 16
            if size > max_bytes and n > 0:
                return ents[:n]
        return ents

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest ``i <= index`` whose term is ``<= term``, with that term (0 if unknown).

        Fast back-up (the optimization closing Raft paper 5.3): every index whose term is larger
        than ``term`` cannot match the other log, so a whole term is skipped per round trip.
        """
        index = min(index, self.last_index)
        if index < self._offset:
            return index, 0
        # Terms never decrease along a log, so bisect instead of walking back entry by entry.
        pos = bisect_right(self._ents, term, 0, index - self._offset, key=_term_of)
        if pos:
            return self._offset + pos, self._ents[pos - 1].term
        if self._offset_term <= term:
            return self._offset, self._offset_term
        return self._offset, 0

    def unstable_entries(self) -> list[Entry]:
        if self.unstable > self.last_index:
            return []
        return self._ents[self.unstable - self._offset - 1 :]

    def committed_after(self, index: int) -> list[Entry]:
        """Committed entries after ``index`` (never entries covered by the snapshot)."""
        lo = max(index, self._offset) + 1
        if lo > self.committed:
            return []
        return self.slice(lo, self.committed + 1)

    # -- writing -------------------------------------------------------------------------------

    def append(self, ents: Sequence[Entry]) -> None:
        """Append entries that directly follow ``last_index`` (the leader's own proposals)."""
        self._ents.extend(ents)

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: Sequence[Entry]
    ) -> int | None:
        """AppendEntries receiver (Raft paper Figure 2): new last index, or None on mismatch.

        Returns -1 when the request would overwrite a committed entry: that can only be
        garbage, and the caller ignores the message instead of answering it.
        """
        if self.term(index) != log_term:
            return None
        last_new = index + len(ents)
        conflict = self._find_conflict(ents)
        if conflict:
            if conflict <= self.committed:
                return -1
            start = conflict - ents[0].index
            self._truncate_append(conflict, ents[start:] if start else ents)
        self.commit_to(min(committed, last_new))
        return last_new

    def _find_conflict(self, ents: Sequence[Entry]) -> int:
        """Index of the first entry that is new or conflicts with the log; 0 if none."""
        if not ents:
            return 0
        last = self.last_index
        if ents[0].index > last:
            return ents[0].index
        for e in ents:
            if e.index > last or self.term(e.index) != e.term:
                return e.index
        return 0

    def _truncate_append(self, at: int, ents: Sequence[Entry]) -> None:
        del self._ents[at - self._offset - 1 :]
        self._ents.extend(ents)
        if at < self.unstable:
            # The driver must rewrite its stored log from ``at`` (Ready.entries starts there).
            self.unstable = at

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            self.committed = min(index, self.last_index)
            return True
        return False

    def stable_to(self, index: int, term: int) -> None:
        """The driver stored entries up to ``index``; ignored if the log changed since."""
        if index >= self.unstable and self.term(index) == term:
            # Same index and term means the same prefix (Log Matching), so it is all durable.
            self.unstable = index + 1

    def restore(self, meta: SnapshotMetadata) -> None:
        """Reset the log to a snapshot from the leader (Raft paper 7, InstallSnapshot)."""
        self._offset = meta.index
        self._offset_term = meta.term
        self._ents = []
        self.committed = meta.index
        self.unstable = meta.index + 1
        self.pending_snapshot = meta

    def compact(self, index: int) -> None:
        """Forget entries up to ``index``; the caller guarantees ``index <= applied``."""
        if index <= self._offset or index > self.last_index:
            return
        term = self._ents[index - self._offset - 1].term
        del self._ents[: index - self._offset]
        self._offset = index
        self._offset_term = term
