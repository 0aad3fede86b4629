"""What the soak measures at the end of every interval: per store member its Status, its
compaction revision and the bytes of its data files; per component process its RSS (and the
peak between samples), CPU and open fds, from /proc; the API latency per verb.

The compaction revision is not in etcd's Status: ``compaction_revision`` finds it by bisection
with serializable Ranges at old revisions of a key that does not exist (see ``soak``). Reads
only: nothing here writes to the cluster or signals a process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from k8semu import transport
from k8semu.bench._common import cpu_seconds, fd_count, file_size, rss_bytes, summarize
from k8semu.cluster.state import ComponentRecord
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from k8semu.pb.etcd.rpc_pb2_grpc import KVAsyncStub

__all__ = [
    "PROBE_KEY",
    "VERBS",
    "ComponentSample",
    "IntervalSample",
    "MemberSample",
    "ProcessSampler",
    "StoreSampler",
    "VerbLatency",
    "compaction_revision",
    "data_file_sizes",
    "verb_latencies",
]

PROBE_KEY = b"/k8semu-soak/compaction-probe"  # never written: reading it at a revision is cheap
VERBS = ("create", "patch", "delete", "get", "list")


@dataclass
class MemberSample:
    """One store member at the end of an interval; sizes in bytes. ``error`` when it did not
    answer (its file sizes are still read)."""

    name: str
    db_size: int = 0
    db_size_in_use: int = 0
    revision: int = 0
    compact_revision: int = 0
    raft_term: int = 0
    raft_index: int = 0
    is_leader: bool = False
    db_file: int = 0  # kv.db + its WAL (etcd: member/snap/db)
    log_files: int = 0  # raft.db + its WAL (etcd: member/wal/*)
    snap_files: int = 0  # snapshot files kept beside them
    error: str = ""


@dataclass
class ComponentSample:
    """One component process at the end of an interval; ``pid`` 0 when it is gone."""

    name: str
    kind: str
    pid: int
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0  # the most seen during the interval (polled every few seconds)
    cpu_pct: float = 0.0  # of one core, over the interval
    fds: int = 0


@dataclass
class VerbLatency:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int = 0


@dataclass
class IntervalSample:
    index: int  # 1-based: "minute" index at the default interval
    t_s: float  # seconds since the churn started, at the sample
    writes: int = 0  # answered writes in this interval
    write_errors: int = 0
    write_rate: float = 0.0
    latency: dict[str, VerbLatency] = field(default_factory=dict)  # verb -> figures
    members: list[MemberSample] = field(default_factory=list)
    components: list[ComponentSample] = field(default_factory=list)
    store_leader_changes: int = 0  # since the churn started
    store_term_bumps: int = 0
    lease_changes: dict[str, int | None] = field(default_factory=dict)
    #: Leader-elected component -> times it started leading again (its log) since the start.
    became_leader: dict[str, int] = field(default_factory=dict)
    restarts: list[str] = field(default_factory=list)  # components with a new (or no) pid
    objects: dict[str, int] = field(default_factory=dict)  # the churn's pools

    @property
    def db_file_max(self) -> int:
        return max((m.db_file for m in self.members), default=0)

    @property
    def compact_revision(self) -> int:
        return max((m.compact_revision for m in self.members), default=0)

    @property
    def revision(self) -> int:
        return max((m.revision for m in self.members), default=0)


# -- store members ----------------------------------------------------------------------------


def _tree_size(path: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for p in path.rglob("*"):
            total += file_size(p) if p.is_file() else 0
    return total


def data_file_sizes(data_dir: Path) -> tuple[int, int, int]:
    """(database file, log files, snapshot files) bytes of one store member's data dir:
    k8semu's ``kv.db``(+WAL), ``raft.db``(+WAL), ``snap/``; or etcd's ``member/snap/db``,
    ``member/wal/``, ``member/snap/*.snap``."""
    if (data_dir / "kv.db").exists():
        db = file_size(data_dir / "kv.db") + file_size(data_dir / "kv.db-wal")
        log = file_size(data_dir / "raft.db") + file_size(data_dir / "raft.db-wal")
        return db, log, _tree_size(data_dir / "snap")
    member = data_dir / "member"
    snaps = sum(file_size(p) for p in (member / "snap").glob("*.snap"))
    return file_size(member / "snap" / "db"), _tree_size(member / "wal"), snaps


async def compaction_revision(
    stub: KVAsyncStub, revision: int, *, lo: int = 1, timeout: float = 2.0
) -> int:
    """The member's compaction revision (0: never compacted), by bisection over
    [``lo``, ``revision``] with serializable Ranges of ``PROBE_KEY`` at a revision: one below
    the compaction revision fails with OUT_OF_RANGE ("... has been compacted")."""

    async def compacted(rev: int) -> bool:
        req = rpc_pb2.RangeRequest(key=PROBE_KEY, revision=rev, serializable=True, limit=1)
        try:
            await stub.Range(req, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in (exc.details() or ""):
                return True
            raise
        return False

    lo = max(1, lo)
    if revision < 1 or not await compacted(lo):
        return 0 if lo <= 1 else lo
    # Invariant: lo is compacted, hi is not (hi = revision + 1 stands for "not compacted").
    hi = revision + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if await compacted(mid):
            lo = mid
        else:
            hi = mid
    return hi if hi <= revision else revision


class StoreSampler:
    """Samples every store member: its Status, its compaction revision (the bisection starts
    at the one found last time) and, when its data dir is known, its file sizes. One channel
    per member, kept open until ``close``."""

    def __init__(self, members: Sequence[tuple[str, str]], data_dirs: Mapping[str, str]) -> None:
        self.members = list(members)
        self.data_dirs = dict(data_dirs)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._last_compact: dict[str, int] = {}

    async def _member(self, name: str, address: str) -> MemberSample:
        m = MemberSample(name=name)
        if name in self.data_dirs:
            m.db_file, m.log_files, m.snap_files = data_file_sizes(Path(self.data_dirs[name]))
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = transport.channel(address)
        try:
            status = await rpc_pb2_grpc.MaintenanceStub(channel).Status(
                rpc_pb2.StatusRequest(), timeout=5.0
            )
            m.db_size, m.db_size_in_use = status.dbSize, status.dbSizeInUse
            m.revision, m.raft_term = status.header.revision, status.raftTerm
            m.raft_index = status.raftIndex
            m.is_leader = bool(status.leader) and status.leader == status.header.member_id
            m.compact_revision = await compaction_revision(
                rpc_pb2_grpc.KVStub(channel), m.revision, lo=self._last_compact.get(name, 1)
            )
            self._last_compact[name] = max(1, m.compact_revision)
        except grpc.aio.AioRpcError as exc:
            m.error = f"{exc.code().name}: {exc.details()}"
        return m

    async def sample(self) -> list[MemberSample]:
        return [await self._member(name, address) for name, address in self.members]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


# -- component processes and API latency -------------------------------------------------------


class ProcessSampler:
    """RSS (peak within the interval), CPU and fds of the component processes, by name."""

    def __init__(self) -> None:
        self.cpu: dict[str, tuple[int, float, float]] = {}  # name -> (pid, cpu s, monotonic)
        self.peak: dict[str, float] = {}
        self.pids: dict[str, int] = {}

    def poll_peak(self, components: Sequence[ComponentRecord]) -> None:
        for c in components:
            rss = rss_bytes(c.pid) if c.pid > 0 else None
            if rss is not None:
                self.peak[c.name] = max(self.peak.get(c.name, 0.0), rss / 2**20)

    def sample(
        self, components: Sequence[ComponentRecord]
    ) -> tuple[list[ComponentSample], list[str]]:
        """Samples now, and the components restarted (new pid) or gone since the last call."""
        out, restarted = [], []
        now = time.monotonic()
        for c in components:
            rss = rss_bytes(c.pid) if c.pid > 0 else None
            cpu = cpu_seconds(c.pid) if c.pid > 0 else None
            fds = fd_count(c.pid) if c.pid > 0 else None
            old = self.pids.get(c.name)
            if rss is None or cpu is None:
                if old:
                    restarted.append(c.name)
                self.pids[c.name] = 0
                out.append(ComponentSample(name=c.name, kind=c.kind, pid=0))
                continue
            if old is not None and old != c.pid:
                restarted.append(c.name)
            self.pids[c.name] = c.pid
            pct = 0.0
            prev = self.cpu.get(c.name)
            if prev is not None and prev[0] == c.pid and now > prev[2]:
                pct = 100.0 * (cpu - prev[1]) / (now - prev[2])
            self.cpu[c.name] = (c.pid, cpu, now)
            rss_mb = rss / 2**20
            peak = max(self.peak.pop(c.name, 0.0), rss_mb)
            out.append(
                ComponentSample(
                    name=c.name,
                    kind=c.kind,
                    pid=c.pid,
                    rss_mb=round(rss_mb, 2),
                    peak_rss_mb=round(peak, 2),
                    cpu_pct=round(pct, 1),
                    fds=fds or 0,
                )
            )
        return out, restarted


def verb_latencies(
    latencies: Mapping[str, list[float]], errors: Mapping[str, int]
) -> dict[str, VerbLatency]:
    """``TimedClient``'s figures of one interval (by "<verb> <resource>") merged per verb."""
    by_verb: dict[str, list[float]] = {}
    errs: dict[str, int] = {}
    for key, values in latencies.items():
        by_verb.setdefault(key.split(" ")[0], []).extend(values)
    for key, n in errors.items():
        verb = key.split(" ")[0]
        errs[verb] = errs.get(verb, 0) + n
        by_verb.setdefault(verb, [])
    out = {}
    for verb, values in by_verb.items():
        s = summarize(values)
        out[verb] = VerbLatency(
            count=s.count,
            p50_ms=round(s.p50 * 1e3, 2),
            p90_ms=round(s.p90 * 1e3, 2),
            p99_ms=round(s.p99 * 1e3, 2),
            max_ms=round(s.max * 1e3, 2),
            errors=errs.get(verb, 0),
        )
    return out
