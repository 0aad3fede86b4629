"""Log replication and commitment: Raft paper 5.3 and 5.4, pipelining and fast back-up."""

from __future__ import annotations

import random

import pytest

from k8semu.pb.raft.raft_pb2 import (
    MSG_APP,
    MSG_APP_RESP,
    MSG_PROP,
    Entry,
    HardState,
)
from k8semu.raft import Config, ProposalDropped, Raft, StateRole

from .fuzz import heal_and_check_progress
from .network import Network, msg


def load(net: Network, node_id: int, terms: list[int], term: int, commit: int) -> None:
    """Give a node a persisted log (entry i + 1 has term terms[i]) and restart it."""
    st = net.nodes[node_id].storage
    st.entries = [
        Entry(index=i, term=t, data=f"{i}/{t}".encode()) for i, t in enumerate(terms, start=1)
    ]
    st.hard_state = HardState(term=term, commit=commit)
    net.restart(node_id)


def log_terms(net: Network, node_id: int) -> list[int | None]:
    raft = net.nodes[node_id].raft
    return [raft.log_term(i) for i in range(1, raft.last_index + 1)]


@pytest.mark.parametrize("current_term_entry_replicated", [False, True])
def test_figure_8_old_term_entry_not_committed_by_counting(
    current_term_entry_replicated: bool,
) -> None:
    """Raft paper 5.4.2 and Figure 8: a leader must not commit an entry of an earlier term
    just because a majority stores it; only entries of its own term commit by counting."""
    net = Network(5, seed=8, pre_vote=False, check_quorum=False, max_entries_per_msg=1)
    # (a) S1 leads and replicates entry 2 to S2 only.
    net.elect(1)
    net.partition([1, 2], [3, 4, 5])
    assert net.propose(1, b"a")
    net.stabilize()
    assert net.nodes[2].raft.last_index == 2
    # (b) S1 crashes; S5 wins with votes from S3 and S4 and appends entries nobody receives.
    net.crash(1)
    net.recover()
    net.filters.append(lambda m: m.type == MSG_APP and getattr(m, "from") == 5)
    net.elect(5)
    assert net.propose(5, b"b")
    net.crash(5)
    net.recover()
    t5 = net.nodes[5].raft.term
    # (c) S1 restarts, wins a later term and replicates its old entry 2 to S3 and S4, but its
    # own no-op (entry 3) reaches nobody: appends carrying it are dropped once the receiver
    # holds entry 2 (before that they are rejected, which makes S1 back up to entry 2).
    net.restart(1)
    net.filters.append(
        lambda m: (
            m.type == MSG_APP
            and any(e.index >= 3 for e in m.entries)
            and net.nodes[m.to].raft.last_index >= 2
        )
    )
    net.elect(1)
    t1 = net.nodes[1].raft.term
    assert t1 > t5
    assert [log_terms(net, i)[:2] for i in (1, 2, 3, 4)] == [[1, 1]] * 4
    assert net.nodes[1].raft.commit == 1, "entry 2 is on a majority but of an old term"
    if not current_term_entry_replicated:
        # (d) S1 crashes; S5 has the more up-to-date log and overwrites entry 2 everywhere.
        net.crash(1)
        net.recover()
        net.restart(5)
        net.elect(5)
        net.restart(1)
        net.run(5)
        assert all(log_terms(net, i)[1] == t5 for i in net.nodes)
        assert not any(d == b"a" for node in net.nodes.values() for _, d in node.sm)
    else:
        # (e) S1 gets its own entry onto a majority first: entries 2 and 3 commit, and S5 can
        # never win again.
        net.recover()
        net.run(3)  # heartbeat replies reveal the lost appends; they are resent
        assert net.nodes[1].raft.commit == 3
        net.crash(1)
        net.restart(5)
        net.run(60)
        leader = net.leader()
        assert leader is not None and leader != 5
        for node in net.nodes.values():
            if node.up:
                assert [d for _, d in node.sm][:3] == [b"", b"a", b""]


@pytest.mark.parametrize(
    "follower_terms",
    [
        [1] * 10 + [2] * 190 + [3] * 200,  # longer conflicting log
        [1] * 10 + [2] * 10,  # shorter conflicting log
        [1] * 10 + [2] * 5 + [3] * 30,  # several stale terms
    ],
)
def test_fast_backup_skips_a_term_per_round_trip(follower_terms: list[int]) -> None:
    """Raft paper 5.3, closing optimization: with the conflicting term in the rejection
    the leader skips whole terms, so a follower with hundreds of conflicting entries converges
    in a couple of round trips instead of one per entry."""
    net = Network(3, seed=21, max_entries_per_msg=1000)
    leader_terms = [1] * 10 + [4] * 40 + [5] * 10
    load(net, 1, leader_terms, term=5, commit=10)
    load(net, 2, leader_terms, term=5, commit=10)
    load(net, 3, follower_terms, term=5, commit=10)
    net.record = True
    net.elect(1)
    rejections = [m for m in net.sent if m.type == MSG_APP_RESP and m.reject]
    appends_to_3 = [m for m in net.sent if m.type == MSG_APP and m.to == 3]
    assert len(rejections) <= 2
    assert len(appends_to_3) <= 4
    assert log_terms(net, 3) == log_terms(net, 1)
    assert net.nodes[3].raft.commit == net.nodes[1].raft.commit == len(leader_terms) + 1


def test_unreliable_network_converges() -> None:
    """Raft paper 5.3: AppendEntries retries make logs converge despite drops, duplicates and
    reordering; the safety checker verifies every step."""
    net = Network(5, seed=42, drop=0.15, dup=0.1, max_delay=6)
    rng = random.Random(42)
    for i in range(300):
        net.run(1)
        if i % 2 == 0:
            net.propose(rng.randrange(1, 6), f"w{i}".encode())
    heal_and_check_progress(net, b"final")
    assert net.checker is not None and net.checker.max_commit > 100


