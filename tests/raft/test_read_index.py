"""Linearizable reads without log writes: Raft thesis 6.4 (ReadIndex)."""

from __future__ import annotations

import random

import pytest

from k8semu.pb.raft.raft_pb2 import MSG_APP, MSG_HEARTBEAT, MSG_READ_INDEX
from k8semu.raft import Config, Raft, ReadState, StateRole

from .network import Network


def acked_index(net: Network, leader: int, n: int) -> int:
    """Commit n writes and return the highest index acknowledged to a client (applied on the
    leader)."""
    for i in range(n):
        assert net.propose(leader, f"w{i}".encode())
    net.stabilize()
    return net.nodes[leader].applied


def test_leader_read_waits_for_heartbeat_quorum() -> None:
    """Thesis 6.4 steps 2-4: record the commit index, confirm leadership with a heartbeat
    round, then answer with the recorded index."""
    net = Network(3, seed=1)
    net.elect(1)
    acked = acked_index(net, 1, 5)
    net.read_index(1, b"r1")
    assert net.nodes[1].read_states == []  # not before the heartbeat round is acknowledged
    net.stabilize()
    (rs,) = net.nodes[1].read_states
    assert rs == ReadState(acked, b"r1")


@pytest.mark.parametrize("minority", [[1], [1, 2]])
def test_deposed_leader_never_answers_reads(minority: list[int]) -> None:
    """A deposed leader that does not know it yet must not serve a stale read: heartbeat acks
    from a minority (here: itself, or itself and one follower of five) are not enough."""
    net = Network(5, seed=2, check_quorum=False)
    net.elect(1)
    acked_index(net, 1, 2)
    net.partition(minority, [i for i in net.nodes if i not in minority])
    net.elect(3)
    acked_index(net, 3, 3)
    net.read_index(1, b"stale?")
    net.run(10)
    assert net.nodes[1].raft.role is StateRole.LEADER  # still believes it leads
    assert net.nodes[1].read_states == []
    net.recover()
    net.run(10)
    assert net.nodes[1].read_states == []  # dropped when it stepped down


def test_follower_read_is_answered_by_leader() -> None:
    """Thesis 6.4: a follower asks the leader for its read index and serves the read once
    it has applied that far."""
    net = Network(3, seed=3)
    net.elect(1)
    acked = acked_index(net, 1, 7)
    net.record = True
    net.read_index(3, b"f1")
    net.stabilize()
    assert [m.to for m in net.sent if m.type == MSG_READ_INDEX] == [1]
    (rs,) = net.nodes[3].read_states
    assert rs.context == b"f1" and rs.index >= acked
    assert net.nodes[3].applied >= rs.index


def test_reads_of_one_cycle_share_one_heartbeat_round() -> None:
    net = Network(5, seed=4)
    net.elect(1)
    acked = acked_index(net, 1, 3)
    raft = net.nodes[1].raft
    for i in range(10):
        raft.read_index(b"r%d" % i)
    rd = raft.ready()
    beats = [m for m in rd.messages if m.type == MSG_HEARTBEAT]
    assert sorted(m.to for m in beats) == [2, 3, 4, 5]
    net._handle_ready(net.nodes[1], rd)
    net.stabilize()
    states = net.nodes[1].read_states
    assert [s.context for s in states] == [b"r%d" % i for i in range(10)]
    assert all(s.index >= acked for s in states)


def test_new_leader_holds_reads_until_its_term_commits() -> None:
    """Thesis 6.4 step 1: a fresh leader may not know the latest commit index until the no-op
    of its term is committed; reads wait for that."""
    net = Network(3, seed=5)
    net.elect(1)
    acked = acked_index(net, 1, 4)
    net.crash(1)
    net.filters.append(lambda m: m.type == MSG_APP)
    net.elect(2)
    leader = net.nodes[2].raft
    assert leader.commit < leader.last_index  # its no-op is not committed
    net.read_index(2, b"early")
    net.run(3)
    assert net.nodes[2].read_states == []
    net.recover()
    net.run(3)
    (rs,) = net.nodes[2].read_states
    assert rs.index >= acked + 1  # covers the new no-op too


def test_single_node_answers_immediately() -> None:
    raft = Raft(Config(id=1, voters=(1,)), random.Random(1))
    raft.tick()
    raft.propose(b"x")
    raft.read_index(b"now")
    rd = raft.ready()
    assert rd.read_states == [ReadState(2, b"now")]


def test_reads_across_random_schedule_are_linearizable() -> None:
    """Every answered read index covers every write acknowledged before the read started."""
    rng = random.Random(6)
    net = Network(5, seed=6, drop=0.05, max_delay=3)
    pending: dict[bytes, tuple[int, int]] = {}  # ctx -> (node, acked index at request time)
    answered = 0
    for step in range(600):
        net.run(1)
        leader = net.leader()
        if leader is not None and step % 3 == 0:
            net.propose(leader, f"w{step}".encode())
        acked = max(node.applied for node in net.nodes.values())
        node_id = rng.randrange(1, 6)
        ctx = f"r{step}".encode()
        if net.read_index(node_id, ctx):
            pending[ctx] = (node_id, acked)
        for node in net.nodes.values():
            for rs in node.read_states:
                origin, floor = pending.pop(rs.context)
                assert origin == node.id
                assert rs.index >= floor
                answered += 1
            node.read_states.clear()
        if step % 100 == 50:
            net.isolate(rng.randrange(1, 6))
        if step % 100 == 80:
            net.recover()
    assert answered > 100


def test_reads_pending_at_a_leader_end_with_its_term() -> None:
    """The leader's state (its ReadIndex queue among it) is dropped when it steps down: a
    leader cut off by check-quorum and elected again later never answers the old read."""
    net = Network(3, seed=4, check_quorum=True)
    net.elect(1)
    acked_index(net, 1, 2)
    net.isolate(1)
    net.read_index(1, b"old")
    for _ in range(4 * net.nodes[1].config.election_tick):
        if net.nodes[1].raft.role is not StateRole.LEADER:
            break
        net.tick([1])
        net.stabilize()
    assert net.nodes[1].raft.role is not StateRole.LEADER  # check-quorum: no quorum heard
    net.recover()
    net.elect(1)
    net.read_index(1, b"new")
    net.run(10)
    assert [rs.context for rs in net.nodes[1].read_states] == [b"new"]
