"""Leader election: Raft paper 5.2; pre-vote (thesis 9.6); check-quorum (thesis 6.2) and the
leader lease against disruptive servers (thesis 4.2.3)."""

from __future__ import annotations

import random

import pytest

from k8semu.pb.raft.raft_pb2 import (
    MSG_APP,
    MSG_PRE_VOTE,
    MSG_PRE_VOTE_RESP,
    MSG_VOTE,
    MSG_VOTE_RESP,
    Entry,
    HardState,
)
from k8semu.raft import Config, Raft, StateRole

from .network import Network, leaders, msg


@pytest.mark.parametrize("n", [1, 3, 5])
@pytest.mark.parametrize("pre_vote", [True, False])
def test_exactly_one_leader_is_elected(n: int, pre_vote: bool) -> None:
    """Raft paper 5.2: an election ends with one leader that every node follows."""
    net = Network(n, seed=n, pre_vote=pre_vote)
    net.run(60)
    (leader,) = leaders(net)
    term = net.nodes[leader].raft.term
    for node in net.nodes.values():
        assert node.raft.leader == leader
        assert node.raft.term == term
    # The new leader's no-op entry (Raft paper 8) is committed everywhere.
    assert all(node.raft.commit >= 1 for node in net.nodes.values())


def test_randomized_election_timeout_range() -> None:
    """Raft paper 5.2: a follower times out after [election_tick, 2 * election_tick) ticks."""
    seen = set()
    for seed in range(200):
        raft = Raft(Config(id=1, voters=(1, 2, 3), election_tick=10), random.Random(seed))
        ticks = 0
        while raft.role is StateRole.FOLLOWER:
            raft.tick()
            ticks += 1
        seen.add(ticks)
    assert min(seen) == 10 and max(seen) == 19
    assert len(seen) == 10


def test_reelection_after_leader_crash() -> None:
    """Raft paper 5.2: followers that stop hearing from the leader elect a new one."""
    net = Network(5, seed=3)
    net.run(60)
    (old,) = leaders(net)
    old_term = net.nodes[old].raft.term
    net.crash(old)
    net.run(60)
    (new,) = leaders(net)
    assert new != old
    assert net.nodes[new].raft.term > old_term
    assert net.propose(new, b"after-crash")
    net.run(5)
    assert all(node.sm[-1][1] == b"after-crash" for node in net.nodes.values() if node.up)
    net.restart(old)
    net.run(10)
    assert net.nodes[old].raft.leader == new
    assert net.nodes[old].sm == net.nodes[new].sm


@pytest.mark.parametrize("check_quorum", [True, False])
def test_partitioned_leader_rejoins_and_steps_down(check_quorum: bool) -> None:
    """Raft paper 5.3/5.4: a leader cut off from the majority cannot commit; when it rejoins,
    the higher term makes it step down and its uncommitted entries are overwritten."""
    net = Network(5, seed=5, check_quorum=check_quorum)
    net.elect(1)
    assert net.propose(1, b"committed")
    net.stabilize()
    committed = net.nodes[1].raft.commit
    net.partition([1, 2], [3, 4, 5])
    for i in range(3):
        assert net.propose(1, f"lost-{i}".encode())
    net.stabilize()
    assert net.nodes[1].raft.commit == committed  # no quorum, nothing commits
    net.elect(3)
    assert net.propose(3, b"majority")
    net.stabilize()
    if check_quorum:
        net.run(25)  # thesis 6.2: the isolated leader notices it lost the quorum
        assert net.nodes[1].raft.role is not StateRole.LEADER
    net.recover()
    net.run(10)
    assert leaders(net) == [3]
    datas = [d for _, d in net.nodes[1].sm]
    assert b"majority" in datas
    assert not any(d.startswith(b"lost-") for node in net.nodes.values() for _, d in node.sm)
    assert all(node.sm == net.nodes[3].sm for node in net.nodes.values())
    # The stale entries are gone from the old leader's log, not just unapplied.
    assert net.nodes[1].raft.last_index == net.nodes[3].raft.last_index
    for index in range(1, net.nodes[3].raft.last_index + 1):
        assert net.nodes[1].raft.log_term(index) == net.nodes[3].raft.log_term(index)


def test_pre_vote_keeps_rejoining_node_from_disrupting() -> None:
    """Thesis 9.6: a partitioned node's pre-votes fail, so its term does not grow and it does
    not depose the leader when it rejoins."""
    net = Network(3, seed=7, pre_vote=True)
    net.elect(1)
    term = net.nodes[1].raft.term
    net.isolate(3)
    net.run(100)
    assert net.nodes[3].raft.term == term
    assert net.nodes[3].raft.role is StateRole.PRE_CANDIDATE
    net.recover()
    net.run(20)
    assert leaders(net) == [1]
    assert all(node.raft.term == term for node in net.nodes.values())
    assert net.nodes[3].raft.leader == 1


def test_without_pre_vote_rejoining_node_disrupts() -> None:
    """The counterpart: plain Raft lets a rejoining node force a new election (thesis 9.6)."""
    net = Network(3, seed=7, pre_vote=False, check_quorum=False)
    net.elect(1)
    term = net.nodes[1].raft.term
    net.isolate(3)
    net.run(100)
    assert net.nodes[3].raft.term > term + 3
    net.recover()
    net.run(30)
    assert all(node.raft.term > term + 3 for node in net.nodes.values())


