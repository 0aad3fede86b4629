"""An in-memory cluster for testing the pure Raft core.

Each node has a simulated durable storage that persists every Ready faithfully (hard state,
snapshot, entries with truncation), a volatile state machine (the applied entries), and a driver
loop in the order of the Ready contract: persist -> send -> apply -> advance. The network delays,
reorders, duplicates and drops messages, can be partitioned, and nodes can crash and restart from
their storage. Everything is driven by one seeded ``random.Random``, so a failing schedule is
reproduced by its seed. A ``SafetyChecker`` watches every Ready for the Raft safety properties.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from k8semu.pb.raft.raft_pb2 import (
    MSG_SNAP,
    Entry,
    HardState,
    Message,
    SnapshotMetadata,
)
from k8semu.raft import Config, ProposalDropped, Raft, ReadState, Ready, StateRole, membership

SmEntry = tuple[int, bytes]  # (term, data) of an applied entry; position i holds index i + 1


def msg(mtype: int, frm: int, to: int, **fields: object) -> Message:
    """A message as a peer would send it (tests hand-craft them to step one node)."""
    return Message(type=mtype, to=to, **{"from": frm}, **fields)  # type: ignore[arg-type]


@dataclass
class Storage:
    """What survives a crash."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: SnapshotMetadata | None = None
    snapshot_data: list[SmEntry] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)  # contiguous, may start <= snapshot index

    @property
    def snap_index(self) -> int:
        return self.snapshot.index if self.snapshot is not None else 0

    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snap_index

    def term(self, index: int) -> int | None:
        if self.entries and self.entries[0].index <= index <= self.entries[-1].index:
            return self.entries[index - self.entries[0].index].term
        if self.snapshot is not None and index == self.snapshot.index:
            return self.snapshot.term
        if index == 0:
            return 0
        return None

    def append(self, ents: list[Entry]) -> None:
        first = ents[0].index
        if self.entries:
            base = self.entries[0].index
            assert first <= self.entries[-1].index + 1, f"gap: stored up to {self.last_index()}"
            del self.entries[max(0, first - base) :]
            if first < base:
                self.entries.clear()
        else:
            assert first == self.snap_index + 1, f"gap after snapshot {self.snap_index}: {first}"
        self.entries.extend(ents)

    def compact(self, index: int) -> None:
        if self.entries:
            del self.entries[: max(0, index - self.entries[0].index + 1)]


class Node:
    def __init__(self, config: Config, seed: int) -> None:
        self.config = config
        self.id = config.id
        self.seed = seed
        self.storage = Storage()
        self.incarnation = 0
        self.up = True
        self.sm: list[SmEntry] = []
        self.read_states: list[ReadState] = []
        self.incoming_snapshots: dict[tuple[int, int], list[SmEntry]] = {}
        self.raft = Raft(config, random.Random(seed))

    @property
    def applied(self) -> int:
        return len(self.sm)

    def restart(self) -> None:
        self.incarnation += 1
        st = self.storage
        self.sm = list(st.snapshot_data)
        self.read_states = []
        self.incoming_snapshots = {}
        hs = HardState()
        hs.CopyFrom(st.hard_state)
        self.raft = Raft(
            self.config,
            random.Random(self.seed * 7919 + self.incarnation),
            hard_state=hs,
            snapshot=st.snapshot,
            entries=list(st.entries),
            applied=st.snap_index,
        )
        self.up = True


class SafetyError(AssertionError):
    pass


