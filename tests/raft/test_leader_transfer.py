"""Leadership transfer (Raft thesis 3.10; etcd-raft's MsgTransferLeader / MsgTimeoutNow): the
leader stops taking proposals, brings the target up to date, then tells it to campaign at once;
voters grant that campaign despite their leader lease; a transfer that does not happen within an
election timeout is aborted."""

from __future__ import annotations

import pytest

from k8semu.pb.raft.raft_pb2 import MSG_APP, MSG_TIMEOUT_NOW, MSG_VOTE
from k8semu.raft import ProposalDropped, StateRole
from k8semu.raft.errors import TransferInProgress

from .network import Network, leaders


@pytest.mark.parametrize("pre_vote", [True, False])
def test_transfer_to_up_to_date_follower(pre_vote: bool) -> None:
    """The target campaigns at once (no pre-vote, no election timeout) and wins while the
    other follower still holds a fresh lease of the old leader."""
    net = Network(3, seed=11, pre_vote=pre_vote, check_quorum=True)
    net.elect(1)
    assert net.propose(1, b"before")
    net.stabilize()
    term = net.nodes[1].raft.term
    net.record = True
    net.nodes[1].raft.transfer_leader(2)
    net.process()
    net.stabilize()  # no ticks: the election happens on messages alone
    assert leaders(net) == [2]
    assert net.nodes[2].raft.term == term + 1
    assert all(n.raft.leader == 2 for n in net.nodes.values())
    votes = [m for m in net.sent if m.type == MSG_VOTE]
    assert votes and all(m.leader_transfer for m in votes)
    assert net.propose(2, b"after")
    net.stabilize()
    assert all([d for _, d in n.sm][-1] == b"after" for n in net.nodes.values())


def test_transfer_to_lagging_follower_catches_it_up_first() -> None:
    """Entries the target lacks are sent before TimeoutNow, so it can win the vote and no
    committed entry is lost."""
    net = Network(3, seed=12)
    net.elect(1)
    net.isolate(3)
    for i in range(20):
        assert net.propose(1, f"e{i}".encode())
    net.stabilize()
    assert net.nodes[3].raft.last_index < net.nodes[1].raft.last_index
    net.recover()
    net.record = True
    net.nodes[1].raft.transfer_leader(3)
    net.process()
    # A few heartbeats (fewer than an election timeout): the probe lost during the isolation
    # is answered and the catch-up proceeds.
    net.run(5)
    assert leaders(net) == [3]
    timeout_now = [i for i, m in enumerate(net.sent) if m.type == MSG_TIMEOUT_NOW]
    apps = [i for i, m in enumerate(net.sent) if m.type == MSG_APP and m.to == 3 and m.entries]
    assert len(timeout_now) == 1 and apps and max(apps) < timeout_now[0]
    data = [d for _, d in net.nodes[3].sm]
    assert [f"e{i}".encode() for i in range(20)] == [d for d in data if d.startswith(b"e")]


def test_proposals_refused_during_transfer_and_accepted_after_abort() -> None:
    """While the target is unreachable the leader refuses proposals (fail fast, nothing is
    appended) and forwarded ones are dropped; after an election timeout the transfer aborts
    and the leader takes proposals again."""
    net = Network(3, seed=13, election_tick=10)
    net.elect(1)
    net.isolate(3)
    leader = net.nodes[1].raft
    leader.transfer_leader(3)
    assert leader.transferee == 3
    last = leader.last_index
    with pytest.raises(TransferInProgress):
        leader.propose(b"refused")
    assert isinstance(TransferInProgress("x"), ProposalDropped)
    assert net.propose(2, b"forwarded")  # node 2 forwards it; the leader drops it
    net.stabilize()
    assert leader.last_index == last
    for _ in range(9):
        net.tick([1])
        net.stabilize()
    assert leader.transferee == 3  # not yet an election timeout
    net.tick([1])
    net.stabilize()
    assert leader.transferee == 0 and leader.role is StateRole.LEADER
    assert net.propose(1, b"accepted")
    net.stabilize()
    assert [d for _, d in net.nodes[2].sm][-1] == b"accepted"


@pytest.mark.parametrize("target", [1, 9])
def test_transfer_to_self_or_non_member_is_ignored(target: int) -> None:
    net = Network(3, seed=14)
    net.elect(1)
    net.record = True
    net.nodes[1].raft.transfer_leader(target)
    assert net.nodes[1].raft.transferee == 0
    net.process()
    net.stabilize()
    assert leaders(net) == [1]
    assert not [m for m in net.sent if m.type == MSG_TIMEOUT_NOW]
    assert net.propose(1, b"still leader")


def test_transfer_asked_of_a_follower_is_ignored() -> None:
    net = Network(3, seed=15)
    net.elect(1)
    net.nodes[2].raft.transfer_leader(3)
    net.process()
    net.stabilize()
    assert leaders(net) == [1]


def test_timeout_now_from_a_non_leader_is_ignored() -> None:
    """Only the current leader can make a follower skip its election timeout."""
    net = Network(3, seed=16)
    net.elect(1)
    term = net.nodes[3].raft.term
    from k8semu.pb.raft.raft_pb2 import Message

    net.nodes[3].raft.step(
        Message(type=MSG_TIMEOUT_NOW, to=3, term=term, **{"from": 2})  # type: ignore[arg-type]
    )
    net.process()
    net.stabilize()
    assert leaders(net) == [1] and net.nodes[3].raft.term == term


def test_leader_lease_still_blocks_ordinary_campaigns() -> None:
    """The lease exemption is for flagged (transfer) votes only: a node that campaigns on its
    own with check-quorum on is ignored while the leader is healthy."""
    net = Network(3, seed=17, pre_vote=False, check_quorum=True)
    net.elect(1)
    raft3 = net.nodes[3].raft
    for _ in range(raft3._randomized_timeout):
        net.tick([3])
    net.stabilize()
    assert net.nodes[2].raft.leader == 1 and net.nodes[2].raft.term < raft3.term


def test_repeated_transfers_under_loss_stay_safe() -> None:
    """Transfers back and forth with dropped and delayed messages: the safety checker sees
    every Ready; one leader per term, no committed entry lost."""
    net = Network(5, seed=18, drop=0.05, max_delay=3)
    net.run(60)
    committed = 0
    for round_ in range(30):
        net.run(3)
        lead = net.leader()
        if lead is None:
            continue
        net.propose(lead, f"r{round_}".encode())
        net.nodes[lead].raft.transfer_leader((lead % 5) + 1)
        net.process()
        committed = max(committed, max(n.raft.commit for n in net.nodes.values()))
    net.drop = 0.0
    net.run(60)
    lead = net.leader()
    assert lead is not None
    assert net.propose(lead, b"final")
    net.run(20)
    sms = [n.sm for n in net.nodes.values()]
    assert all(sm == sms[0] for sm in sms) and len(sms[0]) >= committed
