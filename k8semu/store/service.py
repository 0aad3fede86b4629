"""The etcd v3 gRPC API of a store replica: KV, Watch, Lease, Cluster, Maintenance.

Translates between the wire and the replica: writes become proposals, linearizable
reads wait for a ReadIndex, serializable reads go straight to the local MVCC store.
StoreError is turned into a gRPC status here and only here. A malformed or hostile
request gets a status, never a crash. The servicers see the replica only through the
`Replica` protocol below (the server implements it; this module does not import it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from k8semu import transport
from k8semu.log import get_logger
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from k8semu.pb.store import internal_pb2
from k8semu.store import errors
from k8semu.store.compactor import PhysicalCompactor
from k8semu.store.config import StoreConfig
from k8semu.store.statemachine import StoreStateMachine
from k8semu.store.txn import txn_ops
from k8semu.store.watch import Watcher

log = get_logger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]
M = TypeVar("M", bound=Message)
S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")

MAX_LEASE_TTL = 9_000_000_000
SNAPSHOT_CHUNK = 32 * 1024
INVALID_WATCH_ID = -1
SERVER_VERSION = "3.4.0"  # the etcd API level this store speaks (see docs/store.md)


class RaftStatus(Protocol):
    """What the servicers may read of the replica's Raft node (for headers and Status)."""

    @property
    def term(self) -> int: ...

    @property
    def leader(self) -> int:
        """The member id of the leader this replica follows (0: none known)."""
        ...

    @property
    def commit_index(self) -> int: ...


class Replica(Protocol):
    """What the servicers need of a store replica. Its calls raise StoreError only (Raft's
    errors are translated before they get here)."""

    config: StoreConfig
    sm: StoreStateMachine
    compactor: PhysicalCompactor
    snapshot_dir: Path

    @property
    def node(self) -> RaftStatus: ...

    @property
    def request_timeout(self) -> float: ...

    async def propose(self, request: internal_pb2.InternalRequest) -> Message: ...

    async def check_quota(self, cost: int) -> None: ...

    async def linearizable_barrier(self) -> None: ...

    async def move_leader(self, target: int) -> None: ...

    def members(self) -> Sequence[rpc_pb2.Member]: ...

    async def change_members(
        self, change: internal_pb2.MemberChange
    ) -> internal_pb2.ClusterInfo: ...


async def _abort(context: Context, exc: errors.StoreError) -> NoReturn:
    await transport.abort(context, exc.code, exc.message)


def _unary(
    method: Callable[[S, Req, Context], Awaitable[Resp]],
) -> Callable[[S, Req, Context], Awaitable[Resp]]:
    """A unary RPC whose StoreError becomes the call's gRPC status."""

    @functools.wraps(method)
    async def call(self: S, request: Req, context: Context) -> Resp:
        try:
            return await method(self, request, context)
        except errors.StoreError as exc:
            await _abort(context, exc)

    return call


# etcd's estimates of what a write adds to the database, for the quota check (quota.go).
KV_OVERHEAD = 256
LEASE_OVERHEAD = 64


def put_cost(put: rpc_pb2.PutRequest) -> int:
    return KV_OVERHEAD + len(put.key) + len(put.value)


def txn_cost(txn: rpc_pb2.TxnRequest) -> int:
    """etcd's: the puts of the costlier branch (top level only, as etcd counts)."""

    def branch(ops: Any) -> int:
        return sum(put_cost(op.request_put) for op in ops if op.HasField("request_put"))

    return max(branch(txn.success), branch(txn.failure))


def alarm_text(member: int, alarm: int) -> str:
    """An alarm as etcd prints it in Status.errors (its protobuf compact text form)."""
    return f"memberID:{member} alarm:{rpc_pb2.AlarmType.Name(alarm)} "  # type: ignore[arg-type]


class _Base:
    def __init__(self, replica: Replica) -> None:
        self.s = replica
        # Computed once: config.cluster_id hashes the membership on every call.
        self._cluster_id = replica.config.cluster_id
        self._member_id = replica.config.member_id

    def header(self, header: rpc_pb2.ResponseHeader, revision: int | None = None) -> None:
        header.cluster_id = self._cluster_id
        header.member_id = self._member_id
        header.raft_term = self.s.node.term
        if revision is not None:
            header.revision = revision

    async def _propose(self, kind: type[M], **op: Any) -> M:
        """Replicate one request; its response (of type ``kind``) with this header."""
        response = await self.s.propose(internal_pb2.InternalRequest(**op))
        assert isinstance(response, kind)
        self.header(response.header)  # type: ignore[attr-defined]
        return response


