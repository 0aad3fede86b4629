#!/usr/bin/env python3
"""CPU per Raft peer message: a grpc.aio stream against framed messages on asyncio TCP.

Two processes, A and B, each with a server and one outgoing connection to the other, as two
store replicas are. A sends a MessageBatch with one MSG_APP of ENTRIES entries (VALUE-byte
puts) on its stream to B; B answers with a MSG_APP_RESP on its own stream to A; A waits for
the answer before the next one (a ping-pong: what one client's write costs the peer
transport). Printed: wall time per round trip and the CPU time both processes spent per round
trip (one message each way), from /proc, with uvloop as the replicas run.

Shapes: `grpc` (k8semu.transport's server and channel, a client-streaming Send per direction,
as the gRPC peer transport did), `tcp` (length-prefixed frames, an asyncio Protocol: a bare
implementation, the floor) and `k8semu` (k8semu.raft.transport as the store runs it).

Usage: scripts/measure_peer_transport.py [--shapes grpc,tcp,k8semu] [--entries 1,8]
                                         [--round-trips 5000] [--value 256]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import uvloop

from k8semu import transport
from k8semu.pb.etcd import rpc_pb2
from k8semu.pb.raft import raft_pb2, raft_pb2_grpc
from k8semu.pb.store import internal_pb2
from k8semu.raft import transport as peer_transport

CLUSTER, A, B = 0xC1, 1, 2
# Servers and tasks must outlive the function that made them (a grpc.aio server is shut down
# when it is garbage-collected).
_KEEP: list[object] = []
_HEADER = struct.Struct("!IB")


def _batch(sender: int, msgs: Sequence[raft_pb2.Message]) -> raft_pb2.MessageBatch:
    return raft_pb2.MessageBatch(cluster_id=CLUSTER, messages=msgs, **{"from": sender})  # type: ignore[arg-type]


def _append(entries: int, value: int, index: int) -> raft_pb2.Message:
    data = internal_pb2.InternalRequest(
        id=index, put=rpc_pb2.PutRequest(key=b"/registry/k/%08d" % index, value=b"v" * value)
    ).SerializeToString()
    ents = [raft_pb2.Entry(term=2, index=index + i, data=data) for i in range(entries)]
    return raft_pb2.Message(
        type=raft_pb2.MSG_APP,
        to=B,
        term=2,
        index=index - 1,
        log_term=2,
        entries=ents,
        commit=index - 1,
        **{"from": A},  # type: ignore[arg-type]
    )


def _answer(msg: raft_pb2.Message) -> raft_pb2.Message:
    return raft_pb2.Message(
        type=raft_pb2.MSG_APP_RESP,
        to=A,
        term=msg.term,
        index=msg.index + len(msg.entries),
        **{"from": B},  # type: ignore[arg-type]
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Send = Callable[[raft_pb2.Message], None]


class Side(NamedTuple):
    """One process of a measurement: its id, its port, the other's, what it does with a
    batch it receives, and the pipe to the parent."""

    me: int
    port: int
    peer_port: int
    on_batch: Callable[[raft_pb2.MessageBatch], None]
    ready: Connection


# -- gRPC: the old peer transport's shape --------------------------------------------------


class _GrpcServicer(raft_pb2_grpc.RaftTransportServicer):
    def __init__(self, on_batch: Callable[[raft_pb2.MessageBatch], None]) -> None:
        self._on_batch = on_batch

    async def Send(
        self, request_iterator: AsyncIterator[raft_pb2.MessageBatch], context: Any
    ) -> raft_pb2.SendAck:
        async for batch in request_iterator:
            self._on_batch(batch)
        return raft_pb2.SendAck()

    async def InstallSnapshot(self, request_iterator: Any, context: Any) -> raft_pb2.SnapshotAck:
        raise NotImplementedError


async def _grpc_node(side: Side) -> Send:
    me, port, peer_port, on_batch, ready = side
    server, _ = transport.server()
    raft_pb2_grpc.add_RaftTransportServicer_to_server(_GrpcServicer(on_batch), server)
    transport.bind(server, f"127.0.0.1:{port}", flag="port")
    await server.start()
    _KEEP.append(server)
    ready.send("up")
    ready.recv()  # both servers are up
    channel = transport.channel(f"127.0.0.1:{peer_port}")
    call = raft_pb2_grpc.RaftTransportStub(channel).Send()
    queue: asyncio.Queue[raft_pb2.Message] = asyncio.Queue()

    async def writer() -> None:
        while True:
            msg = await queue.get()
            await call.write(_batch(me, [msg]))

    _KEEP.extend([channel, call, asyncio.get_running_loop().create_task(writer())])
    return queue.put_nowait


# -- bare framed TCP: the floor ------------------------------------------------------------


class _Framed(asyncio.Protocol):
    def __init__(self, on_batch: Callable[[raft_pb2.MessageBatch], None]) -> None:
        self._buf = bytearray()
        self._on_batch = on_batch

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= _HEADER.size:
            size, _ = _HEADER.unpack_from(buf)
            end = _HEADER.size + size
            if len(buf) < end:
                return
            self._on_batch(raft_pb2.MessageBatch.FromString(bytes(buf[_HEADER.size : end])))
            del buf[:end]


async def _tcp_node(side: Side) -> Send:
    me, port, peer_port, on_batch, ready = side
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: _Framed(on_batch), "127.0.0.1", port)
    ready.send("up")
    ready.recv()
    out, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", peer_port)

    def send(msg: raft_pb2.Message) -> None:
        payload = _batch(me, [msg]).SerializeToString()
        out.write(_HEADER.pack(len(payload), 1) + payload)

    return send


# -- k8semu.raft.transport ----------------------------------------------------------------


class _Receiver:
    def __init__(self, on_batch: Callable[[raft_pb2.MessageBatch], None]) -> None:
        self._on_batch = on_batch

    def step(self, messages: Sequence[raft_pb2.Message]) -> None:
        self._on_batch(_batch(0, messages))

    async def receive_snapshot(self, message: raft_pb2.Message, path: Path) -> None:
        raise NotImplementedError


async def _k8semu_node(side: Side) -> Send:
    me, port, peer_port, on_batch, ready = side
    import tempfile

    peer = B if me == A else A
    membership = peer_transport.Membership(CLUSTER, frozenset({A, B}))
    node = peer_transport.PeerTransport(
        CLUSTER,
        me,
        {peer: f"127.0.0.1:{peer_port}"},
        {me: []},
        on_unreachable=lambda _: None,
        on_snapshot_sent=lambda _a, _b: None,
    )
    server = peer_transport.PeerServer(
        membership, _Receiver(on_batch), Path(tempfile.mkdtemp()), node.learn_client_urls
    )
    await server.listen(f"127.0.0.1:{port}")
    await server.start()
    _KEEP.extend([server, node])
    ready.send("up")
    ready.recv()
    node.start()
    return lambda msg: node.send([msg])


_SHAPES = {"grpc": _grpc_node, "tcp": _tcp_node, "k8semu": _k8semu_node}


@dataclass(frozen=True)
class Run:
    """One measurement: a shape, its payload and its length."""

    shape: str
    entries: int
    value: int
    round_trips: int


async def _side(run: Run, me: int, ports: tuple[int, int], ctl: Connection) -> None:
    port, peer_port = ports if me == A else ports[::-1]
    got: asyncio.Queue[raft_pb2.MessageBatch] = asyncio.Queue()
    sender: list[Callable[[raft_pb2.Message], None]] = []

    def on_batch(batch: raft_pb2.MessageBatch) -> None:
        if me == B:
            for msg in batch.messages:
                sender[0](_answer(msg))
        else:
            got.put_nowait(batch)

    sender.append(await _SHAPES[run.shape](Side(me, port, peer_port, on_batch, ctl)))
    ctl.send("connected")
    if me == B:
        await asyncio.get_running_loop().run_in_executor(None, ctl.recv)  # A is done
        return
    b_pid = ctl.recv()  # B is connected too
    messages = [_append(run.entries, run.value, 1 + i * run.entries) for i in range(64)]
    for i in range(200):  # warm up both directions
        sender[0](messages[i % 64])
        await got.get()
    cpu0 = _cpu_seconds(os.getpid()), _cpu_seconds(b_pid)
    t0 = time.perf_counter()
    for i in range(run.round_trips):
        sender[0](messages[i % 64])
        await got.get()
    wall = time.perf_counter() - t0
    cpu1 = _cpu_seconds(os.getpid()), _cpu_seconds(b_pid)
    ctl.send((wall, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]))


def _process(run: Run, me: int, ports: tuple[int, int], ctl: Connection) -> None:
    loop = uvloop.new_event_loop()
    loop.run_until_complete(_side(run, me, ports, ctl))
    # Not closed: grpc.aio objects kept in _KEEP are torn down with the process.


def _run(run: Run) -> tuple[float, float, float]:
    ctx = multiprocessing.get_context("spawn")
    ports = (_free_port(), _free_port())
    a_ctl, a_far = ctx.Pipe()
    b_ctl, b_far = ctx.Pipe()
    a = ctx.Process(target=_process, args=(run, A, ports, a_far))
    b = ctx.Process(target=_process, args=(run, B, ports, b_far))
    a.start()
    b.start()
    try:
        assert a_ctl.recv() == "up" and b_ctl.recv() == "up"
        a_ctl.send("go")
        b_ctl.send("go")
        assert a_ctl.recv() == "connected" and b_ctl.recv() == "connected"
        a_ctl.send(b.pid)
        wall, cpu_a, cpu_b = a_ctl.recv()
        b_ctl.send("done")
    finally:
        for p in (a, b):
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return wall, cpu_a, cpu_b


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="grpc,tcp,k8semu")
    p.add_argument("--entries", default="1,8", help="entries per MSG_APP, comma-separated")
    p.add_argument("--round-trips", type=int, default=5000)
    p.add_argument("--value", type=int, default=256)
    ns = p.parse_args()
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")
    print(
        "| shape | entries | wall us/round trip | CPU us/round trip (A + B) | sender A"
        " | receiver B |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for entries in (int(e) for e in ns.entries.split(",")):
        for shape in ns.shapes.split(","):
            wall, cpu_a, cpu_b = _run(Run(shape, entries, ns.value, ns.round_trips))
            n = ns.round_trips
            print(
                f"| {shape} | {entries} | {wall / n * 1e6:.0f} | {(cpu_a + cpu_b) / n * 1e6:.0f}"
                f" | {cpu_a / n * 1e6:.0f} | {cpu_b / n * 1e6:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
