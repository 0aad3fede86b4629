"""The ``dig`` applet (what the dnsutils image's users type): one query to the cluster DNS
(``K8SEMU_DNS_SERVER``), or to ``@SERVER``, printed in dig's layout.

``dig [@SERVER[:PORT]] NAME [TYPE] [IN] [+short] [+search]``: TYPE one of A, AAAA, CNAME, NS,
MX, TXT, SRV, SOA, PTR, ANY (default A); ``+search`` tries the pod's search domains
(``K8SEMU_DNS_SEARCH``) for a name with fewer than 5 dots, as dig does with ``+search``. Exit 0
when an answer came (NXDOMAIN included, as dig), 9 when no server answered, 1 for bad usage.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from k8semu.images import _dnswire as w

NO_REPLY = 9


@dataclass
class _DigArgs:
    name: str = ""
    qtype: int = w.A
    server: tuple[str, int] | None = None
    short: bool = False
    search: bool = False


def _args(argv: Sequence[str]) -> _DigArgs:
    out = _DigArgs()
    for arg in argv:
        if arg.startswith("@"):
            out.server = w.parse_server(arg[1:])
        elif arg.startswith("+"):
            out.short = out.short or arg == "+short"
            out.search = out.search or arg == "+search"
        elif arg.upper() in w.TYPES and arg.upper() != "OPT":
            out.qtype = w.TYPES[arg.upper()]
        elif arg.upper() == "IN":
            continue
        elif arg.startswith("-") or out.name:
            raise ValueError(f"unsupported argument {arg!r}")
        else:
            out.name = arg
    if not out.name:
        raise ValueError("usage: dig [@SERVER] NAME [TYPE] [+short] [+search]")
    return out


def _print(reply: w.Message, name: str, opts: _DigArgs, server: tuple[str, int], ms: int) -> None:
    if opts.short:
        for rr in reply.answers:
            print(w.rr_text(rr).split(" ", 4)[4])
        return
    status = w.RCODE_NAMES.get(reply.rcode, str(reply.rcode))
    qtype = w.TYPE_NAMES.get(opts.qtype, str(opts.qtype))
    print(f"; <<>> DiG (k8semu) <<>> {name} {qtype}")
    print(f";; ->>HEADER<<- opcode: QUERY, status: {status}, id: {reply.id}")
    print(f";; QUESTION: 1, ANSWER: {len(reply.answers)}, AUTHORITY: {len(reply.authority)},"
          f" ADDITIONAL: {len(reply.additional)}\n")  # fmt: skip
    print(f";; QUESTION SECTION:\n;{w.normalize(name)}.\t\tIN\t{qtype}\n")
    for title, records in (("ANSWER", reply.answers), ("AUTHORITY", reply.authority),
                           ("ADDITIONAL", reply.additional)):  # fmt: skip
        if records:
            print(f";; {title} SECTION:")
            for rr in records:
                print("\t".join(w.rr_text(rr).split(" ", 4)))
            print()
    print(f";; Query time: {ms} msec\n;; SERVER: {server[0]}#{server[1]}({server[0]})")


def dig(argv: Sequence[str], env: Mapping[str, str]) -> int:
    try:
        opts = _args(argv)
    except ValueError as exc:
        print(f"dig: {exc}", file=sys.stderr)
        return 1
    configured = env.get("K8SEMU_DNS_SERVER", "").strip()
    server = opts.server or (w.parse_server(configured) if configured else ("127.0.0.1", 53))
    names = [opts.name]
    if opts.search and not opts.name.endswith(".") and opts.name.count(".") < 5:
        search = env.get("K8SEMU_DNS_SEARCH", "").split()
        names = [f"{opts.name}.{domain}" for domain in search] + names
    reply: w.Message | None = None
    for name in names:
        began = time.monotonic()
        try:
            reply = w.query_sync(server, name, opts.qtype, 5.0)
        except (OSError, w.DNSFormatError) as exc:
            print(f";; communications error to {server[0]}#{server[1]}: {exc}")
            return NO_REPLY
        if reply.rcode != w.NXDOMAIN or name == names[-1]:
            _print(reply, name, opts, server, int((time.monotonic() - began) * 1000))
            break
    return 0
