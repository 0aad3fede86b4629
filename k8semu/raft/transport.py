"""Raft's transport between store replicas: framed messages on plain asyncio TCP.

Owns the peer port (`PeerServer`) and one outgoing connection per peer (`PeerTransport`).
A connection carries frames one way (k8semu.raft.framing): `MessageBatch`es on a message
connection, or one snapshot on a connection of its own (so a large snapshot never delays a
heartbeat). Messages for a connected peer are written at once from `send` (one frame per
peer per call: the driver sends a Ready's messages in one call); while a peer is
unreachable or pushes back, they queue, bounded, and the oldest are dropped: Raft tolerates
loss, memory must not grow. Lost connections are re-made with back-off.

Not gRPC (design decision 9 keeps every gRPC channel in k8semu.transport): measured with
scripts/measure_peer_transport.py, a grpc.aio stream costs ~5x the CPU of a framed write
and read per message (docs/store.md, "Performance"). TLS-ready: both sides take an
`ssl.SSLContext`.

Never trusts the network: frames of another cluster or from non-members are refused (the
peer is told why, the connection closed), undecodable or oversized frames close that
connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl as ssl_module
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from k8semu import transport
from k8semu.log import get_logger
from k8semu.pb.raft import raft_pb2
from k8semu.raft import framing

log = get_logger(__name__)

MAX_QUEUED = 4096
SNAPSHOT_CHUNK = 1 << 20
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 1.0
# A connection that lived this long was a working one: the next failure starts back-off over.
_STABLE_S = 1.0
# Snapshot chunks read off the network but not yet on disk before reading pauses.
_SNAPSHOT_BACKLOG = 4

OnUnreachable = Callable[[int], None]
OnSnapshotSent = Callable[[int, bool], None]
# Answers one request frame's payload with the reply's payload, or raises RemoteError.
RequestHandler = Callable[[bytes], Awaitable[bytes]]
# Status codes (gRPC's numbers, which the store's errors carry) of failures on our side.
_UNKNOWN, _DEADLINE_EXCEEDED, _UNAVAILABLE = 2, 4, 14


class Receiver(Protocol):
    """Where the peer server hands what peers send (the driver, RaftNode)."""

    def step(self, messages: Sequence[raft_pb2.Message]) -> None: ...

    async def receive_snapshot(self, message: raft_pb2.Message, path: Path) -> None:
        """A snapshot file streamed by a peer (the server removes `path` afterwards)."""
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


def split_host_port(address: str) -> tuple[str, int]:
    """`127.0.0.1:2380` -> ("127.0.0.1", 2380); `[::1]:2380` -> ("::1", 2380)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise transport.AddressError(f"{address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


# -- receiving ------------------------------------------------------------------------------


@dataclass(eq=False)
class PeerServer:
    """The peer port: accepts peers' connections and hands their messages to the receiver."""

    membership: Membership
    receiver: Receiver
    snapshot_dir: Path
    # A member's client URLs as a peer told them (PeerTransport.learn_client_urls).
    on_client_urls: Callable[[int, list[str]], None]
    _: KW_ONLY
    # Request frame kind -> its handler (framing.CLUSTER, framing.CHANGE: the store's).
    requests: Mapping[int, RequestHandler] = field(default_factory=dict)
    ssl: ssl_module.SSLContext | None = None
    deadlines: transport.Deadlines = transport.DEFAULT_DEADLINES
    connections: set[_Inbound] = field(default_factory=set, init=False)
    tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _server: asyncio.AbstractServer | None = field(default=None, init=False)

    async def listen(self, address: str, *, flag: str = "--listen-peer-urls") -> int:
        """Bind `address` (HOST:PORT; port 0 picks one) without serving yet; the bound port."""
        host, port = split_host_port(address)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Inbound(self), host, port, ssl=self.ssl, start_serving=False
            )
        except OSError as exc:
            raise transport.AddressError(f"{flag}: cannot listen on {address}: {exc}") from exc
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        assert self._server is not None, "listen() first"
        await self._server.start_serving()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def on_batch(self, conn: _Inbound, batch: raft_pb2.MessageBatch) -> None:
        sender = getattr(batch, "from")
        reason = self.membership.refuse(batch.cluster_id, sender)
        if reason is not None:
            conn.fail(reason)
            return
        # A forged `from` on individual messages is ignored: the frame's sender wins.
        msgs = [m for m in batch.messages if getattr(m, "from") == sender]
        if msgs:
            self.receiver.step(msgs)

    def on_urls(self, conn: _Inbound, batch: raft_pb2.MessageBatch) -> None:
        reason = self.membership.refuse(batch.cluster_id, getattr(batch, "from"))
        if reason is not None:
            conn.fail(reason)
            return
        for item in batch.member_client_urls:
            if item.id in self.membership.members:
                self.on_client_urls(item.id, list(item.urls))

    def on_request(self, conn: _Inbound, kind: int, payload: bytes) -> None:
        handler = self.requests.get(kind)
        if handler is None:
            conn.fail(f"no handler for request frames of kind {kind}")
            return
        task = asyncio.get_running_loop().create_task(self._answer(conn, kind, handler, payload))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(
        self, conn: _Inbound, kind: int, handler: RequestHandler, payload: bytes
    ) -> None:
        """Run the handler (to its end even if the asker hung up: a change it started
        completes), reply with its answer or error, close."""
        try:
            reply = await handler(payload)
        except framing.RemoteError as exc:
            conn.send(framing.REPLY_ERROR, framing.error_payload(exc.code, exc.message))
        except Exception as exc:  # a bug or an undecodable request: this request only
            log.warning("peer request failed", peer=conn.peer, kind=kind, error=repr(exc))
            message = f"request of kind {kind} failed: {exc!r}"
            conn.send(framing.REPLY_ERROR, framing.error_payload(_UNKNOWN, message))
        else:
            if len(reply) <= framing.MAX_FRAME:
                conn.send(framing.REPLY, reply)
            else:
                message = f"reply of {len(reply)} bytes exceeds the frame limit"
                conn.send(framing.REPLY_ERROR, framing.error_payload(_UNKNOWN, message))
        conn.close()

    def begin_snapshot(
        self, conn: _Inbound, first: raft_pb2.SnapshotChunk
    ) -> _IncomingSnapshot | None:
        reason = self.membership.refuse(first.cluster_id, getattr(first, "from"))
        if reason is None and first.message.type != raft_pb2.MSG_SNAP:
            reason = "first chunk is not MSG_SNAP"
        if reason is not None:
            conn.fail(reason)
            return None
        incoming = _IncomingSnapshot(self, conn, first.message)
        if first.data:
            incoming.feed(first.data)
        task = asyncio.get_running_loop().create_task(incoming.run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return incoming


class _Inbound(framing.FramedProtocol):
    """A connection a peer opened: messages, or one snapshot."""

    KINDS = (
        frozenset(
            {framing.BATCH, framing.URLS, framing.SNAP_BEGIN, framing.SNAP_DATA, framing.SNAP_END}
        )
        | framing.REQUESTS
    )

    def __init__(self, server: PeerServer) -> None:
        super().__init__()
        self._server = server
        self._kind = 0  # framing.BATCH or framing.SNAP_BEGIN once the first frame says
        self._snapshot: _IncomingSnapshot | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._server.connections.discard(self)
        if self._snapshot is not None:
            self._snapshot.feed(None)

    def on_frame(self, kind: int, payload: bytes) -> None:
        if kind == framing.BATCH and self._kind != framing.SNAP_BEGIN:
            self._kind = kind
            self._server.on_batch(self, raft_pb2.MessageBatch.FromString(payload))
        elif kind == framing.URLS and self._kind != framing.SNAP_BEGIN:
            self._kind = framing.BATCH
            self._server.on_urls(self, raft_pb2.MessageBatch.FromString(payload))
        elif self._snapshot is not None and kind == framing.SNAP_DATA:
            self._snapshot.feed(payload)
        elif self._snapshot is not None and kind == framing.SNAP_END:
            self._snapshot.feed(b"")
        elif kind == framing.SNAP_BEGIN and self._kind == 0:
            self._kind = kind
            first = raft_pb2.SnapshotChunk.FromString(payload)
            self._snapshot = self._server.begin_snapshot(self, first)
        elif kind in framing.REQUESTS and self._kind == 0:
            self._kind = kind  # one request per connection: any further frame closes it
            self._server.on_request(self, kind, payload)
        else:
            raise ValueError(f"unexpected frame kind {kind}")


class _IncomingSnapshot:
    """One snapshot being received: chunks go to a file from a task (disk work on a thread:
    the loop also carries the heartbeats); reading pauses while the disk lags behind."""

    def __init__(self, server: PeerServer, conn: _Inbound, message: raft_pb2.Message) -> None:
        self._server = server
        self._conn = conn
        self._message = raft_pb2.Message()
        self._message.CopyFrom(message)
        # File bytes; b"" when complete, None when the connection was lost.
        self._chunks: deque[bytes | None] = deque()
        self._wake = asyncio.Event()

    def feed(self, chunk: bytes | None) -> None:
        self._chunks.append(chunk)
        if len(self._chunks) >= _SNAPSHOT_BACKLOG and self._conn.transport is not None:
            self._conn.transport.pause_reading()
        self._wake.set()

    async def run(self) -> None:
        conn = self._conn
        self._server.snapshot_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix="incoming-", suffix=".tmp", dir=self._server.snapshot_dir
        )
        path = Path(name)
        try:
            async with asyncio.timeout(self._server.deadlines.snapshot):
                with os.fdopen(fd, "wb") as out:
                    await self._write_all(out)
                    await asyncio.to_thread(_flush_and_sync, out)
                await self._server.receiver.receive_snapshot(self._message, path)
            ack = raft_pb2.SnapshotAck(accepted=True)
        except ConnectionResetError:
            log.warning("snapshot from peer cut short", peer=conn.peer)
            return
        except Exception as exc:  # a bad snapshot must not take the replica down
            log.warning("snapshot from peer refused", peer=conn.peer, error=str(exc))
            ack = raft_pb2.SnapshotAck(error=str(exc))
        finally:
            path.unlink(missing_ok=True)
        conn.send(framing.SNAP_ACK, ack.SerializeToString())
        conn.close()

    async def _write_all(self, out: BinaryIO) -> None:
        chunks = self._chunks
        while True:
            await self._wake.wait()
            self._wake.clear()
            while chunks:
                chunk = chunks.popleft()
                if chunk is None:
                    raise ConnectionResetError
                if not chunk:
                    return
                await asyncio.to_thread(out.write, chunk)
                if len(chunks) < _SNAPSHOT_BACKLOG and self._conn.transport is not None:
                    self._conn.transport.resume_reading()


