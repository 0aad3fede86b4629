"""A long run under steady churn that watches for what grows: ``k8semu bench soak``.

This module owns ``k8semu bench soak``. It starts the default cluster's topology (3 store
replicas, an API server, a scheduler, a controller manager, 3 process-runtime workers with
proxies, the DNS add-on, the emulator's default timings, compaction on: ``COMPACTION_SETTINGS``)
on free ports (``k8semu.bench._clusterrun``), or the ``--config`` given, and from one client
process:

1. keeps a churn workload going at ``--write-rate`` API writes/s on an absolute schedule
   (``MIX``: ConfigMaps created, patched and deleted; bare pods created and deleted;
   Deployments scaled and rolled), every object in one namespace and every pool bounded, so
   a cluster that cleans up after itself holds a steady number of objects;
2. every ``--interval`` ("a minute"; 1m by default) records one sample: per store member its
   ``Maintenance.Status`` (dbSize, dbSizeInUse, revision, raftTerm, leader), its compaction
   revision and the bytes of its data files; store leader changes and the control plane's
   Lease transitions so far (``_clusterrun.LeaderWatch``); the API latency percentiles per
   verb; RSS, CPU and open file descriptors of every component process (from /proc);
3. judges the samples after ``--warmup`` (``verdict``) and exits 1 when something grew
   without bound.

The compaction revision is not in etcd's Status. The soak finds it by bisection with
serializable Ranges at old revisions of a key that does not exist: etcd (and k8semu's store)
answer a Range below the compaction revision with OUT_OF_RANGE "required revision has been
compacted", and at or above it with an empty answer; about log2(revision) cheap reads per
member and interval, the same on a real etcd. 0 means never compacted.

Output: Markdown tables on stdout (one row per interval, then the verdict), the same rows on
stderr as they come, ``--json FILE``, ``--plot FILE.png``. Bounded by ``--duration``; traffic
stays on 127/8; it signals nothing (``k8semu down`` stops the cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import random
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import yaml

from k8semu import log as logging_setup
from k8semu import transport
from k8semu.bench._clusterrun import (
    BenchCluster,
    ClusterLayout,
    LeaderWatch,
    bench_config,
    cpu_seconds,
    fd_count,
    leader_logs,
    merge_config,
    rss_bytes,
)
from k8semu.bench.cluster import TimedClient
from k8semu.bench.store import BenchError, _percentile, _positive_float, _positive_int, _say
from k8semu.bench.store import environment as _environment
from k8semu.client import Client, ClientError
from k8semu.cluster.config import parse_config
from k8semu.cluster.errors import ClusterConfigError, ClusterError
from k8semu.cluster.state import ComponentRecord, read_state
from k8semu.durations import format_ms, parse_ms
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from k8semu.pb.etcd.rpc_pb2_grpc import KVAsyncStub

__all__ = [
    "MIX",
    "Check",
    "ComponentSample",
    "IntervalSample",
    "Limits",
    "MemberSample",
    "SoakOptions",
    "SoakResult",
    "main",
    "plot",
    "render",
    "run",
    "verdict",
]

# The churn, per 100 API writes: (operation, weight). ConfigMap creates and deletes balance
# (each falls back to the other when its pool is full or empty), so objects stay bounded.
MIX: tuple[tuple[str, int], ...] = (
    ("configmap-create", 38),
    ("configmap-patch", 16),
    ("configmap-delete", 38),
    ("pod-create", 2),
    ("pod-delete", 2),
    ("deployment-scale", 3),
    ("deployment-roll", 1),
)
CONFIGMAP_VALUE_BYTES = 512
PROBE_KEY = b"/k8semu-soak/compaction-probe"  # never written: reading it at a revision is cheap
VERBS = ("create", "patch", "delete", "get", "list")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What ``verdict`` calls unbounded growth (see docs/benchmarks.md)."""

    db_ratio: float = 2.0  # database file at the end / at the end of warm-up
    log_ratio: float = 2.0  # Raft log files (raft.db, WAL) at the end / at the end of warm-up
    rss_ratio: float = 1.2  # a component's RSS at the end / at the end of warm-up
    fd_slack: int = 5  # fds "grew": by more than max(fd_slack, fd_ratio x baseline) ...
    fd_ratio: float = 0.1  # ... without ever going down after warm-up
    min_rate_ratio: float = 0.9  # writes done / asked (informational)


