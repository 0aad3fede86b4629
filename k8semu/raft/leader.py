"""The leader role of the Raft core: replication flow control, commitment, heartbeats, ReadIndex.

Owns what only a leader knows and does (Raft paper 5.3-5.4, thesis 3.10, 6.2 and 6.4): the
progress of each follower and the MSG_APP/MSG_SNAP it sends, the commit rule, check-quorum,
the ReadIndex queue and a leadership transfer in progress. ``Raft`` creates one ``Leader`` when
it wins an election and drops it when it steps down, so none of this state outlives the term
(etcd-raft keeps the same in its ProgressTracker and readOnly, reset on every role change).

It must not do I/O, change terms or roles: it reports a lost quorum from ``tick`` and the core
steps down. It writes its messages and read states to the node's ``Outbox``.
"""

from __future__ import annotations

from collections.abc import Sequence

from k8semu.pb.raft.raft_pb2 import (
    ENTRY_CONF_CHANGE,
    ENTRY_NORMAL,
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
    EntryType,
    Message,
    SnapshotMetadata,
)
from k8semu.raft.config import Config
from k8semu.raft.errors import ConfChangeInProgress, TransferInProgress
from k8semu.raft.log import RaftLog
from k8semu.raft.outbox import Outbox
from k8semu.raft.progress import Progress, ProgressState
from k8semu.raft.readonly import ReadOnly, ReadRequest
from k8semu.raft.ready import ReadState

__all__ = ["Leader"]


