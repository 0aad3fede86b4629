"""SPDY/3 framing, the server's side, as far as kubectl's port-forward and exec use it:
sans-I/O (bytes in, events out; frames out as bytes), so the caller owns the connection and
its lifetime (`drive` is the receiving loop, on the caller's byte source and sender).

kubectl (1.30+, KUBECTL_PORT_FORWARD_WEBSOCKETS=true) tunnels SPDY through a WebSocket whose
subprotocol is `SPDY/3.1+portforward.k8s.io`: the binary messages, concatenated, are the SPDY
byte stream. Per forwarded connection it opens two streams (SYN_STREAM with headers
`streamtype: error|data`, `port`, `requestid`), which the server accepts (SYN_REPLY); bytes go
as DATA frames, a side's end is a frame with FIN, RST_STREAM drops a stream. Headers are
zlib-compressed with SPDY/3's dictionary, one compression context per direction for the
whole connection. PING is echoed; SETTINGS and WINDOW_UPDATE are read and ignored (kubectl's
SPDY library does not do flow control either).

Limits: a frame over MAX_FRAME or a header block that does not decompress within
MAX_HEADERS is a ProtocolError (the caller closes the connection).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from k8semu.log import get_logger

log = get_logger(__name__)

VERSION = 3
MAX_FRAME = 1 << 20
MAX_HEADERS = 64 * 1024
FLAG_FIN = 0x01
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
)
RST_CANCEL = 5

# SPDY/3's header compression dictionary (draft 3, 2.6.10.1): these names, each after its
# 4-byte length, then common values. Its Adler-32, which every header block's zlib header
# names, is 0xE3C6A7C2 (checked by the tests).
_NAMES = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language"
    " accept-ranges age allow authorization cache-control connection content-base"
    " content-encoding content-language content-length content-location content-md5"
    " content-range content-type date etag expect expires from host if-match"
    " if-modified-since if-none-match if-range if-unmodified-since last-modified location"
    " max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after"
    " server te trailer transfer-encoding upgrade user-agent vary via warning"
    " www-authenticate method get status"
)
_WORDS = [*_NAMES.split(), "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie"]
_WORDS += ["keep-alive", "origin"]
_VALUES = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00"
    " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(len(w).to_bytes(4, "big") + w.encode() for w in _WORDS) + _VALUES.encode()


class ProtocolError(Exception):
    """The peer broke SPDY framing; the connection cannot go on."""


@dataclass(frozen=True, slots=True)
class StreamOpened:
    stream_id: int
    headers: dict[str, str]
    fin: bool


@dataclass(frozen=True, slots=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool


@dataclass(frozen=True, slots=True)
class StreamReset:
    stream_id: int


@dataclass(frozen=True, slots=True)
class GoAway:
    pass


Event = StreamOpened | Data | StreamReset | GoAway


@dataclass
class Connection:
    """One SPDY connection's state: `receive(bytes)` gives the events and any frames to
    answer at once (PING); the frame methods give bytes to send."""

    _buffer: bytearray = field(default_factory=bytearray)
    _inflate: zlib._Decompress = field(default_factory=lambda: zlib.decompressobj(zdict=DICTIONARY))
    _deflate: zlib._Compress = field(default_factory=lambda: zlib.compressobj(zdict=DICTIONARY))

    def receive(self, data: bytes) -> tuple[list[Event], bytes]:
        self._buffer += data
        events: list[Event] = []
        answers = b""
        while len(self._buffer) >= 8:
            length = int.from_bytes(self._buffer[5:8], "big")
            if length > MAX_FRAME:
                raise ProtocolError(f"a frame of {length} bytes (at most {MAX_FRAME})")
            if len(self._buffer) < 8 + length:
                break
            head, body = bytes(self._buffer[:8]), bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            flags = head[4]
            if not head[0] & 0x80:  # a data frame
                stream_id = int.from_bytes(head[:4], "big") & 0x7FFFFFFF
                events.append(Data(stream_id, body, bool(flags & FLAG_FIN)))
                continue
            kind = int.from_bytes(head[2:4], "big")
            if kind == PING:
                answers += self._control(PING, 0, body[:4])
            elif event := self._control_event(kind, flags, body):
                events.append(event)
        return events, answers

    def _control_event(self, kind: int, flags: int, body: bytes) -> Event | None:
        if kind == SYN_STREAM:
            if len(body) < 10:
                raise ProtocolError("a short SYN_STREAM")
            stream_id = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
            return StreamOpened(stream_id, self._headers(body[10:]), bool(flags & FLAG_FIN))
        if kind == RST_STREAM and len(body) >= 4:
            return StreamReset(int.from_bytes(body[:4], "big") & 0x7FFFFFFF)
        if kind == GOAWAY:
            return GoAway()
        if kind == HEADERS and len(body) >= 4:
            self._headers(body[4:])  # read to keep the compression context in step
        return None  # SETTINGS, WINDOW_UPDATE, NOOP: nothing to do

    def _headers(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block, MAX_HEADERS)
        except zlib.error as exc:
            raise ProtocolError(f"a header block that does not decompress: {exc}") from None
        if self._inflate.unconsumed_tail:
            raise ProtocolError(f"a header block over {MAX_HEADERS} bytes")
        try:
            (count,) = struct.unpack_from(">I", raw)
            pos, found = 4, {}
            for _ in range(count):
                (n,) = struct.unpack_from(">I", raw, pos)
                name = raw[pos + 4 : pos + 4 + n].decode()
                pos += 4 + n
                (n,) = struct.unpack_from(">I", raw, pos)
                found[name.lower()] = raw[pos + 4 : pos + 4 + n].decode()
                pos += 4 + n
        except (struct.error, UnicodeDecodeError) as exc:
            raise ProtocolError(f"a malformed header block: {exc}") from None
        return found

    def _control(self, kind: int, flags: int, body: bytes) -> bytes:
        head = struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(body))
        return head + body

    def reply(self, stream_id: int) -> bytes:
        """SYN_REPLY accepting a stream (no headers)."""
        block = self._deflate.compress(struct.pack(">I", 0))
        block += self._deflate.flush(zlib.Z_SYNC_FLUSH)
        return self._control(SYN_REPLY, 0, struct.pack(">I", stream_id) + block)

    def data(self, stream_id: int, payload: bytes, *, fin: bool = False) -> bytes:
        flags = FLAG_FIN if fin else 0
        return struct.pack(">II", stream_id, (flags << 24) | len(payload)) + payload

    def reset(self, stream_id: int) -> bytes:
        return self._control(RST_STREAM, 0, struct.pack(">II", stream_id, RST_CANCEL))

    def go_away(self) -> bytes:
        return self._control(GOAWAY, 0, struct.pack(">II", 0, 0))


async def drive(
    conn: Connection,
    chunks: AsyncIterator[bytes],
    send: Callable[[bytes], Awaitable[None]],
    handle: Callable[[Event], Awaitable[None]],
    what: str,
) -> None:
    """The receiving loop of a connection (the one place this module does I/O, through its
    arguments): the client's bytes into `conn`, PING answers to `send`, each event to
    `handle`, until the bytes end, a frame breaks, or `handle` raises ConnectionError (the
    client's GOAWAY)."""
    try:
        async for data in chunks:
            events, answers = conn.receive(data)
            if answers:
                await send(answers)
            for event in events:
                await handle(event)
    except ProtocolError as exc:
        log.info(f"{what} closed", error=str(exc))
    except ConnectionError:
        pass  # the client went away
