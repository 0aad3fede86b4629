"""The fault plan: reproducible from the seed, within the run, only the chosen faults and
targets, and never more of a replicated group down at once than leaves a majority."""

from __future__ import annotations

import asyncio

import pytest

from k8semu.chaos.plan import DIRECTIONS, FAULTS, PlanSettings, Target, make_plan
from k8semu.chaos.probe import ProbeResult, probe_loop

TARGETS = [
    *(Target(f"store-s{i}", "store", "store") for i in range(1, 4)),
    Target("apiserver-1", "apiserver", "apiserver"),
    Target("apiserver-2", "apiserver", "apiserver"),
    Target("scheduler-1", "scheduler", "scheduler"),
    Target("controller-manager-1", "controller-manager", "controller-manager"),
    *(Target(f"kubelet-node-{i}", "kubelet", f"node/node-{i}") for i in range(1, 4)),
    *(Target(f"proxy-node-{i}", "proxy", f"node/node-{i}") for i in range(1, 4)),
]


def test_same_seed_same_plan_and_other_seed_other_plan() -> None:
    settings = PlanSettings(duration=60, interval=2)
    assert make_plan(7, TARGETS, settings) == make_plan(7, TARGETS, settings)
    assert make_plan(7, TARGETS, settings) != make_plan(8, TARGETS, settings)


def test_plan_stays_within_duration_faults_and_targets() -> None:
    settings = PlanSettings(duration=30, interval=1, faults=("kill", "pause"), kinds=("store",))
    plan = make_plan(3, TARGETS, settings)
    assert plan, "a 30 s run with one fault a second must hit something"
    assert all(0 < f.at < 30 for f in plan)
    assert [f.at for f in plan] == sorted(f.at for f in plan)
    assert {f.fault for f in plan} <= {"kill", "pause"}
    assert {f.kind for f in plan} == {"store"}
    assert all((f.duration > 0) == (f.fault == "pause") for f in plan)


@pytest.mark.parametrize("seed", range(20))
def test_a_majority_of_each_group_stays_up(seed: int) -> None:
    # Partitions count as down in their group like kills: never a majority cut away at once.
    settings = PlanSettings(duration=60, interval=0.5, min_gap=0.1, recovery=3.0, faults=FAULTS)
    plan = make_plan(seed, TARGETS, settings)
    windows = [(f.at, f.at + (f.duration or settings.recovery), f) for f in plan]
    sizes: dict[str, int] = {}
    for t in TARGETS:
        sizes[t.group] = sizes.get(t.group, 0) + 1
    group_of = {t.name: t.group for t in TARGETS}
    for start, _end, fault in windows:
        group = group_of[fault.target]
        down = {f.target for s, e, f in windows if s <= start < e and group_of[f.target] == group}
        if sizes[group] >= 3:
            assert sizes[group] - len(down) > sizes[group] // 2, (seed, fault)
            assert fault.majority_kept
        else:
            assert len(down) == 1, (seed, fault)  # small groups: one member at a time
            assert not fault.majority_kept


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="faults: unknown"):
        PlanSettings(faults=("explode",))
    with pytest.raises(ValueError, match="targets: unknown"):
        PlanSettings(kinds=("database",))
    with pytest.raises(ValueError, match="duration"):
        PlanSettings(duration=0)


async def test_probe_counts_successes_and_retries_once() -> None:
    answers = iter([b"HTTP/1.1 500 Oops", b"HTTP/1.1 200 OK"] + [b"HTTP/1.1 200 OK"] * 100)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(next(answers) + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await probe_loop("127.0.0.1", port, duration=0.5, rate=10)
    finally:
        server.close()
    assert result.total >= 3
    assert result.ok == result.total  # the first 500 was retried and then succeeded
    assert not result.samples[0][2]  # ... but its first try is recorded as failed
    closed = await probe_loop("127.0.0.1", port, duration=0.2, rate=10, result=ProbeResult())
    assert closed.ok == 0 and closed.availability() == 0.0


@pytest.mark.parametrize("seed", range(10))
def test_one_process_is_hit_at_most_once_per_cooldown(seed: int) -> None:
    settings = PlanSettings(duration=120, interval=0.5, min_gap=0.1, cooldown=12.0)
    plan = make_plan(seed, TARGETS, settings)
    last: dict[str, float] = {}
    for fault in plan:
        if fault.target in last:
            assert fault.at - last[fault.target] >= 12.0, (seed, fault)
        last[fault.target] = fault.at


def test_partitions_have_a_direction_and_other_faults_none() -> None:
    settings = PlanSettings(duration=120, interval=0.5, min_gap=0.1, faults=FAULTS)
    plan = [f for seed in range(5) for f in make_plan(seed, TARGETS, settings)]
    parts = [f for f in plan if f.fault == "partition"]
    assert parts and {f.direction for f in parts} == set(DIRECTIONS)
    assert all(f.duration > 0 for f in parts)
    assert all(f.direction == "" for f in plan if f.fault != "partition")
