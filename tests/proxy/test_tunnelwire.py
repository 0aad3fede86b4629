"""The tunnel's wire format: requests, answers and UDP frames, both ends of each."""

from __future__ import annotations

import pytest

from k8semu.proxy import tunnelwire as wire


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        (b"CONNECT 127.244.1.5:8080\n", ("127.244.1.5", 8080, "TCP")),
        (b"CONNECT 127.244.1.5:53 udp\n", ("127.244.1.5", 53, "UDP")),
        (b"CONNECT 127.0.0.1:65535", ("127.0.0.1", 65535, "TCP")),
    ],
)
def test_requests_parse(line: bytes, parsed: tuple[str, int, str]) -> None:
    assert wire.parse_request(line) == parsed


@pytest.mark.parametrize(
    "line",
    [
        b"CONNECT 10.0.0.1:80",  # not a pod (loopback) address: no open relay
        b"CONNECT 127.0.0.1:0",
        b"CONNECT 127.0.0.1:65536",
        b"CONNECT x:1",
        b"CONNECT 127.0.0.1:80 sctp",
        b"GET / HTTP/1.1",
        b"\xff\xfe",
    ],
)
def test_bad_requests_are_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        wire.parse_request(line)


def test_what_the_dialer_writes_the_tunnel_reads() -> None:
    tcp = wire.connect_line("127.244.2.5", 80)
    assert tcp == b"CONNECT 127.244.2.5:80\n"
    assert wire.udp_request(tcp) == wire.connect_line("127.244.2.5", 80, udp=True)
    assert wire.parse_request(wire.udp_request(tcp)) == ("127.244.2.5", 80, "UDP")
    assert wire.parse_connect(tcp) == ("127.244.2.5", 80)


def test_answers() -> None:
    buf = bytearray(b"O")
    assert wire.take_answer(buf) is False  # not a whole line yet
    buf += b"K\npayload"
    assert wire.take_answer(buf) is True
    assert bytes(buf) == b"payload"  # what follows the answer stays for the splice
    with pytest.raises(wire.TunnelRefused, match=r"^ERR no endpoint$"):
        wire.take_answer(bytearray(wire.refusal("no endpoint")))
    with pytest.raises(wire.TunnelRefused, match="no answer line"):
        wire.take_answer(bytearray(b"x" * (wire.MAX_ANSWER_LINE + 1)))
    assert wire.refusal("y" * 500) == b"ERR " + b"y" * wire.MAX_REASON + b"\n"


def test_frames_carry_datagrams_whole() -> None:
    buf = bytearray(wire.frame(b"a") + wire.frame(b"") + wire.frame(b"xyz")[:3])
    assert wire.unframe(buf) == [b"a", b""]
    assert bytes(buf) == wire.frame(b"xyz")[:3]
    buf += wire.frame(b"xyz")[3:]
    assert wire.unframe(buf) == [b"xyz"] and not buf
    big = b"z" * wire.UDP_FRAME_MAX
    assert wire.unframe(bytearray(wire.frame(big))) == [big]


def test_stream_frames_split_big_chunks_and_an_empty_frame_is_eof() -> None:
    """Over TLS a TCP chunk crosses as frames of at most 65,535 bytes; no bytes, no frame
    (an empty frame is the sender's EOF)."""
    big = bytes(range(256)) * 600  # 153,600 bytes: three frames
    frames = wire.stream_frames(big)
    assert [len(f) - 2 for f in frames] == [65535, 65535, 22530]
    assert wire.stream_frames(b"") == []
    buf = bytearray(b"".join(frames) + wire.EOF_FRAME)
    payloads = wire.unframe(buf)
    assert b"".join(payloads[:-1]) == big and payloads[-1] == b"" and not buf
