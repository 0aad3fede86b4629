"""The Raft peer transport over real loopback TCP: delivery, refusal, garbage, reconnect,
bounded queues and large snapshots (k8semu.raft.transport, k8semu.raft.framing)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from k8semu.pb.raft import raft_pb2
from k8semu.raft import framing
from k8semu.raft.transport import MAX_QUEUED, Membership, PeerServer, PeerTransport
from tests.support.poll import eventually

CLUSTER, A, B, STRANGER = 0xC1, 1, 2, 9


@dataclass
class Inbox:
    """A Receiver that keeps what it is handed."""

    messages: list[raft_pb2.Message] = field(default_factory=list)
    snapshots: list[tuple[raft_pb2.Message, bytes]] = field(default_factory=list)
    refuse_snapshots: bool = False

    def step(self, messages: Sequence[raft_pb2.Message]) -> None:
        self.messages.extend(messages)

    async def receive_snapshot(self, message: raft_pb2.Message, path: Path) -> None:
        if self.refuse_snapshots:
            raise ValueError("snapshot checksum mismatch")
        self.snapshots.append((message, path.read_bytes()))


@dataclass
class Node:
    """One side: a peer server receiving into `inbox`, and a transport sending to `peers`."""

    server: PeerServer
    inbox: Inbox
    port: int
    urls: dict[int, list[str]]
    unreachable: list[int] = field(default_factory=list)
    snapshots_sent: list[tuple[int, bool]] = field(default_factory=list)
    sender: PeerTransport | None = None

    def connect(self, me: int, peers: dict[int, int], cluster: int = CLUSTER) -> PeerTransport:
        self.sender = PeerTransport(
            cluster,
            me,
            {pid: f"127.0.0.1:{port}" for pid, port in peers.items()},
            self.urls,
            on_unreachable=self.unreachable.append,
            on_snapshot_sent=lambda peer, ok: self.snapshots_sent.append((peer, ok)),
        )
        self.sender.start()
        return self.sender


async def _node(tmp_path: Path, me: int, port: int = 0) -> Node:
    inbox = Inbox()
    urls = {me: [f"http://127.0.0.1:{2379 + me}"]}
    server = PeerServer(
        Membership(CLUSTER, frozenset({A, B})), inbox, tmp_path / f"snap-{me}", lambda *_: None
    )
    node = Node(server, inbox, 0, urls)
    server.on_client_urls = lambda member, got: urls.__setitem__(member, got)
    node.port = await server.listen(f"127.0.0.1:{port}")
    await server.start()
    return node


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    a, b = await _node(tmp_path, A), await _node(tmp_path, B)
    yield a, b
    for n in (a, b):
        if n.sender is not None:
            await n.sender.stop()
        await n.server.close()


def _app(index: int, frm: int = A, to: int = B, data: bytes = b"x") -> raft_pb2.Message:
    entry = raft_pb2.Entry(term=1, index=index, data=data)
    return raft_pb2.Message(type=raft_pb2.MSG_APP, to=to, term=1, entries=[entry], **{"from": frm})  # type: ignore[arg-type]


def _frame(kind: int, payload: bytes) -> bytes:
    return struct.pack("!IB", len(payload), kind) + payload


def _batch(cluster: int, sender: int, *msgs: raft_pb2.Message) -> bytes:
    batch = raft_pb2.MessageBatch(cluster_id=cluster, messages=msgs)
    setattr(batch, "from", sender)
    return _frame(framing.BATCH, batch.SerializeToString())


async def _raw(port: int, data: bytes, *, answer: bool = True) -> bytes:
    """Send `data` on a fresh connection; what comes back until the server hangs up (or 5 s);
    with `answer=False` hang up at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        if not answer:
            return b""
        async with asyncio.timeout(5):
            return await reader.read()
    except TimeoutError:
        return b"(still open)"
    finally:
        writer.close()


