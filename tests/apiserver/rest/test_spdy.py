"""SPDY/3 framing (`rest/spdy.py`) without a network: frames as kubectl's SPDY library writes
them, and what the server answers."""

from __future__ import annotations

import struct
import zlib

import pytest

from k8semu.apiserver.rest import spdy


def _syn_stream(compress: zlib._Compress, stream_id: int, headers: dict[str, str]) -> bytes:
    block = struct.pack(">I", len(headers))
    for name, value in headers.items():
        block += struct.pack(">I", len(name)) + name.encode()
        block += struct.pack(">I", len(value)) + value.encode()
    packed = compress.compress(block) + compress.flush(zlib.Z_SYNC_FLUSH)
    body = struct.pack(">IIH", stream_id, 0, 0) + packed
    return struct.pack(">HHI", 0x8003, spdy.SYN_STREAM, len(body)) + body


def test_dictionary_is_spdy3s() -> None:
    # The Adler-32 that every SPDY/3 header block's zlib header names (FDICT).
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2
    assert len(spdy.DICTIONARY) == 1423


def test_streams_data_ping_and_reset_split_anywhere() -> None:
    client = zlib.compressobj(zdict=spdy.DICTIONARY)
    wire = _syn_stream(client, 1, {"streamType": "error", "port": "8080", "requestID": "0"})
    wire += _syn_stream(client, 3, {"streamType": "data", "port": "8080", "requestID": "0"})
    wire += struct.pack(">II", 3, 5) + b"hello"
    wire += struct.pack(">II", 3, 1 << 24)  # FIN, no data
    wire += struct.pack(">HHII", 0x8003, spdy.PING, 4, 7)
    wire += struct.pack(">HHIII", 0x8003, spdy.RST_STREAM, 8, 1, 5)
    conn = spdy.Connection()
    events: list[spdy.Event] = []
    answers = b""
    for i in range(0, len(wire), 3):  # a WebSocket may cut frames anywhere
        got, answer = conn.receive(wire[i : i + 3])
        events += got
        answers += answer
    assert events == [
        spdy.StreamOpened(1, {"streamtype": "error", "port": "8080", "requestid": "0"}, False),
        spdy.StreamOpened(3, {"streamtype": "data", "port": "8080", "requestid": "0"}, False),
        spdy.Data(3, b"hello", False),
        spdy.Data(3, b"", True),
        spdy.StreamReset(1),
    ]
    assert answers == struct.pack(">HHII", 0x8003, spdy.PING, 4, 7)  # the ping echoed


def test_reply_decompresses_with_the_dictionary() -> None:
    frame = spdy.Connection().reply(5)
    assert frame[:4] == struct.pack(">HH", 0x8003, spdy.SYN_REPLY)
    assert struct.unpack(">I", frame[8:12]) == (5,)
    block = zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(frame[12:])
    assert block == struct.pack(">I", 0)


def test_bad_frames_are_protocol_errors() -> None:
    with pytest.raises(spdy.ProtocolError, match="frame of"):
        spdy.Connection().receive(struct.pack(">II", 3, 0xFFFFFF))
    garbage = struct.pack(">IIH", 1, 0, 0) + b"not zlib at all"
    frame = struct.pack(">HHI", 0x8003, spdy.SYN_STREAM, len(garbage)) + garbage
    with pytest.raises(spdy.ProtocolError, match="does not decompress"):
        spdy.Connection().receive(frame)
