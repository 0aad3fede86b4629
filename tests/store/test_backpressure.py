"""Back-pressure: a replica whose applies lag its commit index refuses new writes as etcd does
(RESOURCE_EXHAUSTED "etcdserver: too many requests"), and the writes it had accepted all
complete once the applies catch up.

A real one-member store runs in the test's process so that its state machine's thread can
be held (the one thing a separate process would not let the test do); clients reach it over
gRPC as any client would. The gap is lowered from etcd's 5,000 so that a few dozen writes
are enough.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from k8semu import transport
from k8semu.cluster.processes import free_loopback_ports
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from k8semu.store import server as store_server
from k8semu.store.config import StoreConfig
from k8semu.store.server import StoreServer
from tests.support.poll import Eventually

GAP = 10
eventually = Eventually(retry_on=(grpc.aio.AioRpcError,))


@pytest.fixture
async def replica(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StoreServer]:
    monkeypatch.setattr(store_server, "MAX_APPLY_GAP", GAP)
    client_port, peer_port = free_loopback_ports(2)
    config = StoreConfig(
        name="s1",
        data_dir=tmp_path / "s1",
        listen_client=f"127.0.0.1:{client_port}",
        listen_peer=f"127.0.0.1:{peer_port}",
        members={"s1": f"127.0.0.1:{peer_port}"},
    )
    srv = StoreServer(config)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(0)


def _put(key: bytes) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=key, value=b"v")


async def test_writes_are_refused_while_applies_lag_and_accepted_ones_complete(
    replica: StoreServer,
) -> None:
    async with transport.channel(replica.config.listen_client) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        await eventually(lambda: kv.Put(_put(b"/first"), timeout=2), what="a first write")
        release = threading.Event()
        # Holds the state machine's only thread: committed entries queue up unapplied.
        held = asyncio.ensure_future(replica.sm.run(release.wait, 60.0))
        try:
            node = replica.node
            assert node is not None
            accepted = []
            # One at a time, each committed before the next: all are accepted (the gap is
            # checked when a write arrives), and the last one takes the gap past GAP.
            for i in range(GAP + 1):
                committed = node.commit_index
                accepted.append(asyncio.ensure_future(kv.Put(_put(b"/k%03d" % i), timeout=60)))
                await eventually(
                    lambda c=committed: node.commit_index > c, what=f"put {i} committed"
                )
            assert node.commit_index > replica.sm.applied_index + GAP
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await kv.Put(_put(b"/refused"), timeout=10)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert refused.value.details() == "etcdserver: too many requests"
        finally:
            release.set()
            await held
        assert all(r.header.revision > 0 for r in await asyncio.gather(*accepted))
        # Once caught up, writes pass again; the refused one was never written.
        await kv.Put(_put(b"/after"), timeout=10)
        got = await kv.Range(rpc_pb2.RangeRequest(key=b"/", range_end=b"0"), timeout=10)
        keys = {kv_.key for kv_ in got.kvs}
        assert b"/refused" not in keys
        assert keys >= {b"/first", b"/after", *(b"/k%03d" % i for i in range(GAP + 1))}
