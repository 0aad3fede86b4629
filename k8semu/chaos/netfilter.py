"""Network partitions between the processes of one cluster on one host, made by the kernel.

Every component listens on 127.0.0.1 and every loopback connection leaves from 127.0.0.1, so
addresses cannot say who talks to whom; the cgroup of a socket can. Each component runs in a
cgroup v2 of its own (``<mount>/k8semu/<run>/<component>``, joined before its first socket:
``k8semu.cluster.processes.in_own_cgroup``), and one nftables table per run does the rest:

- ``output`` (the sender's socket is known): a packet from component *i*'s cgroup gets the
  mark ``tag << 16 | i`` (``tag`` is this run's; the mark survives the trip over ``lo``);
- ``input`` (the kernel finds the receiving socket): a cut from senders S to receivers R is one
  rule per receiver, ``meta mark {marks of S} socket cgroupv2 level L "<receiver>" drop``.

So a cut drops exactly the packets that S's sockets send to R's sockets, on any port and in
both TCP roles (client or server), and nothing else: the chaos workload's own clients, other
clusters and the rest of the machine are untouched. A one-way cut (S to R only) is a real
one-way packet loss; over TCP it stalls both directions of a connection (acknowledgements no
longer come back), which is what a one-way partition does to TCP on a real network too.

Cleanup: a cut is healed by deleting its rules (by handle); ``close()`` deletes the table and
the cgroups. The table and cgroup names carry the owner's pid and start time
(``k8semu_chaos_<pid>_<start>``), so ``leftovers()``/``cleanup()`` find what a crashed run left
and never touch a live run's. Needs root, the ``nft`` command (Debian's nftables) and a
writable cgroup v2 hierarchy under /sys/fs/cgroup; ``unsupported_reason()`` says what is
missing. This module must not signal processes; it only adds and removes rules and cgroups.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from k8semu.cluster.state import process_start_time
from k8semu.log import get_logger

__all__ = [
    "Cut",
    "NetfilterError",
    "Partitions",
    "cgroup2_mount",
    "cleanup",
    "leftovers",
    "run_name",
    "unsupported_reason",
]

log = get_logger(__name__)

NFT_TIMEOUT_S = 10.0
# nft resolves a `socket cgroupv2` path below this directory (on a hybrid system the v2
# hierarchy is mounted at <it>/unified and the path then starts with "unified/").
NFT_CGROUP_BASE = Path("/sys/fs/cgroup")
CGROUP_TOP = "k8semu"
PREFIX = "chaos_"
TABLE_PREFIX = "k8semu_"
_RUN_RE = re.compile(r"^chaos_(\d+)_(\d+)(_[a-z]+)?$")
_HANDLE_RE = re.compile(r"# handle (\d+)")


class NetfilterError(Exception):
    """nft refused a command, or a cgroup could not be made: the message says which."""


@dataclass(frozen=True, slots=True)
class Cut:
    """Rules that drop what `senders` send to `receivers`; healed by deleting `handles`."""

    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    handles: tuple[int, ...]


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (at or below /sys/fs/cgroup), if it is."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            path = Path(fields[1])
            if path == NFT_CGROUP_BASE or NFT_CGROUP_BASE in path.parents:
                return path
    return None


def _nft_binary() -> str | None:
    return shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if os.access(p, os.X_OK)), None
    )


def _nft(args: Sequence[str], script: str | None = None) -> str:
    nft = _nft_binary()
    if nft is None:
        raise NetfilterError("nft not found (install Debian's nftables package)")
    argv = [nft, *args] + (["-f", "-"] if script is not None else [])
    try:
        done = subprocess.run(
            argv, input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetfilterError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        what = (script or " ".join(args)).strip().splitlines()[0]
        raise NetfilterError(f"nft refused {what!r}: {done.stderr.strip()}")
    return done.stdout


def run_name(pid: int | None = None) -> str:
    """This process's run name, ``chaos_<pid>_<start time>``: unique while it lives, and
    recognisable as left behind once it is gone."""
    pid = os.getpid() if pid is None else pid
    return f"{PREFIX}{pid}_{process_start_time(pid) or 0}"


def _owner_alive(run: str) -> bool:
    m = _RUN_RE.match(run)
    if m is None:
        return True  # not ours to judge: never removed
    pid, start = int(m.group(1)), int(m.group(2))
    return process_start_time(pid) == start


def unsupported_reason() -> str | None:
    """Why partitions cannot be made on this machine, or None when they can (checked for
    real: a throw-away cgroup and table with a `socket cgroupv2` rule are made and removed)."""
    if os.geteuid() != 0:
        return "needs root (nftables rules and cgroups)"
    if _nft_binary() is None:
        return "needs the nft command (Debian's nftables package: scripts/install-system-deps.sh)"
    mount = cgroup2_mount()
    if mount is None:
        return "needs a cgroup v2 hierarchy mounted at or below /sys/fs/cgroup"
    probe = Partitions([], name=run_name() + "_probe", mount=mount)
    try:
        probe.open()
        probe._probe_rule()
    except (NetfilterError, OSError) as exc:
        return f"the kernel refused a partition rule: {exc}"
    finally:
        with contextlib.suppress(NetfilterError):
            probe.close()
    return None


class Partitions:
    """The cuts between the components of one run. ``open()`` makes the run's cgroup parent
    and table, ``add_components()`` a cgroup and a marking rule per component (nothing is
    dropped yet); ``cut()``/``partition()`` add drop rules, ``heal()`` removes them;
    ``close()`` removes the table and the cgroups, and is safe to call twice. Components are
    started in ``cgroup_parent/<name>`` (``K8SEMU_CGROUP_PARENT``); their marking rules may
    be added before or after they start."""

    def __init__(
        self, components: Sequence[str], *, name: str | None = None, mount: Path | None = None
    ) -> None:
        mount = mount or cgroup2_mount()
        if mount is None:
            raise NetfilterError("no cgroup v2 hierarchy mounted at or below /sys/fs/cgroup")
        self.name = name or run_name()
        self.table = TABLE_PREFIX + self.name
        self.mount = mount
        self.cgroup_parent = mount / CGROUP_TOP / self.name
        # A random tag per run in the upper 16 bits, so marks of two runs at once differ (and
        # were they equal, the drop rules also name the receiver's cgroup, which is per run).
        self._tag = random.Random().randrange(1, 1 << 15)
        self._index: dict[str, int] = {}
        self._pending = list(dict.fromkeys(components))
        self._cuts: list[Cut] = []
        self._opened = False

    @property
    def components(self) -> list[str]:
        return list(self._index)

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def mark(self, component: str) -> int:
        return (self._tag << 16) | self._index[component]

    def _path(self, component: str) -> str:
        """The component's cgroup as nft wants it: relative to /sys/fs/cgroup."""
        return str((self.cgroup_parent / component).relative_to(NFT_CGROUP_BASE))

    @property
    def _level(self) -> int:
        return len((self.cgroup_parent / "x").relative_to(self.mount).parts)

    def open(self) -> None:
        self._opened = True
        try:
            self.cgroup_parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NetfilterError(f"cannot make cgroup {self.cgroup_parent}: {exc}") from exc
        _nft(
            [],
            f"add table inet {self.table}\n"
            f"add chain inet {self.table} output {{ type filter hook output priority 0; }}\n"
            f"add chain inet {self.table} input {{ type filter hook input priority 0; }}\n",
        )
        log.debug("partitions ready", table=self.table, cgroups=str(self.cgroup_parent))
        pending, self._pending = self._pending, []
        self.add_components(pending)

    def add_components(self, names: Iterable[str]) -> None:
        """A cgroup (if the component has not made it yet) and a marking rule for each new
        name; names already known are skipped."""
        new = [n for n in dict.fromkeys(names) if n not in self._index]
        if not new:
            return
        if not self._opened:
            self._pending += new
            return
        try:
            for c in new:
                (self.cgroup_parent / c).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NetfilterError(f"cannot make cgroup {self.cgroup_parent}: {exc}") from exc
        for c in new:
            self._index[c] = len(self._index) + 1
        _nft(
            [],
            "".join(
                f"add rule inet {self.table} output socket cgroupv2 level {self._level}"
                f' "{self._path(c)}" meta mark set {self.mark(c):#x}\n'
                for c in new
            ),
        )

    def _probe_rule(self) -> None:
        (self.cgroup_parent / "probe").mkdir(parents=True, exist_ok=True)
        _nft(
            [],
            f"add rule inet {self.table} input meta mark 1 socket cgroupv2 level {self._level}"
            f' "{self._path("probe")}" drop\n',
        )

    def cut(self, senders: Iterable[str], receivers: Iterable[str]) -> Cut:
        """Drop every packet a sender's socket sends to a receiver's socket, until healed."""
        s, r = tuple(dict.fromkeys(senders)), tuple(dict.fromkeys(receivers))
        unknown = sorted(set(s + r) - set(self._index))
        if unknown:
            raise NetfilterError(f"not components of this run: {', '.join(unknown)}")
        if set(s) & set(r):
            raise NetfilterError(
                f"a component cannot be cut from itself: {sorted(set(s) & set(r))}"
            )
        if not s or not r:
            return Cut(s, r, ())
        marks = ", ".join(f"{self.mark(c):#x}" for c in s)
        script = "".join(
            f"add rule inet {self.table} input meta mark {{ {marks} }} socket cgroupv2"
            f' level {self._level} "{self._path(c)}" drop\n'
            for c in r
        )
        out = _nft(["--echo", "--handle"], script)
        handles = tuple(int(h) for h in _HANDLE_RE.findall(out))
        if len(handles) != len(r):
            cut = Cut(s, r, handles)
            self.heal(cut)
            raise NetfilterError(f"nft did not report the handles of the new rules: {out!r}")
        cut = Cut(s, r, handles)
        self._cuts.append(cut)
        log.info("cut", senders=list(s), receivers=list(r))
        return cut

    def partition(self, side: Iterable[str], others: Iterable[str], direction: str) -> list[Cut]:
        """`side` from `others`: "both" ways, "out" (what `side` sends is lost) or "in" (what
        it receives from `others` is lost)."""
        a, b = list(side), list(others)
        if direction == "both":
            return [self.cut(a, b), self.cut(b, a)]
        if direction == "out":
            return [self.cut(a, b)]
        if direction == "in":
            return [self.cut(b, a)]
        raise ValueError(f"direction: must be both, out or in, got {direction!r}")

    def heal(self, cut: Cut) -> None:
        """Delete the cut's rules (those already gone are fine)."""
        for h in cut.handles:
            try:
                _nft(["delete", "rule", "inet", self.table, "input", "handle", str(h)])
            except NetfilterError as exc:
                if "No such file" not in str(exc):
                    raise
        if cut in self._cuts:
            self._cuts.remove(cut)
        log.info("healed", senders=list(cut.senders), receivers=list(cut.receivers))

    def heal_all(self) -> None:
        for cut in list(self._cuts):
            self.heal(cut)

    def drop_rules(self) -> int:
        """How many drop rules the table holds now (0 when the table is gone)."""
        try:
            out = _nft(["list", "table", "inet", self.table])
        except NetfilterError:
            return 0
        return sum(1 for line in out.splitlines() if line.strip().endswith("drop"))

    def close(self) -> None:
        """Delete the table (every rule with it) and the run's cgroups."""
        self._opened = False
        self._cuts.clear()
        _remove_table(self.table)
        _remove_cgroups(self.cgroup_parent, self.mount)