class SafetyChecker:
    """Raft paper Figure 3 properties, checked incrementally as Readys are processed."""

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}  # term -> leader id (election safety)
        self.entries: dict[tuple[int, int], tuple[bytes, int]] = {}  # (idx, term) -> data, prev
        self.committed: dict[int, tuple[int, int]] = {}  # idx -> (term, lowest term seen at)
        self.applied: dict[int, tuple[int, bytes]] = {}  # idx -> (term, data)
        self.max_commit = 0
        self.reads: dict[bytes, int] = {}  # read context -> highest commit when it was asked

    def on_role(self, node: Node) -> None:
        raft = node.raft
        if raft.role is not StateRole.LEADER:
            return
        term = raft.term
        other = self.leaders.setdefault(term, node.id)
        if other != node.id:
            raise SafetyError(f"election safety: {other} and {node.id} both lead term {term}")
        # Leader completeness (Raft paper 5.4): entries committed in earlier terms are present.
        first = raft.first_index
        for index, (eterm, seen_term) in self.committed.items():
            if seen_term < term and index >= first and raft.log_term(index) != eterm:
                raise SafetyError(
                    f"leader completeness: leader {node.id} of term {term} lacks committed "
                    f"entry {index}/{eterm} (has {raft.log_term(index)})"
                )

    def on_persist(self, node: Node, ents: list[Entry]) -> None:
        """Log Matching (Raft paper 5.3): one (index, term) names one entry and one prefix."""
        prev = node.storage.term(ents[0].index - 1)
        for e in ents:
            key = (e.index, e.term)
            if prev is not None:
                known = self.entries.setdefault(key, (e.data, prev))
                if known != (e.data, prev):
                    raise SafetyError(f"log matching: node {node.id} entry {key} {known}")
            prev = e.term

    def on_commit(self, node: Node, old: int, new: int) -> None:
        st = node.storage
        term = node.raft.term
        for index in range(max(old, st.snap_index) + 1, new + 1):
            eterm = st.term(index)
            if eterm is None:
                raise SafetyError(f"node {node.id} committed {index} it never stored")
            known = self.committed.get(index)
            if known is None:
                self.committed[index] = (eterm, term)
            elif known[0] != eterm:
                raise SafetyError(f"two entries committed at {index}: {known[0]} and {eterm}")
            elif term < known[1]:
                self.committed[index] = (eterm, term)
        self.max_commit = max(self.max_commit, new)

    def on_read_request(self, context: bytes) -> None:
        self.reads[context] = self.max_commit

    def on_read_state(self, node: Node, rs: ReadState) -> None:
        """Linearizable reads (thesis 6.4): the read index covers every entry committed
        anywhere before the read was asked."""
        floor = self.reads.pop(rs.context, None)
        if floor is not None and rs.index < floor:
            raise SafetyError(f"stale read on node {node.id}: index {rs.index} < {floor}")

    def on_apply(self, node: Node, e: Entry) -> None:
        known = self.applied.setdefault(e.index, (e.term, e.data))
        if known != (e.term, e.data):
            raise SafetyError(f"state machine safety: node {node.id} applied {e.index} {known}")


@dataclass(order=True)
class _Flight:
    at: int
    seq: int
    msg: Message = field(compare=False)
    snapshot_data: list[SmEntry] | None = field(compare=False, default=None)