class Leader:
    """The leader of one term. Invariants: ``progress`` has an entry for every voter (its own
    with ``match == log.last_index``); ``transferee`` is 0 or a peer being handed leadership."""

    def __init__(
        self,
        cfg: Config,
        term: int,
        log: RaftLog,
        out: Outbox,
        voters: frozenset[int],
        learners: frozenset[int] = frozenset(),
    ) -> None:
        self._cfg = cfg
        self._id = cfg.id
        self._term = term
        self._log = log
        self._out = out
        # Replicated to: voters and learners; counted for commit, quorum and reads: voters.
        self._voters = voters
        self._peers = tuple(sorted(v for v in voters | learners if v != cfg.id))
        self._quorum = len(voters) // 2 + 1
        nxt = log.last_index + 1
        self.progress = {v: Progress(nxt, cfg.max_inflight) for v in voters | learners}
        own = self.progress[self._id]
        own.match = log.last_index
        own.recent_active = True
        own.state = ProgressState.REPLICATE
        # Followers whose MSG_APP is built when the Ready is assembled, so that all proposals
        # of one cycle share a message (group commit). Value: send even without entries.
        self._dirty: dict[int, bool] = {}
        self._readonly = ReadOnly(self._id, self._quorum)
        # Reads that arrived before the leader committed an entry of its term (thesis 6.4).
        self._reads_waiting: list[tuple[int, bytes]] = []
        # Leadership transfer in progress (thesis 3.10): target (0: none) and ticks since asked.
        self.transferee = 0
        self._transfer_elapsed = 0
        self._heartbeat_elapsed = 0
        # Index of the last conf change appended (thesis 4.1: one at a time). etcd-raft's
        # rule: any entry not applied when the term began may be one, so none is taken
        # before everything held now is applied.
        self._pending_conf = log.last_index + 1

    # -- inputs from the core ------------------------------------------------------------------

    def tick(self, quorum_round: bool) -> bool:
        """Advance the leader's clocks by one tick; ``quorum_round`` says an election timeout
        passed since the last round (the core keeps that clock: it is also the leader's lease).
        False when the leader lost its quorum and must step down."""
        cfg = self._cfg
        self._heartbeat_elapsed += 1
        if self.transferee:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= cfg.election_tick:
                # Thesis 3.10: a transfer that did not happen within an election timeout is
                # aborted so the leader takes proposals again.
                self.transferee = 0
                self._transfer_elapsed = 0
        if quorum_round and cfg.check_quorum:
            # Thesis 6.2: a leader that did not hear from a quorum within an election
            # timeout steps down, so clients stop waiting on a leader that cannot commit.
            voters = self._voters
            active = sum(1 for v, pr in self.progress.items() if pr.recent_active and v in voters)
            if active < self._quorum:
                return False
            for peer in self._peers:
                self.progress[peer].recent_active = False
        if self._heartbeat_elapsed >= cfg.heartbeat_tick:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat(self._readonly.last_context())
        return True

    def step(self, msg: Message) -> None:
        """The leader's handling of a message of its own term."""
        mtype = msg.type
        frm = getattr(msg, "from")
        if mtype == MSG_APP_RESP:
            self._handle_append_response(msg, frm)
        elif mtype == MSG_HEARTBEAT_RESP:
            self._handle_heartbeat_response(msg, frm)
        elif mtype == MSG_PROP:
            # Forwarded proposals are dropped during a transfer (the follower's client times
            # out or learns of the leader change and retries).
            if msg.entries and not self.transferee:
                self.append([e.data for e in msg.entries])
        elif mtype == MSG_READ_INDEX:
            self.read(frm, msg.context)

    def propose(self, datas: Sequence[bytes]) -> None:
        """Append local proposals; raises TransferInProgress while handing leadership over."""
        if self.transferee:
            # Thesis 3.10: new entries would only delay the transfer (the target must catch
            # up with them) and may be lost; the client retries at the new leader.
            raise TransferInProgress("leadership transfer in progress")
        self.append(datas)

    def propose_conf_change(self, data: bytes, applying: int) -> None:
        """Append one membership change; ``applying`` is the index handed out to be applied."""
        if self.transferee:
            raise TransferInProgress("leadership transfer in progress")
        if self._pending_conf > applying:
            raise ConfChangeInProgress(f"membership change at index {self._pending_conf}")
        self.append((data,), ENTRY_CONF_CHANGE)
        self._pending_conf = self._log.last_index

    def set_voters(self, voters: frozenset[int], learners: frozenset[int]) -> None:
        """A membership change was applied: track the new members' logs (probing from the
        end of ours), forget the removed ones, and count the new quorum at once (removing a
        member may commit what the others already hold)."""
        nxt = self._log.last_index + 1
        everyone = voters | learners
        for gone in set(self.progress) - everyone - {self._id}:
            del self.progress[gone]
            self._dirty.pop(gone, None)
        for new in everyone - set(self.progress):
            self.progress[new] = Progress(nxt, self._cfg.max_inflight)
            self._dirty[new] = True
        if self.transferee not in voters:
            self.transferee = 0
        self._voters = voters
        self._peers = tuple(sorted(v for v in everyone if v != self._id))
        self._quorum = len(voters) // 2 + 1
        self._readonly.set_members(self._quorum, voters)
        self._maybe_commit()

    def append(self, datas: Sequence[bytes], etype: EntryType.ValueType = ENTRY_NORMAL) -> None:
        log = self._log
        term = self._term
        start = log.last_index + 1
        log.append(
            [Entry(term=term, index=i, data=d, type=etype) for i, d in enumerate(datas, start)]
        )
        own = self.progress[self._id]
        own.match = log.last_index
        own.next = own.match + 1
        if not self._maybe_commit():
            dirty = self._dirty
            for peer in self._peers:
                dirty.setdefault(peer, False)

    def read(self, origin: int, context: bytes) -> None:
        """A ReadIndex request from ``origin`` (this node for local reads)."""
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

    def transfer(self, target: int) -> None:
        """Hand leadership over to the peer ``target`` (the core checked it is one)."""
        if target == self.transferee:
            return
        self.transferee = target
        self._transfer_elapsed = 0
        # Followers learn at once that forwarding proposals here is useless for now.
        self._bcast_heartbeat(b"")
        if self.progress[target].match == self._log.last_index:
            self._out.send(MSG_TIMEOUT_NOW, target, self._term)
        else:
            # Bring the target's log up to date first; its MSG_APP_RESP sends TimeoutNow.
            self._dirty[target] = True

    def transfer_candidate(self) -> int:
        """The follower a leaving leader should hand over to: the most up-to-date one heard
        from recently (0 if alone). Ties go to the lowest id (deterministic)."""
        best = (-1, 0)
        for peer in self._peers:
            if peer not in self._voters:
                continue
            pr = self.progress[peer]
            key = (pr.match if pr.recent_active else pr.match // 2, -peer)
            if key > best:
                best = key
        return -best[1] if best[0] >= 0 else 0

    def report_snapshot(self, to: int, ok: bool) -> None:
        pr = self.progress.get(to)
        if pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the follower's MSG_APP_RESP (or a heartbeat reply) before probing again.
        pr.probe_sent = True

    def report_unreachable(self, to: int) -> None:
        pr = self.progress.get(to)
        if pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def flush(self, snapshot: SnapshotMetadata | None) -> None:
        """Build the messages deferred during this cycle (heartbeat round, MSG_APPs);
        ``snapshot`` is what a follower the log cannot serve any more gets."""
        if self._readonly.has_batch():
            # Thesis 6.4 step 3: one heartbeat round confirms leadership for the whole batch.
            self._bcast_heartbeat(self._readonly.seal())
        if self._dirty:
            dirty = self._dirty
            self._dirty = {}
            for peer, send_empty in dirty.items():
                if self._send_append(peer, send_empty, snapshot):
                    while self._send_append(peer, False, snapshot):
                        pass

    # -- commitment and responses --------------------------------------------------------------

    def _maybe_commit(self) -> bool:
        """Commit the highest index replicated on a quorum if it is of the current term.

        Raft paper 5.4.2 (Figure 8): entries of earlier terms are only committed indirectly.
        On success followers learn the new commit index right away.
        """
        voters = self._voters
        matches = sorted((pr.match for v, pr in self.progress.items() if v in voters), reverse=True)
        index = matches[self._quorum - 1]
        log = self._log
        if index <= log.committed or log.term(index) != self._term:
            return False
        log.commit_to(index)
        if self._reads_waiting:
            waiting, self._reads_waiting = self._reads_waiting, []
            for origin, ctx in waiting:
                self.read(origin, ctx)
        for peer in self._peers:
            self._dirty[peer] = True
        return True

    def _handle_append_response(self, msg: Message, frm: int) -> None:
        pr = self.progress[frm]
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
        if frm == self.transferee and pr.match == log.last_index:
            # The transfer target caught up: tell it to campaign now.
            self._out.send(MSG_TIMEOUT_NOW, frm, self._term)

    def _handle_heartbeat_response(self, msg: Message, frm: int) -> None:
        pr = self.progress[frm]
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and pr.inflights.full():
            # A lost MSG_APP must not stall the window forever.
            pr.inflights.free_first_one()
        if pr.match < self._log.last_index:
            self._dirty[frm] = True
        if msg.context and frm in self._voters:
            for req in self._readonly.ack(msg.context, frm):
                self._answer_read(req)

    def _answer_read(self, req: ReadRequest) -> None:
        if req.origin == self._id:
            self._out.read_states.append(ReadState(req.index, req.context))
        else:
            self._out.send(
                MSG_READ_INDEX_RESP, req.origin, self._term, index=req.index, context=req.context
            )

    # -- sending -------------------------------------------------------------------------------

    def _bcast_heartbeat(self, context: bytes) -> None:
        committed = self._log.committed
        send = self._out.send
        term = self._term
        extra = {"leader_transfer": True} if self.transferee else {}
        for peer in self._peers:
            # Never tell a follower to commit past what it is known to hold.
            commit = min(self.progress[peer].match, committed)
            send(MSG_HEARTBEAT, peer, term, commit=commit, context=context, **extra)

    def _send_append(self, to: int, send_empty: bool, snapshot: SnapshotMetadata | None) -> bool:
        """Send the next MSG_APP (or the MSG_SNAP) to ``to``; False if nothing was sent."""
        pr = self.progress[to]
        if pr.is_paused():
            return False
        log = self._log
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None:
            if prev > log.last_index:
                return False
            return self._send_snapshot(to, pr, snapshot)
        cfg = self._cfg
        ents = log.entries_for_send(pr.next, cfg.max_entries_per_msg, cfg.max_bytes_per_msg)
        if not ents and not send_empty:
            return False
        self._out.send(
            MSG_APP,
            to,
            self._term,
            index=prev,
            log_term=prev_term,
            entries=ents,
            commit=log.committed,
        )
        if pr.state is ProgressState.REPLICATE:
            if ents:
                last = ents[-1].index
                pr.next = last + 1
                pr.inflights.add(last)
        else:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress, snap: SnapshotMetadata | None) -> bool:
        if not pr.recent_active or snap is None or snap.index < self._log.offset:
            return False
        # The driver streams the state-machine data and reports back via report_snapshot().
        self._out.send(MSG_SNAP, to, self._term, snapshot=snap, commit=self._log.committed)
        pr.become_snapshot(snap.index)
        return True