class KVService(_Base, rpc_pb2_grpc.KVServicer):
    @_unary
    async def Range(self, request: rpc_pb2.RangeRequest, context: Context) -> rpc_pb2.RangeResponse:
        if not request.key:
            raise errors.ErrEmptyKey
        if not request.serializable:
            await self.s.linearizable_barrier()
        sm = self.s.sm
        if sm.mvcc.alarms(rpc_pb2.CORRUPT):
            raise errors.ErrCorrupt
        response: rpc_pb2.RangeResponse = await sm.run(sm.mvcc.range, request)
        self.header(response.header)
        return response

    @_unary
    async def Put(self, request: rpc_pb2.PutRequest, context: Context) -> rpc_pb2.PutResponse:
        if not request.key:
            raise errors.ErrEmptyKey
        await self.s.check_quota(put_cost(request))
        return await self._propose(rpc_pb2.PutResponse, put=request)

    @_unary
    async def DeleteRange(
        self, request: rpc_pb2.DeleteRangeRequest, context: Context
    ) -> rpc_pb2.DeleteRangeResponse:
        if not request.key:
            raise errors.ErrEmptyKey
        return await self._propose(rpc_pb2.DeleteRangeResponse, delete_range=request)

    @_unary
    async def Txn(self, request: rpc_pb2.TxnRequest, context: Context) -> rpc_pb2.TxnResponse:
        # Only the op count here (cheap, and what must stop an expensive txn before it
        # reaches the log); apply checks keys and duplicates with the same errors.
        if txn_ops(request) > self.s.config.max_txn_ops:
            raise errors.ErrTooManyOps
        await self.s.check_quota(txn_cost(request))
        return await self._propose(rpc_pb2.TxnResponse, txn=request)

    @_unary
    async def Compact(
        self, request: rpc_pb2.CompactionRequest, context: Context
    ) -> rpc_pb2.CompactionResponse:
        response = await self._propose(rpc_pb2.CompactionResponse, compaction=request)
        if request.physical:
            # etcd: wait until the compaction is carried out in this member's database.
            await self.s.compactor.finish()
        return response


