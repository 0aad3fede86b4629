"""What the DNS image knows: static zones from record files and the cluster zone from informers.

A zone answers one question about a name inside it with an `Answer` (rcode and sections);
picking the zone (longest matching origin, REFUSED when none) is the server's job. This module
does no I/O except reading record files.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from k8semu.images import _dnswire as w

DEFAULT_TTL = 5


@dataclass(slots=True)
class Answer:
    rcode: int = w.NOERROR
    answers: list[w.RR] = field(default_factory=list)
    authority: list[w.RR] = field(default_factory=list)
    additional: list[w.RR] = field(default_factory=list)


class Zone(Protocol):
    origin: str

    def answer(self, q: w.Question) -> Answer: ...


def in_zone(name: str, origin: str) -> bool:
    return origin == "" or name == origin or name.endswith("." + origin)


def soa_record(origin: str, ttl: int) -> w.RR:
    base = origin or "root"
    data = (f"ns.dns.{base}", f"hostmaster.{base}", 1, 7200, 1800, 86400, ttl)
    return w.RR(origin, w.SOA, ttl, data)


class RecordError(ValueError):
    """A bad line in a record file, naming the file and line."""


def parse_record(line: str, origin: str, default_ttl: int, where: str = "<record>") -> w.RR:
    """``NAME [TTL] [IN] TYPE VALUE...``; NAME is relative to `origin` unless it ends with "."
    ("@" is the origin itself)."""
    try:
        tokens = shlex.split(line, comments=False)
    except ValueError as exc:
        raise RecordError(f"{where}: {exc}") from None
    if len(tokens) < 3:
        raise RecordError(f"{where}: want 'NAME [TTL] TYPE VALUE', got {line!r}")
    name = tokens[0]
    rest = tokens[1:]
    ttl = default_ttl
    if rest and rest[0].isdigit():
        ttl = int(rest[0])
        rest = rest[1:]
    if rest and rest[0].upper() == "IN":
        rest = rest[1:]
    if len(rest) < 2:
        raise RecordError(f"{where}: missing TYPE or VALUE in {line!r}")
    type_name, values = rest[0].upper(), rest[1:]
    rtype = w.TYPES.get(type_name)
    fqdn = _absolute(name, origin)

    def absolute(value: str) -> str:
        return _absolute(value, origin)

    try:
        data: object
        if rtype == w.A:
            data = str(ipaddress.IPv4Address(values[0]))
        elif rtype == w.AAAA:
            data = str(ipaddress.IPv6Address(values[0]))
        elif rtype in (w.CNAME, w.NS, w.PTR):
            data = absolute(values[0])
        elif rtype == w.TXT:
            data = tuple(values)
        elif rtype == w.MX:
            data = (int(values[0]), absolute(values[1]))
        elif rtype == w.SRV:
            prio, weight, port = (int(v) for v in values[:3])
            if not all(0 <= v <= 65535 for v in (prio, weight, port)):
                raise ValueError("SRV numbers must be 0..65535")
            data = (prio, weight, port, absolute(values[3]))
        elif rtype == w.SOA:
            data = (absolute(values[0]), absolute(values[1]), *(int(v) for v in values[2:7]))
            if len(data) != 7:
                raise ValueError("SOA wants MNAME RNAME SERIAL REFRESH RETRY EXPIRE MINIMUM")
        else:
            raise RecordError(f"{where}: unsupported type {type_name!r}")
    except (IndexError, ValueError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError(f"{where}: bad {type_name} value in {line!r}: {exc}") from None
    if not 0 <= ttl < 2**31:
        raise RecordError(f"{where}: bad TTL")
    return w.RR(fqdn, rtype, ttl, data)


def _absolute(name: str, origin: str) -> str:
    if name == "@":
        return origin
    if name.endswith("."):
        return w.normalize(name)
    name = w.normalize(name)
    return f"{name}.{origin}" if origin else name


def read_records(text: str, origin: str, default_ttl: int, source: str) -> list[w.RR]:
    """Lines of `parse_record`; blank lines, ``#``/``;`` comments, ``$ORIGIN``/``$TTL``."""
    out: list[w.RR] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        where = f"{source}:{number}"
        if line.upper().startswith("$ORIGIN"):
            origin = w.normalize(line.split(None, 1)[1]) if " " in line else origin
            continue
        if line.upper().startswith("$TTL"):
            try:
                default_ttl = int(line.split()[1])
            except (IndexError, ValueError):
                raise RecordError(f"{where}: bad $TTL") from None
            continue
        out.append(parse_record(line, origin, default_ttl, where))
    return out


