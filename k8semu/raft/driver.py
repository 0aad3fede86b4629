"""The asyncio driver around the pure Raft core: the only place Raft meets time and I/O.

Owns the loop that turns the core's Ready batches into effects, in the order the core's
contract demands: persist (raft.db, fsync) -> send -> apply -> advance. While one Ready
is being persisted or applied, new proposals, messages and ticks pile up and enter the
core together on the next turn: that is the group commit (many proposals, one
AppendEntries, one SQLite transaction). As the Raft thesis (10.2.1) allows, a leader
sends its AppendEntries/heartbeats before its own fsync; everything else waits for it.

It does not know what entries mean: the state machine applies them. It never lets an
exception from one message stop the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from k8semu.log import get_logger
from k8semu.pb.raft import raft_pb2
from k8semu.raft import core
from k8semu.raft.storage import RaftStorage
from k8semu.raft.transport import PeerTransport
from k8semu.store import errors

log = get_logger(__name__)

_EARLY_SEND = frozenset({raft_pb2.MSG_APP, raft_pb2.MSG_HEARTBEAT})


def durable_prefix(rd: core.Ready, stored_last_index: int) -> int:
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

    async def verify_snapshot(self, path: Path) -> None: ...

    async def create_snapshot(self, path: Path) -> tuple[int, int]:
        """Write a snapshot of the applied state to `path`; returns its (index, term)."""
        ...

    def on_role_change(self, leader: int, is_leader: bool) -> None: ...


class RaftNode:
    """One replica's Raft: proposals and reads in, applied entries out."""

    def __init__(
        self,
        config: core.Config,
        storage: RaftStorage,
        state_machine: StateMachine,
        snapshot_dir: Path,
        *,
        tick_interval: float,
        snapshot_count: int = 10_000,
        catch_up_entries: int = 1_000,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._storage = storage
        self._sm = state_machine
        self._snap_dir = snapshot_dir
        self._tick_interval = tick_interval
        self._snapshot_count = snapshot_count
        self._catch_up = catch_up_entries
        self._rng = rng or random.Random()
        self._core: core.Raft | None = None
        self.transport: PeerTransport | None = None
        self._inbox: deque[raft_pb2.Message] = deque()
        self._proposals: list[tuple[bytes, asyncio.Future[None]]] = []
        self._read_waiters: list[asyncio.Future[int]] = []
        self._reads_in_flight: dict[bytes, list[asyncio.Future[int]]] = {}
        self._read_ctx = itertools.count(1)
        self._ticks = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._snapshot_meta: raft_pb2.SnapshotMetadata | None = None
        self.leader = 0
        self.role = core.StateRole.FOLLOWER
        # Counters for the debug log and benchmarks: how well work is being batched.
        self.stats = {"readys": 0, "entries_persisted": 0, "entries_applied": 0, "messages": 0}
        self._stopped = False

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, transport: PeerTransport) -> None:
        self.transport = transport
        state = await self._storage.load()
        snap = state.snapshot
        self._snapshot_meta = snap
        self._snap_dir.mkdir(parents=True, exist_ok=True)
        if snap is not None and self._sm.applied_index < snap.index:
            # The state machine lost writes newer than the snapshot (it is not fsynced on
            # every apply); the snapshot file is, so start from it and replay the log.
            await self._sm.restore(self._snapshot_path(snap.index), snap)
        hard_state = state.hard_state
        # Applying may run ahead of the persisted commit index (see _handle_ready); what
        # was applied was committed, so the commit index is at least that.
        hard_state.commit = max(hard_state.commit, self._sm.applied_index)
        self._core = core.Raft(
            self.config,
            self._rng,
            hard_state=hard_state,
            snapshot=snap,
            entries=state.entries,
            applied=self._sm.applied_index,
        )
        transport.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._ticker())]

    async def wait_failed(self) -> BaseException:
        """Returns the error that stopped the Raft loop (it only stops on an I/O failure)."""
        task = self._tasks[0]
        await asyncio.wait([task])
        if task.cancelled():
            return asyncio.CancelledError()
        return task.exception() or RuntimeError("raft loop ended")

    async def stop(self) -> None:
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.transport is not None:
            await self.transport.stop()
        self._fail_all(errors.ErrStopped)

    # -- inputs -----------------------------------------------------------------------

    @property
    def term(self) -> int:
        return self._core.term if self._core else 0

    @property
    def commit_index(self) -> int:
        return self._core.commit if self._core else 0

    def step(self, messages: Sequence[raft_pb2.Message]) -> None:
        """Messages from peers (called by the transport servicer)."""
        self._inbox.extend(messages)
        self._wake.set()

    async def propose(self, data: bytes) -> None:
        """Returns once the proposal entered the log (or was forwarded to the leader).

        Raises ErrNoLeader at once when no leader is known, so callers fail fast without
        quorum. That it returned does not mean it will commit: callers wait for the apply.
        """
        if self._stopped:
            raise errors.ErrStopped
        if self.leader == 0:
            raise errors.ErrNoLeader
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._proposals.append((data, fut))
        self._wake.set()
        await fut

    async def read_index(self) -> int:
        """A commit index that reflects every write acknowledged before this call
        (Raft thesis 6.4). Reads served once applied_index >= it are linearizable."""
        if self._stopped:
            raise errors.ErrStopped
        if self.leader == 0:
            raise errors.ErrNoLeader
        read: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._read_waiters.append(read)
        self._wake.set()
        return await read

    async def receive_snapshot(self, message: raft_pb2.Message, path: Path) -> None:
        """A snapshot streamed by the leader: verify, keep, then let the core decide."""
        await self._sm.verify_snapshot(path)
        target = self._snapshot_path(message.snapshot.index)
        shutil.move(path, target)
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
        last_report, reported = 0, dict(self.stats)
        while True:
            await asyncio.sleep(self._tick_interval)
            self._ticks += 1
            self._wake.set()
            last_report += 1
            if last_report * self._tick_interval >= 10 and self.stats != reported:
                log.debug("raft batching", **{k: v - reported[k] for k, v in self.stats.items()})
                last_report, reported = 0, dict(self.stats)

    async def _run(self) -> None:
        assert self._core is not None
        raft = self._core
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self._feed(raft)
                while raft.has_ready():
                    await self._handle_ready(raft, raft.ready())
                await self._maybe_snapshot(raft)
            except asyncio.CancelledError:
                raise
            except errors.CorruptDataError:
                raise
            except Exception:
                # Storage or apply failed: the replica cannot go on safely.
                log.exception("raft loop failed; stopping replica")
                self._fail_all(errors.ErrStopped)
                raise

    def _feed(self, raft: core.Raft) -> None:
        while self._inbox:
            msg = self._inbox.popleft()
            try:
                raft.step(msg)
            except Exception as exc:  # the core should not raise; never die on a peer's frame
                log.warning("bad raft message ignored", type=msg.type, error=repr(exc))
        ticks, self._ticks = self._ticks, 0
        for _ in range(min(ticks, self.config.election_tick * 2)):
            raft.tick()
        if self._proposals:
            props, self._proposals = self._proposals, []
            try:
                raft.propose_batch([data for data, _ in props])
            except core.ProposalDropped:
                for _, fut in props:
                    if not fut.done():
                        fut.set_exception(errors.ErrNoLeader)
            else:
                for _, fut in props:
                    if not fut.done():
                        fut.set_result(None)
        if self._read_waiters:
            ctx = next(self._read_ctx).to_bytes(8, "big")
            waiters, self._read_waiters = self._read_waiters, []
            try:
                raft.read_index(ctx)
            except core.ProposalDropped:
                for read in waiters:
                    if not read.done():
                        read.set_exception(errors.ErrNoLeader)
            else:
                self._reads_in_flight[ctx] = waiters

    async def _handle_ready(self, raft: core.Raft, rd: core.Ready) -> None:
        stats = self.stats
        stats["readys"] += 1
        stats["entries_persisted"] += len(rd.entries)
        stats["entries_applied"] += len(rd.committed_entries)
        stats["messages"] += len(rd.messages)
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        assert self.transport is not None
        early: list[raft_pb2.Message] = []
        late: list[raft_pb2.Message] = []
        snaps: list[raft_pb2.Message] = []
        leading = self.role is core.StateRole.LEADER
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
            await self._sm.restore(self._snapshot_path(rd.snapshot.index), rd.snapshot)
            self._snapshot_meta = rd.snapshot
        # Committed entries that were already durable here are applied while this Ready's
        # entries are written (two files, two threads); the rest wait for the write, so
        # the state machine never gets ahead of the local log.
        committed = rd.committed_entries
        split = durable_prefix(rd, self._storage.last_index)
        if split:
            await asyncio.gather(
                self._storage.save(rd.hard_state, rd.entries, rd.snapshot),
                self._sm.apply(committed[:split]),
            )
        else:
            await self._storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if late:
            self.transport.send(late)
        for msg in snaps:
            self._send_snapshot(raft, msg)
        if split < len(committed):
            await self._sm.apply(committed[split:])
        for rs in rd.read_states:
            for fut in self._reads_in_flight.pop(rs.context, ()):
                if not fut.done():
                    fut.set_result(rs.index)
        raft.advance(rd)

    def _on_soft_state(self, soft: core.SoftState) -> None:
        changed = soft.leader != self.leader
        self.leader, self.role = soft.leader, soft.role
        log.info("raft role", role=soft.role.name, leader=f"{soft.leader:x}", term=self.term)
        if changed:
            # A read in flight may have been addressed to the old leader; reads are
            # side-effect free, so failing them (clients retry) is always safe.
            for waiters in self._reads_in_flight.values():
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(errors.ErrLeaderChanged)
            self._reads_in_flight.clear()
        self._sm.on_role_change(soft.leader, soft.role is core.StateRole.LEADER)

    def _send_snapshot(self, raft: core.Raft, msg: raft_pb2.Message) -> None:
        assert self.transport is not None
        path = self._snapshot_path(msg.snapshot.index)
        if not path.exists():
            log.warning("snapshot file missing", index=msg.snapshot.index)
            raft.report_snapshot(msg.to, False)
            return
        self.transport.send_snapshot(msg, path)

    async def _maybe_snapshot(self, raft: core.Raft) -> None:
        base = self._snapshot_meta.index if self._snapshot_meta else 0
        applied = self._sm.applied_index
        if applied - base < self._snapshot_count:
            return
        tmp = self._snap_dir / "local.tmp"
        index, term = await self._sm.create_snapshot(tmp)
        tmp.replace(self._snapshot_path(index))
        meta = raft_pb2.SnapshotMetadata(index=index, term=term, voters=self.config.voters)
        compact_to = max(0, index - self._catch_up)
        if self._snapshot_meta is not None:
            compact_to = max(compact_to, min(self._snapshot_meta.index, index))
        await self._storage.set_snapshot(meta, compact_to)
        raft.set_snapshot(meta)
        if compact_to >= raft.first_index:
            raft.compact(compact_to)
        self._snapshot_meta = meta
        for old in self._snap_dir.glob("*.snap"):
            if old != self._snapshot_path(index):
                old.unlink(missing_ok=True)
        log.info("snapshot taken", index=index, compacted_to=compact_to)

    def _snapshot_path(self, index: int) -> Path:
        return self._snap_dir / f"{index:016x}.snap"

    def _fail_all(self, error: type[Exception]) -> None:
        # A class, so each waiter gets its own instance (asyncio instantiates it).
        for _, fut in self._proposals:
            if not fut.done():
                fut.set_exception(error)
        self._proposals.clear()
        pending = [*self._read_waiters, *itertools.chain(*self._reads_in_flight.values())]
        for read in pending:
            if not read.done():
                read.set_exception(error)
        self._read_waiters.clear()
        self._reads_in_flight.clear()