class WatchService(_Base, rpc_pb2_grpc.WatchServicer):
    """Many watches per stream; each watcher is pumped by its own task into one queue."""

    async def Watch(
        self,
        request_iterator: AsyncIterator[rpc_pb2.WatchRequest],
        context: Context,
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        out: asyncio.Queue[rpc_pb2.WatchResponse | None] = asyncio.Queue(maxsize=256)
        stream = _WatchStream(self, out, request_iterator)
        try:
            while (item := await out.get()) is not None:
                yield item
        finally:
            await stream.close()


class _WatchStream:
    """One Watch call: a reader task turns the client's requests into watchers, each pumped
    by its own task into `out`; None in `out` ends the call."""

    def __init__(
        self,
        svc: WatchService,
        out: asyncio.Queue[rpc_pb2.WatchResponse | None],
        requests: AsyncIterator[rpc_pb2.WatchRequest],
    ) -> None:
        self.svc = svc
        self.hub = svc.s.sm.hub
        self.out = out
        self.watchers: dict[int, tuple[Watcher, asyncio.Task[None], bool]] = {}
        self.next_id = 0
        self.progress_task: asyncio.Task[None] | None = None
        self.reader = asyncio.get_running_loop().create_task(self.read(requests))

    def response(self, watch_id: int, **fields: Any) -> rpc_pb2.WatchResponse:
        resp = rpc_pb2.WatchResponse(watch_id=watch_id, **fields)
        assert self.hub is not None
        self.svc.header(resp.header, self.hub.revision)
        return resp

    async def read(self, requests: AsyncIterator[rpc_pb2.WatchRequest]) -> None:
        try:
            async for req in requests:
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    await self.create(req.create_request)
                elif kind == "cancel_request":
                    await self.cancel(req.cancel_request.watch_id, reason="")
                elif kind == "progress_request":
                    await self.out.put(self.response(INVALID_WATCH_ID))
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            raise
        except Exception as exc:  # a broken client stream ends only this stream
            log.debug("watch stream ended", error=repr(exc))
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                self.out.put_nowait(None)

    async def create(self, req: rpc_pb2.WatchCreateRequest) -> None:
        assert self.hub is not None
        watch_id = req.watch_id
        if watch_id == 0 or watch_id == INVALID_WATCH_ID:
            while self.next_id in self.watchers:
                self.next_id += 1
            watch_id = self.next_id
            self.next_id += 1
        elif watch_id in self.watchers or watch_id < 0:
            await self.out.put(
                self.response(
                    INVALID_WATCH_ID,
                    created=True,
                    canceled=True,
                    cancel_reason=errors.ErrWatchIDExists.message,
                )
            )
            return
        if not req.key:
            await self.out.put(
                self.response(watch_id, created=True, canceled=True, cancel_reason="key is empty")
            )
            return
        watcher = self.hub.add(
            req.key,
            req.range_end,
            req.start_revision,
            prev_kv=req.prev_kv,
            filters=list(req.filters),
        )
        await self.out.put(self.response(watch_id, created=True))
        task = asyncio.get_running_loop().create_task(self.pump(watch_id, watcher))
        self.watchers[watch_id] = (watcher, task, req.progress_notify)
        if req.progress_notify and self.progress_task is None:
            self.progress_task = asyncio.get_running_loop().create_task(self.progress())

    async def pump(self, watch_id: int, watcher: Watcher) -> None:
        while True:
            batch = await watcher.get()
            if batch.canceled:
                await self.out.put(
                    self.response(
                        watch_id,
                        canceled=True,
                        compact_revision=batch.compact_revision,
                        cancel_reason=errors.ErrCompacted.message,
                    )
                )
                self.drop(watch_id)
                return
            await self.out.put(self.response(watch_id, events=batch.events))

    async def progress(self) -> None:
        """Progress notifications for idle synced watchers that asked for them."""
        interval = self.svc.s.config.progress_notify_s
        last: dict[int, int] = {}
        while True:
            await asyncio.sleep(interval)
            for watch_id, (watcher, _, notify) in list(self.watchers.items()):
                if notify and watcher.synced and last.get(watch_id) == watcher.next_revision:
                    await self.out.put(self.response(watch_id))
                last[watch_id] = watcher.next_revision

    def drop(self, watch_id: int) -> None:
        entry = self.watchers.pop(watch_id, None)
        if entry is not None and self.hub is not None:
            self.hub.remove(entry[0])

    async def cancel(self, watch_id: int, *, reason: str) -> None:
        entry = self.watchers.get(watch_id)
        if entry is None:
            return
        entry[1].cancel()
        self.drop(watch_id)
        await self.out.put(self.response(watch_id, canceled=True, cancel_reason=reason))

    async def close(self) -> None:
        # The reader first, so no watcher is created while the others are dropped; the
        # watchers go even when the reader ended with the client's error (re-raised after).
        try:
            await _cancel([self.reader])
        finally:
            tasks = [t for _, t, _ in self.watchers.values()]
            if self.progress_task is not None:
                tasks.append(self.progress_task)
            for watch_id in list(self.watchers):
                self.drop(watch_id)
            await _cancel(tasks)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


class LeaseService(_Base, rpc_pb2_grpc.LeaseServicer):
    @_unary
    async def LeaseGrant(
        self, request: rpc_pb2.LeaseGrantRequest, context: Context
    ) -> rpc_pb2.LeaseGrantResponse:
        if request.TTL > MAX_LEASE_TTL:
            raise errors.ErrLeaseTTLTooLarge
        grant = rpc_pb2.LeaseGrantRequest(TTL=max(request.TTL, 1), ID=request.ID)
        if grant.ID < 0:
            raise errors.ErrLeaseNotFound
        if grant.ID == 0:
            # The proposer picks the id so every replica applies the same one.
            grant.ID = secrets.randbits(62) + 1
        await self.s.check_quota(LEASE_OVERHEAD)
        return await self._propose(rpc_pb2.LeaseGrantResponse, lease_grant=grant)

    @_unary
    async def LeaseRevoke(
        self, request: rpc_pb2.LeaseRevokeRequest, context: Context
    ) -> rpc_pb2.LeaseRevokeResponse:
        return await self._propose(rpc_pb2.LeaseRevokeResponse, lease_revoke=request)

    async def LeaseKeepAlive(
        self,
        request_iterator: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest],
        context: Context,
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        async for request in request_iterator:
            op = internal_pb2.InternalRequest(lease_keep_alive=request)
            try:
                response = await self.s.propose(op)
            except errors.StoreError as exc:
                if not isinstance(exc, errors.ErrLeaseNotFound):
                    await context.abort(exc.code, exc.message)
                response = rpc_pb2.LeaseKeepAliveResponse(ID=request.ID, TTL=0)
            assert isinstance(response, rpc_pb2.LeaseKeepAliveResponse)
            self.header(response.header, self.s.sm.revision)
            yield response

    @_unary
    async def LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: Context
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        sm = self.s.sm
        await self.s.linearizable_barrier()
        found = await sm.run(sm.mvcc.lease_time_to_live, request.ID, request.keys)
        response = rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)
        if found is not None:
            granted, keys = found
            response.grantedTTL = granted
            response.TTL = max(sm.lessor.remaining(request.ID, sm.clock()), 0)
            response.keys.extend(keys)
        self.header(response.header, sm.revision)
        return response

    @_unary
    async def LeaseLeases(
        self, request: rpc_pb2.LeaseLeasesRequest, context: Context
    ) -> rpc_pb2.LeaseLeasesResponse:
        sm = self.s.sm
        await self.s.linearizable_barrier()
        leases = await sm.run(sm.mvcc.leases)
        response = rpc_pb2.LeaseLeasesResponse(
            leases=[rpc_pb2.LeaseStatus(ID=lease_id) for lease_id, _ in leases]
        )
        self.header(response.header, sm.revision)
        return response


