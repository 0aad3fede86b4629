"""Compaction and defragmentation over time: when to compact, and carrying it out in batches.

`AutoCompactor` is etcd's auto-compaction (`--auto-compaction-mode/-retention`): on the
leader only, it proposes a Compact through the log on etcd's schedule, so every replica
compacts at the same revision. `PhysicalCompactor` runs on every replica: after a Compact
is applied it deletes the history it made unreachable, a bounded batch at a time on the
MVCC thread, with a pause between batches so applies and reads interleave; `defragment`
gives free pages back to the file system the same way. Neither decides anything Raft
decides, and neither holds the MVCC thread for long (docs/store.md has the figures).
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, Protocol, TypeVar

from k8semu.log import get_logger
from k8semu.store import errors
from k8semu.store.config import AutoCompaction
from k8semu.store.mvcc import MVCCStore

log = get_logger(__name__)
T = TypeVar("T")

# etcd's revision-mode compactor looks every 5 minutes.
REVISION_CHECK_INTERVAL_S = 300.0
# Periodic mode compacts at most every hour and samples the revision ten times per window.
PERIODIC_MAX_INTERVAL_S = 3600.0
PERIODIC_SAMPLES = 10
# Pause between two physical-compaction batches (etcd sleeps 10 ms between its batches).
BATCH_PAUSE_S = 0.01
# How often a replica looks for compaction work applied since it last looked.
POLL_S = 0.1

Sleep = Callable[[float], Awaitable[None]]


class MVCCHost(Protocol):
    """What the physical compactor needs of the state machine: the MVCC store it holds
    (replaced when a snapshot is installed, absent once closed) and the one thread every
    call on that store runs on."""

    @property
    def ready(self) -> bool: ...

    @property
    def mvcc(self) -> MVCCStore: ...

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...


@dataclass(frozen=True)
class AutoCompactor:
    """etcd's auto-compaction schedule. `compact(rev)` proposes a Compact; it is called only
    while `is_leader()` (etcd pauses its compactor on followers). `clock`, `sleep` and
    `revision_interval_s` are there for tests.

    periodic(P): samples the revision every min(P, 1h)/10; once P has passed since the last
    compaction (since start for the first), compacts to the revision sampled about P ago, then
    again every min(P, 1h). revision(N): every 5 minutes compacts to current - N.
    """

    policy: AutoCompaction
    _: KW_ONLY
    revision: Callable[[], int]
    is_leader: Callable[[], bool]
    compact: Callable[[int], Awaitable[None]]
    clock: Callable[[], float] = time.monotonic
    sleep: Sleep = asyncio.sleep
    revision_interval_s: float = REVISION_CHECK_INTERVAL_S

    async def run(self) -> None:
        if self.policy.revisions > 0:
            await self._run_revision()
        elif self.policy.period_s > 0:
            await self._run_periodic()

    async def _try(self, rev: int) -> bool:
        try:
            await self.compact(rev)
        except errors.ErrCompacted:
            return True  # someone (the API server, etcdctl) compacted further already
        except errors.StoreError as exc:
            log.info("auto-compaction deferred", revision=rev, error=exc.message)
            return False
        log.info("auto-compaction", mode=self.policy.mode, revision=rev)
        return True

    async def _run_periodic(self) -> None:
        period = self.policy.period_s
        interval = min(period, PERIODIC_MAX_INTERVAL_S)
        step = interval / PERIODIC_SAMPLES
        # revs[0] is the revision about `period` ago once the window is full.
        revs: collections.deque[int] = collections.deque(maxlen=round(period / step) + 1)
        last = self.clock()
        wait = period
        while True:
            revs.append(self.revision())
            await self.sleep(step)
            if not self.is_leader() or self.clock() - last < wait:
                continue
            wait = interval
            if await self._try(revs[0]):
                last = self.clock()

    async def _run_revision(self) -> None:
        done = 0
        while True:
            await self.sleep(self.revision_interval_s)
            rev = self.revision() - self.policy.revisions
            if rev <= 0 or rev == done or not self.is_leader():
                continue
            if await self._try(rev):
                done = rev


class PhysicalCompactor:
    """Carries out applied compactions on one replica, and defragments on request.

    Figures for the log: the longest single batch ("hold", the time one batch kept the MVCC
    thread, which applies wait behind) per compaction and per defragmentation.
    """

    def __init__(self, sm: MVCCHost, *, pause_s: float = BATCH_PAUSE_S) -> None:
        self._sm = sm
        self._pause_s = pause_s
        self._defrag_lock = asyncio.Lock()
        self._compact_lock = asyncio.Lock()
        self.longest_hold_s = 0.0

    def _mvcc(self) -> MVCCStore | None:
        return self._sm.mvcc if self._sm.ready else None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self.finish()
            except (sqlite3.Error, OSError) as exc:
                # Nothing is lost: the work is redone from compact_physical next time. A
                # disk that keeps failing fails the applies too, which stop the replica.
                log.error("compaction batch failed", error=repr(exc))
                await asyncio.sleep(1.0)

    async def finish(self) -> None:
        """Carry out every compaction applied so far on this replica (Compact with physical
        set waits for this; so does defragment, so it reclaims what compaction freed)."""
        async with self._compact_lock:
            mvcc = self._mvcc()
            if mvcc is None or not mvcc.compaction_pending:
                return
            started = time.perf_counter()
            target = mvcc.compact_revision
            batches, hold = await self._batches(mvcc.compact_step)
        log.info(
            "compaction carried out",
            revision=target,
            batches=batches,
            longest_batch_ms=round(hold * 1000, 2),
            took_s=round(time.perf_counter() - started, 3),
        )

    async def defragment(self) -> tuple[int, float]:
        """Give free pages back to the file system; returns (batches, longest batch s)."""
        async with self._defrag_lock:
            await self.finish()
            mvcc = self._mvcc()
            if mvcc is None:
                raise errors.ErrStopped
            started = time.perf_counter()
            before = await self._sm.run(mvcc.db_size)
            batches, hold = await self._batches(mvcc.defrag_step)
            log.info(
                "defragmented",
                size_before=before,
                size_after=mvcc.size,
                batches=batches,
                longest_batch_ms=round(hold * 1000, 2),
                took_s=round(time.perf_counter() - started, 3),
            )
            return batches, hold

    async def _batches(self, step: Callable[[], bool]) -> tuple[int, float]:
        """Run `step` on the MVCC thread until it returns False, pausing between calls; a
        replaced store (snapshot installed) ends the run: its successor is looked at anew."""

        def timed() -> tuple[bool, float]:
            t0 = time.perf_counter()
            more = step()
            return more, time.perf_counter() - t0

        owner = self._mvcc()
        batches, longest = 0, 0.0
        while True:
            try:
                more, took = await self._sm.run(timed)
            except (errors.ErrStopped, sqlite3.ProgrammingError):
                return batches, longest  # the store was closed under us (snapshot, stop)
            batches += 1
            longest = max(longest, took)
            self.longest_hold_s = max(self.longest_hold_s, took)
            if not more or self._mvcc() is not owner:
                return batches, longest
            await asyncio.sleep(self._pause_s)