class Network:
    """N nodes and the wires between them. Time advances in delivery rounds; ``tick()`` ticks
    every live node once and ``run()`` interleaves ticks with ``rounds_per_tick`` rounds."""

    def __init__(
        self,
        n: int = 3,
        *,
        seed: int = 0,
        drop: float = 0.0,
        dup: float = 0.0,
        max_delay: int = 1,
        snapshot_every: int = 0,
        keep_after_snapshot: int = 2,
        interleave: float = 0.0,
        check: bool = True,
        **config: int | bool,
    ) -> None:
        self.rng = random.Random(seed)
        voters = tuple(range(1, n + 1))
        self.nodes = {
            i: Node(Config(id=i, voters=voters, **config), seed * 1000 + i)  # type: ignore[arg-type]
            for i in voters
        }
        self.drop = drop
        self.dup = dup
        self.max_delay = max_delay
        self.snapshot_every = snapshot_every
        self.keep_after_snapshot = keep_after_snapshot
        # Probability that messages reach a node between its ready() and advance(), as when an
        # asyncio driver steps input while it awaits the disk.
        self.interleave = interleave
        self.cut: set[tuple[int, int]] = set()
        self.filters: list[Callable[[Message], bool]] = []  # True = drop the message
        # Called after a node stepped a delivered message (tests crash nodes from here).
        self.after_step: Callable[[Node, Message], None] | None = None
        self.checker = SafetyChecker() if check else None
        self.now = 0
        self._seq = itertools.count()
        self._flights: list[_Flight] = []
        self.delivered: Counter[int] = Counter()  # message type -> count
        self.sent: list[Message] = []  # every message handed to the network (for inspection)
        self.record = False
        self.process()

    # -- topology ------------------------------------------------------------------------------

    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every link between nodes of different groups."""
        where = {i: g for g, members in enumerate(groups) for i in members}
        for a in self.nodes:
            for b in self.nodes:
                if a != b and where.get(a, -1 - a) != where.get(b, -1 - b):
                    self.cut.add((a, b))

    def recover(self) -> None:
        self.cut.clear()
        self.filters.clear()

    def join(
        self,
        node_id: int,
        voters: Iterable[int],
        learners: Iterable[int] = (),
        **config: int | bool,
    ) -> Node:
        """Start a new, empty node that was added to the cluster (its config lists the
        membership it joins, as a member started with --initial-cluster-state existing)."""
        cfg = Config(id=node_id, voters=tuple(voters), **config)  # type: ignore[arg-type]
        node = Node(cfg, node_id * 7717)
        node.raft = Raft(cfg, random.Random(node.seed), learners=learners)
        self.nodes[node_id] = node
        self.process()
        return node

    def crash(self, node_id: int) -> None:
        self.nodes[node_id].up = False

    def restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        node.restart()
        self.process()

    # -- client operations ---------------------------------------------------------------------

    def propose(self, node_id: int, data: bytes) -> bool:
        if not self._accepted(node_id, lambda raft: raft.propose(data)):
            return False
        self.process()
        return True

    def read_index(self, node_id: int, ctx: bytes) -> bool:
        if not self._accepted(node_id, lambda raft: raft.read_index(ctx)):
            return False
        if self.checker:
            self.checker.on_read_request(ctx)
        self.process()
        return True

    def _accepted(self, node_id: int, call: Callable[[Raft], None]) -> bool:
        """Whether the node is up and ``call`` on its core did not drop the request."""
        node = self.nodes[node_id]
        if not node.up:
            return False
        try:
            call(node.raft)
        except ProposalDropped:
            return False
        return True

    def leader(self) -> int | None:
        """The live leader with the highest term, if any."""
        best: tuple[int, int] | None = None
        for node in self.nodes.values():
            if node.up and node.raft.role is StateRole.LEADER:
                cand = (node.raft.term, node.id)
                if best is None or cand > best:
                    best = cand
        return best[1] if best else None

    # -- the simulation ------------------------------------------------------------------------

    def tick(self, ids: Iterable[int] | None = None) -> None:
        for i in ids if ids is not None else self.nodes:
            node = self.nodes[i]
            if node.up:
                node.raft.tick()
        self.process()

    def deliver_round(self) -> None:
        """Deliver every message due now, then let the receivers react."""
        flights = self._flights
        while flights and flights[0].at <= self.now:
            self._deliver(heapq.heappop(flights))
        self.process()
        self.now += 1

    def run(self, ticks: int, rounds_per_tick: int = 3) -> None:
        for _ in range(ticks):
            self.tick()
            for _ in range(rounds_per_tick):
                self.deliver_round()

    def stabilize(self, max_rounds: int = 10_000) -> None:
        """Deliver until nothing is in flight (delays still order messages)."""
        for _ in range(max_rounds):
            if not self._flights:
                return
            self.now = max(self.now, self._flights[0].at)
            self.deliver_round()
        raise AssertionError("network did not quiesce")

    def in_flight(self) -> int:
        return len(self._flights)

    def elect(self, node_id: int, max_ticks: int = 200) -> None:
        """Let ``node_id`` win the next election, then deliver everything.

        Only ``node_id`` ticks, so no other node campaigns; the others' leader lease is
        expired first, as if an election timeout had passed without news from a leader.
        """
        for node in self.nodes.values():
            if node.up and node.id != node_id:
                raft = node.raft
                raft._election_elapsed = max(raft._election_elapsed, node.config.election_tick)
        for _ in range(max_ticks):
            if self.nodes[node_id].raft.role is StateRole.LEADER:
                self.stabilize()
                return
            self.tick([node_id])
            self.stabilize()
        raise AssertionError(f"node {node_id} did not become leader")

    def process(self) -> None:
        for node in self.nodes.values():
            if node.up:
                while node.raft.has_ready():
                    self._handle_ready(node, node.raft.ready())

    def _handle_ready(self, node: Node, rd: Ready) -> None:
        st = node.storage
        raft = node.raft
        checker = self.checker
        old_commit = st.hard_state.commit
        # 1. persist
        if rd.snapshot is not None:
            key = (rd.snapshot.index, rd.snapshot.term)
            st.snapshot = rd.snapshot
            st.snapshot_data = node.incoming_snapshots.pop(key)
            st.entries = []
            old_commit = max(old_commit, rd.snapshot.index)
        if rd.entries:
            if checker:
                checker.on_persist(node, rd.entries)
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.hard_state = rd.hard_state
            assert rd.hard_state.commit <= st.last_index(), "commit beyond the durable log"
        if checker:
            if st.hard_state.commit > old_commit:
                checker.on_commit(node, old_commit, st.hard_state.commit)
            if rd.soft_state is not None:
                checker.on_role(node)
        if self.interleave and self.rng.random() < self.interleave:
            self._deliver_early(node)
        # 2. send
        for m in rd.messages:
            self._send(node, m)
        # 3. apply
        if rd.snapshot is not None:
            node.sm = list(st.snapshot_data)
        for e in rd.committed_entries:
            assert e.index == node.applied + 1, f"apply gap at {e.index}, applied {node.applied}"
            node.sm.append((e.term, e.data))
            if checker:
                checker.on_apply(node, e)
        node.read_states.extend(rd.read_states)
        if checker:
            for rs in rd.read_states:
                checker.on_read_state(node, rs)
        raft.advance(rd)
        if self.snapshot_every and node.applied - st.snap_index >= self.snapshot_every:
            self._snapshot(node)

    def _snapshot(self, node: Node) -> None:
        st = node.storage
        index = node.applied
        meta = SnapshotMetadata(index=index, term=node.sm[index - 1][0])
        membership.to_snapshot(meta, node.raft.conf_at(index))
        st.snapshot = meta
        st.snapshot_data = node.sm[:index]
        compact_to = max(0, index - self.keep_after_snapshot)
        st.compact(compact_to)
        node.raft.set_snapshot(meta)
        node.raft.compact(compact_to)

    def _send(self, node: Node, m: Message) -> None:
        if self.record:
            self.sent.append(m)
        rng = self.rng
        data = None
        if m.type == MSG_SNAP:
            # The driver streams the state-machine data with the message.
            assert node.storage.snapshot is not None
            assert node.storage.snapshot.index == m.snapshot.index
            data = node.storage.snapshot_data
        elif self.drop and rng.random() < self.drop:
            return
        copies = 2 if self.dup and rng.random() < self.dup else 1
        for _ in range(copies):
            delay = rng.randint(1, self.max_delay) if self.max_delay > 1 else 1
            heapq.heappush(self._flights, _Flight(self.now + delay, next(self._seq), m, data))

    def _deliver(self, f: _Flight) -> None:
        m = f.msg
        frm = getattr(m, "from")
        target = self.nodes.get(m.to)
        ok = (
            target is not None
            and target.up
            and (frm, m.to) not in self.cut
            and not any(flt(m) for flt in self.filters)
        )
        if m.type == MSG_SNAP:
            if ok and f.snapshot_data is not None and self.drop and self.rng.random() < self.drop:
                ok = False
            sender = self.nodes[frm]
            if ok:
                assert target is not None and f.snapshot_data is not None
                target.incoming_snapshots[(m.snapshot.index, m.snapshot.term)] = f.snapshot_data
                target.raft.step(m)
                self.delivered[m.type] += 1
                if self.after_step is not None:
                    self.after_step(target, m)
            if sender.up:
                sender.raft.report_snapshot(m.to, ok)
            return
        if ok:
            assert target is not None
            target.raft.step(m)
            self.delivered[m.type] += 1
            if self.after_step is not None:
                self.after_step(target, m)

    def _deliver_early(self, node: Node) -> None:
        """Step a few in-flight messages for ``node`` now, out of the Ready cycle."""
        mine = [f for f in self._flights[:50] if f.msg.to == node.id and f.msg.type != MSG_SNAP]
        if not mine:
            return
        chosen = mine[: self.rng.randint(1, 3)]
        ids = {id(f) for f in chosen}
        self._flights = [f for f in self._flights if id(f) not in ids]
        heapq.heapify(self._flights)
        for f in chosen:
            self._deliver(f)


def leaders(net: Network) -> list[int]:
    """Every live node that believes it leads (any term)."""
    return [i for i, n in net.nodes.items() if n.up and n.raft.role is StateRole.LEADER]
