"""The pure Raft state machine: elections, replication, commit, ReadIndex and snapshots.

Owns the protocol of the Raft paper (Ongaro & Ousterhout 2014) and thesis (Ongaro 2014) with
pre-vote, check-quorum, pipelined replication, ReadIndex and leadership transfer, in etcd-raft's
Ready style: input is ``tick()``, ``step(message)`` and proposals; output is a ``Ready`` batch
saying what to persist, what to send and what is committed. It must not do I/O, read a clock,
start tasks or threads, or use a global random source: the driver owns all effects, time is a
tick count and randomness comes from the injected ``random.Random``. Input from the network
never raises; it is ignored when it makes no sense.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from k8semu.pb.raft.raft_pb2 import (
    MSG_APP,
    MSG_APP_RESP,
    MSG_HEARTBEAT,
    MSG_HEARTBEAT_RESP,
    MSG_PRE_VOTE,
    MSG_PRE_VOTE_RESP,
    MSG_PROP,
    MSG_READ_INDEX,
    MSG_READ_INDEX_RESP,
    MSG_SNAP,
    MSG_TIMEOUT_NOW,
    MSG_VOTE,
    MSG_VOTE_RESP,
    Entry,
    HardState,
    Message,
    SnapshotMetadata,
)
from k8semu.raft import membership
from k8semu.raft.config import Config
from k8semu.raft.errors import NotLeader, ProposalDropped, SnapshotRejected
from k8semu.raft.leader import Leader
from k8semu.raft.log import RaftLog
from k8semu.raft.outbox import Outbox
from k8semu.raft.ready import ReadState, Ready, SoftState, StateRole

__all__ = ["Raft"]

_KNOWN_TYPES = frozenset(
    {
        MSG_PROP,
        MSG_APP,
        MSG_APP_RESP,
        MSG_VOTE,
        MSG_VOTE_RESP,
        MSG_PRE_VOTE,
        MSG_PRE_VOTE_RESP,
        MSG_HEARTBEAT,
        MSG_HEARTBEAT_RESP,
        MSG_SNAP,
        MSG_READ_INDEX,
        MSG_READ_INDEX_RESP,
        MSG_TIMEOUT_NOW,
    }
)
_FROM_LEADER = frozenset({MSG_APP, MSG_HEARTBEAT, MSG_SNAP})
_VOTE_REQUESTS = frozenset({MSG_VOTE, MSG_PRE_VOTE})
# Terms and indexes at or above this are garbage: real clusters never get near it, and accepting
# them would overflow uint64 fields (term + 1) or the driver's signed 64-bit storage.
_SANE_LIMIT = 1 << 62


class _View:
    """The read-only view of a node (split from ``Raft``, which sets every field)."""

    _id: int
    _term: int
    _lead: int
    _role: StateRole
    _leader: Leader | None
    _transfer_term: int
    _lead_transferring: bool
    _log: RaftLog
    _snapshot_meta: SnapshotMetadata | None
    _ms: membership.MemberSet

    @property
    def id(self) -> int:
        return self._id

    @property
    def term(self) -> int:
        return self._term

    @property
    def leader(self) -> int:
        return self._lead

    @property
    def role(self) -> StateRole:
        return self._role

    @property
    def transferee(self) -> int:
        """The member a leadership transfer in progress goes to, else 0."""
        return self._leader.transferee if self._leader is not None else 0

    @property
    def awaiting_transfer_leader(self) -> bool:
        """No leader is known, but a leadership transfer's campaign for the current term is
        under way: the driver may hold proposals for the new leader instead of failing them."""
        return self._lead == 0 and self._transfer_term == self._term

    @property
    def hold_proposals(self) -> bool:
        """Proposals made now would be refused or dropped by a leader handing over, and a
        new leader is a round trip away: the driver should hold them, not fail them."""
        return bool(self.transferee) or self._lead_transferring or self.awaiting_transfer_leader

    @property
    def commit(self) -> int:
        return self._log.committed

    @property
    def applied(self) -> int:
        return self._log.applied

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def first_index(self) -> int:
        return self._log.first_index

    @property
    def snapshot_meta(self) -> SnapshotMetadata | None:
        return self._snapshot_meta

    @property
    def members(self) -> dict[int, bytes]:
        """The applied membership: member id -> context (a copy)."""
        return dict(self._ms.members)

    @property
    def learners(self) -> frozenset[int]:
        """The members of ``members`` that are learners."""
        return frozenset(self._ms.conf.learners)

    def progress_match(self, member: int) -> int | None:
        """How far ``member``'s log is known to match the leader's (the leader's own: its
        last index); None when this node does not lead or ``member`` is not replicated to."""
        pr = self._leader.progress.get(member) if self._leader is not None else None
        return pr.match if pr is not None else None

    def conf_at(self, index: int) -> membership.Conf:
        """The membership once the entries up to ``index`` (held in the log) are applied."""
        log = self._log
        hi = min(index, log.last_index) + 1
        return self._ms.at(log.slice(log.first_index, hi))

    def log_term(self, index: int) -> int | None:
        """Term of the entry at ``index`` if the in-memory log still holds it."""
        return self._log.term(index)

    def log_entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``[lo, hi)`` clipped to what the in-memory log holds (do not mutate them)."""
        log = self._log
        lo = max(lo, log.first_index)
        hi = min(hi, log.last_index + 1)
        return log.slice(lo, hi) if lo < hi else []


