"""The tunnel's wire format: every byte the two ends of a tunnel connection exchange.

    client -> tunnel   CONNECT <ip>:<port>\\n         splice TCP to ip:port on the tunnel's host
                       CONNECT <ip>:<port> udp\\n     relay UDP datagrams to ip:port
    tunnel -> client   OK\\n                          then the payload
                       ERR <reason>\\n                and the tunnel closes

The client waits for the answer before sending payload. For TCP over plain TCP the payload
is the connection's bytes, and a side's EOF is the tunnel connection's own (TCP half-close).
TLS has no half-close (a close_notify ends the whole connection in asyncio and uvloop), so
over TLS the TCP payload is frames both ways, as UDP's are, and an empty frame is the EOF of
that direction: a client's `shutdown(SHUT_WR)` reaches the pod and the answer still comes
back. For UDP the payload is frames both ways: each datagram's length (2 bytes, big-endian),
then the datagram. Targets must be loopback (127.0.0.0/8, the pod IPs), so a tunnel is never
an open relay.

Both ends use these functions: the serving side (k8semu.proxy.tunnel) parses requests and
writes answers, the dialing side (k8semu.proxy.datapath) writes requests and reads answers.
Pure: bytes in, bytes out; no sockets.
"""

from __future__ import annotations

import ipaddress

MAX_REQUEST_LINE = 128  # bytes of a CONNECT line, its newline excluded
MAX_ANSWER_LINE = 256  # bytes the client reads looking for the answer's newline
MAX_REASON = 100  # characters of an ERR reason
UDP_FRAME_MAX = 65535  # a datagram's length travels as 2 bytes, big-endian

OK = b"OK\n"
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


class TunnelRefused(ValueError):
    """The tunnel answered something other than OK (its reason is the message)."""


# -- the request line ----------------------------------------------------------------------------


def connect_line(ip: str, port: int, *, udp: bool = False) -> bytes:
    """The request for a TCP splice (or, with `udp`, a UDP relay) to `ip:port`."""
    return f"CONNECT {ip}:{port}{' udp' if udp else ''}\n".encode()


def udp_request(tcp_request: bytes) -> bytes:
    """A TCP CONNECT line turned into its UDP one: ``CONNECT ip:port udp\\n``."""
    return tcp_request.rstrip(b"\n") + b" udp\n"


def parse_request(line: bytes) -> tuple[str, int, str]:
    """`CONNECT 127.244.1.5:8080` -> ("127.244.1.5", 8080, "TCP"); with a trailing ` udp`,
    "UDP". ValueError (UnicodeDecodeError included) when malformed or not a loopback
    address."""
    text = line.decode("ascii").strip()
    verb, _, target = text.partition(" ")
    if verb != "CONNECT":
        raise ValueError("expected CONNECT ip:port")
    target, _, kind = target.partition(" ")
    if kind not in ("", "udp"):
        raise ValueError(f"unknown transport {kind[:10]!r}")
    host, _, port_text = target.rpartition(":")
    ip = ipaddress.IPv4Address(host)
    port = int(port_text)
    if ip not in _LOOPBACK:
        raise ValueError(f"{ip}: only loopback (pod) addresses are served")
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return str(ip), port, "UDP" if kind else "TCP"


def parse_connect(line: bytes) -> tuple[str, int]:
    """`CONNECT 127.244.1.5:8080` -> ("127.244.1.5", 8080) (see `parse_request`)."""
    ip, port, _ = parse_request(line)
    return ip, port


# -- the answer line -----------------------------------------------------------------------------


def refusal(reason: str) -> bytes:
    """The ERR answer, its reason cut to MAX_REASON characters."""
    return f"ERR {reason[:MAX_REASON]}\n".encode()


def take_answer(buf: bytearray) -> bool:
    """Read the answer at the front of `buf`: True when it is OK (the line is removed, any
    payload after it stays), False while no whole line has arrived. TunnelRefused for ERR,
    anything else, or no newline within MAX_ANSWER_LINE bytes."""
    line, sep, rest = bytes(buf).partition(b"\n")
    if not sep:
        if len(buf) > MAX_ANSWER_LINE:
            raise TunnelRefused("no answer line")
        return False
    if line.strip() != OK.strip():
        raise TunnelRefused(line[:MAX_REASON].decode(errors="replace"))
    buf[:] = rest
    return True


# -- UDP frames ----------------------------------------------------------------------------------


def frame(data: bytes) -> bytes:
    """One datagram as it crosses a tunnel: its length (2 bytes, big-endian), then itself."""
    return len(data).to_bytes(2, "big") + data


# -- TCP frames over TLS -------------------------------------------------------------------------

EOF_FRAME = b"\x00\x00"  # an empty frame: the sender will send no more (its SHUT_WR)


def stream_frames(data: bytes) -> list[bytes]:
    """A TCP payload chunk as frames (none for no bytes: an empty frame would be EOF)."""
    return [frame(data[i : i + UDP_FRAME_MAX]) for i in range(0, len(data), UDP_FRAME_MAX)]


def unframe(buf: bytearray) -> list[bytes]:
    """The whole datagrams at the front of `buf` (removed from it); a partial one stays."""
    out = []
    while len(buf) >= 2:
        n = int.from_bytes(buf[:2], "big")
        if len(buf) < 2 + n:
            break
        out.append(bytes(buf[2 : 2 + n]))
        del buf[: 2 + n]
    return out
