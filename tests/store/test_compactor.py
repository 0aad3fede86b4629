"""AutoCompactor: etcd's auto-compaction schedule, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from k8semu.store import errors
from k8semu.store.compactor import AutoCompactor
from k8semu.store.config import AutoCompaction


class FakeTime:
    """A clock that sleeping advances; stops the compactor after `until` seconds."""

    def __init__(self, until: float) -> None:
        self.now = 0.0
        self.until = until

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.now > self.until:
            raise asyncio.CancelledError


async def _run(
    policy: AutoCompaction, until: float, *, leader: bool = True
) -> list[tuple[float, int]]:
    t = FakeTime(until)
    done: list[tuple[float, int]] = []

    async def compact(rev: int) -> None:
        if done and rev <= done[-1][1]:
            raise errors.ErrCompacted
        done.append((t.now, rev))

    compactor = AutoCompactor(
        policy,
        revision=lambda: 1 + int(t.now) * 10,  # ten writes a second
        is_leader=lambda: leader,
        compact=compact,
        clock=t.clock,
        sleep=t.sleep,
    )
    with pytest.raises(asyncio.CancelledError):
        await compactor.run()
    return done


async def test_periodic_keeps_the_retention_window() -> None:
    """periodic 10m: the first compaction once 10 minutes have passed, to the revision of
    about 10 minutes before; then every 10 minutes (every hour for retentions above 1h)."""
    done = await _run(AutoCompaction("periodic", period_s=600), until=1900)
    assert [round(at) for at, _ in done] == [600, 1200, 1800]
    for at, rev in done:
        age = at - (rev - 1) / 10  # how long ago that revision was written
        assert 600 <= age <= 660
    hourly = await _run(AutoCompaction("periodic", period_s=5 * 3600), until=8 * 3600)
    assert [round(at) for at, _ in hourly] == [5 * 3600, 6 * 3600, 7 * 3600, 8 * 3600]


async def test_revision_mode_every_five_minutes() -> None:
    done = await _run(AutoCompaction("revision", revisions=1000), until=1000)
    assert done == [(300.0, 3001 - 1000), (600.0, 6001 - 1000), (900.0, 9001 - 1000)]


async def test_followers_do_not_compact() -> None:
    assert await _run(AutoCompaction("periodic", period_s=60), until=600, leader=False) == []
    assert await _run(AutoCompaction("revision", revisions=10), until=900, leader=False) == []