def test_pipelining_bounded_by_inflight_window_and_message_size() -> None:
    """Replicate state streams entries without waiting, up to max_inflight MSG_APPs of at most
    max_entries_per_msg entries each."""
    net = Network(3, seed=3, max_inflight=2, max_entries_per_msg=10)
    net.elect(1)
    raft = net.nodes[1].raft
    raft.propose_batch([f"p{i}".encode() for i in range(100)])
    rd = raft.ready()
    apps = [m for m in rd.messages if m.type == MSG_APP]
    assert sorted(m.to for m in apps) == [2, 2, 3, 3]
    assert all(len(m.entries) == 10 for m in apps)
    net._handle_ready(net.nodes[1], rd)
    net.stabilize()
    assert all(node.raft.commit == 101 for node in net.nodes.values())


def test_message_byte_limit() -> None:
    net = Network(3, seed=3, max_bytes_per_msg=4096)
    net.elect(1)
    raft = net.nodes[1].raft
    raft.propose_batch([bytes(1000)] * 20)
    apps = [m for m in raft.ready().messages if m.type == MSG_APP]
    assert apps and all(1 <= len(m.entries) <= 4 for m in apps)


def test_proposals_of_one_cycle_share_a_message() -> None:
    """Group commit: proposals made between two Readys travel in one MSG_APP per follower."""
    net = Network(3, seed=3)
    net.elect(1)
    raft = net.nodes[1].raft
    for i in range(50):
        raft.propose(f"p{i}".encode())
    rd = raft.ready()
    apps = [m for m in rd.messages if m.type == MSG_APP]
    assert sorted(m.to for m in apps) == [2, 3]
    assert all(len(m.entries) == 50 for m in apps)
    assert len(rd.entries) == 50


def test_follower_forwards_proposals_to_leader() -> None:
    net = Network(3, seed=4)
    net.elect(2)
    net.record = True
    assert net.propose(3, b"via-follower")
    (prop,) = [m for m in net.sent if m.type == MSG_PROP]
    assert prop.to == 2 and [e.data for e in prop.entries] == [b"via-follower"]
    net.stabilize()
    assert all(node.sm[-1][1] == b"via-follower" for node in net.nodes.values())


def test_proposal_without_leader_is_dropped() -> None:
    raft = Raft(Config(id=1, voters=(1, 2, 3), pre_vote=False), random.Random(1))
    with pytest.raises(ProposalDropped):
        raft.propose(b"x")
    with pytest.raises(ProposalDropped):
        raft.read_index(b"ctx")
    for _ in range(20):
        raft.tick()
    assert raft.role is StateRole.CANDIDATE
    with pytest.raises(ProposalDropped):
        raft.propose_batch([b"x", b"y"])


def test_ready_entries_rewrite_conflicting_suffix() -> None:
    """Ready.entries may start at or below the last stored index; the driver truncates there.
    Committed entries are never included before they are durable."""
    stored = [Entry(index=1, term=1), Entry(index=2, term=1), Entry(index=3, term=2)]
    raft = Raft(
        Config(id=2, voters=(1, 2, 3)),
        random.Random(1),
        hard_state=HardState(term=2, commit=1),
        entries=stored,
        applied=1,
    )
    assert not raft.has_ready()
    new = [Entry(index=3, term=3, data=b"c"), Entry(index=4, term=3, data=b"d")]
    raft.step(msg(MSG_APP, 1, 2, term=3, index=2, log_term=1, entries=new, commit=4))
    rd = raft.ready()
    assert [(e.index, e.term) for e in rd.entries] == [(3, 3), (4, 3)]
    assert [e.index for e in rd.committed_entries] == [2, 3, 4]
    assert rd.hard_state == HardState(term=3, vote=0, commit=4)
    assert rd.must_sync
    (resp,) = rd.messages
    assert resp.type == MSG_APP_RESP and resp.index == 4 and not resp.reject
    raft.advance(rd)
    assert not raft.has_ready()
    assert raft.applied == 4


def test_stale_append_does_not_truncate() -> None:
    """Raft paper 5.3: an old, reordered AppendEntries never removes entries that match."""
    raft = Raft(Config(id=2, voters=(1, 2, 3)), random.Random(1))
    ents = [Entry(index=i, term=1, data=b"%d" % i) for i in range(1, 6)]
    raft.step(msg(MSG_APP, 1, 2, term=1, index=0, log_term=0, entries=ents, commit=0))
    raft.step(msg(MSG_APP, 1, 2, term=1, index=0, log_term=0, entries=ents[:2], commit=0))
    assert raft.last_index == 5
    resps = [m.index for m in raft.ready().messages]
    assert resps == [5, 2]


def test_leader_ignores_acks_for_entries_it_never_had() -> None:
    net = Network(3, seed=5)
    net.elect(1)
    leader = net.nodes[1].raft
    leader.step(msg(MSG_APP_RESP, 2, 1, term=leader.term, index=10**9))
    net.process()
    assert leader.commit == leader.last_index == 1


def test_heartbeat_commit_never_beyond_follower_match() -> None:
    """A follower whose log is not yet known to match must not commit from a heartbeat."""
    net = Network(3, seed=6)
    net.elect(1)
    net.isolate(3)
    for i in range(5):
        net.propose(1, b"x%d" % i)
    net.stabilize()
    net.recover()
    net.filters.append(lambda m: m.type == MSG_APP)
    net.run(3)
    assert net.nodes[3].raft.commit == 1
    net.recover()
    net.run(3)
    assert net.nodes[3].raft.commit == 6