@dataclass(frozen=True, kw_only=True)
class SoakOptions:
    duration: float = 1800.0  # seconds of churn
    write_rate: float = 50.0  # API writes/s asked
    interval: float = 60.0  # seconds per sample ("minute")
    warmup: float = 300.0  # samples before this are not judged; the one at it is the baseline
    writers: int = 8  # concurrent writes at most
    read_every: float = 1.0  # one get or list (alternately) every this many seconds
    deployments: int = 3
    max_replicas: int = 3
    configmaps: int = 200  # ConfigMaps at most at any time
    pods: int = 10  # bare pods at most at any time
    seed: int = 0  # 0: random
    ready_timeout: float = 300.0
    limits: Limits = Limits()
    progress: bool = True

    def check(self) -> None:
        """ValueError naming the option that cannot work."""
        if self.interval <= 0 or self.duration <= 0 or self.write_rate <= 0:
            raise ValueError("--duration, --interval and --write-rate must be > 0")
        if self.warmup + self.interval > self.duration:
            raise ValueError(
                f"--duration ({format_ms(int(self.duration * 1000))}) must be at least"
                f" --warmup + --interval ({format_ms(int((self.warmup + self.interval) * 1000))}):"
                " the verdict compares a sample at the end of warm-up with a later one"
            )


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


@dataclass
class Check:
    """One verdict line. ``gating`` checks make the exit status 1 when they fail."""

    name: str
    passed: bool
    detail: str
    gating: bool = True


@dataclass
class SoakResult:
    options: SoakOptions
    config: str = ""
    cluster_up_s: float = 0.0
    samples: list[IntervalSample] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    writes: int = 0
    write_errors: int = 0
    last_error: str = ""
    seconds: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and all(c.passed for c in self.checks if c.gating)


# -- the verdict -------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 2**20:,.2f} MB"


def verdict(
    samples: Sequence[IntervalSample],
    *,
    warmup: float,
    limits: Limits = Limits(),
    write_rate: float = 0.0,
) -> list[Check]:
    """Judge the samples: pure, so synthetic samples test it.

    The baseline is the first sample taken at or after ``warmup`` seconds, the end is the
    last sample (it must be a later one). Unbounded growth is, per store member: its database
    file (or its Raft log files) at the end more than ``db_ratio`` (``log_ratio``) times the
    baseline; per component process: its RSS at the end more than ``rss_ratio`` times the
    baseline, or its open fds never going down after the baseline and ending more than
    max(``fd_slack``, ``fd_ratio`` x baseline) above it; any store leader change or Raft term
    rise, or any control-plane Lease changing hands, since the churn started; any component
    restarted or gone. Informational (not gating): the write rate reached and write errors.
    """
    after = [s for s in samples if s.t_s >= warmup]
    if len(after) < 2:
        return [
            Check(
                "enough samples",
                False,
                f"{len(after)} sample(s) at or after the {warmup:g} s warm-up; the verdict needs"
                " the baseline and a later one",
            )
        ]
    base, end = after[0], after[-1]
    checks: list[Check] = []

    def file_check(label: str, attr: str, ratio: float) -> None:
        worst, detail = 0.0, ""
        b_members = {m.name: m for m in base.members}
        for m in end.members:
            b = b_members.get(m.name)
            if b is None or getattr(b, attr) <= 0:
                continue
            r = getattr(m, attr) / getattr(b, attr)
            if r >= worst:
                worst = r
                detail = (
                    f"{m.name}: {_mb(getattr(b, attr))} at {base.t_s:.0f} s ->"
                    f" {_mb(getattr(m, attr))} at {end.t_s:.0f} s ({r:.2f}x)"
                )
        checks.append(
            Check(
                f"{label} <= {ratio:g}x its size at the end of warm-up",
                worst <= ratio,
                detail or "no sizes",
            )
        )

    file_check("store database file", "db_file", limits.db_ratio)
    file_check("store Raft log files", "log_files", limits.log_ratio)

    # RSS and fds, per component (by name: a restart is its own failure below).
    base_c = {c.name: c for c in base.components if c.pid}
    end_c = {c.name: c for c in end.components if c.pid}
    worst_r, worst_name = 0.0, ""
    for name, b in base_c.items():
        e = end_c.get(name)
        if e is None or b.rss_mb <= 0:
            continue
        r = e.rss_mb / b.rss_mb
        if r >= worst_r:
            worst_r, worst_name = r, f"{name}: {b.rss_mb:.1f} -> {e.rss_mb:.1f} MB ({r:.2f}x)"
    grown = [
        f"{name} {base_c[name].rss_mb:.0f}->{end_c[name].rss_mb:.0f} MB"
        for name in base_c
        if name in end_c and end_c[name].rss_mb > limits.rss_ratio * base_c[name].rss_mb
    ]
    checks.append(
        Check(
            f"every component's RSS <= {limits.rss_ratio:g}x its RSS at the end of warm-up",
            not grown,
            ("grew: " + ", ".join(grown)) if grown else f"largest {worst_name or '-'}",
        )
    )
    leaking = []
    for name in base_c:
        series = [c.fds for s in after for c in s.components if c.name == name and c.pid]
        if len(series) < 2:
            continue
        monotonic = all(y >= x for x, y in itertools.pairwise(series))
        grew = series[-1] - series[0] > max(limits.fd_slack, limits.fd_ratio * series[0])
        if monotonic and grew:
            leaking.append(f"{name} {series[0]}->{series[-1]}")
    checks.append(
        Check(
            "no component's open fds grow monotonically after warm-up",
            not leaking,
            ("grew: " + ", ".join(leaking)) if leaking else "bounded",
        )
    )
    checks.append(
        Check(
            "no store leader change",
            end.store_leader_changes == 0 and end.store_term_bumps == 0,
            f"{end.store_leader_changes} leader changes, Raft term +{end.store_term_bumps}",
        )
    )
    checks.append(_control_plane_check(end.lease_changes, end.became_leader))
    restarted = sorted({r for s in samples for r in s.restarts})
    checks.append(
        Check(
            "no component restarted or exited",
            not restarted,
            ", ".join(restarted) or "none",
        )
    )
    # Informational.
    span = samples[-1].t_s - (samples[0].t_s - _interval_of(samples))
    writes = sum(s.writes for s in samples)
    errors = sum(s.write_errors for s in samples)
    if write_rate > 0 and span > 0:
        got = writes / span
        checks.append(
            Check(
                f"write rate >= {limits.min_rate_ratio:.0%} of the {write_rate:g}/s asked",
                got >= limits.min_rate_ratio * write_rate,
                f"{got:.1f} writes/s",
                gating=False,
            )
        )
    checks.append(
        Check("no failed writes", errors == 0, f"{errors} of {writes + errors}", gating=False)
    )
    compacted = end.compact_revision > 0
    checks.append(
        Check(
            "the store's history is compacted",
            compacted,
            f"compaction revision {end.compact_revision:,} of revision {end.revision:,}"
            if compacted
            else f"never compacted (revision {end.revision:,})",
            gating=False,
        )
    )
    return checks


