"""gRPC transport between Raft replicas: one long-lived client stream per peer.

Owns the peer port's RaftTransport servicer and one sender task per peer. Outgoing
messages are queued per peer and written in batches (everything queued since the last
write becomes one MessageBatch), so a burst of AppendEntries costs one frame. When a
peer is down its queue is bounded and the oldest messages are dropped: Raft tolerates
loss, memory must not grow. Snapshots stream in chunks on a separate RPC.

Never trusts the network: frames of another cluster or from non-members are refused,
undecodable frames end that stream only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import grpc

from k8semu import transport
from k8semu.log import get_logger
from k8semu.pb.raft import raft_pb2, raft_pb2_grpc

log = get_logger(__name__)

MAX_QUEUED = 4096
SNAPSHOT_CHUNK = 1 << 20
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 1.0

OnUnreachable = Callable[[int], None]
OnSnapshotSent = Callable[[int, bool], None]


class Receiver(Protocol):
    """Where the servicer hands what peers send (the driver, RaftNode)."""

    def step(self, messages: Sequence[raft_pb2.Message]) -> None: ...

    async def receive_snapshot(self, message: raft_pb2.Message, path: Path) -> None:
        """A snapshot file streamed by a peer (the servicer removes `path` afterwards)."""
        ...


@dataclass(frozen=True, slots=True)
class Membership:
    """Who may talk on this cluster's peer port: the cluster's id and its members' ids."""

    cluster_id: int
    members: Collection[int]

    def refuse(self, cluster_id: int, sender: int) -> str | None:
        """Why a frame of `cluster_id` from `sender` is refused; None when it is accepted."""
        if cluster_id != self.cluster_id:
            return f"cluster id mismatch: got {cluster_id:x}, this is cluster {self.cluster_id:x}"
        if sender not in self.members:
            return f"sender {sender:x} is not a member of this cluster"
        return None


class RaftServicer(raft_pb2_grpc.RaftTransportServicer):
    """Receives peers' frames and hands them to the driver."""

    def __init__(
        self,
        membership: Membership,
        receiver: Receiver,
        snapshot_dir: Path,
        on_client_urls: Callable[[int, list[str]], None],
    ) -> None:
        self._membership = membership
        self._receiver = receiver
        self._snapshot_dir = snapshot_dir
        # A member's client URLs as a peer told them (PeerTransport.learn_client_urls).
        self._on_client_urls = on_client_urls

    async def Send(
        self,
        request_iterator: AsyncIterator[raft_pb2.MessageBatch],
        context: grpc.aio.ServicerContext[raft_pb2.MessageBatch, raft_pb2.SendAck],
    ) -> raft_pb2.SendAck:
        async for batch in request_iterator:
            sender = getattr(batch, "from")
            reason = self._membership.refuse(batch.cluster_id, sender)
            if reason is not None:
                log.warning("peer frame refused", reason=reason, peer=context.peer())
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
            for item in batch.member_client_urls:
                if item.id in self._membership.members:
                    self._on_client_urls(item.id, list(item.urls))
            # A forged `from` on individual messages is ignored: the frame's sender wins.
            msgs = [m for m in batch.messages if getattr(m, "from") == sender]
            if msgs:
                self._receiver.step(msgs)
        return raft_pb2.SendAck()

    async def InstallSnapshot(
        self,
        request_iterator: AsyncIterator[raft_pb2.SnapshotChunk],
        context: grpc.aio.ServicerContext[raft_pb2.SnapshotChunk, raft_pb2.SnapshotAck],
    ) -> raft_pb2.SnapshotAck:
        self._snapshot_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="incoming-", suffix=".tmp", dir=self._snapshot_dir)
        path = Path(name)
        message: raft_pb2.Message | None = None
        try:
            # Disk work goes to a thread: the loop this runs on also carries the heartbeats.
            with os.fdopen(fd, "wb") as out:
                async for chunk in request_iterator:
                    if message is None:
                        reason = self._membership.refuse(chunk.cluster_id, getattr(chunk, "from"))
                        if reason is not None or chunk.message.type != raft_pb2.MSG_SNAP:
                            return raft_pb2.SnapshotAck(
                                error=reason or "first chunk is not MSG_SNAP"
                            )
                        message = raft_pb2.Message()
                        message.CopyFrom(chunk.message)
                    await asyncio.to_thread(out.write, chunk.data)
                await asyncio.to_thread(_flush_and_sync, out)
            if message is None:
                return raft_pb2.SnapshotAck(error="empty snapshot stream")
            await self._receiver.receive_snapshot(message, path)
            return raft_pb2.SnapshotAck(accepted=True)
        except Exception as exc:  # a bad snapshot must not take the replica down
            log.warning("snapshot from peer refused", error=str(exc))
            return raft_pb2.SnapshotAck(error=str(exc))
        finally:
            path.unlink(missing_ok=True)


def _flush_and_sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


