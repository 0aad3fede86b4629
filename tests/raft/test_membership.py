"""Single-server membership changes (Raft thesis 4.1) in the pure core, on the simulated network:
adding and removing voters through conf-change entries, one change at a time, effective when
applied; the membership survives restarts (replayed from the log) and travels in snapshots."""

from __future__ import annotations

import random

import pytest

from k8semu.pb.raft.raft_pb2 import (
    CONF_ADD_LEARNER,
    CONF_ADD_NODE,
    CONF_REMOVE_NODE,
    CONF_UPDATE_NODE,
    ENTRY_CONF_CHANGE,
    MSG_APP_RESP,
    ConfChange,
    Entry,
    HardState,
)
from k8semu.raft import Config, Raft, StateRole, membership
from k8semu.raft.errors import ConfChangeInProgress, NotLeader

from .network import Network


def change(kind: int, node: int, context: bytes = b"") -> bytes:
    return membership.encode(
        ConfChange(id=node * 10 + kind, type=kind, node_id=node, context=context)
    )


def propose_change(net: Network, leader: int, kind: int, node: int, context: bytes = b"") -> None:
    net.nodes[leader].raft.propose_conf_change(change(kind, node, context))
    net.process()
    net.stabilize()


def committed_everywhere(net: Network, data: bytes, ids: list[int]) -> bool:
    return all(any(d == data for _, d in net.nodes[i].sm) for i in ids)


def test_add_a_voter_then_it_counts_in_the_quorum() -> None:
    net = Network(3, seed=1)
    net.elect(1)
    propose_change(net, 1, CONF_ADD_NODE, 4, b"s4")
    assert all(set(net.nodes[i].raft.members) == {1, 2, 3, 4} for i in (1, 2, 3))
    assert net.nodes[1].raft.members[4] == b"s4"
    net.join(4, (1, 2, 3, 4))
    assert net.propose(1, b"after-add")
    net.run(5)
    # The new member caught up from the leader's log, the conf change included.
    assert committed_everywhere(net, b"after-add", [1, 2, 3, 4])
    assert set(net.nodes[4].raft.members) == {1, 2, 3, 4}
    # Four voters: two are no longer a quorum.
    net.isolate(3)
    net.isolate(4)
    assert net.propose(1, b"minority")
    net.run(3)
    assert not any(d == b"minority" for _, d in net.nodes[1].sm)


def test_one_change_at_a_time_and_only_on_the_leader() -> None:
    net = Network(3, seed=2)
    net.elect(1)
    with pytest.raises(NotLeader):
        net.nodes[2].raft.propose_conf_change(change(CONF_ADD_NODE, 4))
    raft = net.nodes[1].raft
    raft.propose_conf_change(change(CONF_ADD_NODE, 4))
    with pytest.raises(ConfChangeInProgress):
        raft.propose_conf_change(change(CONF_ADD_NODE, 5))
    net.process()
    net.stabilize()
    # Applied: the next change is taken.
    raft.propose_conf_change(change(CONF_REMOVE_NODE, 4))
    net.process()
    net.stabilize()
    assert set(raft.members) == {1, 2, 3}


def test_a_new_leader_takes_no_change_before_its_log_is_applied() -> None:
    net = Network(3, seed=3)
    net.elect(1)
    # Node 2 wins, but no acknowledgement reaches it: its no-op never commits.
    net.filters.append(lambda m: m.type == MSG_APP_RESP and m.to == 2)
    net.elect(2)
    raft = net.nodes[2].raft
    assert raft.role is StateRole.LEADER
    with pytest.raises(ConfChangeInProgress):
        raft.propose_conf_change(change(CONF_ADD_NODE, 4))
    net.recover()
    net.run(3)
    raft.propose_conf_change(change(CONF_ADD_NODE, 4))


def test_remove_a_follower_shrinks_the_quorum() -> None:
    net = Network(3, seed=4)
    net.elect(1)
    propose_change(net, 1, CONF_REMOVE_NODE, 3)
    assert set(net.nodes[1].raft.members) == {1, 2}
    net.crash(3)
    assert net.propose(1, b"two-of-two")
    net.run(3)
    assert committed_everywhere(net, b"two-of-two", [1, 2])
    # The removed node never campaigns, even with no leader to hear from.
    removed = Network(3, seed=5)
    removed.elect(1)
    propose_change(removed, 1, CONF_REMOVE_NODE, 3)
    node3 = removed.nodes[3].raft
    assert 3 not in node3.members
    removed.isolate(3)
    removed.run(100)
    assert node3.role is StateRole.FOLLOWER


def test_removing_the_leader_makes_it_step_down_and_the_rest_elect() -> None:
    net = Network(3, seed=6)
    net.elect(1)
    propose_change(net, 1, CONF_REMOVE_NODE, 1)
    assert net.nodes[1].raft.role is StateRole.FOLLOWER
    net.run(60)
    leader = net.leader()
    assert leader in (2, 3)
    assert net.propose(leader, b"after")
    net.run(3)
    assert committed_everywhere(net, b"after", [2, 3])


