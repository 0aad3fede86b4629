"""DNS messages in RFC 1035 wire format: parse queries, build answers, and a tiny stub client.

Only what an authoritative server and `nslookup` need: the header, questions, resource records
of types A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV (rdata built from typed values), the EDNS
OPT pseudo-record (RFC 6891: its payload size), name compression when writing (RFC 1035,
section 4.1.4) and pointer-following with loop protection when reading. Every parse error is a
`DNSFormatError`; nothing here does I/O except the stub resolver functions at the bottom.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

# Types (RFC 1035 3.2.2, RFC 3596, RFC 2782, RFC 6891).
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT, ANY = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 255
TYPE_NAMES = {
    A: "A", NS: "NS", CNAME: "CNAME", SOA: "SOA", PTR: "PTR", MX: "MX", TXT: "TXT",
    AAAA: "AAAA", SRV: "SRV", OPT: "OPT", ANY: "ANY",
}  # fmt: skip
TYPES = {v: k for k, v in TYPE_NAMES.items()}
CLASS_IN = 1

# Response codes (RFC 1035 4.1.1).
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}

# Header flag bits.
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080

MAX_UDP_PLAIN = 512
MAX_UDP_EDNS = 1232  # the DNS flag day 2020 recommendation


class DNSFormatError(ValueError):
    """The bytes are not a well-formed DNS message."""


def normalize(name: str) -> str:
    """Lower case, no trailing dot; the root is ""."""
    return name.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class Question:
    name: str  # normalized
    qtype: int
    qclass: int = CLASS_IN


@dataclass(frozen=True, slots=True)
class RR:
    """A resource record; `data` is typed by `rtype`:
    A/AAAA: address text; NS/CNAME/PTR: a name; TXT: tuple of strings; MX: (pref, name);
    SRV: (priority, weight, port, target); SOA: (mname, rname, serial, refresh, retry, expire,
    minimum)."""

    name: str
    rtype: int
    ttl: int
    data: object


@dataclass(slots=True)
class Message:
    id: int = 0
    flags: int = 0
    questions: list[Question] = field(default_factory=list)
    answers: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    edns_size: int | None = None  # the OPT record's UDP payload size, when present

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


# ---- reading ----


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    total = 0
    while True:
        if offset >= len(data):
            raise DNSFormatError("name runs past the end")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise DNSFormatError("truncated pointer")
            if end is None:
                end = offset + 2
            jumps += 1
            if jumps > 64:
                raise DNSFormatError("compression loop")
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise DNSFormatError("bad label type")
        offset += 1
        if length == 0:
            break
        if offset + length > len(data):
            raise DNSFormatError("label runs past the end")
        total += length + 1
        if total > 255:
            raise DNSFormatError("name too long")
        label = data[offset : offset + length]
        if b"." in label:
            raise DNSFormatError("a dot inside a label")
        # bytes.lower() folds ASCII only (RFC 4343); latin-1 keeps every other byte as it is.
        labels.append(label.lower().decode("latin-1"))
        offset += length
    return ".".join(labels), (end if end is not None else offset)


def parse(data: bytes) -> Message:
    """Parse a whole message; answer sections are parsed for A/AAAA/CNAME/SRV/TXT/PTR/NS/MX/SOA
    (others are skipped), which is what the stub client needs."""
    if len(data) < 12:
        raise DNSFormatError("shorter than a header")
    ident, flags, qd, an, ns, ar = struct.unpack_from("!6H", data, 0)
    msg = Message(id=ident, flags=flags)
    offset = 12
    for _ in range(qd):
        name, offset = _read_name(data, offset)
        if offset + 4 > len(data):
            raise DNSFormatError("truncated question")
        qtype, qclass = struct.unpack_from("!2H", data, offset)
        offset += 4
        msg.questions.append(Question(name, qtype, qclass))
    for count, section in ((an, msg.answers), (ns, msg.authority), (ar, msg.additional)):
        for _ in range(count):
            name, offset = _read_name(data, offset)
            if offset + 10 > len(data):
                raise DNSFormatError("truncated record")
            rtype, rclass, ttl, rdlen = struct.unpack_from("!2HIH", data, offset)
            offset += 10
            if offset + rdlen > len(data):
                raise DNSFormatError("truncated rdata")
            if rtype == OPT:
                msg.edns_size = max(MAX_UDP_PLAIN, rclass)
            else:
                value = _read_rdata(data, offset, rdlen, rtype)
                if value is not None:
                    section.append(RR(name, rtype, ttl, value))
            offset += rdlen
    return msg


def _read_rdata(data: bytes, offset: int, length: int, rtype: int) -> object | None:
    rdata = data[offset : offset + length]
    if rtype == A and length == 4:
        return str(ipaddress.IPv4Address(rdata))
    if rtype == AAAA and length == 16:
        return str(ipaddress.IPv6Address(rdata))
    if rtype in (CNAME, NS, PTR):
        return _read_name(data, offset)[0]
    if rtype == MX and length >= 3:
        return (struct.unpack_from("!H", data, offset)[0], _read_name(data, offset + 2)[0])
    if rtype == SRV and length >= 7:
        prio, weight, port = struct.unpack_from("!3H", data, offset)
        return (prio, weight, port, _read_name(data, offset + 6)[0])
    if rtype == TXT:
        parts: list[str] = []
        i = 0
        while i < length:
            n = rdata[i]
            parts.append(rdata[i + 1 : i + 1 + n].decode("utf-8", "replace"))
            i += 1 + n
        return tuple(parts)
    if rtype == SOA:
        mname, off = _read_name(data, offset)
        rname, off = _read_name(data, off)
        if off + 20 > len(data):
            raise DNSFormatError("truncated SOA")
        return (mname, rname, *struct.unpack_from("!5I", data, off))
    return None


# ---- writing ----


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.names: dict[str, int] = {}

    def name(self, name: str) -> None:
        labels = [lab for lab in normalize(name).split(".") if lab] if name else []
        for i in range(len(labels)):
            suffix = ".".join(labels[i:])
            pointer = self.names.get(suffix)
            if pointer is not None:
                self.buf += struct.pack("!H", 0xC000 | pointer)
                return
            if len(self.buf) < 0x3FFF:
                self.names[suffix] = len(self.buf)
            try:
                raw = labels[i].encode("latin-1")
            except UnicodeEncodeError:
                raw = labels[i].encode("idna")
            if not 0 < len(raw) < 64:
                raise ValueError(f"bad label in {name!r}")
            self.buf.append(len(raw))
            self.buf += raw
        self.buf.append(0)

    def rr(self, rr: RR) -> None:
        self.name(rr.name)
        self.buf += struct.pack("!2HI", rr.rtype, CLASS_IN, rr.ttl)
        at = len(self.buf)
        self.buf += b"\0\0"
        d = rr.data
        if rr.rtype == A:
            self.buf += ipaddress.IPv4Address(str(d)).packed
        elif rr.rtype == AAAA:
            self.buf += ipaddress.IPv6Address(str(d)).packed
        elif rr.rtype in (CNAME, NS, PTR):
            self.name(str(d))
        elif rr.rtype == MX:
            pref, host = cast("tuple[int, str]", d)
            self.buf += struct.pack("!H", pref)
            self.name(host)
        elif rr.rtype == SRV:
            prio, weight, port, target = cast("tuple[int, int, int, str]", d)
            self.buf += struct.pack("!3H", prio, weight, port)
            self.name(target)
        elif rr.rtype == TXT:
            texts = (d,) if isinstance(d, str) else cast("tuple[str, ...]", d)
            for text in texts:
                raw = str(text).encode()
                for i in range(0, max(1, len(raw)), 255):
                    chunk = raw[i : i + 255]
                    self.buf.append(len(chunk))
                    self.buf += chunk
        elif rr.rtype == SOA:
            mname, rname, *nums = cast("tuple[Any, ...]", d)
            self.name(mname)
            self.name(rname)
            self.buf += struct.pack("!5I", *nums)
        else:
            raise ValueError(f"cannot write type {rr.rtype}")
        struct.pack_into("!H", self.buf, at, len(self.buf) - at - 2)


def build(msg: Message, max_size: int | None = None) -> bytes:
    """The wire form of `msg`. Beyond `max_size` (UDP), records are dropped and TC is set."""
    opt = msg.edns_size is not None

    def encode(answers: Sequence[RR], authority: Sequence[RR], additional: Sequence[RR],
               flags: int) -> bytes:  # fmt: skip
        w = _Writer()
        w.buf += struct.pack(
            "!6H", msg.id, flags, len(msg.questions), len(answers), len(authority),
            len(additional) + (1 if opt else 0),
        )  # fmt: skip
        for q in msg.questions:
            w.name(q.name)
            w.buf += struct.pack("!2H", q.qtype, q.qclass)
        for rr in (*answers, *authority, *additional):
            w.rr(rr)
        if opt:
            w.buf += b"\0" + struct.pack("!2HIH", OPT, MAX_UDP_EDNS, 0, 0)
        return bytes(w.buf)

    wire = encode(msg.answers, msg.authority, msg.additional, msg.flags)
    if max_size is not None and len(wire) > max_size:
        wire = encode(msg.answers, msg.authority, [], msg.flags)
        if len(wire) > max_size:
            wire = encode([], [], [], msg.flags | TC)
    return wire


def build_query(name: str, qtype: int, ident: int | None = None) -> bytes:
    ident = random.getrandbits(16) if ident is None else ident
    msg = Message(id=ident, flags=RD, questions=[Question(normalize(name), qtype)])
    return build(msg)


def rr_text(rr: RR) -> str:
    """Zone-file-like text of a record (for logs and nslookup)."""
    d = rr.data
    if isinstance(d, tuple):
        quote = '"' if rr.rtype == TXT else ""
        value = " ".join(f"{quote}{x}{quote}" for x in d)
    else:
        value = str(d)
    return f"{rr.name}. {rr.ttl} IN {TYPE_NAMES.get(rr.rtype, str(rr.rtype))} {value}"


# ---- stub resolver (clients in images: loadgen, nslookup, wget) ----


def parse_server(text: str, default_port: int = 53) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


def query_sync(server: tuple[str, int], name: str, qtype: int, timeout: float = 2.0) -> Message:
    """One query over UDP (TCP when truncated); raises OSError/TimeoutError/DNSFormatError."""
    ident = random.getrandbits(16)
    wire = build_query(name, qtype, ident)
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(wire, server)
        while True:
            data, _ = sock.recvfrom(65535)
            try:
                reply = parse(data)
            except DNSFormatError:
                continue
            if reply.id == ident:
                break
    if reply.flags & TC:
        with socket.create_connection(server, timeout=timeout) as conn:
            conn.sendall(struct.pack("!H", len(wire)) + wire)
            reply = parse(_recv_tcp_message(conn))
    return reply


def _recv_tcp_message(conn: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = conn.recv(n - len(out))
            if not chunk:
                raise DNSFormatError("connection closed mid-message")
            out += chunk
        return out

    (length,) = struct.unpack("!H", exactly(2))
    return exactly(length)


async def query(server: tuple[str, int], name: str, qtype: int, timeout: float = 2.0) -> Message:
    """`query_sync` without blocking the event loop."""
    import asyncio  # here, so the short-lived applets do not pay for importing it

    return await asyncio.to_thread(query_sync, server, name, qtype, timeout)


def addresses(reply: Message) -> list[str]:
    return [str(rr.data) for rr in reply.answers if rr.rtype in (A, AAAA)]