def test_check_quorum_leader_steps_down_when_isolated() -> None:
    """Thesis 6.2: a leader that hears from no quorum within an election timeout steps down."""
    net = Network(3, seed=9, check_quorum=True, election_tick=10)
    net.elect(1)
    net.isolate(1)
    net.run(9)
    assert net.nodes[1].raft.role is StateRole.LEADER
    net.run(12)
    assert net.nodes[1].raft.role is StateRole.FOLLOWER
    assert net.nodes[1].raft.leader == 0


def test_leader_lease_ignores_disruptive_vote_request() -> None:
    """Thesis 6.2 (with check-quorum): a node that heard from its leader within the election
    timeout neither adopts the candidate's higher term nor answers."""
    net = Network(3, seed=11, check_quorum=True, pre_vote=False)
    net.elect(1)
    follower = net.nodes[2].raft
    term = follower.term
    follower.step(msg(MSG_VOTE, 3, 2, term=term + 5, log_term=99, index=99))
    assert follower.term == term
    assert not follower.ready().messages
    # Once the leader has been silent for an election timeout, the vote is granted.
    for _ in range(10):
        follower.tick()
    follower.step(msg(MSG_VOTE, 3, 2, term=term + 5, log_term=99, index=99))
    assert follower.term == term + 5
    (resp,) = [m for m in follower.ready().messages if m.type == MSG_VOTE_RESP]
    assert not resp.reject


def fresh(voters: tuple[int, ...] = (1, 2, 3), **cfg: int | bool) -> Raft:
    return Raft(Config(id=1, voters=voters, **cfg), random.Random(1))  # type: ignore[arg-type]


def test_vote_granted_once_per_term() -> None:
    """Raft paper 5.2: each server votes for at most one candidate in a given term."""
    raft = fresh(check_quorum=False)
    raft.step(msg(MSG_VOTE, 2, 1, term=2, log_term=0, index=0))
    raft.step(msg(MSG_VOTE, 3, 1, term=2, log_term=0, index=0))
    raft.step(msg(MSG_VOTE, 2, 1, term=2, log_term=0, index=0))  # a retry is granted again
    resps = [(getattr(m, "from"), m.to, m.reject) for m in raft.ready().messages]
    assert resps == [(1, 2, False), (1, 3, True), (1, 2, False)]


def test_vote_refused_to_out_of_date_log() -> None:
    """Raft paper 5.4.1: votes go only to candidates whose log is at least as up to date."""
    entries = [Entry(term=1, index=1), Entry(term=3, index=2)]
    raft = Raft(
        Config(id=1, voters=(1, 2, 3), check_quorum=False),
        random.Random(1),
        hard_state=HardState(term=3, commit=1),
        entries=entries,
        applied=1,
    )
    cases = [(2, 5, False), (3, 1, False), (3, 2, True), (4, 1, True)]
    for n, (log_term, index, granted) in enumerate(cases):
        raft.step(msg(MSG_VOTE, 2, 1, term=10 + n, log_term=log_term, index=index))
        (resp,) = raft.ready().messages
        assert resp.reject is not granted, (log_term, index)


def test_pre_vote_does_not_change_terms() -> None:
    """Thesis 9.6: neither the pre-candidate nor the voters change their term."""
    raft = fresh()
    for _ in range(20):
        raft.tick()
    assert raft.role is StateRole.PRE_CANDIDATE
    assert raft.term == 0
    sent = raft.ready().messages
    assert {m.type for m in sent} == {MSG_PRE_VOTE}
    assert {m.term for m in sent} == {1}
    # A voter that knows no leader grants at the asked term without adopting it.
    voter = Raft(Config(id=2, voters=(1, 2, 3)), random.Random(2))
    voter.step(sent[0])
    (resp,) = voter.ready().messages
    assert resp.type == MSG_PRE_VOTE_RESP and not resp.reject and resp.term == 1
    assert voter.term == 0
    raft.step(resp)
    assert raft.role is StateRole.CANDIDATE and raft.term == 1
    assert {m.type for m in raft.ready().messages} == {MSG_VOTE}


def test_candidate_steps_down_for_leader_of_same_term() -> None:
    """Raft paper 5.2: a candidate that hears from a leader of its term becomes a follower."""
    raft = fresh(pre_vote=False)
    for _ in range(20):
        raft.tick()
    assert raft.role is StateRole.CANDIDATE
    raft.step(msg(MSG_APP, 2, 1, term=raft.term, index=0, log_term=0, commit=0))
    assert raft.role is StateRole.FOLLOWER and raft.leader == 2


def test_candidate_loses_on_quorum_of_rejections() -> None:
    raft = fresh(pre_vote=False)
    for _ in range(20):
        raft.tick()
    raft.step(msg(MSG_VOTE_RESP, 2, 1, term=raft.term, reject=True))
    assert raft.role is StateRole.CANDIDATE
    raft.step(msg(MSG_VOTE_RESP, 3, 1, term=raft.term, reject=True))
    assert raft.role is StateRole.FOLLOWER


def test_restart_keeps_term_vote_and_log() -> None:
    """Raft paper Figure 2: term, vote and log are persistent; everything else is rebuilt."""
    net = Network(3, seed=13)
    net.elect(2)
    for i in range(5):
        assert net.propose(2, f"v{i}".encode())
    net.stabilize()
    before = net.nodes[3].raft
    net.crash(3)
    net.restart(3)
    after = net.nodes[3].raft
    assert (after.term, after.last_index, after.commit) == (
        before.term,
        before.last_index,
        before.commit,
    )
    assert after.role is StateRole.FOLLOWER and after.leader == 0
    assert net.nodes[3].storage.hard_state.vote == 2
    net.run(5)
    assert net.nodes[3].sm == net.nodes[2].sm