def test_update_changes_the_context_not_the_voters() -> None:
    net = Network(3, seed=7)
    net.elect(1)
    propose_change(net, 1, CONF_UPDATE_NODE, 2, b"new-url")
    propose_change(net, 1, CONF_UPDATE_NODE, 9, b"ignored")  # not a member: nothing
    for i in (1, 2, 3):
        assert net.nodes[i].raft.members == {1: b"", 2: b"new-url", 3: b""}


def test_membership_survives_a_restart() -> None:
    net = Network(3, seed=8)
    net.elect(1)
    propose_change(net, 1, CONF_ADD_NODE, 4, b"s4")
    net.crash(2)
    net.restart(2)
    assert net.nodes[2].raft.members == {1: b"", 2: b"", 3: b"", 4: b"s4"}


def test_snapshot_carries_the_membership_to_a_joining_node() -> None:
    net = Network(3, seed=9, snapshot_every=5, keep_after_snapshot=0)
    net.elect(1)
    propose_change(net, 1, CONF_ADD_NODE, 4, b"s4")
    for i in range(20):
        assert net.propose(1, f"v{i}".encode())
    net.stabilize()
    assert net.nodes[1].raft.first_index > 2  # the conf change was compacted away
    meta = net.nodes[1].raft.snapshot_meta
    assert meta is not None and list(meta.voters) == [1, 2, 3, 4]
    # A node joining with a stale idea of the membership learns it from the snapshot.
    node4 = net.join(4, (1, 4))
    net.run(10)
    assert node4.raft.members == {1: b"", 2: b"", 3: b"", 4: b"s4"}
    assert committed_everywhere(net, b"v19", [1, 2, 3, 4])


def test_restart_starts_from_the_snapshot_membership_and_replays_the_rest() -> None:
    snap_members = {1: b"a", 2: b"b"}
    entries = [
        Entry(index=1, term=1),
        Entry(
            index=2,
            term=1,
            type=ENTRY_CONF_CHANGE,
            data=change(CONF_ADD_NODE, 3, b"c"),
        ),
        Entry(index=3, term=1, type=ENTRY_CONF_CHANGE, data=b"\xff garbage"),
    ]
    raft = Raft(
        Config(id=1, voters=(1, 2)),
        random.Random(1),
        hard_state=HardState(term=1, commit=3),
        entries=entries,
        applied=2,
        members=snap_members,
    )
    # Applied up to 2: the add of node 3 is in; the entry at 3 is garbage and changes nothing.
    assert raft.members == {1: b"a", 2: b"b", 3: b"c"}
    rd = raft.ready()
    assert rd.members is None and [e.index for e in rd.committed_entries] == [3]


def test_a_learner_is_replicated_to_but_counts_for_nothing_until_promoted() -> None:
    net = Network(3, seed=10)
    net.elect(1)
    propose_change(net, 1, CONF_ADD_LEARNER, 4, b"s4")
    assert net.nodes[1].raft.learners == {4} and 4 in net.nodes[1].raft.members
    node4 = net.join(4, (1, 2, 3, 4), learners=(4,))
    net.run(5)
    assert net.propose(1, b"to-learner")
    net.run(3)
    assert committed_everywhere(net, b"to-learner", [1, 2, 3, 4])
    assert node4.raft.learners == {4}
    # Three voters: the learner does not make two of them a quorum...
    net.isolate(3)
    net.isolate(2)
    net.cut -= {(1, 4), (4, 1)}
    assert net.propose(1, b"not-a-quorum")
    net.run(3)
    assert not any(d == b"not-a-quorum" for _, d in net.nodes[1].sm)
    # ...and it never campaigns, even when it hears from no leader.
    net.isolate(4)
    net.run(60, rounds_per_tick=1)
    assert node4.raft.role is StateRole.FOLLOWER
    net.recover()
    net.run(60)
    leader = net.leader()
    assert leader in (1, 2, 3)
    # Promoted (an add of the learner), it votes and counts.
    propose_change(net, leader, CONF_ADD_NODE, 4, b"s4")
    assert node4.raft.learners == frozenset() and net.nodes[leader].raft.learners == frozenset()
    others = [i for i in (1, 2, 3) if i != leader]
    net.isolate(others[0])
    assert net.propose(leader, b"three-of-four")
    net.run(3)
    assert committed_everywhere(net, b"three-of-four", [leader, others[1], 4])


def test_a_voter_is_never_made_a_learner_and_learners_survive_snapshots() -> None:
    net = Network(3, seed=11, snapshot_every=5, keep_after_snapshot=0)
    net.elect(1)
    propose_change(net, 1, CONF_ADD_LEARNER, 2)  # 2 is a voter: nothing changes
    assert net.nodes[1].raft.learners == frozenset()
    propose_change(net, 1, CONF_ADD_LEARNER, 4, b"s4")
    for i in range(12):
        assert net.propose(1, f"v{i}".encode())
    net.stabilize()
    meta = net.nodes[1].raft.snapshot_meta
    assert meta is not None and list(meta.voters) == [1, 2, 3]
    assert [m.id for m in meta.members if m.learner] == [4]
    node4 = net.join(4, (1, 4))
    net.run(10)
    assert node4.raft.learners == {4} and set(node4.raft.members) == {1, 2, 3, 4}