def _remove_table(table: str) -> None:
    try:
        _nft(["delete", "table", "inet", table])
    except NetfilterError as exc:
        if "No such file" not in str(exc):
            raise


def _remove_cgroups(parent: Path, mount: Path) -> None:
    """rmdir the run's cgroups; a process still in one (a cluster kept running, a pod that
    outlived its kubelet) is moved to the root cgroup first, as it was before the run."""
    if not parent.is_dir():
        return
    for child in sorted(p for p in parent.iterdir() if p.is_dir()):
        with contextlib.suppress(OSError):
            for pid in (child / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (mount / "cgroup.procs").write_text(pid)
        try:
            child.rmdir()
        except OSError as exc:
            log.warning("cannot remove cgroup", cgroup=str(child), error=str(exc))
    with contextlib.suppress(OSError):
        parent.rmdir()
    # The shared top (k8semu/) goes with the last run's cgroups; while another run still has
    # its own below it, rmdir fails (not empty) and it stays.
    if parent.parent.name == CGROUP_TOP:
        with contextlib.suppress(OSError):
            parent.parent.rmdir()


def _tables() -> list[str]:
    if _nft_binary() is None:
        return []
    try:
        out = _nft(["list", "tables", "inet"])
    except NetfilterError:
        return []
    names = [line.split()[-1] for line in out.splitlines() if line.startswith("table inet ")]
    return [n for n in names if n.startswith(TABLE_PREFIX + PREFIX)]


def leftovers() -> list[str]:
    """Tables and cgroup dirs of chaos runs whose process is gone."""
    out = [f"nft table inet {t}" for t in _tables() if not _owner_alive(t[len(TABLE_PREFIX) :])]
    mount = cgroup2_mount()
    if mount is not None and (mount / CGROUP_TOP).is_dir():
        out += [
            f"cgroup {d}"
            for d in sorted((mount / CGROUP_TOP).iterdir())
            if d.is_dir() and d.name.startswith(PREFIX) and not _owner_alive(d.name)
        ]
    return out


def cleanup() -> list[str]:
    """Remove what ``leftovers()`` lists; returns it. A live run's table is never touched."""
    found = leftovers()
    mount = cgroup2_mount()
    for item in found:
        kind, _, name = item.rpartition(" ")
        if kind == "nft table inet":
            _remove_table(name)
        elif mount is not None:
            _remove_cgroups(Path(name), mount)
    return found
