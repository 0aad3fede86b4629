"""Log compaction and InstallSnapshot: Raft paper 7, thesis chapter 5."""

from __future__ import annotations

import random

from k8semu.pb.raft.raft_pb2 import (
    MSG_APP_RESP,
    MSG_SNAP,
    Entry,
    HardState,
    Message,
    SnapshotMetadata,
)
from k8semu.raft import Config, Raft

from .network import Network, Node, msg


def lagging_cluster(seed: int) -> Network:
    """Node 3 is down while the leader commits and compacts past everything node 3 has."""
    net = Network(3, seed=seed, snapshot_every=10, keep_after_snapshot=0)
    net.elect(1)
    net.crash(3)
    for i in range(45):
        assert net.propose(1, f"v{i}".encode())
    net.stabilize()
    leader = net.nodes[1].raft
    assert leader.snapshot_meta is not None and leader.first_index > 2
    return net


def test_snapshot_installed_on_lagging_follower_after_compaction() -> None:
    """Raft paper 7: when the leader no longer has the entries a follower needs, it sends one
    InstallSnapshot; the follower resets its log to it and catches up from there."""
    net = lagging_cluster(seed=1)
    net.record = True
    net.restart(3)
    net.run(10)
    snaps = [m for m in net.sent if m.type == MSG_SNAP]
    assert len(snaps) == 1
    follower = net.nodes[3]
    assert follower.storage.snapshot is not None
    assert follower.storage.snapshot.index == snaps[0].snapshot.index
    assert follower.sm == net.nodes[1].sm
    assert follower.raft.commit == net.nodes[1].raft.commit
    # The follower answered with the snapshot index, and then replication resumed.
    acks = [m for m in net.sent if m.type == MSG_APP_RESP and getattr(m, "from") == 3]
    assert acks[0].index == snaps[0].snapshot.index and not acks[0].reject
    assert net.propose(1, b"after")
    net.stabilize()
    assert follower.sm[-1][1] == b"after"


def test_crash_during_snapshot_install_still_converges() -> None:
    """A follower that crashes after receiving the snapshot but before persisting it restarts
    from its old state; the leader notices and sends the snapshot again."""
    net = lagging_cluster(seed=2)
    crashed: list[int] = []

    def crash_on_snapshot(node: Node, m: Message) -> None:
        if m.type == MSG_SNAP and not crashed:
            crashed.append(node.id)
            net.crash(node.id)

    net.after_step = crash_on_snapshot
    net.restart(3)
    net.run(5)
    assert crashed == [3]
    assert net.nodes[3].storage.snapshot is None  # never persisted
    net.restart(3)
    net.run(20)
    assert net.delivered[MSG_SNAP] == 2
    assert net.nodes[3].sm == net.nodes[1].sm


def test_failed_snapshot_transfer_is_retried() -> None:
    """report_snapshot(ok=False) returns the follower to probing; the next heartbeat reply
    triggers a new transfer."""
    net = lagging_cluster(seed=3)
    failures = [0]

    def fail_three(m: Message) -> bool:
        if m.type == MSG_SNAP and failures[0] < 3:
            failures[0] += 1
            return True
        return False

    net.filters.append(fail_three)
    net.restart(3)
    net.run(30)
    assert failures[0] == 3
    assert net.delivered[MSG_SNAP] == 1
    assert net.nodes[3].sm == net.nodes[1].sm


def follower_with_log(last: int, commit: int) -> Raft:
    entries = [Entry(index=i, term=1, data=b"%d" % i) for i in range(1, last + 1)]
    return Raft(
        Config(id=2, voters=(1, 2, 3)),
        random.Random(1),
        hard_state=HardState(term=1, commit=commit),
        entries=entries,
        applied=commit,
    )


def snap_msg(index: int, term: int) -> Message:
    meta = SnapshotMetadata(index=index, term=term, voters=[1, 2, 3])
    return msg(MSG_SNAP, 1, 2, term=1, snapshot=meta)


def test_snapshot_matching_own_log_only_fast_forwards_commit() -> None:
    raft = follower_with_log(last=5, commit=2)
    raft.step(snap_msg(4, 1))
    rd = raft.ready()
    assert rd.snapshot is None
    assert raft.commit == 4 and raft.last_index == 5
    assert [e.index for e in rd.committed_entries] == [3, 4]
    (resp,) = rd.messages
    assert resp.type == MSG_APP_RESP and resp.index == 4


def test_snapshot_replaces_conflicting_log() -> None:
    raft = follower_with_log(last=5, commit=2)
    raft.step(snap_msg(8, 1))
    rd = raft.ready()
    assert rd.snapshot is not None and rd.snapshot.index == 8
    assert rd.committed_entries == [] and rd.entries == []
    assert rd.hard_state is not None and rd.hard_state.commit == 8
    assert (raft.first_index, raft.last_index, raft.commit) == (9, 8, 8)
    (resp,) = rd.messages
    assert resp.index == 8
    raft.advance(rd)
    assert raft.applied == 8 and not raft.has_ready()


def test_old_snapshot_is_acknowledged_with_commit() -> None:
    raft = follower_with_log(last=5, commit=4)
    raft.step(snap_msg(3, 1))
    rd = raft.ready()
    assert rd.snapshot is None
    (resp,) = rd.messages
    assert resp.type == MSG_APP_RESP and resp.index == 4 and not resp.reject


def test_compaction_clamped_to_snapshot_and_applied() -> None:
    raft = Raft(Config(id=1, voters=(1,)), random.Random(1))
    raft.tick()
    raft.propose_batch([b"a", b"b", b"c", b"d"])
    rd = raft.ready()
    raft.advance(rd)
    assert raft.applied == 5
    raft.compact(4)
    assert raft.first_index == 1  # no snapshot yet: nothing may be dropped
    raft.set_snapshot(SnapshotMetadata(index=3, term=1, voters=[1]))
    raft.compact(5)
    assert raft.first_index == 4 and raft.log_term(3) == 1 and raft.log_term(2) is None


def test_restart_from_snapshot_and_log() -> None:
    meta = SnapshotMetadata(index=10, term=2, voters=[1, 2, 3])
    entries = [Entry(index=i, term=2 if i < 12 else 3) for i in range(8, 15)]
    raft = Raft(
        Config(id=1, voters=(1, 2, 3)),
        random.Random(1),
        hard_state=HardState(term=3, vote=2, commit=12),
        snapshot=meta,
        entries=entries,
        applied=10,
    )
    assert (raft.first_index, raft.last_index, raft.commit, raft.applied) == (11, 14, 12, 10)
    assert raft.snapshot_meta == meta
    rd = raft.ready()
    assert [e.index for e in rd.committed_entries] == [11, 12]
    assert rd.entries == [] and rd.hard_state is None and rd.snapshot is None