class Raft(_View):
    """One Raft node. See the module docstring for what it owns; Ready for the I/O contract."""

    def __init__(
        self,
        config: Config,
        rng: random.Random,
        *,
        hard_state: HardState | None = None,
        snapshot: SnapshotMetadata | None = None,
        entries: Sequence[Entry] = (),
        applied: int = 0,
        members: Mapping[int, bytes] | None = None,
        learners: Iterable[int] = (),
    ) -> None:
        """Start (or restart) from durable state.

        ``entries`` is the persisted log after the snapshot (entries at or below the snapshot
        index are skipped); ``applied`` is the state machine's applied index, at least the
        snapshot index (the driver restored the state machine from the snapshot).
        ``members`` is the membership the log starts from when there is no snapshot (the
        bootstrap members with their contexts; default: ``config.voters``); the membership
        now is that (or the snapshot's) with the conf changes up to ``applied`` applied.
        """
        config.validate()
        self._cfg = config
        self._id = config.id
        self._rng = rng

        snap_index = snapshot.index if snapshot is not None else 0
        snap_term = snapshot.term if snapshot is not None else 0
        ents = [e for e in entries if e.index > snap_index]
        for n, e in enumerate(ents):
            if e.index != snap_index + 1 + n:
                raise ValueError(f"raft restart: log gap at index {snap_index + 1 + n}")
        self._log = RaftLog(snap_index, snap_term, ents)
        base = membership.from_snapshot(snapshot)
        if base is None:
            known = dict(members) if members is not None else dict.fromkeys(config.voters, b"")
            base = membership.Conf(known, set(learners))
        self._ms = membership.MemberSet(config.id, base, (e for e in ents if e.index <= applied))
        self._snapshot_meta: SnapshotMetadata | None = None
        if snapshot is not None:
            self._snapshot_meta = SnapshotMetadata()
            self._snapshot_meta.CopyFrom(snapshot)

        hs = hard_state if hard_state is not None else HardState()
        self._term = hs.term
        self._vote = hs.vote
        log = self._log
        log.applied = min(max(applied, snap_index), log.last_index)
        log.committed = min(max(hs.commit, log.applied), log.last_index)
        self._applying = log.applied

        self._lead = 0
        self._role = StateRole.FOLLOWER
        self._election_elapsed = 0
        self._randomized_timeout = config.election_tick
        self._votes: dict[int, bool] = {}
        # The leader's own state, only while this node leads (see leader.py).
        self._leader: Leader | None = None
        self._out = Outbox(self._id)
        # Term of the last transfer campaign seen (as voter or candidate): until its leader is
        # known, a leader is expected within a round trip, not an election timeout.
        self._transfer_term = 0
        # A follower's leader said (in its heartbeats) that it is handing over.
        self._lead_transferring = False
        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election

        self._prev_soft = (0, StateRole.FOLLOWER)
        self._prev_hard = (hs.term, hs.vote, hs.commit)
        self._become_follower(self._term, 0)

    # -- inputs --------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance the logical clock by one tick."""
        self._tick()

    def step(self, msg: Message) -> None:
        """Feed one message from a peer. Garbage is ignored, never raised."""
        mtype = msg.type
        frm = getattr(msg, "from")
        if msg.to != self._id or frm == self._id or frm not in self._ms.members:
            return
        if mtype not in _KNOWN_TYPES:
            return
        term = msg.term
        if (
            term >= _SANE_LIMIT
            or msg.index >= _SANE_LIMIT
            or msg.log_term >= _SANE_LIMIT
            or msg.commit >= _SANE_LIMIT
        ):
            return
        if term > self._term:
            if mtype in _VOTE_REQUESTS:
                # Leader lease (thesis 4.2.3): a node that heard from a leader within the
                # minimum election timeout neither updates its term nor grants its vote, so a
                # partitioned node cannot disrupt a working cluster.
                # A campaign the leader itself started (leadership transfer) is exempt.
                lease = (self._cfg.check_quorum or mtype == MSG_PRE_VOTE) and not (
                    mtype == MSG_VOTE and msg.leader_transfer
                )
                if lease and self._lead and self._election_elapsed < self._cfg.election_tick:
                    return
            if mtype == MSG_PRE_VOTE or (mtype == MSG_PRE_VOTE_RESP and not msg.reject):
                # Pre-vote (thesis 9.6) never changes terms; a granted pre-vote is answered
                # at the future term the pre-candidate asked about.
                pass
            elif mtype in _FROM_LEADER:
                self._become_follower(term, frm)
            else:
                self._become_follower(term, 0)
        elif term < self._term:
            self._step_stale(msg, frm)
            return
        if mtype in _VOTE_REQUESTS:
            if mtype == MSG_VOTE and msg.leader_transfer and term == self._term:
                self._transfer_term = term
            self._handle_vote_request(msg, frm)
        else:
            self._step(msg)

    def propose(self, data: bytes) -> None:
        """Propose one entry; raises ProposalDropped when no leader is known."""
        self.propose_batch((data,))

    def propose_batch(self, datas: Sequence[bytes]) -> None:
        """Propose many entries at once (they travel in one MSG_APP/MSG_PROP)."""
        if not datas:
            return
        if self._leader is not None:
            self._leader.propose(datas)
        elif self._lead:
            self._send(
                MSG_PROP, self._lead, entries=[Entry(data=d) for d in datas], term=self._term
            )
        else:
            raise ProposalDropped("no leader")

    def propose_conf_change(self, data: bytes) -> None:
        """Append one membership change (a serialized ConfChange); on the leader only.

        Raises NotLeader elsewhere, TransferInProgress while handing over, and
        ConfChangeInProgress while an earlier change is not applied yet (thesis 4.1: a
        single-server change is only safe once the previous one took effect).
        """
        if self._leader is None:
            raise NotLeader("membership changes are proposed on the leader")
        self._leader.propose_conf_change(data, self._applying)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; answered by a ReadState with the same context.

        Raises ProposalDropped when no leader is known. A request is dropped silently if
        leadership changes before it is answered; callers time out and retry.
        """
        if self._leader is not None:
            self._leader.read(self._id, context)
        elif self._lead:
            self._send(MSG_READ_INDEX, self._lead, context=context, term=self._term)
        else:
            raise ProposalDropped("no leader")

    def transfer_leader(self, target: int) -> None:
        """Hand leadership over to ``target`` (Raft thesis 3.10).

        Only a leader acts; a transfer to itself, to a non-member or to the target already
        being transferred to is ignored. Until it completes or aborts (after an election
        timeout), proposals are refused with TransferInProgress.
        """
        if self._leader is not None and target != self._id and target in self._voters:
            self._leader.transfer(target)

    def transfer_candidate(self) -> int:
        """The follower a leaving leader should hand over to: the most up-to-date one heard
        from recently (0 if not leader or alone)."""
        return self._leader.transfer_candidate() if self._leader is not None else 0

    def set_snapshot(self, meta: SnapshotMetadata) -> None:
        """The driver holds a state-machine snapshot at ``meta.index``; lagging followers get it.

        Older snapshots than the current one are ignored.
        """
        cur = self._snapshot_meta
        if cur is not None and meta.index <= cur.index:
            return
        if meta.index > self._log.committed:
            raise SnapshotRejected(f"snapshot index {meta.index} beyond commit")
        known = self._log.term(meta.index)
        if known is not None and known != meta.term:
            raise SnapshotRejected(f"snapshot term {meta.term} != log term {known}")
        snap = SnapshotMetadata()
        snap.CopyFrom(meta)
        self._snapshot_meta = snap

    def compact(self, index: int) -> None:
        """Drop in-memory entries up to ``index``, clamped to the snapshot and applied indexes."""
        snap = self._snapshot_meta
        if snap is None:
            return
        upto = min(index, snap.index, self._log.applied)
        if upto > self._log.offset:
            self._ms.offset = self.conf_at(upto)
        self._log.compact(upto)

    def report_snapshot(self, to: int, ok: bool) -> None:
        """The driver finished (or failed) streaming the snapshot of a MSG_SNAP to ``to``."""
        if self._leader is not None:
            self._leader.report_snapshot(to, ok)

    def report_unreachable(self, to: int) -> None:
        """Sending to ``to`` failed: stop streaming optimistically and probe instead."""
        if self._leader is not None:
            self._leader.report_unreachable(to)

    # -- outputs -------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        self._flush()
        log = self._log
        return bool(
            self._out
            or self._ms.changed
            or log.unstable <= log.last_index
            or log.pending_snapshot is not None
            or log.committed > self._applying
            or (self._lead, self._role) != self._prev_soft
            or (self._term, self._vote, log.committed) != self._prev_hard
        )

    def ready(self) -> Ready:
        self._flush()
        log = self._log
        soft = None
        if (self._lead, self._role) != self._prev_soft:
            self._prev_soft = (self._lead, self._role)
            soft = SoftState(self._lead, self._role)
        hard = None
        must_sync = False
        cur = (self._term, self._vote, log.committed)
        if cur != self._prev_hard:
            must_sync = cur[:2] != self._prev_hard[:2]
            self._prev_hard = cur
            hard = HardState(term=cur[0], vote=cur[1], commit=cur[2])
        snap = log.pending_snapshot
        if snap is not None:
            self._applying = max(self._applying, snap.index)
        committed = log.committed_after(self._applying)
        if committed:
            self._applying = committed[-1].index
            if self._ms.apply(committed):
                self._voters_changed()
        members = None
        if self._ms.changed:
            self._ms.changed = False
            members = dict(self._ms.members)
        entries = log.unstable_entries()
        msgs, reads = self._out.take()
        return Ready(
            soft_state=soft,
            hard_state=hard,
            entries=entries,
            snapshot=snap,
            committed_entries=committed,
            messages=msgs,
            read_states=reads,
            must_sync=must_sync or bool(entries) or snap is not None,
            members=members,
        )

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied ``rd``."""
        log = self._log
        if rd.snapshot is not None:
            log.applied = max(log.applied, rd.snapshot.index)
            if log.pending_snapshot is rd.snapshot:
                log.pending_snapshot = None
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied = max(log.applied, rd.committed_entries[-1].index)

    # -- roles ---------------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self._term:
            self._term = term
            self._vote = 0
        self._lead = 0
        self._election_elapsed = 0
        # Raft paper 5.2: randomized timeouts in [election_tick, 2 * election_tick) make split
        # votes rare.
        et = self._cfg.election_tick
        self._randomized_timeout = et + self._rng.randrange(et)
        self._votes = {}
        # A leader's state ends with its term or its role (pending reads are dropped:
        # callers time out and retry).
        self._leader = None
        self._lead_transferring = False

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self._lead = lead
        self._role = StateRole.FOLLOWER
        self._step = self._step_follower
        self._tick = self._tick_election

    def _become_pre_candidate(self) -> None:
        # Thesis 9.6: no term change and no vote, so a failed pre-vote leaves no trace.
        term, vote = self._term, self._vote
        self._reset(term)
        self._vote = vote
        self._role = StateRole.PRE_CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election

    def _become_candidate(self) -> None:
        self._reset(self._term + 1)
        self._vote = self._id
        self._role = StateRole.CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election

    def _become_leader(self) -> None:
        self._reset(self._term)
        self._lead = self._id
        self._role = StateRole.LEADER
        learners = frozenset(self._ms.conf.learners)
        leader = self._leader = Leader(
            self._cfg, self._term, self._log, self._out, self._voters, learners
        )
        self._step = leader.step
        self._tick = self._tick_leader
        # Raft paper 8 / thesis 6.4: a no-op entry of the new term lets the leader learn its
        # commit index (entries of older terms are never committed by counting, Figure 8).
        leader.append((b"",))

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if pre:
            self._become_pre_candidate()
            vote_term, mtype = self._term + 1, MSG_PRE_VOTE
        else:
            self._become_candidate()
            vote_term, mtype = self._term, MSG_VOTE
        if self._poll(self._id, True) >= self._quorum:
            # Single-node cluster: the own vote is a quorum.
            if pre:
                self._campaign(False)
            else:
                self._become_leader()
            return
        log = self._log
        extra = {"leader_transfer": True} if transfer else {}
        for peer in self._peers:
            self._send(
                mtype, peer, term=vote_term, log_term=log.last_term, index=log.last_index, **extra
            )

    def _poll(self, voter: int, granted: bool) -> int:
        """Record a vote; returns the number of grants (rejections: len(votes) - grants)."""
        self._votes.setdefault(voter, granted)
        return sum(1 for g in self._votes.values() if g)

    # -- ticks ---------------------------------------------------------------------------------

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._id not in self._voters:
            return  # removed (or not added yet): a non-member never campaigns
        # A single-node cluster has nobody to wait for: it elects itself on its first tick.
        if self._election_elapsed >= self._randomized_timeout or not self._peers:
            self._election_elapsed = 0
            self._campaign(pre=self._cfg.pre_vote)

    def _tick_leader(self) -> None:
        assert self._leader is not None
        # For a leader the election clock counts ticks since its last check-quorum round.
        self._election_elapsed += 1
        quorum_round = self._election_elapsed >= self._cfg.election_tick
        if quorum_round:
            self._election_elapsed = 0
        if not self._leader.tick(quorum_round):
            self._become_follower(self._term, 0)

    def _flush(self) -> None:
        """Let the leader build the messages it deferred during this cycle."""
        if self._leader is not None:
            self._leader.flush(self._snapshot_meta)

    # -- message handling common to all roles --------------------------------------------------

    def _step_stale(self, msg: Message, frm: int) -> None:
        mtype = msg.type
        if (self._cfg.check_quorum or self._cfg.pre_vote) and mtype in (MSG_HEARTBEAT, MSG_APP):
            # A stale leader, or we raised our term while partitioned and now cannot rejoin
            # because lease/pre-vote keep others from adopting it: answering at our term
            # makes the stale leader step down so a fresh election can include us.
            self._send(MSG_APP_RESP, frm)
        elif mtype == MSG_PRE_VOTE:
            # Tell a pre-candidate with an old term that it is behind.
            self._send(MSG_PRE_VOTE_RESP, frm, reject=True)

    def _handle_vote_request(self, msg: Message, frm: int) -> None:
        pre = msg.type == MSG_PRE_VOTE
        resp = MSG_PRE_VOTE_RESP if pre else MSG_VOTE_RESP
        can_vote = (
            self._vote == frm
            or (self._vote == 0 and self._lead == 0)
            or (pre and msg.term > self._term)
        )
        if can_vote and self._log.is_up_to_date(msg.index, msg.log_term):
            self._send(resp, frm, term=msg.term)
            if not pre:
                self._election_elapsed = 0
                self._vote = frm
        else:
            self._send(resp, frm, reject=True)

    # -- follower ------------------------------------------------------------------------------

    def _step_follower(self, msg: Message) -> None:
        mtype = msg.type
        frm = getattr(msg, "from")
        if mtype == MSG_APP:
            self._election_elapsed = 0
            self._lead = frm
            self._handle_append(msg, frm)
        elif mtype == MSG_HEARTBEAT:
            self._election_elapsed = 0
            self._lead = frm
            self._lead_transferring = msg.leader_transfer
            self._handle_heartbeat(msg, frm)
        elif mtype == MSG_SNAP:
            self._election_elapsed = 0
            self._lead = frm
            self._handle_snapshot(msg, frm)
        elif mtype == MSG_READ_INDEX_RESP and frm == self._lead:
            self._out.read_states.append(ReadState(msg.index, msg.context))
        elif mtype == MSG_TIMEOUT_NOW and frm == self._lead:
            # Leadership transfer: campaign at once, without pre-vote (the leader asked, so
            # the election cannot be disruptive), flagged so voters ignore their lease.
            self._campaign(pre=False, transfer=True)
            self._transfer_term = self._term
        # MSG_PROP / MSG_READ_INDEX sent to a former leader are dropped: the caller retries.

    def _handle_append(self, msg: Message, frm: int) -> None:
        log = self._log
        if msg.index < log.committed:
            self._send(MSG_APP_RESP, frm, index=log.committed)
            return
        ents = list(msg.entries)
        if ents and not _well_formed(ents, msg.index, msg.log_term, msg.term):
            return
        last_new = log.maybe_append(msg.index, msg.log_term, msg.commit, ents)
        if last_new is None:
            # Fast back-up: point the leader at the last index that can still match.
            hint, hint_term = log.find_conflict_by_term(
                min(msg.index, log.last_index), msg.log_term
            )
            self._send(
                MSG_APP_RESP,
                frm,
                index=msg.index,
                reject=True,
                reject_hint=hint,
                reject_term=hint_term,
            )
        elif last_new >= 0:
            self._send(MSG_APP_RESP, frm, index=last_new)

    def _handle_heartbeat(self, msg: Message, frm: int) -> None:
        # The leader sends min(match, commit), so everything up to it is in our log.
        self._log.commit_to(msg.commit)
        self._send(MSG_HEARTBEAT_RESP, frm, context=msg.context)

    def _handle_snapshot(self, msg: Message, frm: int) -> None:
        if not msg.HasField("snapshot"):
            return
        meta = msg.snapshot
        log = self._log
        if meta.index >= _SANE_LIMIT or meta.term > msg.term or meta.term == 0:
            return
        if meta.index <= log.committed:
            self._send(MSG_APP_RESP, frm, index=log.committed)
            return
        if log.match_term(meta.index, meta.term):
            # Our log already holds the snapshot's last entry: keep the log, fast-forward.
            log.commit_to(meta.index)
        else:
            snap = SnapshotMetadata()
            snap.CopyFrom(meta)
            log.restore(snap)
            self._snapshot_meta = snap
            if self._ms.restore(snap):
                self._voters_changed()
        self._send(MSG_APP_RESP, frm, index=meta.index)

    # -- candidate and pre-candidate -----------------------------------------------------------

    def _step_candidate(self, msg: Message) -> None:
        mtype = msg.type
        frm = getattr(msg, "from")
        if mtype in _FROM_LEADER:
            # Raft paper 5.2: a leader of our term exists; its message was not stale.
            self._become_follower(self._term, frm)
            self._step_follower(msg)
            return
        pre = self._role is StateRole.PRE_CANDIDATE
        if mtype != (MSG_PRE_VOTE_RESP if pre else MSG_VOTE_RESP):
            return
        if msg.reject:
            granted = False
        elif msg.term == (self._term + 1 if pre else self._term):
            granted = True
        else:
            return  # a grant from an earlier round
        grants = self._poll(frm, granted)
        if grants >= self._quorum:
            if pre:
                self._campaign(False)
            else:
                self._become_leader()
        elif len(self._votes) - grants > len(self._voters) - self._quorum:
            self._become_follower(self._term, 0)

    # -- membership ----------------------------------------------------------------------------

    @property
    def _voters(self) -> frozenset[int]:
        return self._ms.voters

    @property
    def _peers(self) -> tuple[int, ...]:
        return self._ms.peers

    @property
    def _quorum(self) -> int:
        return self._ms.quorum

    def _voters_changed(self) -> None:
        """Membership changes take effect as their entries are handed out to be applied."""
        if self._leader is None:
            return
        if self._id in self._voters:
            self._leader.set_voters(self._voters, frozenset(self._ms.conf.learners))
        else:
            # Removed while leading (etcd-raft does the same): the rest elect a leader.
            self._become_follower(self._term, 0)

    def _send(self, mtype: int, to: int, **fields: Any) -> None:
        """Send at the current term unless ``term`` says otherwise (votes, pre-votes)."""
        self._out.send(mtype, to, fields.pop("term", self._term), **fields)


def _well_formed(ents: list[Entry], prev_index: int, prev_term: int, term: int) -> bool:
    """Entries of a MSG_APP must be contiguous after prev_index with terms in order."""
    expected = prev_index + 1
    last_term = prev_term
    for e in ents:
        if e.index != expected or e.term < last_term or e.term == 0:
            return False
        expected += 1
        last_term = e.term
    return last_term <= term
