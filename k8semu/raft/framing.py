"""Length-prefixed frames on an asyncio stream: the wire of the Raft peer transport.

A frame is a 5-byte header (payload length, big-endian u32; frame kind, u8) then the
payload. `FramedProtocol` cuts the bytes a connection receives into frames and hands each to
`on_frame`; it keeps at most one frame's bytes (a header announcing more than `MAX_FRAME`
closes the connection), and turns asyncio's write flow control into `writable` and an
awaitable `drain`. It never raises into the event loop: garbage closes that connection only.
It does not know what a payload means (k8semu.raft.transport does).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import cast

from k8semu.log import get_logger

log = get_logger(__name__)

HEADER = struct.Struct("!IB")
# The largest payload accepted (gRPC's message limit on the other ports).
MAX_FRAME = 64 * 1024 * 1024
# Past this many bytes buffered for the kernel, writers wait (`drain`) or queue.
WRITE_HIGH_WATER = 8 * 1024 * 1024

# Frame kinds.
BATCH = 1  # a MessageBatch: Raft messages on a message connection
SNAP_BEGIN = 2  # a SnapshotChunk carrying the MSG_SNAP message: opens a snapshot connection
SNAP_DATA = 3  # raw bytes of the snapshot file
SNAP_END = 4  # empty: the file is complete
SNAP_ACK = 5  # a SnapshotAck: the receiver's verdict on a snapshot
REFUSED = 6  # UTF-8 text: why the receiver closes this connection
# A MessageBatch with only member_client_urls, sent when they changed: apart from the
# messages, so the hot path never looks at them (reading even an empty repeated field of a
# decoded message cost ~1% of a replica's CPU).
URLS = 7
# Request/response on a connection of its own (one request, one reply, then it closes): the
# store's membership calls. A request's payload is the serialized request message; REPLY
# carries the serialized answer, REPLY_ERROR an error (`error_payload`).
CLUSTER = 8  # an internal_pb2.ClusterRequest: answered with a ClusterInfo
CHANGE = 9  # an internal_pb2.MemberChange: answered with a ClusterInfo
REPLY = 10
REPLY_ERROR = 11
REQUESTS = frozenset({CLUSTER, CHANGE})
_ERROR = struct.Struct("!H")

# Dead peers behind a partition: keepalive probes and a bound on unacknowledged data close
# the connection within ~10-20 s, so the sender reconnects (and reports the peer unreachable).
_KEEPALIVE = (
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", 0), 10),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", 0), 5),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", 0), 2),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", 0), 15_000),
)


def frame(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), kind) + payload


class RemoteError(Exception):
    """A request refused, by the peer that answered or on its behalf: a status `code` (the
    gRPC status code's number, as the store's errors carry them) and the message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def error_payload(code: int, message: str) -> bytes:
    return _ERROR.pack(code & 0xFFFF) + message.encode()[:16_000]


def parse_error(payload: bytes) -> RemoteError:
    """A REPLY_ERROR payload; garbage raises ValueError (struct.error is one)."""
    (code,) = _ERROR.unpack_from(payload)
    return RemoteError(code, payload[_ERROR.size :].decode(errors="replace"))


class FramedProtocol(asyncio.Protocol):
    """One connection; subclasses implement `on_frame` (and may send with `send`) and say
    which frame kinds they accept: a header of another kind closes the connection at once,
    before its payload is waited for."""

    KINDS: frozenset[int] = frozenset()

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 0
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._paused = False
        self._resumed: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            for level, option, value in _KEEPALIVE:
                if option:  # not every kernel has every option
                    with contextlib.suppress(OSError):
                        sock.setsockopt(level, option, value)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake_writers()

    def data_received(self, data: bytes) -> None:
        # Frames are cut from `data` itself; only an incomplete tail is kept in `_buf`, and
        # it is not looked at again until the frame it starts is complete (`_need` bytes).
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return
            data = bytes(buf)
            buf.clear()
        pos, size_of, header = 0, len(data), HEADER.size
        while size_of - pos >= header and self.transport is not None:
            size, kind = HEADER.unpack_from(data, pos)
            if size > MAX_FRAME or kind not in self.KINDS:
                self.fail(f"not a frame here: kind {kind}, {size} bytes (limit {MAX_FRAME})")
                return
            end = pos + header + size
            if end > size_of:
                break
            payload = data[pos + header : end]
            pos = end
            try:
                self.on_frame(kind, payload)
            except Exception as exc:  # a bug or garbage: this connection only
                self.fail(f"bad frame (kind {kind}): {exc!r}")
                return
        if pos < size_of and self.transport is not None:
            buf += memoryview(data)[pos:]
            self._need = len(buf) + 1 if len(buf) < header else header + HEADER.unpack_from(buf)[0]

    def eof_received(self) -> bool | None:
        return None  # close

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writers()

    # -- for subclasses and owners --------------------------------------------------------

    def on_frame(self, kind: int, payload: bytes) -> None:
        raise NotImplementedError

    @property
    def writable(self) -> bool:
        """Open and not pushed back by the kernel's buffers."""
        return self.transport is not None and not self._paused

    def send(self, kind: int, payload: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        try:
            transport.write(frame(kind, payload))
        except (RuntimeError, OSError) as exc:  # a transport closing under us: never raise
            log.debug("peer connection write failed", peer=self.peer, error=repr(exc))
            self.close()

    async def drain(self) -> None:
        """Wait while the write buffer is over its high-water mark; raises if it closed."""
        while self._paused and self.transport is not None:
            if self._resumed is None:
                self._resumed = asyncio.get_running_loop().create_future()
            await self._resumed
        if self.transport is None:
            raise ConnectionResetError(f"connection to {self.peer} closed")

    def fail(self, reason: str) -> None:
        """Garbage or a refusal from our side: log it, tell the peer why, close."""
        log.warning("peer connection closed", peer=self.peer, reason=reason)
        self.refuse(reason)

    def refuse(self, reason: str) -> None:
        self.send(REFUSED, reason.encode()[:2000])
        self.close()

    def close(self, *, abort: bool = False) -> None:
        """Close the connection; `abort`: at once, dropping what is unsent (over TLS, also
        without waiting for the peer's close_notify, which a refused peer never sends)."""
        self._buf.clear()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
            # Nothing more is read from it; connection_lost follows.
            self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake_writers()

    def _wake_writers(self) -> None:
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self._resumed = None
