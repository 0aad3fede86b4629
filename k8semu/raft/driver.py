"""The asyncio driver around the pure Raft core: the only place Raft meets time and I/O.

Owns the loop that turns the core's Ready batches into effects, in the order the core's
contract demands: persist (raft.db, fsync) -> send -> apply -> advance. While one Ready
is being persisted or applied, new proposals, messages and ticks pile up and enter the
core together on the next turn: that is the group commit (many proposals, one
AppendEntries, one SQLite transaction). As the Raft thesis (10.2.1) allows, a leader
sends its AppendEntries/heartbeats before its own fsync; everything else waits for it.

Nothing slow runs on that loop (DESIGN decision 12): committed entries go to an apply
task that feeds the state machine in order (as etcd's apply goroutine), so a slow apply or a
long read on the state machine's thread never holds back a heartbeat; snapshots are made by
a background task from a separate database connection; log compaction deletes a bounded
chunk per turn. Ticks enter the core in arrival order with the messages, so a turn that did
take long never turns into an election by itself: a heartbeat that arrived during it resets
the election clock before the ticks that followed it are counted.

It does not know what entries mean: the state machine applies them. It never lets an
exception from one message stop the loop. It raises and fails requests with Raft's own
errors (``k8semu.raft.errors``); the store translates them for its clients.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from k8semu.log import get_logger
from k8semu.pb.raft import raft_pb2
from k8semu.raft import errors, membership
from k8semu.raft.config import Config
from k8semu.raft.core import Raft
from k8semu.raft.ready import Ready, SoftState, StateRole
from k8semu.raft.storage import RaftStorage
from k8semu.raft.transport import PeerTransport

log = get_logger(__name__)

_EARLY_SEND = frozenset({raft_pb2.MSG_APP, raft_pb2.MSG_HEARTBEAT})
_FROM_LEADER = frozenset({raft_pb2.MSG_APP, raft_pb2.MSG_HEARTBEAT, raft_pb2.MSG_SNAP})
# A tick in the inbox, between the messages that arrived before and after it.
_TICK = None
# Committed entries waiting for the apply task before the loop waits for it (memory bound).
MAX_APPLY_BACKLOG = 8192
# Log entries deleted from raft.db per loop turn after a snapshot (bounded disk work).
COMPACT_CHUNK = 2000
# How often the timing summary is logged (seconds).
REPORT_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Pacing:
    """How the driver paces its own work: the length of a tick, the entries applied between
    two snapshots, and the entries kept in raft.db behind a snapshot for lagging followers."""

    tick_interval: float
    snapshot_count: int = 10_000
    catch_up_entries: int = 1_000


@dataclass(slots=True)
class Timing:
    """What the driver measures about its own promptness (see `RaftNode.timing`).

    `leader_gap_max` is the longest interval between two messages from the leader received
    on this follower (heartbeats, appends, snapshots); `turn_max` the longest turn of the Raft
    loop. `*_window` are the same over the current report window, reset by the report.
    """

    last_leader_msg: float = 0.0
    leader_gap_max: float = 0.0
    leader_gap_window: float = 0.0
    turn_max: float = 0.0
    turn_window: float = 0.0


@dataclass(slots=True)
class PeerContact:
    """When each peer was last heard from, and since when without a break longer than
    ``gap`` (monotonic seconds): who is connected, for the store's checks before a
    membership change."""

    gap: float
    last: dict[int, float] = field(default_factory=dict)
    since: dict[int, float] = field(default_factory=dict)

    def heard(self, peer: int) -> None:
        now = time.monotonic()
        last = self.last.get(peer)
        if last is None or now - last > self.gap:
            self.since[peer] = now
        self.last[peer] = now


def durable_prefix(rd: Ready, stored_last_index: int) -> int:
    """How many of `rd.committed_entries` are already in the local log on disk, unchanged
    by `rd`: those may be applied while `rd` is being written, the rest only after."""
    if rd.snapshot is not None:
        return 0
    durable = stored_last_index
    if rd.entries:
        # Stored entries this Ready overwrites are not the committed ones: wait for them.
        durable = min(durable, rd.entries[0].index - 1)
    count = 0
    for entry in rd.committed_entries:
        if entry.index > durable:
            break
        count += 1
    return count


class StateMachine(Protocol):
    """What the driver needs from the replicated state machine."""

    @property
    def applied_index(self) -> int: ...

    async def apply(self, entries: Sequence[raft_pb2.Entry]) -> None: ...

    async def restore(self, path: Path, meta: raft_pb2.SnapshotMetadata) -> None: ...

    async def verify_snapshot(self, path: Path, index: int) -> None:
        """Raise unless `path` is a sound snapshot taken at Raft index `index`."""
        ...

    async def create_snapshot(self, path: Path) -> tuple[int, int]:
        """Write a snapshot of the applied state to `path`; returns its (index, term)."""
        ...

    def on_role_change(self, leader: int, is_leader: bool) -> None: ...


class RaftNode:
    """One replica's Raft: proposals and reads in, applied entries out."""

    def __init__(
        self,
        config: Config,
        storage: RaftStorage,
        state_machine: StateMachine,
        snapshot_dir: Path,
        pacing: Pacing,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._storage = storage
        self._sm = state_machine
        self._snap_dir = snapshot_dir
        self._pacing = pacing
        self._rng = rng or random.Random()
        self._core: Raft | None = None
        self.transport: PeerTransport | None = None
        # Peer messages and ticks (None), in arrival order.
        self._inbox: deque[raft_pb2.Message | None] = deque()
        # (entry data, future, whether entering the log resolves it): futures of
        # `propose_nowait` are only failed here, their result comes from the apply.
        self._proposals: list[tuple[bytes, asyncio.Future[Any], bool]] = []
        self._read_waiters: list[asyncio.Future[int]] = []
        self._reads_in_flight: dict[bytes, list[asyncio.Future[int]]] = {}
        self._read_ctx = itertools.count(1)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._snapshot_meta: raft_pb2.SnapshotMetadata | None = None
        # Committed entries handed to the apply task, oldest first; `_applying` is set while
        # it works and `_applied` when the queue runs dry.
        self._apply_queue: deque[Sequence[raft_pb2.Entry]] = deque()
        self._apply_backlog = 0
        self._apply_wake = asyncio.Event()
        self._apply_idle = asyncio.Event()
        self._apply_idle.set()
        self._snapshot_task: asyncio.Task[None] | None = None
        self._compact_target = 0
        self._compacted_to = 0
        # A snapshot taken in the background whose row raft.db does not hold yet.
        self._unrecorded_snapshot = False
        self.leader = 0
        self.role = StateRole.FOLLOWER
        # Counters for the debug log and benchmarks: how well work is being batched.
        self.stats = {"readys": 0, "entries_persisted": 0, "entries_applied": 0, "messages": 0}
        self.timing = Timing()
        self._stopped = False
        # A leadership transfer asked of the Raft loop (0: none); see transfer_leader.
        self._transfer_to = 0
        self._conf_proposals: list[tuple[bytes, asyncio.Future[None]]] = []  # (ConfChange, fut)
        # The applied membership (id -> context), and who hears when it changes.
        self.members: dict[int, bytes] = dict.fromkeys(config.voters, b"")
        self.on_members: Callable[[dict[int, bytes]], None] = lambda members: None
        self.contact = PeerContact(pacing.tick_interval * config.election_tick)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, transport: PeerTransport) -> None:
        self.transport = transport
        state = await self._storage.load()
        snap = state.snapshot
        self._snapshot_meta = snap
        self._compacted_to = self._compact_target = snap.index if snap is not None else 0
        if state.entries:
            self._compacted_to = state.entries[0].index - 1
        self._snap_dir.mkdir(parents=True, exist_ok=True)
        if snap is not None and self._sm.applied_index < snap.index:
            # The state machine lost writes newer than the snapshot (it is not fsynced on
            # every apply); the snapshot file is, so start from it and replay the log.
            await self._sm.restore(self._snapshot_path(snap.index), snap)
        hard_state = state.hard_state
        # Applying may run ahead of the persisted commit index (see _handle_ready); what
        # was applied was committed, so the commit index is at least that.
        hard_state.commit = max(hard_state.commit, self._sm.applied_index)
        self._core = Raft(
            self.config,
            self._rng,
            hard_state=hard_state,
            snapshot=snap,
            entries=state.entries,
            applied=self._sm.applied_index,
            members=state.members.members if state.members else None,
            learners=state.members.learners if state.members else (),
        )
        self.members = self._core.members
        transport.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run()),
            loop.create_task(self._ticker()),
            loop.create_task(self._applier()),
        ]

    async def wait_failed(self) -> BaseException:
        """Returns the error that stopped the Raft loop or the apply task (I/O failures)."""
        done, _ = await asyncio.wait(
            [self._tasks[0], self._tasks[2]], return_when=asyncio.FIRST_COMPLETED
        )
        task = done.pop()
        if task.cancelled():
            return asyncio.CancelledError()
        return task.exception() or RuntimeError("raft loop ended")

    async def stop(self) -> None:
        self._stopped = True
        tasks = list(self._tasks)
        if self._snapshot_task is not None:
            tasks.append(self._snapshot_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.transport is not None:
            await self.transport.stop()
        self._fail_all(errors.NodeStopped)

    # -- inputs -----------------------------------------------------------------------

    @property
    def term(self) -> int:
        return self._core.term if self._core else 0

    @property
    def commit_index(self) -> int:
        return self._core.commit if self._core else 0

    def step(self, messages: Sequence[raft_pb2.Message]) -> None:
        """Messages from peers (called by the transport servicer), all from one sender."""
        if messages:
            self.contact.heard(getattr(messages[0], "from"))
        if self.role is StateRole.FOLLOWER:
            for msg in messages:
                if msg.type in _FROM_LEADER:
                    self._leader_message_seen()
                    break
        self._inbox.extend(messages)
        self._wake.set()

    def _leader_message_seen(self) -> None:
        t = self.timing
        now = time.monotonic()
        if t.last_leader_msg:
            gap = now - t.last_leader_msg
            if gap > t.leader_gap_window:
                t.leader_gap_window = gap
                t.leader_gap_max = max(t.leader_gap_max, gap)
        t.last_leader_msg = now

    async def propose(self, data: bytes) -> None:
        """Returns once the proposal entered the log (or was forwarded to the leader).

        Raises ProposalDropped at once when no leader is known, so callers fail fast without
        quorum. That it returned does not mean it will commit: callers wait for the apply.
        """
        if self._stopped:
            raise errors.NodeStopped
        if self.leader == 0 and not self._transfer_pending():
            raise errors.ProposalDropped("no leader")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._proposals.append((data, fut, True))
        self._wake.set()
        await fut

    def propose_nowait(self, data: bytes, result: asyncio.Future[Any]) -> None:
        """Like `propose`, without waiting for the log: if the proposal is dropped (no
        leader, replica stopped), `result` gets the error; otherwise its owner resolves it
        (with the outcome of the apply). One future per write instead of two."""
        if self._stopped:
            raise errors.NodeStopped
        if self.leader == 0 and not self._transfer_pending():
            raise errors.ProposalDropped("no leader")
        self._proposals.append((data, result, False))
        self._wake.set()

    async def propose_conf_change(self, data: bytes) -> None:
        """Returns once the membership change (a serialized ConfChange) entered the log: on the
        leader only (else NotLeader), one at a time (else ConfChangeInProgress)."""
        if self._stopped:
            raise errors.NodeStopped
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._conf_proposals.append((data, fut))
        self._wake.set()
        await fut

    async def read_index(self) -> int:
        """A commit index that reflects every write acknowledged before this call
        (Raft thesis 6.4). Reads served once applied_index >= it are linearizable."""
        if self._stopped:
            raise errors.NodeStopped
        if self.leader == 0 and not self._transfer_pending():
            raise errors.ProposalDropped("no leader")
        read: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._read_waiters.append(read)
        self._wake.set()
        return await read

    def transfer_candidate(self) -> int:
        """The most up-to-date follower if this replica leads, else 0."""
        if self._core is None or self.role is not StateRole.LEADER:
            return 0
        return self._core.transfer_candidate()

    def progress_match(self, member_id: int) -> int | None:
        return self._core.progress_match(member_id) if self._core is not None else None

    def held_futures(self) -> set[asyncio.Future[Any]]:
        """Futures of proposals not handed to Raft yet (held during a leadership transfer):
        whatever the leader change, they were sent nowhere and will be."""
        return {fut for _, fut, _ in self._proposals}

    def _transfer_pending(self) -> bool:
        """A leadership transfer is electing the next leader (a round trip away): requests are
        held for it rather than failed with "no leader"."""
        return self._core is not None and self._core.awaiting_transfer_leader

    async def transfer_leader(self, target: int, timeout: float) -> None:
        """Hand leadership to ``target`` (Raft thesis 3.10) and wait until it leads.

        Raises NotLeader if this replica does not lead, BadTransferee for a non-member,
        TransferTimeout when ``target`` does not lead within ``timeout``
        (the core aborts its transfer after an election timeout). A transfer to itself
        returns at once, as etcd's MoveLeader does.
        """
        if target not in self.members:
            raise errors.BadTransferee
        if self.role is not StateRole.LEADER:
            raise errors.NotLeader
        if target == self.config.id:
            return
        self._transfer_to = target
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Polled at the tick interval as etcd does: the outcome shows in the soft state.
        while self.leader != target:
            if self._stopped or loop.time() >= deadline:
                raise errors.TransferTimeout
            await asyncio.sleep(self._pacing.tick_interval)

    async def receive_snapshot(self, message: raft_pb2.Message, path: Path) -> None:
        """A snapshot streamed by the leader: verify, keep, then let the core decide."""
        await self._sm.verify_snapshot(path, message.snapshot.index)
        target = self._snapshot_path(message.snapshot.index)
        await asyncio.to_thread(shutil.move, path, target)
        self.step([message])

    def report_unreachable(self, peer: int) -> None:
        if self._core is not None:
            self._core.report_unreachable(peer)

    def report_snapshot(self, peer: int, ok: bool) -> None:
        if self._core is not None:
            self._core.report_snapshot(peer, ok)
            self._wake.set()

    # -- the loop ---------------------------------------------------------------------

    async def _ticker(self) -> None:
        reported = dict(self.stats)
        next_report = time.monotonic() + REPORT_INTERVAL_S
        while True:
            await asyncio.sleep(self._pacing.tick_interval)
            self._inbox.append(_TICK)
            self._wake.set()
            now = time.monotonic()
            if now >= next_report:
                next_report = now + REPORT_INTERVAL_S
                self._report_timing()
                if self.stats != reported:
                    log.debug(
                        "raft batching", **{k: v - reported[k] for k, v in self.stats.items()}
                    )
                    reported = dict(self.stats)

    def _report_timing(self) -> None:
        """Log the window's longest leader-message gap and loop turn: at info when either
        took more than a few heartbeats (what would put leadership at risk), else debug."""
        t = self.timing
        gap, turn = t.leader_gap_window, t.turn_window
        t.leader_gap_window = t.turn_window = 0.0
        late = max(gap, turn) > 4 * self._pacing.tick_interval
        (log.info if late else log.debug)(
            "raft timing",
            max_leader_gap_ms=round(gap * 1e3, 1),
            max_loop_turn_ms=round(turn * 1e3, 1),
            role=self.role.name,
            term=self.term,
        )

    async def _run(self) -> None:
        assert self._core is not None
        raft = self._core
        timing = self.timing
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = time.monotonic()
            try:
                self._feed(raft)
                while raft.has_ready():
                    await self._handle_ready(raft, raft.ready())
                self._maybe_snapshot()
                if self._unrecorded_snapshot or self._compacted_to < self._compact_target:
                    await self._compact_some()
            except Exception:  # (not CancelledError: that is no Exception)
                self._stop_replica("raft loop failed; stopping replica")
                raise
            took = time.monotonic() - started
            if took > timing.turn_window:
                timing.turn_window = took
                timing.turn_max = max(timing.turn_max, took)

    def _feed(self, raft: Raft) -> None:
        ticks = 0
        max_ticks = self.config.election_tick * 2
        inbox = self._inbox
        while inbox:
            msg = inbox.popleft()
            if msg is _TICK:
                # Beyond two election timeouts more ticks change nothing.
                if ticks < max_ticks:
                    ticks += 1
                    raft.tick()
                continue
            try:
                raft.step(msg)
            except Exception as exc:  # the core should not raise; never die on a peer's frame
                log.warning("bad raft message ignored", type=msg.type, error=repr(exc))
        if self._transfer_to:
            raft.transfer_leader(self._transfer_to)
            self._transfer_to = 0
        if self._conf_proposals:
            changes, self._conf_proposals = self._conf_proposals, []
            _propose_conf_changes(raft, changes)
        if self._proposals and not raft.hold_proposals and raft.leader != self.leader:
            # A leader change the store has not heard of yet: held writes stay held (see
            # held_futures) until it has failed those sent to the old leader (next turn).
            self._wake.set()
        elif self._proposals and not raft.hold_proposals:
            # While the leader hands over (thesis 3.10) proposals wait for the new leader
            # instead of failing or being dropped there: the transfer takes a round trip or
            # aborts after an election timeout; the store's request timeout bounds the wait.
            props, self._proposals = self._proposals, []
            try:
                raft.propose_batch([data for data, _, _ in props])
            except errors.ProposalDropped as exc:
                # Nothing was appended (TransferInProgress: the leader is about to change).
                for _, fut, _ in props:
                    if not fut.done():
                        fut.set_exception(type(exc))
            else:
                for _, fut, ack in props:
                    if ack and not fut.done():
                        fut.set_result(None)
        if self._read_waiters:
            ctx = next(self._read_ctx).to_bytes(8, "big")
            waiters, self._read_waiters = self._read_waiters, []
            try:
                raft.read_index(ctx)
            except errors.ProposalDropped:
                if raft.awaiting_transfer_leader:
                    self._read_waiters[:0] = [r for r in waiters if not r.done()]
                    waiters = []
                for read in waiters:
                    if not read.done():
                        read.set_exception(errors.ProposalDropped)
            else:
                self._reads_in_flight[ctx] = waiters

    async def _handle_ready(self, raft: Raft, rd: Ready) -> None:
        stats = self.stats
        stats["readys"] += 1
        stats["entries_persisted"] += len(rd.entries)
        stats["entries_applied"] += len(rd.committed_entries)
        stats["messages"] += len(rd.messages)
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        if rd.members is not None:
            self.members = rd.members
            self.on_members(rd.members)
        assert self.transport is not None
        early: list[raft_pb2.Message] = []
        late: list[raft_pb2.Message] = []
        snaps: list[raft_pb2.Message] = []
        leading = self.role is StateRole.LEADER
        for msg in rd.messages:
            if msg.type == raft_pb2.MSG_SNAP:
                snaps.append(msg)
            elif leading and msg.type in _EARLY_SEND:
                early.append(msg)
            else:
                late.append(msg)
        if early:
            self.transport.send(early)
        if rd.snapshot is not None:
            # Installing replaces the whole state: everything queued before goes first, and
            # no background snapshot may be reading the file being replaced.
            await self._drain_apply()
            await self._wait_snapshot_task()
            await self._sm.restore(self._snapshot_path(rd.snapshot.index), rd.snapshot)
            self._snapshot_meta = rd.snapshot
            # save() below replaces the whole log and records this snapshot.
            self._unrecorded_snapshot = False
            self._compacted_to = self._compact_target = rd.snapshot.index
        # Committed entries that were already durable here are applied while this Ready's
        # entries are written (two files, two threads); the rest wait for the write, so
        # the state machine never gets ahead of the local log. The apply task does the
        # applying: the loop only queues, so a slow apply never holds back a heartbeat.
        committed = rd.committed_entries
        split = durable_prefix(rd, self._storage.last_index)
        if split:
            self._queue_apply(committed[:split])
        await self._storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if late:
            self.transport.send(late)
        for msg in snaps:
            self._send_snapshot(raft, msg)
        if split < len(committed):
            self._queue_apply(committed[split:])
        for rs in rd.read_states:
            for fut in self._reads_in_flight.pop(rs.context, ()):
                if not fut.done():
                    fut.set_result(rs.index)
        raft.advance(rd)
        if self._apply_backlog > MAX_APPLY_BACKLOG:
            # Back-pressure: the state machine is far behind; let it catch up before more.
            await self._drain_apply()

    # -- applying ---------------------------------------------------------------------

    def _queue_apply(self, entries: Sequence[raft_pb2.Entry]) -> None:
        self._apply_queue.append(entries)
        self._apply_backlog += len(entries)
        self._apply_idle.clear()
        self._apply_wake.set()

    async def _drain_apply(self) -> None:
        """Wait until every queued entry is applied (raises if the apply task died)."""
        applier = self._tasks[2]
        if self._apply_idle.is_set():
            return
        idle = asyncio.ensure_future(self._apply_idle.wait())
        try:
            await asyncio.wait([idle, applier], return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
        if applier.done():
            applier.result()
            raise RuntimeError("apply task ended")

    async def _applier(self) -> None:
        """Feeds committed entries to the state machine in order; merges what queued up
        while the previous batch was applied into one batch (one SQLite transaction)."""
        queue = self._apply_queue
        while True:
            await self._apply_wake.wait()
            self._apply_wake.clear()
            while queue:
                batch: list[raft_pb2.Entry] = []
                while queue:
                    batch.extend(queue.popleft())
                try:
                    await self._sm.apply(batch)
                except Exception:
                    self._stop_replica("apply failed; stopping replica")
                    raise
                self._apply_backlog -= len(batch)
            self._apply_idle.set()

    # -- snapshots and log compaction ---------------------------------------------------

    def _on_soft_state(self, soft: SoftState) -> None:
        changed = soft.leader != self.leader
        self.leader, self.role = soft.leader, soft.role
        log.info("raft role", role=soft.role.name, leader=f"{soft.leader:x}", term=self.term)
        if changed:
            self.timing.last_leader_msg = 0.0
            # A read in flight may have been addressed to the old leader; reads are
            # side-effect free, so failing them (clients retry) is always safe.
            for waiters in self._reads_in_flight.values():
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(errors.LeaderChanged)
            self._reads_in_flight.clear()
        self._sm.on_role_change(soft.leader, soft.role is StateRole.LEADER)

    def _send_snapshot(self, raft: Raft, msg: raft_pb2.Message) -> None:
        assert self.transport is not None
        path = self._snapshot_path(msg.snapshot.index)
        if not path.exists():
            log.warning("snapshot file missing", index=msg.snapshot.index)
            raft.report_snapshot(msg.to, False)
            return
        self.transport.send_snapshot(msg, path)

    def _maybe_snapshot(self) -> None:
        """Start a background snapshot when enough entries were applied since the last one."""
        if self._snapshot_task is not None:
            return
        base = self._snapshot_meta.index if self._snapshot_meta else 0
        if self._sm.applied_index - base < self._pacing.snapshot_count:
            return
        self._snapshot_task = asyncio.get_running_loop().create_task(self._take_snapshot())

    async def _wait_snapshot_task(self) -> None:
        task = self._snapshot_task
        if task is not None:
            await asyncio.wait([task])

    async def _take_snapshot(self) -> None:
        """Make a snapshot file off the loop (the state machine reads its own database
        from another connection and thread), then record it: the core learns it at once,
        raft.db's log is trimmed a chunk per loop turn (`_compact_some`)."""
        try:
            tmp = self._snap_dir / "local.tmp"
            started = time.monotonic()
            index, term = await self._sm.create_snapshot(tmp)
            raft = self._core
            assert raft is not None
            current = self._snapshot_meta.index if self._snapshot_meta else 0
            if index <= current:  # a snapshot from the leader was installed meanwhile
                tmp.unlink(missing_ok=True)
                return
            await asyncio.to_thread(tmp.replace, self._snapshot_path(index))
            meta = raft_pb2.SnapshotMetadata(index=index, term=term)
            membership.to_snapshot(meta, raft.conf_at(index))
            compact_to = max(0, index - self._pacing.catch_up_entries)
            if self._snapshot_meta is not None:
                compact_to = max(compact_to, min(self._snapshot_meta.index, index))
            self._snapshot_meta = meta
            self._compact_target = max(self._compact_target, compact_to)
            # The loop writes the snapshot row (raft.db has one writer, the loop), then
            # removes older snapshot files.
            self._unrecorded_snapshot = True
            self._wake.set()
            log.info(
                "snapshot taken",
                index=index,
                compact_to=compact_to,
                took_ms=round((time.monotonic() - started) * 1e3, 1),
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            # Not fatal: the log keeps growing until the next attempt succeeds.
            log.exception("snapshot failed; will retry")
        finally:
            self._snapshot_task = None

    async def _compact_some(self) -> None:
        """Record the newest snapshot and drop at most COMPACT_CHUNK log entries from raft.db:
        trimming thousands of rows at once would hold the loop for a disk transaction that
        long. The in-memory log is trimmed along."""
        raft = self._core
        assert raft is not None
        meta = self._snapshot_meta
        assert meta is not None
        if self._unrecorded_snapshot:
            raft.set_snapshot(meta)  # lagging followers get this one from now on
        upto = min(self._compact_target, self._compacted_to + COMPACT_CHUNK)
        await self._storage.set_snapshot(meta, upto)
        self._compacted_to = max(self._compacted_to, upto)
        if upto >= raft.first_index:
            raft.compact(upto)
        if self._unrecorded_snapshot:
            self._unrecorded_snapshot = False
            # Only older ones: a newer one is the leader's, received, waiting to be installed.
            for old in self._snap_dir.glob("*.snap"):
                if _snapshot_index(old) < meta.index:
                    old.unlink(missing_ok=True)
        if self._compacted_to < self._compact_target:
            self._wake.set()

    def _snapshot_path(self, index: int) -> Path:
        return self._snap_dir / f"{index:016x}.snap"

    def _stop_replica(self, event: str) -> None:
        """Storage or apply failed: the replica cannot go on safely. Log why and fail every
        request waiting on it; the caller re-raises (wait_failed returns the error)."""
        log.exception(event)
        self._fail_all(errors.NodeStopped)

    def _fail_all(self, error: type[Exception]) -> None:
        # A class, so each waiter gets its own instance (asyncio instantiates it).
        for _, fut, _ in self._proposals:
            if not fut.done():
                fut.set_exception(error)
        self._proposals.clear()
        for _, conf in self._conf_proposals:
            if not conf.done():
                conf.set_exception(error)
        self._conf_proposals.clear()
        pending = [*self._read_waiters, *itertools.chain(*self._reads_in_flight.values())]
        for read in pending:
            if not read.done():
                read.set_exception(error)
        self._read_waiters.clear()
        self._reads_in_flight.clear()


def _snapshot_index(path: Path) -> int:
    """The Raft index in a snapshot file's name (see `_snapshot_path`); -1 if none."""
    try:
        return int(path.stem, 16)
    except ValueError:
        return -1


def _propose_conf_changes(raft: Raft, props: list[tuple[bytes, asyncio.Future[None]]]) -> None:
    """Hand membership changes to the core; each future learns whether it took the change."""
    for data, fut in props:
        if fut.done():
            continue
        try:
            raft.propose_conf_change(data)
            fut.set_result(None)
        except errors.RaftError as exc:
            fut.set_exception(exc)
