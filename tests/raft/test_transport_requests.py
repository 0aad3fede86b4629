"""Request/response frames on the peer port (the store's membership calls, Cluster and
Change): replies, error replies, garbage, and peers that hang up or never answer, over real
loopback TCP (k8semu.raft.transport.request, PeerServer.requests)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from k8semu.pb.etcd import rpc_pb2
from k8semu.pb.raft import raft_pb2
from k8semu.pb.store import internal_pb2
from k8semu.raft import framing
from k8semu.raft.transport import Membership, PeerServer, request
from k8semu.store import errors, members
from tests.support.poll import eventually

CLUSTER, A, B = 0xC1, 1, 2
_INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
_DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


class _NoRaft:
    def step(self, messages: object) -> None:
        raise AssertionError("no Raft messages in these tests")

    async def receive_snapshot(self, message: raft_pb2.Message, path: Path) -> None:
        raise AssertionError("no snapshots in these tests")


@dataclass
class _Reconfigurer:
    """Stands in for members.Reconfigurer (the real one, with a cluster, is exercised by
    tests/store/test_members.py): answers the cluster, or refuses a change with `refusal`."""

    refusal: errors.StoreError | None = None
    changes: list[internal_pb2.MemberChange] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def info(self) -> internal_pb2.ClusterInfo:
        member = rpc_pb2.Member(ID=A, name="a", peerURLs=["http://127.0.0.1:1"])
        return internal_pb2.ClusterInfo(cluster_id=CLUSTER, members=[member], leader=A)

    async def change(
        self, change: internal_pb2.MemberChange, *, forwarded: bool = False
    ) -> internal_pb2.ClusterInfo:
        assert forwarded
        await self.release.wait()
        self.changes.append(change)
        if self.refusal is not None:
            raise self.refusal
        return self.info()


@dataclass
class _Port:
    server: PeerServer
    reconfigurer: _Reconfigurer
    address: str


@pytest.fixture
async def port(tmp_path: Path) -> AsyncIterator[_Port]:
    reconfigurer = _Reconfigurer()
    reconfigurer.release.set()
    servicer = members.MembershipServicer(reconfigurer)  # type: ignore[arg-type]
    server = PeerServer(
        Membership(CLUSTER, {A, B}),
        _NoRaft(),
        tmp_path / "snap",
        lambda *_: None,
        requests=servicer.handlers(),
    )
    number = await server.listen("127.0.0.1:0")
    await server.start()
    yield _Port(server, reconfigurer, f"127.0.0.1:{number}")
    await server.close()


def _frame(kind: int, payload: bytes) -> bytes:
    return struct.pack("!IB", len(payload), kind) + payload


async def _raw(address: str, data: bytes) -> bytes:
    """Send `data` on a fresh connection; what comes back until the server hangs up."""
    host, _, number = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(number))
    try:
        writer.write(data)
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        size, kind = framing.HEADER.unpack_from(data)
        out.append((kind, data[framing.HEADER.size : framing.HEADER.size + size]))
        data = data[framing.HEADER.size + size :]
    return out


async def test_cluster_and_change_are_answered(port: _Port) -> None:
    info = await members._cluster(port.address)
    assert info.cluster_id == CLUSTER and info.leader == A
    change = internal_pb2.MemberChange(remove=rpc_pb2.MemberRemoveRequest(ID=B))
    answer = await members.forward(port.address, change, 5.0)
    assert [m.name for m in answer.members] == ["a"]
    assert port.reconfigurer.changes == [change]


async def test_an_error_reply_is_the_same_store_error(port: _Port) -> None:
    port.reconfigurer.refusal = errors.ErrMemberNotFound()
    change = internal_pb2.MemberChange(remove=rpc_pb2.MemberRemoveRequest(ID=7))
    with pytest.raises(errors.ErrMemberNotFound):
        await members.forward(port.address, change, 5.0)
    port.reconfigurer.refusal = errors.ErrUnhealthy()
    with pytest.raises(errors.ErrUnhealthy) as caught:
        await members.forward(port.address, change, 5.0)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    # The raw reply: one REPLY_ERROR frame with the status code and etcd's text, then EOF.
    kind, payload = _frames(await _raw(port.address, _frame(framing.CHANGE, b"")))[0]
    assert kind == framing.REPLY_ERROR
    error = framing.parse_error(payload)
    assert (error.code, error.message) == (
        errors.ErrUnhealthy.code.value[0],
        "etcdserver: unhealthy cluster",
    )


GARBAGE = [
    b"\x00\xff garbage that is not a frame " * 100,
    struct.pack("!IB", framing.MAX_FRAME + 1, framing.CHANGE),  # over the size limit
    _frame(framing.REPLY, b"only an asker receives replies"),
    _frame(framing.REPLY_ERROR, b"\x00"),
    _frame(framing.CLUSTER, b"") + _frame(framing.CLUSTER, b""),  # one request per connection
    _frame(framing.BATCH, b"") + _frame(framing.CHANGE, b""),  # a message connection
]


async def test_garbage_is_refused_and_the_port_keeps_answering(port: _Port) -> None:
    # An undecodable request gets an error reply naming it, not a crash.
    for kind in (framing.CLUSTER, framing.CHANGE):
        frames = _frames(await _raw(port.address, _frame(kind, b"\xff\xff\xff\xff\x0f junk")))
        assert frames[0][0] == framing.REPLY_ERROR, kind
        error = framing.parse_error(frames[0][1])
        assert error.code == _INVALID_ARGUMENT and "undecodable" in error.message
    for data in GARBAGE:
        answer = await _raw(port.address, data)  # returns: the port hung up
        assert all(kind == framing.REFUSED for kind, _ in _frames(answer)), data[:40]
    # A peer port without membership handlers refuses request frames.
    bare = PeerServer(
        Membership(CLUSTER, {A}), _NoRaft(), port.server.snapshot_dir, lambda *_: None
    )
    number = await bare.listen("127.0.0.1:0")
    await bare.start()
    try:
        frames = _frames(await _raw(f"127.0.0.1:{number}", _frame(framing.CLUSTER, b"")))
        assert frames[0][0] == framing.REFUSED and b"no handler" in frames[0][1]
        with pytest.raises(framing.RemoteError) as caught:
            await request(f"127.0.0.1:{number}", framing.CLUSTER, b"", 5.0)
        assert caught.value.code == _UNAVAILABLE and "no handler" in caught.value.message
    finally:
        await bare.close()
    assert (await members._cluster(port.address)).cluster_id == CLUSTER


async def test_an_asker_that_hangs_up_does_not_stop_the_change(port: _Port) -> None:
    port.reconfigurer.release.clear()
    change = internal_pb2.MemberChange(remove=rpc_pb2.MemberRemoveRequest(ID=B))
    with pytest.raises(errors.StoreError, match="no reply within"):
        await members.forward(port.address, change, 0.2)  # hangs up at its deadline
    port.reconfigurer.release.set()
    await eventually(lambda: port.reconfigurer.changes == [change], what="the change done")
    await eventually(lambda: not port.server.tasks, what="the answering task ended")
    assert (await members._cluster(port.address)).leader == A


async def test_a_peer_that_hangs_up_or_never_answers(port: _Port) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    for handler, code, text in (
        (hang_up, _UNAVAILABLE, "without a reply"),
        (never_answer, _DEADLINE_EXCEEDED, "no reply within"),
    ):
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            with pytest.raises(framing.RemoteError) as caught:
                await request(address, framing.CLUSTER, b"", 0.5)
            assert caught.value.code == code and text in caught.value.message
        finally:
            server.close()
            await server.wait_closed()
    # Nothing listening: UNAVAILABLE, and a joining member's fetch moves on.
    with pytest.raises(framing.RemoteError) as caught:
        await request(address, framing.CLUSTER, b"", 5.0)
    assert caught.value.code == _UNAVAILABLE
    info = await members._ask_peers([address, port.address])
    assert info is not None and info.cluster_id == CLUSTER