class _Peer:
    """The sender side for one peer: a queue and a task keeping one stream open."""

    def __init__(self, owner: PeerTransport, peer_id: int, address: str) -> None:
        self.id = peer_id
        self.address = address
        self.queue: deque[raft_pb2.Message] = deque()
        self.wake = asyncio.Event()
        self._owner = owner
        self.channel = transport.channel(address)
        self.stub = raft_pb2_grpc.RaftTransportStub(self.channel)
        self.task: asyncio.Task[None] | None = None
        self.urls_sent = -1

    def put(self, msg: raft_pb2.Message) -> None:
        if len(self.queue) >= MAX_QUEUED:
            self.queue.popleft()
        self.queue.append(msg)
        self.wake.set()

    async def run(self) -> None:
        backoff = _BACKOFF_MIN
        while True:
            await self.wake.wait()
            call = self.stub.Send()
            self.urls_sent = -1
            try:
                while True:
                    await self.wake.wait()
                    self.wake.clear()
                    if not self.queue and self.urls_sent == self._owner.urls_version:
                        continue
                    batch = self._owner.frame(self)
                    batch.messages.extend(self.queue)
                    self.queue.clear()
                    await call.write(batch)
                    backoff = _BACKOFF_MIN
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as exc:
                detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                log.debug("peer stream broke", peer=f"{self.id:x}", error=detail)
            finally:
                call.cancel()
            self.queue.clear()
            self._owner.on_unreachable(self.id)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)


class PeerTransport:
    """Sends Raft messages to peers; `send` never blocks the driver."""

    def __init__(
        self,
        cluster_id: int,
        member_id: int,
        peers: Mapping[int, str],
        client_urls: dict[int, list[str]],
        on_unreachable: OnUnreachable,
        on_snapshot_sent: OnSnapshotSent,
        deadlines: transport.Deadlines = transport.DEFAULT_DEADLINES,
    ) -> None:
        self._cluster_id = cluster_id
        self._member_id = member_id
        self._client_urls = client_urls
        self._urls_version = 0
        self._peers = {pid: _Peer(self, pid, addr) for pid, addr in peers.items()}
        self.on_unreachable = on_unreachable
        self._on_snapshot_sent = on_snapshot_sent
        self._deadlines = deadlines
        self._snapshot_tasks: set[asyncio.Task[None]] = set()

    @property
    def urls_version(self) -> int:
        return self._urls_version

    def learn_client_urls(self, member: int, urls: list[str]) -> None:
        """A peer told us `member`'s client URLs: keep them and pass them on if they are news."""
        if urls == self._client_urls.get(member):
            return
        self._client_urls[member] = urls
        self._urls_version += 1
        for peer in self._peers.values():
            peer.wake.set()

    def frame(self, peer: _Peer) -> raft_pb2.MessageBatch:
        batch = raft_pb2.MessageBatch(cluster_id=self._cluster_id)
        setattr(batch, "from", self._member_id)
        if peer.urls_sent != self._urls_version:
            peer.urls_sent = self._urls_version
            batch.member_client_urls.extend(
                raft_pb2.MemberClientURLs(id=mid, urls=urls)
                for mid, urls in self._client_urls.items()
            )
        return batch

    def start(self) -> None:
        for peer in self._peers.values():
            peer.task = asyncio.get_running_loop().create_task(peer.run())

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """The membership changed: streams to new (or moved) peers start, streams to removed
        ones end."""
        loop = asyncio.get_running_loop()
        for pid, peer in list(self._peers.items()):
            if peers.get(pid) != peer.address:
                del self._peers[pid]
                if peer.task is not None:
                    peer.task.cancel()
                closing = loop.create_task(peer.channel.close())
                self._snapshot_tasks.add(closing)
                closing.add_done_callback(self._snapshot_tasks.discard)
        for pid, address in peers.items():
            if pid not in self._peers and pid != self._member_id:
                peer = self._peers[pid] = _Peer(self, pid, address)
                peer.task = loop.create_task(peer.run())

    async def stop(self) -> None:
        tasks = [p.task for p in self._peers.values() if p.task] + list(self._snapshot_tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for peer in self._peers.values():
            await peer.channel.close()

    def send(self, messages: Sequence[raft_pb2.Message]) -> None:
        for msg in messages:
            peer = self._peers.get(msg.to)
            if peer is not None:
                peer.put(msg)

    def send_snapshot(self, msg: raft_pb2.Message, path: Path) -> None:
        """Stream the snapshot file at `path` to msg.to; reports the outcome to the core."""
        peer = self._peers.get(msg.to)
        if peer is None:
            return
        task = asyncio.get_running_loop().create_task(self._send_snapshot(peer, msg, path))
        self._snapshot_tasks.add(task)
        task.add_done_callback(self._snapshot_tasks.discard)

    async def _send_snapshot(self, peer: _Peer, msg: raft_pb2.Message, path: Path) -> None:
        async def chunks() -> AsyncIterator[raft_pb2.SnapshotChunk]:
            first = raft_pb2.SnapshotChunk(cluster_id=self._cluster_id, message=msg)
            setattr(first, "from", self._member_id)
            with path.open("rb") as src:
                data = await asyncio.to_thread(src.read, SNAPSHOT_CHUNK)
                first.data = data
                yield first
                while data := await asyncio.to_thread(src.read, SNAPSHOT_CHUNK):
                    yield raft_pb2.SnapshotChunk(data=data)

        ok = False
        try:
            ack = await peer.stub.InstallSnapshot(chunks(), timeout=self._deadlines.snapshot)
            ok = ack.accepted
            if not ok:
                log.warning("peer refused snapshot", peer=f"{peer.id:x}", error=ack.error)
        except (grpc.aio.AioRpcError, OSError) as exc:
            log.warning("snapshot send failed", peer=f"{peer.id:x}", error=str(exc))
        self._on_snapshot_sent(peer.id, ok)