def _flush_and_sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


# -- sending ---------------------------------------------------------------------------------


class _Outbound(framing.FramedProtocol):
    """Our message connection to a peer: we write; it only ever answers with a refusal."""

    KINDS = frozenset({framing.REFUSED})

    def __init__(self, peer: _Peer) -> None:
        super().__init__()
        self._peer = peer

    def on_frame(self, kind: int, payload: bytes) -> None:
        if kind != framing.REFUSED:
            raise ValueError(f"unexpected frame kind {kind}")
        reason = payload.decode(errors="replace")
        log.warning("peer refused our messages", peer=f"{self._peer.id:x}", reason=reason)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._peer.wake.set()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._peer.wake.set()


class _SnapshotOut(framing.FramedProtocol):
    """Our connection carrying one snapshot; `ack` gets the receiver's verdict."""

    KINDS = frozenset({framing.SNAP_ACK, framing.REFUSED})

    def __init__(self) -> None:
        super().__init__()
        self.ack: asyncio.Future[raft_pb2.SnapshotAck] = asyncio.get_running_loop().create_future()

    def on_frame(self, kind: int, payload: bytes) -> None:
        if kind == framing.SNAP_ACK:
            ack = raft_pb2.SnapshotAck.FromString(payload)
        elif kind == framing.REFUSED:
            ack = raft_pb2.SnapshotAck(error=payload.decode(errors="replace"))
        else:
            raise ValueError(f"unexpected frame kind {kind}")
        if not self.ack.done():
            self.ack.set_result(ack)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.ack.done():
            self.ack.set_exception(ConnectionResetError("peer closed the snapshot connection"))
            self.ack.exception()  # retrieved: the sender may have given up already