def _control_plane_check(
    lease_changes: Mapping[str, int | None], became_leader: Mapping[str, int]
) -> Check:
    """No Lease changed hands and no leader-elected component started leading again (a
    leader that missed its renew deadline and won its own Lease back restarted its work)."""
    leases = {k: v for k, v in lease_changes.items() if v is not None}
    details = [f"{k}: {v}" for k, v in sorted(leases.items())]
    details += [f"{k} led again {v}x" for k, v in sorted(became_leader.items()) if v]
    return Check(
        "no control-plane leader change (scheduler, controller manager)",
        all(v == 0 for v in leases.values()) and not any(became_leader.values()),
        ", ".join(details) or "no Leases found",
    )


def _interval_of(samples: Sequence[IntervalSample]) -> float:
    if len(samples) >= 2:
        return samples[1].t_s - samples[0].t_s
    return samples[0].t_s if samples else 0.0


# -- the churn ---------------------------------------------------------------------------------


def _op_sequence(rng: random.Random) -> Callable[[], str]:
    """Operations in MIX's proportions, shuffled per block of 100 (so any 100 writes in a
    row hold about the mix, and a rare operation is never starved)."""
    block: list[str] = []

    def nxt() -> str:
        if not block:
            block.extend(op for op, w in MIX for _ in range(w))
            rng.shuffle(block)
        return block.pop()

    return nxt