def read_record_file(path: Path, origin: str, default_ttl: int) -> list[w.RR]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RecordError(f"{path}: {exc.strerror or exc}") from None
    return read_records(text, origin, default_ttl, str(path))


class StaticZone:
    """Records given up front. CNAMEs are followed inside the zone; ``*.`` wildcards match
    names with no records of their own; a name with no records but names below it exists
    (NODATA rather than NXDOMAIN)."""

    def __init__(self, origin: str, records: Iterable[w.RR], ttl: int = DEFAULT_TTL) -> None:
        self.origin = w.normalize(origin)
        self.ttl = ttl
        self.records: dict[str, list[w.RR]] = {}
        self.soa = soa_record(self.origin, ttl)
        for rr in records:
            if rr.rtype == w.SOA and rr.name == self.origin:
                self.soa = rr
            else:
                self.records.setdefault(rr.name, []).append(rr)
        self._nodes = set(self.records)
        for name in self.records:
            labels = name.split(".")
            for i in range(1, len(labels)):
                self._nodes.add(".".join(labels[i:]))

    def add(self, rr: w.RR) -> None:
        self.records.setdefault(rr.name, []).append(rr)
        labels = rr.name.split(".")
        for i in range(len(labels)):
            self._nodes.add(".".join(labels[i:]))

    def _lookup(self, name: str) -> list[w.RR] | None:
        found = self.records.get(name)
        if found is not None:
            return found
        if name in self._nodes:
            return None
        labels = name.split(".")
        for i in range(1, len(labels)):
            wild = self.records.get("*." + ".".join(labels[i:]))
            if wild is not None:
                return [w.RR(name, rr.rtype, rr.ttl, rr.data) for rr in wild]
            if ".".join(labels[i:]) in self._nodes:
                break
        return None

    def answer(self, q: w.Question) -> Answer:
        out = Answer()
        name = q.name
        for _ in range(8):  # CNAME chain bound
            if name == self.origin and q.qtype in (w.SOA, w.ANY):
                out.answers.append(self.soa)
            records = self._lookup(name)
            if records is None:
                if name == self.origin or name in self._nodes:
                    if not out.answers:
                        out.authority.append(self.soa)
                    return out
                if not out.answers:
                    out.rcode = w.NXDOMAIN
                    out.authority.append(self.soa)
                return out
            matched = [rr for rr in records if q.qtype in (rr.rtype, w.ANY)]
            if matched:
                out.answers.extend(matched)
                self._add_glue(matched, out)
                return out
            cname = next((rr for rr in records if rr.rtype == w.CNAME), None)
            if cname is None:
                if not out.answers:
                    out.authority.append(self.soa)
                return out
            out.answers.append(cname)
            name = str(cname.data)
            if not in_zone(name, self.origin):
                return out
        return out

    def _add_glue(self, records: list[w.RR], out: Answer) -> None:
        for rr in records:
            target = ""
            if rr.rtype == w.SRV:
                target = str(rr.data[3])  # type: ignore[index]
            elif rr.rtype in (w.NS, w.MX):
                target = str(rr.data if rr.rtype == w.NS else rr.data[1])  # type: ignore[index]
            for glue in self.records.get(target, []):
                if glue.rtype in (w.A, w.AAAA):
                    out.additional.append(glue)
