"""The leader role of the Raft core: replication flow control, commitment, heartbeats, ReadIndex.

Owns what only a leader does (Raft paper 5.3-5.4, thesis 6.2 and 6.4): per-follower progress and
the MSG_APP/MSG_SNAP it sends, the commit rule, check-quorum and the ReadIndex protocol. It is a
mixin of ``k8semu.raft.core.Raft`` and shares its state; it must not do I/O or change terms (a
leader only leaves office through the core's role transitions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from k8semu.pb.raft.raft_pb2 import (
    MSG_APP,
    MSG_APP_RESP,
    MSG_HEARTBEAT,
    MSG_HEARTBEAT_RESP,
    MSG_PROP,
    MSG_READ_INDEX,
    MSG_READ_INDEX_RESP,
    MSG_SNAP,
    MSG_TIMEOUT_NOW,
    Entry,
    Message,
    SnapshotMetadata,
)
from k8semu.raft.log import RaftLog
from k8semu.raft.progress import Progress, ProgressState
from k8semu.raft.readonly import ReadOnly, ReadRequest
from k8semu.raft.ready import ReadState, StateRole

if TYPE_CHECKING:
    from k8semu.raft.core import Config

__all__ = ["LeaderMixin"]


class LeaderMixin:
    """Leader behaviour of Raft; the attributes below are owned by ``Raft.__init__``."""

    _cfg: Config
    _id: int
    _peers: tuple[int, ...]
    _quorum: int
    _term: int
    _role: StateRole
    _log: RaftLog
    _snapshot_meta: SnapshotMetadata | None
    _election_elapsed: int
    _heartbeat_elapsed: int
    _progress: dict[int, Progress]
    # Followers whose MSG_APP is built when the Ready is assembled, so that all proposals of
    # one cycle share a message (group commit). Value: send even without entries.
    _dirty: dict[int, bool]
    _readonly: ReadOnly
    # Reads that arrived before the leader committed an entry of its term (thesis 6.4).
    _reads_waiting: list[tuple[int, bytes]]
    _read_states: list[ReadState]
    _step: Callable[[Message], None]
    # Leadership transfer in progress (thesis 3.10): target (0: none) and ticks since asked.
    _transferee: int
    _transfer_elapsed: int

    if TYPE_CHECKING:

        def _send(self, mtype: int, to: int, **fields: Any) -> None: ...

        def _become_follower(self, term: int, lead: int) -> None: ...

    def _tick_heartbeat(self) -> None:
        cfg = self._cfg
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._transferee:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= cfg.election_tick:
                # Thesis 3.10: a transfer that did not happen within an election timeout is
                # aborted so the leader takes proposals again.
                self._transferee = 0
                self._transfer_elapsed = 0
        if self._election_elapsed >= cfg.election_tick:
            self._election_elapsed = 0
            if cfg.check_quorum:
                # Thesis 6.2: a leader that did not hear from a quorum within an election
                # timeout steps down, so clients stop waiting on a leader that cannot commit.
                active = sum(1 for pr in self._progress.values() if pr.recent_active)
                if active < self._quorum:
                    self._become_follower(self._term, 0)
                    return
                for peer in self._peers:
                    self._progress[peer].recent_active = False
        if self._heartbeat_elapsed >= cfg.heartbeat_tick:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat(self._readonly.last_context())

    def transfer_candidate(self) -> int:
        """The follower a leaving leader should hand over to: the most up-to-date one heard
        from recently (0 if not leader or alone). Ties go to the lowest id (deterministic)."""
        if self._role is not StateRole.LEADER:
            return 0
        best = (-1, 0)
        for peer in self._peers:
            pr = self._progress[peer]
            key = (pr.match if pr.recent_active else pr.match // 2, -peer)
            if key > best:
                best = key
        return -best[1] if best[0] >= 0 else 0

    def _step_leader(self, msg: Message) -> None:
        mtype = msg.type
        frm = getattr(msg, "from")
        if mtype == MSG_APP_RESP:
            self._handle_append_response(msg, frm)
        elif mtype == MSG_HEARTBEAT_RESP:
            self._handle_heartbeat_response(msg, frm)
        elif mtype == MSG_PROP:
            # Forwarded proposals are dropped during a transfer (the follower's client times
            # out or learns of the leader change and retries).
            if msg.entries and not self._transferee:
                self._append_data([e.data for e in msg.entries])
        elif mtype == MSG_READ_INDEX:
            self._leader_read(frm, msg.context)

    def _append_data(self, datas: Sequence[bytes]) -> None:
        log = self._log
        term = self._term
        start = log.last_index + 1
        log.append([Entry(term=term, index=i, data=d) for i, d in enumerate(datas, start)])
        own = self._progress[self._id]
        own.match = log.last_index
        own.next = own.match + 1
        if not self._maybe_commit():
            dirty = self._dirty
            for peer in self._peers:
                dirty.setdefault(peer, False)

    def _maybe_commit(self) -> bool:
        """Commit the highest index replicated on a quorum if it is of the current term.

        Raft paper 5.4.2 (Figure 8): entries of earlier terms are only committed indirectly.
        On success followers learn the new commit index right away.
        """
        matches = sorted((pr.match for pr in self._progress.values()), reverse=True)
        index = matches[self._quorum - 1]
        log = self._log
        if index <= log.committed or log.term(index) != self._term:
            return False
        log.commit_to(index)
        if self._reads_waiting:
            waiting, self._reads_waiting = self._reads_waiting, []
            for origin, ctx in waiting:
                self._leader_read(origin, ctx)
        for peer in self._peers:
            self._dirty[peer] = True
        return True

    def _handle_append_response(self, msg: Message, frm: int) -> None:
        pr = self._progress[frm]
        pr.recent_active = True
        log = self._log
        if msg.reject:
            hint = min(msg.reject_hint, log.last_index)
            if msg.reject_term > 0:
                hint, _ = log.find_conflict_by_term(hint, msg.reject_term)
            if pr.maybe_decr_to(msg.index, hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._dirty[frm] = True
            return
        if msg.index > log.last_index:
            return  # acknowledges entries we never had: garbage
        was_paused = pr.is_paused()
        if not pr.maybe_update(msg.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            if pr.match + 1 >= log.first_index:
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(msg.index)
        if not self._maybe_commit():
            dirty = self._dirty
            dirty[frm] = dirty.get(frm, False) or was_paused
        if frm == self._transferee and pr.match == log.last_index:
            # The transfer target caught up: tell it to campaign now.
            self._send(MSG_TIMEOUT_NOW, frm)

    def _handle_heartbeat_response(self, msg: Message, frm: int) -> None:
        pr = self._progress[frm]
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and pr.inflights.full():
            # A lost MSG_APP must not stall the window forever.
            pr.inflights.free_first_one()
        if pr.match < self._log.last_index:
            self._dirty[frm] = True
        if msg.context:
            for req in self._readonly.ack(msg.context, frm):
                self._answer_read(req)

    def _leader_read(self, origin: int, context: bytes) -> None:
        log = self._log
        if log.term(log.committed) != self._term:
            # Thesis 6.4 step 1: until an entry of its term is committed the leader may not
            # know the latest commit index; hold the read until the no-op commits.
            self._reads_waiting.append((origin, context))
            return
        req = ReadRequest(log.committed, origin, context)
        if self._quorum == 1:
            self._answer_read(req)
        else:
            self._readonly.add(req)

    def _answer_read(self, req: ReadRequest) -> None:
        if req.origin == self._id:
            self._read_states.append(ReadState(req.index, req.context))
        else:
            self._send(MSG_READ_INDEX_RESP, req.origin, index=req.index, context=req.context)

    def _bcast_heartbeat(self, context: bytes) -> None:
        committed = self._log.committed
        for peer in self._peers:
            # Never tell a follower to commit past what it is known to hold.
            commit = min(self._progress[peer].match, committed)
            if self._transferee:
                self._send(
                    MSG_HEARTBEAT, peer, commit=commit, context=context, leader_transfer=True
                )
            else:
                self._send(MSG_HEARTBEAT, peer, commit=commit, context=context)

    def _flush(self) -> None:
        """Build the messages deferred during this cycle (heartbeat round, MSG_APPs)."""
        if self._role is not StateRole.LEADER:
            return
        if self._readonly.has_batch():
            # Thesis 6.4 step 3: one heartbeat round confirms leadership for the whole batch.
            self._bcast_heartbeat(self._readonly.seal())
        if self._dirty:
            dirty = self._dirty
            self._dirty = {}
            for peer, send_empty in dirty.items():
                if self._send_append(peer, send_empty):
                    while self._send_append(peer, False):
                        pass

    def _send_append(self, to: int, send_empty: bool) -> bool:
        """Send the next MSG_APP (or the MSG_SNAP) to ``to``; False if nothing was sent."""
        pr = self._progress[to]
        if pr.is_paused():
            return False
        log = self._log
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None:
            if prev > log.last_index:
                return False
            return self._send_snapshot(to, pr)
        cfg = self._cfg
        ents = log.entries_for_send(pr.next, cfg.max_entries_per_msg, cfg.max_bytes_per_msg)
        if not ents and not send_empty:
            return False
        self._send(MSG_APP, to, index=prev, log_term=prev_term, entries=ents, commit=log.committed)
        if pr.state is ProgressState.REPLICATE:
            if ents:
                last = ents[-1].index
                pr.next = last + 1
                pr.inflights.add(last)
        else:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        snap = self._snapshot_meta
        if not pr.recent_active or snap is None or snap.index < self._log.offset:
            return False
        # The driver streams the state-machine data and reports back via report_snapshot().
        self._send(MSG_SNAP, to, snapshot=snap, commit=self._log.committed)
        pr.become_snapshot(snap.index)
        return True