class _Peer:
    """The sender side for one peer: its connection, a bounded queue and a task that
    (re)connects and writes what queued while the connection was away or full."""

    def __init__(self, owner: PeerTransport, peer_id: int, address: str) -> None:
        self.id = peer_id
        self.address = address
        self.host, self.port = split_host_port(address)
        self.queue: deque[raft_pb2.Message] = deque()
        self.wake = asyncio.Event()
        self.conn: _Outbound | None = None
        self._owner = owner
        self.task: asyncio.Task[None] | None = None
        self.urls_sent = -1

    def send(self, msgs: list[raft_pb2.Message]) -> None:
        conn = self.conn
        if conn is not None and not self.queue and conn.writable:
            self._owner.write_batch(self, conn, msgs)
            return
        queue = self.queue
        queue.extend(msgs)
        for _ in range(len(queue) - MAX_QUEUED):
            queue.popleft()
        self.wake.set()

    async def run(self) -> None:
        backoff = _BACKOFF_MIN
        while True:
            await self.wake.wait()
            started = time.monotonic()
            conn = await self._connect()
            if conn is not None:
                self.conn = conn
                self.urls_sent = -1
                try:
                    await self._flush_while_open(conn)
                except Exception:  # a bug: this peer's sender must not die, it reconnects
                    log.exception("peer sender failed", peer=f"{self.id:x}")
                finally:
                    self.conn = None
                    conn.close()
            if time.monotonic() - started >= _STABLE_S:
                backoff = _BACKOFF_MIN
            self.queue.clear()
            self._owner.on_unreachable(self.id)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _connect(self) -> _Outbound | None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._owner.deadlines.peer_send):
                _, conn = await loop.create_connection(
                    lambda: _Outbound(self), self.host, self.port, ssl=self._owner.ssl
                )
        except (OSError, TimeoutError) as exc:
            log.debug("peer connect failed", peer=f"{self.id:x}", error=str(exc))
            return None
        return conn

    async def _flush_while_open(self, conn: _Outbound) -> None:
        owner = self._owner
        while conn.transport is not None:
            await self.wake.wait()
            self.wake.clear()
            if conn.writable and (self.queue or self.urls_sent != owner.urls_version):
                msgs = list(self.queue)
                self.queue.clear()
                owner.write_batch(self, conn, msgs)


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
        *,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self._cluster_id = cluster_id
        self._member_id = member_id
        self._client_urls = client_urls
        self._urls_version = 0
        self._peers = {pid: _Peer(self, pid, addr) for pid, addr in peers.items()}
        self.on_unreachable = on_unreachable
        self._on_snapshot_sent = on_snapshot_sent
        self.deadlines = deadlines
        self.ssl = ssl
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

    def write_batch(self, peer: _Peer, conn: _Outbound, msgs: list[raft_pb2.Message]) -> None:
        """`msgs` as one frame (more if they exceed a frame), after our members' client URLs
        when they changed since this connection last carried them."""
        if peer.urls_sent != self._urls_version:
            peer.urls_sent = self._urls_version
            conn.send(framing.URLS, self._batch(member_client_urls=[
                raft_pb2.MemberClientURLs(id=mid, urls=urls)
                for mid, urls in self._client_urls.items()
            ]))  # fmt: skip
        if not msgs:
            return
        payload = self._batch(messages=msgs)
        if len(payload) <= framing.MAX_FRAME:
            conn.send(framing.BATCH, payload)
        elif len(msgs) > 1:
            half = len(msgs) // 2
            self.write_batch(peer, conn, msgs[:half])
            self.write_batch(peer, conn, msgs[half:])
        else:  # the core bounds a message's size far below this
            log.warning("raft message too large to send", peer=f"{peer.id:x}", bytes=len(payload))

    def _batch(self, **fields: Any) -> bytes:
        batch = raft_pb2.MessageBatch(cluster_id=self._cluster_id, **fields)
        setattr(batch, "from", self._member_id)
        return batch.SerializeToString()

    def start(self) -> None:
        for peer in self._peers.values():
            if peer.task is None:
                peer.task = asyncio.get_running_loop().create_task(peer.run())

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """The membership changed: senders to new (or moved) peers start, senders to removed
        ones stop and close their connection (what they had queued is dropped, as Raft
        tolerates)."""
        loop = asyncio.get_running_loop()
        for pid, peer in list(self._peers.items()):
            if peers.get(pid) != peer.address:
                del self._peers[pid]
                if peer.task is not None:
                    peer.task.cancel()
                if peer.conn is not None:
                    peer.conn.close()
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
            if peer.conn is not None:
                peer.conn.close()

    def send(self, messages: Sequence[raft_pb2.Message]) -> None:
        by_peer: dict[int, list[raft_pb2.Message]] = {}
        for msg in messages:
            to = by_peer.get(msg.to)
            if to is None:
                by_peer[msg.to] = [msg]
            else:
                to.append(msg)
        for peer_id, msgs in by_peer.items():
            peer = self._peers.get(peer_id)
            if peer is not None:
                peer.send(msgs)

    def send_snapshot(self, msg: raft_pb2.Message, path: Path) -> None:
        """Stream the snapshot file at `path` to msg.to; reports the outcome to the core."""
        peer = self._peers.get(msg.to)
        if peer is None:
            return
        task = asyncio.get_running_loop().create_task(self._send_snapshot(peer, msg, path))
        self._snapshot_tasks.add(task)
        task.add_done_callback(self._snapshot_tasks.discard)

    async def _send_snapshot(self, peer: _Peer, msg: raft_pb2.Message, path: Path) -> None:
        ok = False
        try:
            async with asyncio.timeout(self.deadlines.snapshot):
                ack = await self._stream_snapshot(peer, msg, path)
            ok = ack.accepted
            if not ok:
                log.warning("peer refused snapshot", peer=f"{peer.id:x}", error=ack.error)
        except (OSError, TimeoutError) as exc:
            log.warning("snapshot send failed", peer=f"{peer.id:x}", error=repr(exc))
        self._on_snapshot_sent(peer.id, ok)

    async def _stream_snapshot(
        self, peer: _Peer, msg: raft_pb2.Message, path: Path
    ) -> raft_pb2.SnapshotAck:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_SnapshotOut, peer.host, peer.port, ssl=self.ssl)
        try:
            first = raft_pb2.SnapshotChunk(cluster_id=self._cluster_id, message=msg)
            setattr(first, "from", self._member_id)
            conn.send(framing.SNAP_BEGIN, first.SerializeToString())
            with path.open("rb") as src:
                while data := await asyncio.to_thread(src.read, SNAPSHOT_CHUNK):
                    await conn.drain()
                    conn.send(framing.SNAP_DATA, data)
            conn.send(framing.SNAP_END, b"")
            return await conn.ack
        finally:
            conn.close()


