"""The fault plan: which fault hits which process when, drawn from a seed. Pure: no I/O, no
clock; the same seed, targets and settings give the same plan.

A plan never takes down more of a replicated group than leaves a majority alive at any
moment (store replicas, API servers, schedulers, controller managers each count as a group;
every worker node is its own group of one, so one node's kubelet or proxy at a time). A
group of one or two may lose its member: it comes back by restart, and the report tells
those faults apart ("majority kept": False) from the ones the availability target is about.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

FAULTS = ("kill", "pause", "restart", "partition")
"""kill: SIGKILL (the supervisor restarts it); pause: SIGSTOP, SIGCONT after `duration`;
restart: SIGTERM then start again (a clean restart); partition: the process cut off from its
peers for `duration` by kernel rules (k8semu.chaos.netfilter): a store replica from the other
replicas, an API server from the store, any other component from the API servers; both ways
or one way (`direction`)."""

DIRECTIONS = ("both", "out", "in")
"""Of a partition, seen from its target: both ways; "out": what it sends is lost; "in": what
it is sent is lost."""

TARGET_KINDS = ("store", "apiserver", "scheduler", "controller-manager", "kubelet", "proxy")


@dataclass(frozen=True, slots=True)
class Target:
    """A process that can be hit: its name in the cluster state, its kind (TARGET_KINDS),
    and its group (replicas of one thing: "store", "apiserver", ..., or "node/<name>")."""

    name: str
    kind: str
    group: str


@dataclass(frozen=True, slots=True)
class Fault:
    """At `at` seconds from the start, do `fault` to `target` for `duration` seconds (pause,
    partition; kill and restart are instant, the process then comes back on its own)."""

    at: float
    fault: str
    target: str
    kind: str
    duration: float
    majority_kept: bool
    direction: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanSettings:
    """`interval`: mean seconds between faults (exponentially distributed gaps, at least
    `min_gap`); `pause`: (min, max) seconds a pause or partition lasts; `recovery`: how long
    a killed or restarted process is counted as down for the majority rule; `cooldown`: the
    least time between two faults on one process. A supervisor gives up on a process that
    crashes again and again soon after each start (`launcher.maxRestarts` crashes, each within
    `launcher.backoffResetAfter` = 10 s of its start): chaos is about recovering from faults,
    not about exhausting that budget, so the default lets each process run 12 s between hits."""

    duration: float = 60.0
    interval: float = 2.0
    min_gap: float = 0.5
    pause: tuple[float, float] = (0.5, 2.0)
    recovery: float = 3.0
    cooldown: float = 12.0
    faults: tuple[str, ...] = ("kill", "pause", "restart")
    kinds: tuple[str, ...] = TARGET_KINDS

    def __post_init__(self) -> None:
        if not self.duration > 0:
            raise ValueError(f"duration: must be > 0, got {self.duration}")
        if not self.interval > 0:
            raise ValueError(f"interval: must be > 0, got {self.interval}")
        unknown = sorted(set(self.faults) - set(FAULTS))
        if unknown or not self.faults:
            raise ValueError(f"faults: unknown {unknown}; choose from {', '.join(FAULTS)}")
        unknown = sorted(set(self.kinds) - set(TARGET_KINDS))
        if unknown or not self.kinds:
            raise ValueError(f"targets: unknown {unknown}; choose from {', '.join(TARGET_KINDS)}")
        if self.cooldown < 0:
            raise ValueError(f"cooldown: must be >= 0, got {self.cooldown}")
        if not 0 < self.pause[0] <= self.pause[1]:
            raise ValueError(f"pause: need 0 < min <= max, got {self.pause}")


def make_plan(seed: int, targets: Sequence[Target], settings: PlanSettings) -> list[Fault]:
    """The faults for one run, in time order. Targets of kinds not in `settings.kinds` are
    never hit; a moment when every eligible target would break the majority rule is skipped."""
    rng = random.Random(seed)
    eligible = sorted((t for t in targets if t.kind in settings.kinds), key=lambda t: t.name)
    if not eligible:
        return []
    group_size: dict[str, int] = {}
    for t in targets:
        group_size[t.group] = group_size.get(t.group, 0) + 1
    down_until: dict[str, float] = {}  # target name -> when it is counted as back
    hit_at: dict[str, float] = {}  # target name -> when it was last hit
    plan: list[Fault] = []
    now = 0.0
    while True:
        now += max(settings.min_gap, rng.expovariate(1.0 / settings.interval))
        if now >= settings.duration:
            return plan
        fault = rng.choice(settings.faults)
        duration = (
            round(rng.uniform(*settings.pause), 3) if fault in ("pause", "partition") else 0.0
        )
        busy_for = duration if duration else settings.recovery
        candidates = []
        for t in eligible:
            if down_until.get(t.name, 0.0) > now:
                continue
            if t.name in hit_at and now - hit_at[t.name] < settings.cooldown:
                continue
            size = group_size[t.group]
            down = sum(
                1
                for other in targets
                if other.group == t.group and down_until.get(other.name, 0.0) > now
            )
            # Take this one down only if a majority of its group stays up; a group of one or
            # two cannot keep a majority without it, so it is hit only when nothing else is down.
            keeps = size - (down + 1) > size // 2
            if keeps or (size <= 2 and down == 0):
                candidates.append((t, keeps))
        if not candidates:
            continue
        target, keeps = rng.choice(candidates)
        # Drawn only for partitions, so a plan without them is the same as before they existed.
        direction = rng.choice(DIRECTIONS) if fault == "partition" else ""
        down_until[target.name] = now + busy_for
        hit_at[target.name] = now
        plan.append(
            Fault(
                at=round(now, 3),
                fault=fault,
                target=target.name,
                kind=target.kind,
                duration=duration,
                majority_kept=keeps,
                direction=direction,
            )
        )