async def test_messages_and_client_urls_reach_the_peer(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    sender = a.connect(A, {B: b.port})
    sender.send([_app(i) for i in range(1, 4)])
    await eventually(lambda: len(b.inbox.messages) == 3, what="three appends delivered")
    sender.send([_app(4), _app(9, to=STRANGER)])  # no such peer: dropped here
    await eventually(lambda: len(b.inbox.messages) == 4, what="the fourth delivered")
    assert [m.entries[0].index for m in b.inbox.messages] == [1, 2, 3, 4]
    assert b.urls[A] == ["http://127.0.0.1:2380"]  # A told B its client URLs
    sender.learn_client_urls(STRANGER, ["http://elsewhere:1"])  # passed on with the next frame
    sender.send([_app(5)])
    await eventually(lambda: len(b.inbox.messages) == 5, what="the fifth delivered")
    assert STRANGER not in b.urls  # not a member: ignored
    assert not a.unreachable


async def test_frames_of_another_cluster_or_a_non_member_are_refused(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    _, b = nodes
    answer = await _raw(b.port, _batch(0xBAD, A, _app(1)))
    assert b"cluster id mismatch" in answer
    answer = await _raw(b.port, _batch(CLUSTER, STRANGER, _app(1, frm=STRANGER)))
    assert b"not a member" in answer
    # A member may not speak for another: messages with a forged `from` are dropped.
    await _raw(b.port, _batch(CLUSTER, A, _app(1, frm=B), _app(2)), answer=False)
    await eventually(lambda: len(b.inbox.messages) == 1, what="the honest message delivered")
    assert b.inbox.messages[0].entries[0].index == 2
    # A whole transport of another cluster: refused, reported unreachable, nothing delivered.
    stranger = await _node(tmp_path, STRANGER)
    try:
        stranger.connect(STRANGER, {B: b.port}, cluster=0xBAD).send([_app(7, frm=STRANGER)])
        await eventually(lambda: B in stranger.unreachable, what="the refused peer gives up")
    finally:
        assert stranger.sender is not None
        await stranger.sender.stop()
        await stranger.server.close()
    assert len(b.inbox.messages) == 1


GARBAGE = [
    b"\x00\xff garbage that is not a frame " * 100,
    struct.pack("!IB", framing.MAX_FRAME + 1, framing.BATCH),  # over the size limit
    _frame(framing.BATCH, b"\xff\xff\xff\xff\x0f not protobuf"),
    _frame(77, b"unknown kind"),
    _frame(framing.SNAP_DATA, b"data before any snapshot"),
    _frame(framing.SNAP_ACK, b""),  # only a sender receives these
    _frame(framing.SNAP_BEGIN, raft_pb2.SnapshotChunk(cluster_id=CLUSTER).SerializeToString()),
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 64,  # what a gRPC client opens with
]


async def test_garbage_closes_that_connection_only(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    sender = a.connect(A, {B: b.port})
    sender.send([_app(1)])
    await eventually(lambda: len(b.inbox.messages) == 1, what="first append delivered")
    for data in GARBAGE:
        answer = await _raw(b.port, data)
        assert answer != b"(still open)", data[:40]
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as sock:
        sock.sendall(_frame(framing.BATCH, b"")[:3])  # half a header, then hang up
    sender.send([_app(2)])
    await eventually(lambda: len(b.inbox.messages) == 2, what="the peer still delivers")
    assert not a.unreachable  # the honest connection was never disturbed


def test_fuzzed_bytes_never_escape_the_protocol(tmp_path: Path) -> None:
    """Random and mutated frames, cut at random points, fed straight to the inbound protocol:
    whatever arrives, nothing raises into the event loop and nothing invalid is stepped."""
    rng = random.Random(1234)
    valid = _batch(CLUSTER, A, _app(1), _app(2, data=b"y" * 300))

    async def run() -> int:
        inbox = Inbox()
        server = PeerServer(Membership(CLUSTER, {A, B}), inbox, tmp_path, lambda *_: None)
        from k8semu.raft.transport import _Inbound

        # Whole frames cut anywhere (down to a byte at a time) arrive whole.
        whole = valid * 50
        conn = _Inbound(server)
        conn.connection_made(_FakeTransport())  # type: ignore[arg-type]
        pos = 0
        while pos < len(whole):
            step = rng.choice([1, 2, 5, 7, 64, 700, 5000])
            conn.data_received(whole[pos : pos + step])
            pos += step
        assert len(inbox.messages) == 100 and conn.transport is not None
        inbox.messages.clear()
        closed = 0
        for case in range(3000):
            if case % 3 == 0:
                data = rng.randbytes(rng.randrange(1, 200))
            else:
                data = bytearray(valid * rng.randrange(1, 3))
                for _ in range(rng.randrange(1, 6)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                data = bytes(data)
            conn = _Inbound(server)
            conn.connection_made(_FakeTransport())  # type: ignore[arg-type]
            pos = 0
            while pos < len(data) and conn.transport is not None:
                step = rng.randrange(1, 64)
                conn.data_received(data[pos : pos + step])
                pos += step
            closed += conn.transport is None
            conn.connection_lost(None)
        for task in list(server.tasks):
            task.cancel()
        for m in inbox.messages:
            assert getattr(m, "from") in (A, B)
        return closed

    assert asyncio.run(run()) > 0


class _FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 1) if name == "peername" else None

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_sender_reconnects_after_the_peer_restarts(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    a, b = nodes
    sender = a.connect(A, {B: b.port})
    sender.send([_app(1)])
    await eventually(lambda: len(b.inbox.messages) == 1, what="delivered before the restart")
    await b.server.close()

    async def keep_sending() -> bool:
        sender.send([_app(2)])
        return B in a.unreachable

    await eventually(keep_sending, what="the closed peer is reported unreachable")
    restarted = await _node(tmp_path, B, port=b.port)
    try:

        async def delivered() -> bool:
            sender.send([_app(3)])
            return any(m.entries[0].index == 3 for m in restarted.inbox.messages)

        await eventually(delivered, what="delivered after the restart")
        assert restarted.urls[A] == ["http://127.0.0.1:2380"]  # a new connection re-tells
    finally:
        await restarted.server.close()


async def test_queue_is_bounded_while_the_peer_is_down(nodes: tuple[Node, Node]) -> None:
    a, _ = nodes
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nobody listens there once closed
    sender = a.connect(A, {B: dead_port})
    for i in range(3 * MAX_QUEUED):
        sender.send([_app(i)])
    peer = sender._peers[B]
    assert len(peer.queue) <= MAX_QUEUED
    assert peer.queue[-1].entries[0].index == 3 * MAX_QUEUED - 1  # the newest are kept
    await eventually(lambda: B in a.unreachable, what="the dead peer reported")


async def test_large_snapshot_arrives_whole_while_messages_keep_flowing(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    a, b = nodes
    sender = a.connect(A, {B: b.port})
    path = tmp_path / "big.snap"
    data = os.urandom(9 * (1 << 20) + 12345)  # several chunks and a ragged end
    path.write_bytes(data)
    snap = raft_pb2.Message(type=raft_pb2.MSG_SNAP, to=B, term=1, **{"from": A})  # type: ignore[arg-type]
    snap.snapshot.index, snap.snapshot.term = 42, 1
    sender.send_snapshot(snap, path)
    for i in range(1, 50):
        sender.send([_app(i)])
        await asyncio.sleep(0)
    await eventually(lambda: a.snapshots_sent, timeout=60, what="snapshot acknowledged")
    assert a.snapshots_sent == [(B, True)]
    ((message, got),) = b.inbox.snapshots
    assert message.snapshot.index == 42
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    await eventually(lambda: len(b.inbox.messages) == 49, what="appends alongside")
    assert not list((tmp_path / "snap-2").glob("incoming-*"))  # the temporary file is gone
    # A snapshot the receiver rejects is reported as failed, and the sender goes on.
    b.inbox.refuse_snapshots = True
    sender.send_snapshot(snap, path)
    await eventually(lambda: len(a.snapshots_sent) == 2, timeout=60, what="second verdict")
    assert a.snapshots_sent[1] == (B, False)


async def test_snapshot_from_a_non_member_is_refused(nodes: tuple[Node, Node]) -> None:
    _, b = nodes
    first = raft_pb2.SnapshotChunk(cluster_id=CLUSTER, data=b"abc")
    setattr(first, "from", STRANGER)
    first.message.type = raft_pb2.MSG_SNAP
    payload = _frame(framing.SNAP_BEGIN, first.SerializeToString())
    answer = await _raw(b.port, payload + _frame(framing.SNAP_END, b""))
    assert b"not a member" in answer
    assert not b.inbox.snapshots


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: (server context, client context)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "peer.crt", tmp_path / "peer.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


async def test_messages_and_snapshots_over_tls(
    tmp_path: Path, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_ctx, client_ctx = tls
    inbox = Inbox()
    server = PeerServer(
        Membership(CLUSTER, {A, B}), inbox, tmp_path / "snap", lambda *_: None, ssl=server_ctx
    )
    port = await server.listen("127.0.0.1:0")
    await server.start()
    sent: list[tuple[int, bool]] = []
    sender = PeerTransport(
        CLUSTER,
        A,
        {B: f"127.0.0.1:{port}"},
        {A: []},
        on_unreachable=lambda _: None,
        on_snapshot_sent=lambda peer, ok: sent.append((peer, ok)),
        ssl=client_ctx,
    )
    sender.start()
    try:
        sender.send([_app(1)])
        await eventually(lambda: inbox.messages, what="an append over TLS")
        path = tmp_path / "s.snap"
        path.write_bytes(b"s" * (3 * (1 << 20)))
        snap = raft_pb2.Message(type=raft_pb2.MSG_SNAP, to=B, term=1, **{"from": A})  # type: ignore[arg-type]
        sender.send_snapshot(snap, path)
        await eventually(lambda: sent, timeout=60, what="a snapshot over TLS")
        assert sent == [(B, True)] and inbox.snapshots[0][1] == path.read_bytes()
        # A plain-TCP peer gets nothing through a TLS port.
        await _raw(port, _batch(CLUSTER, A, _app(2)), answer=False)
        sender.send([_app(3)])
        await eventually(lambda: len(inbox.messages) == 2, what="a later append over TLS")
        assert [m.entries[0].index for m in inbox.messages] == [1, 3]
    finally:
        await sender.stop()
        await server.close()