# -- request/response -------------------------------------------------------------------------


class _Call(framing.FramedProtocol):
    """Our connection carrying one request; `reply` gets the answer's payload."""

    KINDS = frozenset({framing.REPLY, framing.REPLY_ERROR, framing.REFUSED})

    def __init__(self) -> None:
        super().__init__()
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def on_frame(self, kind: int, payload: bytes) -> None:
        if self.reply.done():
            raise ValueError(f"a second reply (kind {kind})")
        if kind == framing.REPLY:
            self.reply.set_result(payload)
        elif kind == framing.REPLY_ERROR:
            self.reply.set_exception(framing.parse_error(payload))
        else:
            reason = payload.decode(errors="replace")
            self.reply.set_exception(framing.RemoteError(_UNAVAILABLE, f"refused: {reason}"))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.reply.done():
            self.reply.set_exception(ConnectionResetError("closed without a reply"))
            self.reply.exception()  # retrieved: the asker may have given up already


async def request(
    address: str,
    kind: int,
    payload: bytes,
    timeout: float,
    *,
    ssl: ssl_module.SSLContext | None = None,
) -> bytes:
    """Send one request frame to the peer port at `address` on a connection of its own and
    return the reply's payload. Every failure raises framing.RemoteError: the peer's error
    reply as it sent it, a connection that failed or closed without a reply as UNAVAILABLE,
    no reply within `timeout` as DEADLINE_EXCEEDED."""
    conn: _Call | None = None
    try:
        host, port = split_host_port(address)
        async with asyncio.timeout(timeout):
            _, conn = await asyncio.get_running_loop().create_connection(_Call, host, port, ssl=ssl)
            conn.send(kind, payload)
            return await conn.reply
    except TimeoutError:
        raise framing.RemoteError(
            _DEADLINE_EXCEEDED, f"{address}: no reply within {timeout:g}s"
        ) from None
    except (OSError, transport.AddressError) as exc:
        raise framing.RemoteError(_UNAVAILABLE, f"{address}: {exc}") from None
    finally:
        if conn is not None:
            conn.close(abort=True)  # one request, one reply: nothing is left to send