class Churn:
    """The workload: ``step()`` makes one API write of the mix. Pools are bounded; an object
    is in its pool only once its create was answered, and leaves it before its delete is
    sent, so no two writes race on one object."""

    def __init__(
        self, client: TimedClient, namespace: str, opts: SoakOptions, rng: random.Random
    ) -> None:
        self.client = client
        self.ns = namespace
        self.opts = opts
        self.rng = rng
        self.configmaps: deque[str] = deque()
        self.pods: deque[str] = deque()
        self.deployments = [f"web-{i}" for i in range(opts.deployments)]
        self.replicas = dict.fromkeys(self.deployments, 1)
        self._seq = 0
        self._rolls = 0
        self.next_op = _op_sequence(rng)
        self.ops: dict[str, int] = {}

    def _name(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-{self._seq}"

    async def setup(self) -> None:
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = self.ns
        await self.client.create(ns)
        for name in self.deployments:
            await self.client.create(_deployment(name, self.ns))

    async def step(self) -> None:
        op = self.next_op()
        if op == "configmap-create" and len(self.configmaps) >= self.opts.configmaps:
            op = "configmap-delete"
        elif op in ("configmap-delete", "configmap-patch") and not self.configmaps:
            op = "configmap-create"
        elif op == "pod-create" and len(self.pods) >= self.opts.pods:
            op = "pod-delete"
        elif op == "pod-delete" and not self.pods:
            op = "pod-create"
        self.ops[op] = self.ops.get(op, 0) + 1
        c, ns = self.client, self.ns
        match op:
            case "configmap-create":
                name = self._name("cm")
                await c.create(_configmap(name, ns, self.rng))
                self.configmaps.append(name)
            case "configmap-patch":
                # Out of the pool while patched, so no delete races with the patch.
                i = self.rng.randrange(len(self.configmaps))
                name = self.configmaps[i]
                del self.configmaps[i]
                try:
                    await c.patch(
                        core_pb2.ConfigMap, name, {"data": {"v": _value(self.rng)}}, namespace=ns
                    )
                finally:
                    self.configmaps.append(name)
            case "configmap-delete":
                name = self.configmaps.popleft()
                await c.delete(core_pb2.ConfigMap, name, namespace=ns)
            case "pod-create":
                name = self._name("pod")
                await c.create(_pod(name, ns))
                self.pods.append(name)
            case "pod-delete":
                name = self.pods.popleft()
                await c.delete(core_pb2.Pod, name, namespace=ns)
            case "deployment-scale":
                name = self.rng.choice(self.deployments)
                choices = list(range(1, self.opts.max_replicas + 1))
                if len(choices) > 1:
                    choices.remove(self.replicas[name])
                n = self.rng.choice(choices)
                await c.patch(apps_pb2.Deployment, name, {"spec": {"replicas": n}}, namespace=ns)
                self.replicas[name] = n
            case "deployment-roll":
                name = self.rng.choice(self.deployments)
                self._rolls += 1
                patch = {
                    "spec": {
                        "template": {"metadata": {"annotations": {"soak/roll": str(self._rolls)}}}
                    }
                }
                await c.patch(apps_pb2.Deployment, name, patch, namespace=ns)

    async def read(self, k: int) -> None:
        """One read, a get or a list by turns (of objects that are never deleted)."""
        if k % 2:
            name = self.deployments[k // 2 % len(self.deployments)]
            await self.client.get(apps_pb2.Deployment, name, namespace=self.ns)
        else:
            await self.client.list(apps_pb2.Deployment, namespace=self.ns)

    def pools(self) -> dict[str, int]:
        return {
            "configmaps": len(self.configmaps),
            "pods": len(self.pods),
            "replicas": sum(self.replicas.values()),
        }


def _value(rng: random.Random) -> str:
    return rng.randbytes(CONFIGMAP_VALUE_BYTES // 2).hex()


def _configmap(name: str, ns: str, rng: random.Random) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name, cm.metadata.namespace = name, ns
    cm.metadata.labels["bench"] = "soak"
    cm.data["v"] = _value(rng)
    return cm


def _pod_spec(spec: core_pb2.PodSpec) -> None:
    c = spec.containers.add(name="main", image="busybox")
    c.command.extend(["sleep", "3600"])
    c.resources.requests.update({"cpu": "10m", "memory": "16Mi"})
    spec.termination_grace_period_seconds = 0


def _pod(name: str, ns: str) -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name, p.metadata.namespace = name, ns
    p.metadata.labels["bench"] = "soak"
    _pod_spec(p.spec)
    return p


def _deployment(name: str, ns: str) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace = name, ns
    d.spec.replicas = 1
    d.spec.selector.match_labels["app"] = name
    d.spec.template.metadata.labels.update({"app": name, "bench": "soak"})
    _pod_spec(d.spec.template.spec)
    return d


# -- sampling ----------------------------------------------------------------------------------


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tree_size(path: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for p in path.rglob("*"):
            total += _file_size(p) if p.is_file() else 0
    return total


def data_file_sizes(data_dir: Path) -> tuple[int, int, int]:
    """(database file, log files, snapshot files) bytes of one store member's data dir:
    k8semu's ``kv.db``(+WAL), ``raft.db``(+WAL), ``snap/``; or etcd's ``member/snap/db``,
    ``member/wal/``, ``member/snap/*.snap``."""
    if (data_dir / "kv.db").exists():
        db = _file_size(data_dir / "kv.db") + _file_size(data_dir / "kv.db-wal")
        log = _file_size(data_dir / "raft.db") + _file_size(data_dir / "raft.db-wal")
        return db, log, _tree_size(data_dir / "snap")
    member = data_dir / "member"
    snaps = sum(_file_size(p) for p in (member / "snap").glob("*.snap"))
    return _file_size(member / "snap" / "db"), _tree_size(member / "wal"), snaps


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


class _Procs:
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


def _latency(
    latencies: Mapping[str, list[float]], errors: Mapping[str, int]
) -> dict[str, VerbLatency]:
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
        s = sorted(values)
        out[verb] = VerbLatency(
            count=len(s),
            p50_ms=round(_percentile(s, 50) * 1e3, 2),
            p90_ms=round(_percentile(s, 90) * 1e3, 2),
            p99_ms=round(_percentile(s, 99) * 1e3, 2),
            max_ms=round((s[-1] if s else 0.0) * 1e3, 2),
            errors=errs.get(verb, 0),
        )
    return out


# -- the run -----------------------------------------------------------------------------------


async def _members_sample(
    members: Sequence[tuple[str, str]],
    data_dirs: Mapping[str, str],
    channels: dict[str, grpc.aio.Channel],
    last_compact: dict[str, int],
) -> list[MemberSample]:
    out = []
    for name, address in members:
        m = MemberSample(name=name)
        if name in data_dirs:
            m.db_file, m.log_files, m.snap_files = data_file_sizes(Path(data_dirs[name]))
        channel = channels.get(name)
        if channel is None:
            channel = channels[name] = transport.channel(address)
        try:
            status = await rpc_pb2_grpc.MaintenanceStub(channel).Status(
                rpc_pb2.StatusRequest(), timeout=5.0
            )
            m.db_size, m.db_size_in_use = status.dbSize, status.dbSizeInUse
            m.revision, m.raft_term = status.header.revision, status.raftTerm
            m.raft_index = status.raftIndex
            m.is_leader = bool(status.leader) and status.leader == status.header.member_id
            m.compact_revision = await compaction_revision(
                rpc_pb2_grpc.KVStub(channel), m.revision, lo=last_compact.get(name, 1)
            )
            last_compact[name] = max(1, m.compact_revision)
        except grpc.aio.AioRpcError as exc:
            m.error = f"{exc.code().name}: {exc.details()}"
        out.append(m)
    return out


async def soak(
    api_servers: Sequence[str],
    state_dir: Path,
    opts: SoakOptions,
    result: SoakResult,
    *,
    say: Callable[[str], None] = _say,
) -> None:
    """Run the churn for ``opts.duration`` and fill ``result.samples`` (not the verdict)."""
    state = read_state(state_dir)
    members = [(m[0], m[1]) for m in state.store_members]
    data_dirs = {
        c.name.removeprefix("store-"): c.data_dir
        for c in state.components
        if c.kind in ("store", "etcd")
    }
    rng = random.Random(opts.seed or secrets.randbits(32))
    perf = time.perf_counter
    channels: dict[str, grpc.aio.Channel] = {}
    last_compact: dict[str, int] = {}
    procs = _Procs()
    async with Client(list(api_servers)) as raw:
        client = TimedClient(raw)
        churn = Churn(client, f"soak-{secrets.token_hex(3)}", opts, rng)
        await churn.setup()
        client.take()  # the set-up is not part of the first interval
        components = read_state(state_dir).components
        procs.sample(components)  # CPU baseline
        counts = {"writes": 0, "errors": 0}
        start = perf() + 0.01
        end = start + opts.duration
        due_k = iter(range(math.ceil(opts.duration * opts.write_rate)))

        async def writer() -> None:
            for k in due_k:
                due = start + k / opts.write_rate
                if due >= end:
                    return
                delay = due - perf()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    await churn.step()
                    counts["writes"] += 1
                except ClientError as exc:
                    counts["errors"] += 1
                    result.last_error = str(exc)

        async def reader() -> None:
            k = 0
            while perf() < end:
                k += 1
                with contextlib.suppress(ClientError):
                    await churn.read(k)
                await asyncio.sleep(opts.read_every)

        async def peaks() -> None:
            while True:
                procs.poll_peak(components)
                await asyncio.sleep(min(5.0, opts.interval / 4))

        watch = LeaderWatch(members, api_servers, interval=1.0, log_paths=leader_logs(components))
        async with watch as leaders:
            tasks = [asyncio.get_running_loop().create_task(writer()) for _ in range(opts.writers)]
            tasks.append(asyncio.get_running_loop().create_task(reader()))
            tasks.append(asyncio.get_running_loop().create_task(peaks()))
            try:
                n = math.floor(opts.duration / opts.interval + 1e-9)
                last = {"writes": 0, "errors": 0}
                for i in range(1, n + 1):
                    await asyncio.sleep(max(0.0, start + i * opts.interval - perf()))
                    t = perf() - start
                    latencies, errors = client.take()
                    components = read_state(state_dir).components
                    comps, restarted = procs.sample(components)
                    sample = IntervalSample(
                        index=i,
                        t_s=round(t, 2),
                        writes=counts["writes"] - last["writes"],
                        write_errors=counts["errors"] - last["errors"],
                        latency=_latency(latencies, errors),
                        members=await _members_sample(members, data_dirs, channels, last_compact),
                        components=comps,
                        store_leader_changes=leaders.store_leader_changes,
                        store_term_bumps=leaders.store_term_bumps,
                        lease_changes=leaders.lease_changes,
                        became_leader=dict(leaders.became_leader),
                        restarts=restarted,
                        objects=churn.pools(),
                    )
                    sample.write_rate = round(sample.writes / opts.interval, 2)
                    last = dict(counts)
                    result.samples.append(sample)
                    if opts.progress:
                        say(_progress_line(sample))
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                for channel in channels.values():
                    await channel.close()
        result.writes, result.write_errors = counts["writes"], counts["errors"]
        result.seconds = perf() - start


def _progress_line(s: IntervalSample) -> str:
    lat = s.latency
    p99 = " ".join(f"{v} {lat[v].p99_ms:.0f}" for v in VERBS if v in lat and lat[v].count)
    rss = sum(c.rss_mb for c in s.components)
    return (
        f"[{s.index:>3}] {s.t_s:7.0f} s  writes/s {s.write_rate:6.1f} (errors {s.write_errors})"
        f"  p99 ms: {p99}  db file max {s.db_file_max / 2**20:.2f} MB  rev {s.revision:,}"
        f" compacted {s.compact_revision:,}  leader changes {s.store_leader_changes}"
        f" (term +{s.store_term_bumps})  RSS total {rss:.0f} MB"
    )


def default_layout(opts: SoakOptions) -> ClusterLayout:
    """The default cluster's topology and timings on free ports (see the module doc), with
    compaction on (``compaction_overrides``)."""
    layout = ClusterLayout(
        name="soak",
        store_replicas=3,
        real_nodes=3,
        runtime="process",
        proxies=True,
        addons=("dns",),
        timings={},
        ready_timeout_s=opts.ready_timeout,
    )
    return dataclasses.replace(layout, overrides=compaction_overrides(layout))


# Compaction as issue 10 has it: the API servers compact to what the history was one interval
# ago (kube-apiserver's --etcd-compaction-interval), the store auto-compacts as a safety net
# (etcd's --auto-compaction-*). Both are on by default in the cluster config; the soak says so
# explicitly, so a changed default does not change what it measures. A setting the config does
# not know (a build from before compaction) is left out: the soak then shows the growth.
COMPACTION_SETTINGS: tuple[dict[str, Any], ...] = (
    {"timings": {"etcdCompactionInterval": "1m"}},
    {"store": {"autoCompactionMode": "periodic", "autoCompactionRetention": "10m"}},
)


def compaction_overrides(layout: ClusterLayout) -> dict[str, Any]:
    """The COMPACTION_SETTINGS this build's cluster config accepts, merged."""
    out: dict[str, Any] = {}
    base = bench_config(layout)
    for setting in COMPACTION_SETTINGS:
        try:
            parse_config(yaml.safe_dump(merge_config(base, setting)))
        except ClusterConfigError:
            continue
        out = merge_config(out, setting)
    return out


def run(
    opts: SoakOptions,
    *,
    config: Path | None = None,
    layout: ClusterLayout | None = None,
    workdir: Path | None = None,
    keep: bool = False,
) -> SoakResult:
    """Start the cluster (``config``, else ``layout``, else ``default_layout``), soak, stop it,
    judge."""
    result = SoakResult(options=opts)
    if config is None:
        layout = layout or default_layout(opts)
        result.config = (
            f"generated: {layout.store_replicas} store replicas, 1 API server, 1 scheduler,"
            f" 1 controller manager, {layout.real_nodes} {layout.runtime}-runtime nodes"
            + (f", {layout.hollow_nodes} hollow nodes" if layout.hollow_nodes else "")
            + (f", add-ons {','.join(layout.addons)}" if layout.addons else "")
        )
    else:
        layout = None
        result.config = str(config)
    result.load_before = os.getloadavg()
    try:
        with BenchCluster(layout, config=config, workdir=workdir, keep=keep, say=_say) as c:
            c.start()
            result.cluster_up_s = c.up_seconds
            asyncio.run(soak(c.api_servers, c.state_dir, opts, result))
            result.checks = verdict(
                result.samples, warmup=opts.warmup, limits=opts.limits, write_rate=opts.write_rate
            )
            if not result.passed:
                c.failed = True  # keep the logs and data
    except (BenchError, ClusterError, ClientError, OSError, grpc.aio.AioRpcError) as exc:
        result.error = str(exc)
        _say(f"failed: {exc}")
    result.load_after = os.getloadavg()
    return result


# -- output ------------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f}"


def render(result: SoakResult, env: Mapping[str, Any]) -> str:
    """Markdown: the per-interval store/API table, the per-component table, the verdict."""
    o = result.options
    unit = "min" if o.interval == 60 else f"x{format_ms(int(o.interval * 1000))}"
    lines = [
        f"| {unit} | t s | writes/s | errors | create p50/p99 ms | patch p99 | delete p99 |"
        " get p99 | list p99 | db file MB (max) | dbSize MB | in use MB | Raft log MB (max) |"
        " revision | compacted at | leader changes | term + |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        " ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in result.samples:
        lat = s.latency

        def p99(verb: str, lat: Mapping[str, VerbLatency] = lat) -> str:
            v = lat.get(verb)
            return f"{v.p99_ms:,.0f}" if v and v.count else "-"

        create = lat.get("create")
        cr = f"{create.p50_ms:,.0f}/{create.p99_ms:,.0f}" if create and create.count else "-"
        leader = next((m for m in s.members if m.is_leader), None)
        size = _mib(leader.db_size) if leader else "-"
        in_use = _mib(leader.db_size_in_use) if leader else "-"
        log_max = max((m.log_files for m in s.members), default=0)
        lines.append(
            f"| {s.index} | {s.t_s:,.0f} | {s.write_rate:,.1f} | {s.write_errors} | {cr} |"
            f" {p99('patch')} | {p99('delete')} | {p99('get')} | {p99('list')} |"
            f" {_mib(s.db_file_max)} | {size} | {in_use} | {_mib(log_max)} | {s.revision:,} |"
            f" {s.compact_revision:,} | {s.store_leader_changes} | {s.store_term_bumps} |"
        )
    names = [c.name for c in result.samples[0].components] if result.samples else []
    if names:
        lines += [
            "",
            f"| {unit} | " + " | ".join(names) + " |",
            "| ---: | " + " | ".join("---:" for _ in names) + " |",
        ]
        for s in result.samples:
            by = {c.name: c for c in s.components}
            cells = []
            for n in names:
                c = by.get(n)
                cells.append(
                    f"{c.rss_mb:.0f} MB {c.cpu_pct:.0f}% {c.fds} fd" if c and c.pid else "gone"
                )
            lines.append(f"| {s.index} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            "Per component: RSS at the sample, CPU (% of one core) over the interval, open fds."
        )
    lines += ["", "| check | result | detail |", "| --- | --- | --- |"]
    for chk in result.checks:
        mark = ("PASS" if chk.passed else "FAIL") + ("" if chk.gating else " (info)")
        lines.append(f"| {chk.name} | {mark} | {chk.detail} |")
    load = env.get("load_average", (0.0, 0.0, 0.0))
    lines += [
        "",
        f"Setup: {result.config}; churn {o.write_rate:g} API writes/s for"
        f" {format_ms(int(o.duration * 1000))} ({result.writes:,} writes,"
        f" {result.write_errors} failed), samples every {format_ms(int(o.interval * 1000))},"
        f" warm-up {format_ms(int(o.warmup * 1000))}; {env.get('cpus')} CPUs"
        f" ({env.get('cpu_model')}), load average {load[0]:.2f}/{load[1]:.2f} before,"
        f" {result.load_after[0]:.2f}/{result.load_after[1]:.2f} after; {env.get('date')}.",
    ]
    if result.last_error:
        lines.append(f"Last failed write: {result.last_error}")
    if result.error:
        lines.append(f"failed: {result.error}")
    lines.append(f"Verdict: {'PASS' if result.passed else 'FAIL'}")
    return "\n".join(lines)


def plot(result: SoakResult, path: Path) -> None:
    """Eight panels over time: database sizes, Raft log files, revisions, API p99 per verb,
    RSS, CPU and fds per component, writes/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result.samples
    t = [s.t_s / 60 for s in samples]
    fig, axes = plt.subplots(2, 4, figsize=(22, 9))
    ax = axes[0][0]
    member_names = [m.name for m in samples[0].members] if samples else []
    for name in member_names:
        ax.plot(t, [_member(s, name).db_file / 2**20 for s in samples], label=f"{name} file")
    ax.plot(t, [_leader_value(s, "db_size") / 2**20 for s in samples], "--", label="dbSize")
    ax.plot(
        t, [_leader_value(s, "db_size_in_use") / 2**20 for s in samples], ":", label="dbSizeInUse"
    )
    _finish(ax, "store database (MB)", result)
    ax = axes[0][1]
    for name in member_names:
        ax.plot(t, [_member(s, name).log_files / 2**20 for s in samples], label=f"{name} log")
    _finish(ax, "Raft log files (MB)", result)
    ax = axes[0][2]
    ax.plot(t, [s.revision for s in samples], label="revision")
    ax.plot(t, [s.compact_revision for s in samples], label="compaction revision")
    _finish(ax, "store revisions", result)
    ax = axes[0][3]
    for verb in VERBS:
        ys = [s.latency[verb].p99_ms if verb in s.latency else float("nan") for s in samples]
        if any(y == y for y in ys):
            ax.plot(t, ys, label=f"{verb} p99")
    ax.set_yscale("log")
    _finish(ax, "API latency p99 (ms, log)", result)
    names = [c.name for c in samples[0].components] if samples else []
    colours = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]
    for ax, attr, title in (
        (axes[1][0], "rss_mb", "RSS (MB)"),
        (axes[1][1], "cpu_pct", "CPU (% of one core)"),
        (axes[1][2], "fds", "open file descriptors"),
    ):
        ax.set_prop_cycle(color=colours)
        for name in names:
            ys = [_comp_value(s, name, attr) for s in samples]
            ax.plot(t, ys, label=name)
        _finish(ax, title, result)
    ax = axes[1][3]
    ax.plot(t, [s.write_rate for s in samples], label="writes/s")
    ax.plot(t, [s.write_errors for s in samples], label="failed writes")
    ax.plot(t, [s.store_leader_changes for s in samples], label="store leader changes")
    ax.plot(t, [s.store_term_bumps for s in samples], label="store Raft term rises")
    _finish(ax, "churn and leader changes (counts)", result)
    o = result.options
    fig.suptitle(
        f"k8semu bench soak: {o.write_rate:g} writes/s for {format_ms(int(o.duration * 1000))};"
        f" {result.config}; verdict {'PASS' if result.passed else 'FAIL'}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _member(s: IntervalSample, name: str) -> MemberSample:
    return next((m for m in s.members if m.name == name), MemberSample(name=name))


def _leader_value(s: IntervalSample, attr: str) -> float:
    leader = next((m for m in s.members if m.is_leader), None)
    return float(getattr(leader, attr)) if leader else float("nan")


def _comp_value(s: IntervalSample, name: str, attr: str) -> float:
    c = next((c for c in s.components if c.name == name and c.pid), None)
    return float(getattr(c, attr)) if c else float("nan")


def _finish(ax: Any, title: str, result: SoakResult) -> None:
    ax.axvline(result.options.warmup / 60, color="grey", linestyle="--", linewidth=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("minutes")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="upper left")


# -- command line ------------------------------------------------------------------------------


def _duration(text: str) -> float:
    try:
        ms = parse_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if ms <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return ms / 1000


def _non_negative_duration(text: str) -> float:
    try:
        return parse_ms(text) / 1000
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    d = SoakOptions()
    p = argparse.ArgumentParser(
        prog="k8semu bench soak",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=(
            "Soak: the default cluster under a steady churn of API writes; per interval the"
            " store's database size, compaction, leader changes, API latency, and RSS, CPU and"
            " open fds of every component. Exits 1 on unbounded growth."
        ),
    )
    p.add_argument("--duration", type=_duration, default="30m", help="how long to churn")
    p.add_argument("--write-rate", type=_positive_float, default=d.write_rate, help="writes/s")
    p.add_argument(
        "--interval", type=_duration, default="1m", help="one sample (table row) every this"
    )
    p.add_argument(
        "--warmup",
        type=_non_negative_duration,
        default="5m",
        help="not judged before this; the sample at it is the baseline",
    )
    p.add_argument("--writers", type=_positive_int, default=d.writers, help="concurrent writes")
    p.add_argument("--seed", type=int, default=0, help="of the churn's choices (0: random)")
    p.add_argument(
        "--config",
        type=Path,
        help="cluster config to start (default: the default cluster on free ports)",
    )
    p.add_argument("--ready-timeout", type=_positive_float, default=d.ready_timeout)
    p.add_argument("--workdir", type=Path, help="put the cluster dir under this dir")
    p.add_argument("--keep", action="store_true", help="keep the cluster's logs and data")
    p.add_argument("--no-progress", action="store_true", help="no row on stderr per interval")
    p.add_argument("--json", type=Path, help="also write the samples and verdict to this file")
    p.add_argument("--plot", type=Path, help="also draw the samples to this PNG")
    return p


def to_json(result: SoakResult, env: Mapping[str, Any]) -> dict[str, Any]:
    doc = dataclasses.asdict(result)
    doc["passed"] = result.passed
    for s, raw in zip(result.samples, doc["samples"], strict=True):
        raw["db_file_max"] = s.db_file_max
        raw["compact_revision"] = s.compact_revision
        raw["revision"] = s.revision
    return {"environment": dict(env), "result": doc}


def main(argv: Sequence[str] | None = None) -> int:
    """``k8semu bench soak``: exit status 1 on unbounded growth or a failed run."""
    parser = build_parser()
    args = parser.parse_args(argv)
    opts = SoakOptions(
        duration=args.duration,
        write_rate=args.write_rate,
        interval=args.interval,
        warmup=args.warmup,
        writers=args.writers,
        seed=args.seed,
        ready_timeout=args.ready_timeout,
        progress=not args.no_progress,
    )
    try:
        opts.check()
    except ValueError as exc:
        parser.error(str(exc))
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            _say("--plot needs matplotlib: pip install 'k8semu[bench]'")
            return 2
    if args.config is not None and not args.config.is_file():
        parser.error(f"--config: no such file: {args.config}")
    # Only warnings, on stderr: the client's retries are not the report.
    logging_setup.configure("bench", level="warning")
    env = _environment(args.workdir, False)
    result = run(opts, config=args.config, workdir=args.workdir, keep=args.keep)
    print(render(result, env))
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(result, env), indent=2, default=str) + "\n")
        _say(f"samples written to {args.json}")
    if args.plot is not None and result.samples:
        plot(result, args.plot)
        _say(f"plot written to {args.plot}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