class ClusterService(_Base, rpc_pb2_grpc.ClusterServicer):
    """etcd's Cluster service. Changes go through the leader (a follower forwards them) as
    single-server Raft conf changes and return once applied here (store/members.py)."""

    @_unary
    async def MemberAdd(
        self, request: rpc_pb2.MemberAddRequest, context: Context
    ) -> rpc_pb2.MemberAddResponse:
        info = await self.s.change_members(internal_pb2.MemberChange(add=request))
        return self._listing(rpc_pb2.MemberAddResponse(member=info.added), info)

    @_unary
    async def MemberRemove(
        self, request: rpc_pb2.MemberRemoveRequest, context: Context
    ) -> rpc_pb2.MemberRemoveResponse:
        info = await self.s.change_members(internal_pb2.MemberChange(remove=request))
        return self._listing(rpc_pb2.MemberRemoveResponse(), info)

    @_unary
    async def MemberUpdate(
        self, request: rpc_pb2.MemberUpdateRequest, context: Context
    ) -> rpc_pb2.MemberUpdateResponse:
        info = await self.s.change_members(internal_pb2.MemberChange(update=request))
        return self._listing(rpc_pb2.MemberUpdateResponse(), info)

    @_unary
    async def MemberPromote(
        self, request: rpc_pb2.MemberPromoteRequest, context: Context
    ) -> rpc_pb2.MemberPromoteResponse:
        info = await self.s.change_members(internal_pb2.MemberChange(promote=request))
        return self._listing(rpc_pb2.MemberPromoteResponse(), info)

    def _listing(self, response: M, info: internal_pb2.ClusterInfo) -> M:
        """A change's response: the members after it, and the header."""
        response.members.extend(info.members)  # type: ignore[attr-defined]
        self.header(response.header)  # type: ignore[attr-defined]
        return response

    async def MemberList(
        self, request: rpc_pb2.MemberListRequest, context: Context
    ) -> rpc_pb2.MemberListResponse:
        response = rpc_pb2.MemberListResponse(members=self.s.members())
        self.header(response.header)
        return response


