"""Half-close across a TLS tunnel: the TCP payload as frames, an empty frame for EOF.

asyncio's and uvloop's TLS transports cannot half-close: `can_write_eof()` is False, and a
received close_notify ends the whole connection. A client that shuts down its sending side
(an HTTP/1.0-style request, `nc -N`) would then either never get its EOF to the pod or lose
the answer. So once a TLS tunnel has answered OK, both ends put `framing()` between the TLS
transport and the splice (k8semu.proxy.datapath): `FramedTransport` writes each chunk as
frames and `write_eof()` as the empty frame (tunnelwire's `EOF_FRAME`), and `Unframer`
hands the splice the payload of each frame and turns the empty one into `eof_received()`.
The splice itself is unchanged, so plain and TLS tunnels keep one data path; over plain TCP
nothing is framed (TCP's own half-close does the job). Decided over ending the TLS session
with close_notify (`SSLObject.unwrap()`) and going on in plain TCP: the rest of the
connection would be unencrypted and unauthenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from k8semu.proxy.tunnelwire import EOF_FRAME, UDP_FRAME_MAX, stream_frames, unframe


def framing(transport: Any, protocol: asyncio.Protocol) -> Any:
    """The transport a splice writes to once a tunnel answered OK: `transport` itself when it
    is plain TCP, else a `FramedTransport` over it, with an `Unframer` of `protocol` (what
    reads the tunnel) installed as its protocol."""
    if transport.get_extra_info("ssl_object") is None:
        return transport
    transport.set_protocol(Unframer(protocol, transport))
    return FramedTransport(transport)


class FramedTransport:
    """Writes as frames to a TLS transport; `write_eof()` sends the empty frame. Everything
    else (flow control, close, abort, extra info) is the TLS transport's."""

    __slots__ = ("_eof", "inner")

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._eof = False

    def write(self, data: bytes) -> None:
        if self._eof or not data:
            return
        if len(data) <= UDP_FRAME_MAX:  # the common case: one header, no list
            self.inner.write(len(data).to_bytes(2, "big") + data)
        else:
            self.inner.writelines(stream_frames(data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self._eof:
            self._eof = True
            self.inner.write(EOF_FRAME)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Unframer(asyncio.Protocol):
    """Reads frames from a TLS transport for `protocol`: each frame's payload to its
    `data_received`, the empty frame to its `eof_received` (once). A frame after the EOF
    frame is a broken peer: the connection is aborted. The TLS connection ending without an
    EOF frame is an EOF too (then a close)."""

    __slots__ = ("buf", "eof", "protocol", "transport")

    def __init__(self, protocol: asyncio.Protocol, transport: Any) -> None:
        self.protocol = protocol
        self.transport = transport
        self.buf = bytearray()
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for payload in unframe(self.buf):
            if self.eof:
                with contextlib.suppress(Exception):
                    self.transport.abort()
                return
            if payload:
                self.protocol.data_received(payload)
            else:
                self.eof = True
                self.protocol.eof_received()

    def eof_received(self) -> bool | None:
        if not self.eof:
            self.eof = True
            self.protocol.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.protocol.resume_writing()
