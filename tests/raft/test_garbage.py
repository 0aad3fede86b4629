"""Bad input from the network never raises (design: a component never crashes on bad input)."""

from __future__ import annotations

import random

import pytest

from k8semu.pb.raft.raft_pb2 import (
    MSG_APP,
    MSG_APP_RESP,
    MSG_HEARTBEAT_RESP,
    MSG_PROP,
    MSG_SNAP,
    Entry,
    Message,
    SnapshotMetadata,
)
from k8semu.raft import Config, Raft, StateRole

U64 = (1 << 64) - 1


def pick(rng: random.Random, near: int) -> int:
    return rng.choice([0, 1, near, near + 1, max(0, near - 1), rng.randrange(1000), U64, 1 << 62])


def garbage(rng: random.Random, ids: list[int], term: int, last: int) -> Message:
    m = Message(
        type=rng.choice([*range(14), 99]),
        to=rng.choice([*ids, 0, 77]),
        term=pick(rng, term),
        log_term=pick(rng, term),
        index=pick(rng, last),
        commit=pick(rng, last),
        reject=rng.random() < 0.5,
        reject_hint=pick(rng, last),
        reject_term=pick(rng, term),
        context=rng.randbytes(rng.choice([0, 3, 8])),
    )
    setattr(m, "from", rng.choice([*ids, 0, 77]))
    if rng.random() < 0.5:
        start = pick(rng, last) % (1 << 62)
        for i in range(rng.randrange(4)):
            m.entries.append(
                Entry(index=rng.choice([start + i, pick(rng, last)]), term=pick(rng, term))
            )
    if rng.random() < 0.3:
        m.snapshot.CopyFrom(SnapshotMetadata(index=pick(rng, last), term=pick(rng, term)))
    return m


@pytest.mark.parametrize("seed", range(4))
def test_random_garbage_never_raises(seed: int) -> None:
    rng = random.Random(seed)
    ids = [1, 2, 3]
    nodes = {i: Raft(Config(id=i, voters=tuple(ids)), random.Random(seed + i)) for i in ids}
    inflight: list[Message] = []
    for step in range(3000):
        node = nodes[rng.choice(ids)]
        r = rng.random()
        if r < 0.4:
            node.step(garbage(rng, ids, node.term, node.last_index))
        elif r < 0.7 and inflight:
            m = inflight.pop(rng.randrange(len(inflight)))
            nodes[m.to].step(m)
        elif r < 0.9:
            node.tick()
        else:
            if node.leader:
                node.propose(b"p%d" % step)
            if node.leader and rng.random() < 0.3:
                node.read_index(b"r%d" % step)
            if node.role is StateRole.LEADER and rng.random() < 0.2:
                node.report_snapshot(rng.choice(ids), rng.random() < 0.5)
                node.report_unreachable(rng.choice(ids))
        for n in nodes.values():
            while n.has_ready():
                rd = n.ready()
                inflight.extend(m for m in rd.messages if m.to in nodes)
                n.advance(rd)
        del inflight[:-200]


@pytest.mark.parametrize(
    "fields",
    [
        {"type": MSG_APP, "term": U64},
        {"type": MSG_APP, "index": U64, "log_term": 1},
        {"type": MSG_APP_RESP, "index": U64},
        {"type": MSG_APP_RESP, "reject": True, "index": 1, "reject_hint": U64, "reject_term": U64},
        {"type": MSG_HEARTBEAT_RESP, "context": b"\xff" * 8},
        {"type": MSG_PROP},
        {"type": MSG_SNAP},
    ],
)
def test_absurd_fields_are_ignored_by_leader_and_follower(fields: dict[str, object]) -> None:
    leader = Raft(Config(id=1, voters=(1,)), random.Random(1))
    leader.tick()
    for raft in (leader, Raft(Config(id=1, voters=(1, 2, 3)), random.Random(1))):
        fields = {"term": raft.term, **fields}
        m = Message(to=1, **fields)  # type: ignore[arg-type]
        setattr(m, "from", 2)
        raft.step(m)
        raft.advance(raft.ready())


def test_gapped_entries_are_ignored() -> None:
    raft = Raft(Config(id=2, voters=(1, 2, 3)), random.Random(1))
    ents = [Entry(index=1, term=1), Entry(index=3, term=1)]
    m = Message(type=MSG_APP, to=2, term=1, index=0, log_term=0, entries=ents, commit=3)
    setattr(m, "from", 1)
    raft.step(m)
    assert raft.last_index == 0 and raft.commit == 0
