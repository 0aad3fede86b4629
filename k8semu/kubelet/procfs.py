"""Usage of processes from /proc, where there are no cgroups to ask (and for the kubelet's own
process): CPU time and resident memory of one process, or of a container's process tree.

A container of the process runtime leads its own session, so its tree is every process whose
session id is the container's pid (one scan of /proc finds all of them). CPU time is
utime + stime of each live process plus cutime + cstime (what its children that already
ended used, once reaped); memory is the resident set (field 24 of /proc/<pid>/stat, VmRSS),
which counts shared pages in every process that maps them. Read only; signals nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from k8semu.kubelet.runtime import Usage

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_NS_PER_TICK = 1_000_000_000 // CLK_TCK

# Fields of /proc/<pid>/stat after the command name, counted from field 3 (state).
_SESSION, _UTIME, _STIME, _CUTIME, _CSTIME, START_TIME, _RSS = 3, 11, 12, 13, 14, 19, 21


def stat_fields(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat's fields from field 3 (state) on; None when it is gone or a zombie."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    rest = text.rsplit(")", 1)[-1].split()
    return rest if len(rest) > _RSS and rest[0] != "Z" else None


def _usage(fields: list[str], *, children: bool) -> Usage:
    ticks = int(fields[_UTIME]) + int(fields[_STIME])
    if children:
        ticks += int(fields[_CUTIME]) + int(fields[_CSTIME])
    rss = int(fields[_RSS]) * PAGE_SIZE
    return Usage(cpu_ns=ticks * _NS_PER_TICK, memory_usage=rss, working_set=rss)


def process_usage(pid: int, *, children: bool = False) -> Usage | None:
    """One process (its threads included); `children`: plus its ended, reaped children."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    try:
        return _usage(fields, children=children)
    except ValueError:
        return None


def _processes() -> Iterator[tuple[Path, list[str], int]]:
    """(/proc entry, stat fields, session id) of every live process."""
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat_fields(entry.name)
        if fields is None:
            continue
        try:
            sid = int(fields[_SESSION])
        except ValueError:
            continue
        yield entry, fields, sid


def sessions(wanted: Iterable[int]) -> dict[int, list[list[str]]]:
    """The stat fields of every live process of each session in `wanted`, by session id."""
    want = set(wanted)
    found: dict[int, list[list[str]]] = {sid: [] for sid in want}
    if not want:
        return found
    for _, fields, sid in _processes():
        if sid in want:
            found[sid].append(fields)
    return found


def members(sids: Iterable[int], owner: int | None) -> list[int]:
    """Live processes in one of the sessions `sids`, or owned by the user `owner` (a pod's
    own user: nothing else runs as it), as pids."""
    want = set(sids)
    found: list[int] = []
    for entry, _, sid in _processes():
        with contextlib.suppress(OSError):
            if sid in want or (owner is not None and entry.stat().st_uid == owner):
                found.append(int(entry.name))
    return found


def tree_usage(members: list[list[str]]) -> Usage | None:
    """The sum over one session's processes (`sessions()`'s values); None when none live."""
    total: Usage | None = None
    for fields in members:
        try:
            one = _usage(fields, children=True)
        except ValueError:
            continue
        total = one if total is None else total + one
    return total
