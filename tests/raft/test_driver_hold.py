"""The driver's hold on proposals during a leadership transfer, against a real core: a write
held while the leader hands over is never taken for one sent to the old leader.

The store fails the writes pending at a replica with "leader changed" when it hears of a new
leader, except those the driver still holds (`held_futures`). A busy replica may step the
transferee's vote and its first append in one turn: the core then knows the new leader
before the store does, and the held writes must still be held when the store hears of it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from k8semu.pb.raft.raft_pb2 import MSG_APP, MSG_HEARTBEAT, MSG_PROP, MSG_VOTE
from k8semu.raft.driver import Pacing, RaftNode

from .network import Network


class _RoleWatcher:
    """The state machine's side of a role change: what the store would keep then."""

    def __init__(self) -> None:
        self.node: RaftNode | None = None
        self.kept: list[set[asyncio.Future[Any]]] = []

    def on_role_change(self, leader: int, is_leader: bool) -> None:
        assert self.node is not None
        self.kept.append(self.node.held_futures())


async def test_a_held_write_is_still_held_when_the_store_hears_of_the_new_leader() -> None:
    net = Network(3, seed=7, check_quorum=True)
    net.elect(1)
    net.stabilize()
    # Replica 3 hears nothing directly; what is sent to it is recorded and stepped below.
    net.isolate(3)
    net.record = True
    net.nodes[1].raft.transfer_leader(2)
    net.process()
    net.stabilize()
    assert net.nodes[2].raft.leader == 2
    to_3 = [m for m in net.sent if m.to == 3]
    flagged = [m for m in to_3 if m.type == MSG_HEARTBEAT and m.leader_transfer]
    vote = [m for m in to_3 if m.type == MSG_VOTE]
    append = [m for m in to_3 if m.type == MSG_APP and getattr(m, "from") == 2]
    assert flagged and vote and append

    core = net.nodes[3].raft
    watcher = _RoleWatcher()
    node = RaftNode(
        net.nodes[3].config,
        None,  # type: ignore[arg-type]  # no Ready is persisted here
        watcher,  # type: ignore[arg-type]
        Path("/nonexistent"),
        Pacing(tick_interval=0.05),
    )
    watcher.node = node
    node._core = core
    node.leader = 1
    write: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    # The old leader says it hands over: a write arriving now is held, not forwarded to it.
    node._inbox.append(flagged[0])
    node.propose_nowait(b"w", write)
    node._feed(core)
    assert write in node.held_futures()
    assert not any(m.type == MSG_PROP for m in core.ready().messages)

    # The transferee's vote and first append in one turn: the core follows 2 at once.
    node._inbox.extend([vote[0], append[0]])
    node._feed(core)
    assert core.leader == 2
    rd = core.ready()
    assert rd.soft_state is not None
    node._on_soft_state(rd.soft_state)
    assert watcher.kept and write in watcher.kept[-1]  # the store keeps it pending

    # Then it goes to the new leader.
    node._feed(core)
    assert write not in node.held_futures()
    sent = [m for m in core.ready().messages if m.type == MSG_PROP]
    assert [(m.to, [e.data for e in m.entries]) for m in sent] == [(2, [b"w"])]
