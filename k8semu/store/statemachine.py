"""The store's replicated state machine as the Raft driver sees it.

Owns the MVCC store's worker thread (SQLite work never runs on the event loop), the
wait registry that hands apply results back to the RPC that proposed them, the
applied-index waiters that linearizable reads block on, the watch hub's feed and the
lessor's bookkeeping. It must not decide anything Raft decides: it only applies.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

from k8semu.log import get_logger
from k8semu.pb.etcd import rpc_pb2
from k8semu.pb.raft import raft_pb2
from k8semu.pb.store import internal_pb2
from k8semu.raft import membership
from k8semu.store import errors, snapshot
from k8semu.store.lessor import Lessor
from k8semu.store.mvcc import ApplyResult, MVCCStore, write_snapshot_of
from k8semu.store.watch import WatchHub

log = get_logger(__name__)
T = TypeVar("T")

# An expired lease whose revoke could not be proposed (no leader) is reported again after this.
LEASE_RETRY_S = 1.0
# Responses whose entry does nothing to the lessor (the common case: tested by exact type).
_NO_LEASE_EFFECT = frozenset(
    {rpc_pb2.PutResponse, rpc_pb2.TxnResponse, rpc_pb2.DeleteRangeResponse}
)


class StoreStateMachine:
    """MVCC + waits + watch feed; every SQLite call goes through `run`."""

    def __init__(self, kv_path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._kv_path = kv_path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mvcc")
        # Snapshots read kv.db through their own connection on their own thread, so they
        # never wait for applies nor hold them up.
        self._snapshot_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snap")
        self._mvcc: MVCCStore | None = None
        self.clock = clock
        self._waits: dict[int, asyncio.Future[Message]] = {}
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.lessor = Lessor(retry_after=LEASE_RETRY_S)
        self.hub: WatchHub | None = None
        self.is_leader = False
        self.applied_index = 0
        self.applied_term = 0
        self.revision = 1
        self.on_leader_change: Callable[[int, bool], None] = lambda leader, leading: None
        # Told each membership change as it is applied.
        self.on_conf_change: Callable[[raft_pb2.ConfChange], None] = lambda change: None

    async def open(self) -> None:
        self._mvcc = await self.run(MVCCStore, self._kv_path)
        await self._load()

    async def _load(self) -> None:
        mvcc = self.mvcc
        self.applied_index, self.applied_term = mvcc.applied_index, mvcc.applied_term
        self.revision = mvcc.revision
        # Deadlines start now: a replica that restarts never expires a lease early.
        self.lessor = Lessor(await self.run(mvcc.leases), retry_after=LEASE_RETRY_S)
        if self.is_leader:
            self.lessor.promote(self.clock())
        if self.hub is None:
            self.hub = WatchHub(
                self._read_events, self.revision, compact_revision=mvcc.compact_revision
            )
        else:
            self.hub.reset(self.revision, compact_revision=mvcc.compact_revision)

    async def close(self) -> None:
        if self._mvcc is not None:
            await self.run(self._mvcc.close)
            self._mvcc = None
        self._executor.shutdown(wait=True)
        self._snapshot_executor.shutdown(wait=True)

    @property
    def ready(self) -> bool:
        return self._mvcc is not None

    @property
    def mvcc(self) -> MVCCStore:
        if self._mvcc is None:
            raise errors.ErrStopped
        return self._mvcc

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the MVCC thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _read_events(self, start: int, key: bytes, end: bytes, end_rev: int) -> list[Any]:
        return await self.run(lambda: self.mvcc.events(start, key, end, end_rev=end_rev))

    # -- waits ------------------------------------------------------------------------

    def register(self, request_id: int) -> asyncio.Future[Message]:
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waits[request_id] = fut
        return fut

    def forget(self, request_id: int) -> None:
        self._waits.pop(request_id, None)

    def fail_pending(
        self, error: type[errors.StoreError], keep: Collection[asyncio.Future[Any]] = ()
    ) -> None:
        """Proposals whose outcome this replica can no longer learn for sure; those in
        ``keep`` (never sent anywhere yet) stay pending."""
        waits, self._waits = self._waits, {}
        for rid, fut in waits.items():
            if fut in keep:
                self._waits[rid] = fut
            elif not fut.done():
                fut.set_exception(error)
                # Marked retrieved: its proposer may already have failed another way (no
                # leader) and will never await it; asyncio would log that as an error.
                fut.exception()

    async def wait_applied(self, index: int) -> None:
        if self.applied_index >= index:
            return
        applied: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied_waiters, (index, next(self._seq), applied))
        await applied

    def _wake_applied(self) -> None:
        """Release the waiters whose index this replica's state now covers."""
        waiters = self._applied_waiters
        while waiters and waiters[0][0] <= self.applied_index:
            _, _, done = heapq.heappop(waiters)
            if not done.done():
                done.set_result(None)

    # -- driver interface -------------------------------------------------------------

    async def apply(self, entries: Sequence[raft_pb2.Entry]) -> None:
        # A membership change is Raft's business (it took effect when handed out); here it
        # only advances the applied index, and its proposer learns it is done.
        # One pass over the entries (each field read of a protobuf message costs a lookup).
        batch: list[tuple[int, int, bytes]] = []
        conf_changes: list[raft_pb2.Entry] = []
        for e in entries:
            if e.type == raft_pb2.ENTRY_CONF_CHANGE:
                conf_changes.append(e)
                batch.append((e.index, e.term, b""))
            else:
                batch.append((e.index, e.term, e.data))
        results: list[ApplyResult] = await self.run(self.mvcc.apply_batch, batch)
        now = self.clock()
        events: list[Any] = []
        for result in results:  # entries already applied before a crash get no result
            events.extend(result.events)
            response = result.response
            if response is not None and type(response) not in _NO_LEASE_EFFECT:
                first = entries[0].index
                self._track_lease(entries[result.index - first], response, now)
            fut = self._waits.pop(result.request_id, None)
            if fut is not None and not fut.done():
                if result.error is not None:
                    fut.set_exception(result.error)
                else:
                    assert result.response is not None
                    fut.set_result(result.response)
        for entry in conf_changes:
            self._conf_change_applied(entry)
        last = entries[-1]
        self.applied_index, self.applied_term = last.index, last.term
        if results:
            self.revision = results[-1].revision
        assert self.hub is not None
        self.hub.notify(self.revision, events, compact_revision=self.mvcc.compact_revision)
        self._wake_applied()

    def _conf_change_applied(self, entry: raft_pb2.Entry) -> None:
        change = membership.decode(entry)
        if change is None:
            return
        fut = self._waits.pop(change.id, None)
        if fut is not None and not fut.done():
            fut.set_result(rpc_pb2.Member(ID=change.node_id))
        self.on_conf_change(change)

    def _track_lease(self, entry: raft_pb2.Entry, response: Message, now: float) -> None:
        if isinstance(response, rpc_pb2.LeaseGrantResponse):
            self.lessor.grant(response.ID, response.TTL, now)
        elif isinstance(response, rpc_pb2.LeaseKeepAliveResponse):
            self.lessor.renew(response.ID, now)
        elif isinstance(response, rpc_pb2.LeaseRevokeResponse):
            request = internal_pb2.InternalRequest.FromString(entry.data)
            self.lessor.revoke(request.lease_revoke.ID)

    async def restore(self, path: Path, meta: raft_pb2.SnapshotMetadata) -> None:
        """Replace the whole state with the snapshot at `path` (taken at meta.index).

        The new kv.db is made beside the old one first, while the old store keeps serving
        what it holds (its applied index still describes it): a file that does not verify,
        or one taken at another index than Raft installs it at, leaves the state as it was.
        Reads that waited for an index the snapshot covers are released at once.
        """
        tmp = self._kv_path.with_suffix(".restore")
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            leftover.unlink(missing_ok=True)
        try:
            await self.run(lambda: _restore_image(path, tmp, meta.index))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self._mvcc is not None:
            await self.run(self._mvcc.close)
            self._mvcc = None
        for suffix in ("-wal", "-shm"):
            self._kv_path.with_name(self._kv_path.name + suffix).unlink(missing_ok=True)
        tmp.replace(self._kv_path)
        self._mvcc = await self.run(MVCCStore, self._kv_path)
        await self._load()
        self._wake_applied()
        log.info("state restored from snapshot", index=meta.index, revision=self.revision)

    async def verify_snapshot(self, path: Path, index: int) -> None:
        """Check a snapshot file received for Raft index `index` (CorruptSnapshotError)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._snapshot_executor, _verify_taken_at, path, index)

    async def write_snapshot(self, dest: Path) -> internal_pb2.SnapshotHeader:
        """A snapshot of the applied state, made off the MVCC thread (applies go on)."""
        self.mvcc  # noqa: B018  # raises ErrStopped when closed
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._snapshot_executor, write_snapshot_of, self._kv_path, dest
        )

    async def create_snapshot(self, path: Path) -> tuple[int, int]:
        header = await self.write_snapshot(path)
        return header.raft_index, header.raft_term

    def on_role_change(self, leader: int, is_leader: bool) -> None:
        was_leader, self.is_leader = self.is_leader, is_leader
        if is_leader and not was_leader:
            # Leases never expire early across a leader change: the new leader restarts
            # every lease's clock from now.
            self.lessor.promote(self.clock())
        elif was_leader and not is_leader:
            self.lessor.demote()
        self.on_leader_change(leader, is_leader)


def _verify_taken_at(path: Path, index: int) -> None:
    _check_taken_at(path, snapshot.verify(path), index)


def _restore_image(path: Path, dest: Path, index: int) -> None:
    """kv.db at `dest` from the snapshot at `path`, installed at Raft index `index`."""
    header = snapshot.restore(path, dest, raft_index=index)
    try:
        _check_taken_at(path, header, index)
    except errors.CorruptSnapshotError:
        dest.unlink(missing_ok=True)
        raise


def _check_taken_at(path: Path, header: internal_pb2.SnapshotHeader, index: int) -> None:
    """A snapshot is installed at the Raft index it was taken at: an image of another index
    would be rebased to `index` and silently skip (or repeat) the entries in between."""
    if header.raft_index != index:
        raise errors.CorruptSnapshotError(
            f"snapshot {path}: taken at Raft index {header.raft_index}, installed as {index}"
        )
