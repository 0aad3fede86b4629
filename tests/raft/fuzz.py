"""Random schedules for the Raft core: drops, duplicates, reordering, partitions, crashes.

``run_schedule(seed)`` is deterministic in its seed; the SafetyChecker of the network asserts
election safety, log matching, leader completeness and state-machine safety after every Ready,
and the end of each schedule checks liveness once the network is healed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from k8semu.raft import StateRole

from .network import Network


@dataclass
class ScheduleResult:
    seed: int
    leaders: int  # distinct terms with a leader
    committed: int
    heal_ticks: int


def random_network(seed: int) -> Network:
    rng = random.Random(seed)
    election_tick = rng.choice([4, 6, 10])
    return Network(
        rng.choice([3, 3, 5]),
        seed=seed,
        drop=rng.choice([0.0, 0.05, 0.2]),
        dup=rng.choice([0.0, 0.05]),
        max_delay=rng.choice([1, 2, 4, 8]),
        snapshot_every=rng.choice([0, 4, 15]),
        keep_after_snapshot=rng.choice([0, 2]),
        interleave=rng.choice([0.0, 0.0, 0.3]),
        election_tick=election_tick,
        heartbeat_tick=rng.choice([1, 1, 2]),
        pre_vote=rng.random() < 0.7,
        check_quorum=rng.random() < 0.7,
        max_inflight=rng.choice([1, 2, 16]),
        max_entries_per_msg=rng.choice([1, 3, 64]),
        max_bytes_per_msg=rng.choice([40, 1 << 20]),
    )


def run_schedule(seed: int, steps: int = 300) -> ScheduleResult:
    rng = random.Random(seed ^ 0x5EED)
    net = random_network(seed)
    ids = list(net.nodes)
    max_down = (len(ids) - 1) // 2 if rng.random() < 0.7 else len(ids)
    counter = 0
    for _ in range(steps):
        r = rng.random()
        if r < 0.30:
            net.tick()
        elif r < 0.65:
            net.deliver_round()
        elif r < 0.80:
            counter += 1
            net.propose(rng.choice(ids), f"{seed}/{counter}".encode())
        elif r < 0.82:
            node = net.nodes[rng.choice(ids)]
            if node.up:
                node.raft.report_unreachable(rng.choice(ids))
        elif r < 0.85:
            counter += 1
            net.read_index(rng.choice(ids), f"r{counter}".encode())
        elif r < 0.88:
            net.isolate(rng.choice(ids))
        elif r < 0.90:
            shuffled = rng.sample(ids, len(ids))
            cut = rng.randint(1, len(ids) - 1)
            net.partition(shuffled[:cut], shuffled[cut:])
        elif r < 0.94:
            net.recover()
        elif r < 0.97:
            down = [i for i in ids if not net.nodes[i].up]
            up = [i for i in ids if net.nodes[i].up]
            if len(down) < max_down and up:
                net.crash(rng.choice(up))
        else:
            down = [i for i in ids if not net.nodes[i].up]
            if down:
                net.restart(rng.choice(down))
    heal_ticks = heal_and_check_progress(net, f"{seed}/final".encode())
    assert net.checker is not None
    return ScheduleResult(seed, len(net.checker.leaders), net.checker.max_commit, heal_ticks)


def heal_and_check_progress(net: Network, data: bytes, max_ticks: int = 400) -> int:
    """Heal everything; a leader must then commit ``data`` and every node must apply it."""
    net.recover()
    net.drop = 0.0
    net.dup = 0.0
    for i, node in net.nodes.items():
        if not node.up:
            net.restart(i)
    proposed_at: int | None = None
    for t in range(max_ticks):
        net.run(1)
        leader = net.leader()
        if leader is None:
            continue
        # Retry now and then: a proposal can be lost with a leader that steps down.
        if (proposed_at is None or t - proposed_at > 40) and net.propose(leader, data):
            proposed_at = t
        if all(data in (d for _, d in node.sm[-8:]) for node in net.nodes.values()):
            check_logs_agree(net)
            return t
    states = {
        i: (n.raft.role.value, n.raft.term, n.raft.commit, n.applied) for i, n in net.nodes.items()
    }
    raise AssertionError(f"no progress after healing: {states}")


def check_logs_agree(net: Network) -> None:
    """All state machines hold the same entries (a prefix of the longest)."""
    sms = sorted((node.sm for node in net.nodes.values()), key=len)
    longest = sms[-1]
    for sm in sms:
        assert sm == longest[: len(sm)]
    leaders = [n for n in net.nodes.values() if n.raft.role is StateRole.LEADER]
    assert len({n.raft.term for n in leaders}) == len(leaders)
