"""Randomized safety: thousands of seeded schedules with drops, duplicates, reordering,
partitions, crashes and restarts, proposals and reads.

After every Ready the network's SafetyChecker asserts the properties of Raft paper Figure 3:
election safety, log matching, leader completeness and state-machine safety; each schedule ends
by healing the cluster and requiring progress (a new entry applied on every node).

A failure names its seed; reproduce with ``run_schedule(seed)`` from ``tests/raft/fuzz.py``.
Scale up locally with ``RAFT_FUZZ_SEEDS=20000 RAFT_FUZZ_STEPS=3000``.
"""

from __future__ import annotations

import os

import pytest

from .fuzz import run_schedule

SEEDS = int(os.environ.get("RAFT_FUZZ_SEEDS", "2000"))
STEPS = int(os.environ.get("RAFT_FUZZ_STEPS", "600"))
CHUNKS = 8


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_schedules_are_safe_and_make_progress(chunk: int) -> None:
    leaders = 0
    for seed in range(chunk, SEEDS, CHUNKS):
        result = run_schedule(seed, steps=STEPS)
        leaders += result.leaders
    # The schedules must actually exercise elections, not idle.
    assert leaders > SEEDS // CHUNKS