class MaintenanceService(_Base, rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, replica: Replica) -> None:
        super().__init__(replica)
        # Client Snapshot streams running on this replica (at most one at a time).
        self.snapshot_streams = 0

    @_unary
    async def Alarm(self, request: rpc_pb2.AlarmRequest, context: Context) -> rpc_pb2.AlarmResponse:
        """etcd's semantics: GET lists the alarms of one type (NONE: all), ACTIVATE and
        DEACTIVATE go through the log, so every replica holds the same alarms."""
        sm = self.s.sm
        if request.action != rpc_pb2.AlarmRequest.GET:
            response = await self._propose(rpc_pb2.AlarmResponse, alarm=request)
        else:
            await self.s.linearizable_barrier()
            response = rpc_pb2.AlarmResponse()
            for member, alarm in sm.mvcc.alarms(request.alarm):
                response.alarms.add(memberID=member, alarm=alarm)
        self.header(response.header, sm.revision)
        return response

    async def Status(
        self, request: rpc_pb2.StatusRequest, context: Context
    ) -> rpc_pb2.StatusResponse:
        s = self.s
        size, in_use = 0, 0
        if s.sm.ready:
            size = await s.sm.run(s.sm.mvcc.db_size)
            in_use = await s.sm.run(s.sm.mvcc.db_size_in_use)
        response = rpc_pb2.StatusResponse(
            version=SERVER_VERSION,
            dbSize=size,
            dbSizeInUse=in_use,
            leader=s.node.leader,
            raftIndex=s.node.commit_index,
            raftTerm=s.node.term,
            raftAppliedIndex=s.sm.applied_index,
        )
        if s.node.leader == 0:
            response.errors.append(errors.ErrNoLeader.message)
        if s.sm.ready:
            response.errors.extend(alarm_text(m, a) for m, a in s.sm.mvcc.alarms())
        self.header(response.header, s.sm.revision)
        return response

    @_unary
    async def Defragment(
        self, request: rpc_pb2.DefragmentRequest, context: Context
    ) -> rpc_pb2.DefragmentResponse:
        # Local to this member, as in etcd: gives kv.db's free pages back to the file system,
        # in batches between applies (compactor.py).
        await self.s.compactor.defragment()
        response = rpc_pb2.DefragmentResponse()
        self.header(response.header)
        return response

    @_unary
    async def MoveLeader(
        self, request: rpc_pb2.MoveLeaderRequest, context: Context
    ) -> rpc_pb2.MoveLeaderResponse:
        """etcd's MoveLeader: only the leader takes it ("not leader" elsewhere); the target
        must be a member; it returns once the target leads."""
        await self.s.move_leader(request.targetID)
        response = rpc_pb2.MoveLeaderResponse()
        self.header(response.header)
        return response

    @_unary
    async def HashKV(
        self, request: rpc_pb2.HashKVRequest, context: Context
    ) -> rpc_pb2.HashKVResponse:
        sm = self.s.sm
        value, compact_rev, rev = await sm.run(sm.mvcc.hash_kv, request.revision)
        # etcd reports -1 until the first compaction.
        response = rpc_pb2.HashKVResponse(hash=value, compact_revision=compact_rev or -1)
        self.header(response.header, rev)
        return response

    async def Snapshot(
        self, request: rpc_pb2.SnapshotRequest, context: Context
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        sm = self.s.sm
        if self.snapshot_streams:
            # One at a time: each stream is a full copy of kv.db on disk and in flight.
            await _abort(context, errors.ErrTooManySnapshots())
        self.snapshot_streams += 1
        fd, name = tempfile.mkstemp(prefix="client-", suffix=".part", dir=self.s.snapshot_dir)
        os.close(fd)
        path = Path(name)
        try:
            header = await sm.write_snapshot(path)
            size = path.stat().st_size
            sent = 0
            with path.open("rb") as src:
                while chunk := await asyncio.to_thread(src.read, SNAPSHOT_CHUNK):
                    sent += len(chunk)
                    response = rpc_pb2.SnapshotResponse(remaining_bytes=size - sent, blob=chunk)
                    self.header(response.header, header.revision)
                    yield response
        except errors.StoreError as exc:
            await context.abort(exc.code, exc.message)
        finally:
            self.snapshot_streams -= 1
            path.unlink(missing_ok=True)
