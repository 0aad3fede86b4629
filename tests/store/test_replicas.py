"""A real 3-replica `k8semu store` cluster: replication, forwarding, reads, durability, faults."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from k8semu import transport
from k8semu.cluster.processes import K8semuStoreCluster, MemberExitedError
from k8semu.pb.etcd import kv_pb2, rpc_pb2
from k8semu.pb.raft import raft_pb2

from .conftest import Client

DEADLINE = 60.0  # a wait on real processes beside busy test workers (tests/support/poll.py)


async def _until(predicate, timeout: float = DEADLINE):  # type: ignore[no-untyped-def]
    """Poll an async predicate until it returns a truthy value."""
    end = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < end:
        try:
            last = await predicate()
            if last:
                return last
        except grpc.aio.AioRpcError as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s; last: {last!r}")


async def _put_retrying(client: Client, key: bytes, value: bytes) -> rpc_pb2.PutResponse:
    async def attempt() -> rpc_pb2.PutResponse:
        return await client.kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=5)

    return await _until(attempt)


def _leader_and_followers(cluster: K8semuStoreCluster) -> tuple[str, list[str]]:
    leader = cluster.leader(timeout=DEADLINE)
    return leader, [n for n in cluster.members if n != leader]


async def test_writes_through_any_replica_are_read_linearizably_everywhere(
    store_cluster: K8semuStoreCluster, clients: dict[str, Client]
) -> None:
    _, followers = _leader_and_followers(store_cluster)
    writer = clients[followers[0]]  # a follower forwards the proposal to the leader
    for i in range(20):
        put = await writer.kv.Put(rpc_pb2.PutRequest(key=b"k%02d" % i, value=b"v%d" % i), timeout=5)
        assert put.header.revision == i + 2  # etcd numbering: an empty store is at revision 1
        for client in clients.values():
            got = await client.kv.Range(rpc_pb2.RangeRequest(key=b"k%02d" % i), timeout=5)
            assert [kv.value for kv in got.kvs] == [b"v%d" % i]
    prefix = await clients[followers[1]].kv.Range(
        rpc_pb2.RangeRequest(key=b"k", range_end=b"l", limit=5), timeout=5
    )
    assert [kv.key for kv in prefix.kvs] == [b"k%02d" % i for i in range(5)]
    assert prefix.more and prefix.count == 20
    hashes = {
        (await c.maintenance.HashKV(rpc_pb2.HashKVRequest(), timeout=5)).hash
        for c in clients.values()
    }
    assert len(hashes) == 1


async def test_txn_compare_and_swap_through_a_follower(
    store_cluster: K8semuStoreCluster, clients: dict[str, Client]
) -> None:
    _, followers = _leader_and_followers(store_cluster)
    c = clients[followers[0]]
    first = await c.kv.Put(rpc_pb2.PutRequest(key=b"cas", value=b"a"), timeout=5)
    swap = rpc_pb2.TxnRequest(
        compare=[
            rpc_pb2.Compare(
                key=b"cas",
                target=rpc_pb2.Compare.MOD,
                result=rpc_pb2.Compare.EQUAL,
                mod_revision=first.header.revision,
            )
        ],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"cas", value=b"b"))],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"cas"))],
    )
    assert (await c.kv.Txn(swap, timeout=5)).succeeded
    again = await c.kv.Txn(swap, timeout=5)  # the mod revision moved on: the compare fails
    assert not again.succeeded
    assert again.responses[0].response_range.kvs[0].value == b"b"


async def test_no_quorum_fails_fast_with_unavailable(
    store_cluster: K8semuStoreCluster, clients: dict[str, Client]
) -> None:
    leader, followers = _leader_and_followers(store_cluster)
    await _put_retrying(clients[followers[0]], b"before", b"1")
    store_cluster.kill(leader)
    store_cluster.kill(followers[1])
    survivor = clients[followers[0]]
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as put_err:
        # The survivor may first hear nothing for an election timeout; after that it knows
        # there is no leader and refuses at once. Either way it must not hang for long.
        for _ in range(100):
            await survivor.kv.Put(rpc_pb2.PutRequest(key=b"x", value=b"y"), timeout=20)
    assert put_err.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as read_err:
        await survivor.kv.Range(rpc_pb2.RangeRequest(key=b"before"), timeout=20)
    assert read_err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 20
    # A serializable read is still served from the local copy.
    local = await survivor.kv.Range(rpc_pb2.RangeRequest(key=b"before", serializable=True))
    assert local.kvs[0].value == b"1"


async def test_acknowledged_writes_survive_kill9_of_a_minority_and_of_everyone(
    store_cluster: K8semuStoreCluster, clients: dict[str, Client]
) -> None:
    leader, followers = _leader_and_followers(store_cluster)
    acked: dict[bytes, int] = {}
    for i in range(30):
        put = await _put_retrying(clients[followers[0]], b"d%02d" % i, b"x")
        acked[b"d%02d" % i] = put.header.revision
    store_cluster.kill(leader)  # SIGKILL: no chance to flush anything
    for i in range(30, 60):
        put = await _put_retrying(clients[followers[0]], b"d%02d" % i, b"x")
        acked[b"d%02d" % i] = put.header.revision
    store_cluster.start_member(leader)
    for name in store_cluster.members:
        store_cluster.kill(name)
    store_cluster.start()
    store_cluster.wait_ready(timeout=60)
    for name, client in clients.items():

        async def read_all(client: Client = client) -> rpc_pb2.RangeResponse:
            return await client.kv.Range(rpc_pb2.RangeRequest(key=b"d", range_end=b"e"), timeout=5)

        got = await _until(read_all)
        assert {kv.key: kv.mod_revision for kv in got.kvs} == acked, name


async def test_lagging_follower_catches_up_through_a_snapshot(tmp_path: Path) -> None:
    cluster = K8semuStoreCluster(tmp_path / "c", 3, extra_args=["--snapshot-count", "40"])
    with cluster:
        cluster.start()
        leader = cluster.wait_ready(timeout=60)
        lagging = next(n for n in cluster.members if n != leader)
        cluster.stop(lagging)
        async with transport.channel(cluster.member(leader).endpoint) as ch:
            c = Client(ch)
            for i in range(300):
                await _put_retrying(c, b"s%03d" % i, b"v" * 100)
            before = await c.maintenance.Status(rpc_pb2.StatusRequest(), timeout=5)
        cluster.start_member(lagging)
        async with transport.channel(cluster.member(lagging).endpoint) as ch:
            c = Client(ch)

            async def caught_up() -> bool:
                got = await c.kv.Range(
                    rpc_pb2.RangeRequest(
                        key=b"s", range_end=b"t", count_only=True, serializable=True
                    ),
                    timeout=5,
                )
                return got.count == 300

            await _until(caught_up, 60)
        log = cluster.member(lagging).log_path.read_text()
        assert "state restored from snapshot" in log  # the log was compacted: entries could not do
        # Catching up did not disturb the leader: same leader, same term.
        async with transport.channel(cluster.member(leader).endpoint) as ch:
            after = await Client(ch).maintenance.Status(rpc_pb2.StatusRequest(), timeout=5)
        assert (after.leader, after.raftTerm) == (before.leader, before.raftTerm)


async def test_corrupt_data_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    cluster = K8semuStoreCluster(tmp_path / "c", 1)
    with cluster:
        cluster.start()
        cluster.wait_ready(timeout=60)
        cluster.stop("s1")
        kv_db = cluster.member("s1").data_dir / "kv.db"
        data = bytearray(kv_db.read_bytes())
        data[0:16] = b"garbage garbage!"
        kv_db.write_bytes(bytes(data))
        cluster.start_member("s1")
        with pytest.raises(MemberExitedError) as err:
            cluster.wait_ready(timeout=30)
        assert "kv.db" in str(err.value)


def _read_until_closed(sock: socket.socket) -> bytes:
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


async def test_garbage_from_the_network_is_refused_and_the_cluster_keeps_serving(
    store_cluster: K8semuStoreCluster, clients: dict[str, Client]
) -> None:
    leader, followers = _leader_and_followers(store_cluster)
    target = store_cluster.member(leader)
    for url in (target.peer_url, target.client_url):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"\x00\xff garbage that is not HTTP/2 " * 100)
    # A well-formed frame from another cluster is refused: the peer says why and hangs up.
    forged = raft_pb2.MessageBatch(cluster_id=12345)
    forged.messages.add(type=raft_pb2.MSG_VOTE, term=10**9)
    payload = forged.SerializeToString()
    host, port = target.peer_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(struct.pack("!IB", len(payload), 1) + payload)
        answer = _read_until_closed(sock)
    assert b"cluster id mismatch" in answer
    c = clients[leader]
    raw_call = c.channel.unary_unary(
        "/etcdserverpb.KV/Put", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await raw_call(b"\xff\xff\xff\xff\x0f not protobuf", timeout=5)
    assert bad.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(grpc.aio.AioRpcError) as big:
        await c.kv.Put(rpc_pb2.PutRequest(key=b"big", value=b"x" * (2 * 1024 * 1024)), timeout=5)
    assert big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request is too large" in (big.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await c.kv.Put(rpc_pb2.PutRequest(key=b"", value=b"x"), timeout=5)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Same leader, same term: nothing above disturbed the cluster.
    assert store_cluster.leader(timeout=DEADLINE) == leader
    await c.kv.Put(rpc_pb2.PutRequest(key=b"still", value=b"ok"), timeout=5)
    got = await clients[followers[0]].kv.Range(rpc_pb2.RangeRequest(key=b"still"), timeout=5)
    assert got.kvs[0].value == b"ok"


async def test_watch_streams_history_many_watches_and_compaction(
    store_cluster: K8semuStoreCluster, clients: dict[str, Client]
) -> None:
    _, followers = _leader_and_followers(store_cluster)
    c = clients[followers[0]]
    revs = [
        (
            await c.kv.Put(rpc_pb2.PutRequest(key=b"w/%d" % (i % 3), value=b"%d" % i), timeout=5)
        ).header.revision
        for i in range(9)
    ]
    await c.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"w/0"), timeout=5)
    requests: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()

    async def outgoing():  # type: ignore[no-untyped-def]
        while (item := await requests.get()) is not None:
            yield item

    stream = c.watch.Watch(outgoing(), timeout=60)
    await requests.put(
        rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(
                key=b"w/", range_end=b"w0", start_revision=revs[0], prev_kv=True
            )
        )
    )
    await requests.put(
        rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(key=b"w/1", start_revision=1)
        )
    )
    events: dict[int, list[kv_pb2.Event]] = {}
    created: list[int] = []
    async for resp in stream:
        if resp.created:
            created.append(resp.watch_id)
        events.setdefault(resp.watch_id, []).extend(resp.events)
        if sum(len(v) for v in events.values()) >= 10 + 3:
            break
    assert len(created) == 2 and len(set(created)) == 2
    all_prefix = events[created[0]]
    assert [e.kv.mod_revision for e in all_prefix] == [*revs, revs[-1] + 1]
    assert all_prefix[-1].type == kv_pb2.Event.DELETE and all_prefix[-1].prev_kv.value == b"6"
    assert [e.kv.value for e in events[created[1]]] == [b"1", b"4", b"7"]
    await c.kv.Compact(rpc_pb2.CompactionRequest(revision=revs[5]), timeout=5)
    await requests.put(
        rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"w/", start_revision=2))
    )
    async for resp in stream:
        if resp.canceled:
            assert resp.compact_revision == revs[5]
            break
    await requests.put(None)
    stream.cancel()


async def test_lease_keeps_keys_alive_and_expiry_deletes_them(
    store_cluster: K8semuStoreCluster, clients: dict[str, Client]
) -> None:
    _, followers = _leader_and_followers(store_cluster)
    c = clients[followers[0]]
    # A TTL of 4 s renewed every 0.5 s: a renewal may come late by 3.5 s (a busy host; with a
    # TTL of 2 s, one stall of 1.5 s would let it expire mid-test) and still be in time.
    grant = await c.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=4), timeout=5)
    assert grant.ID > 0 and grant.TTL == 4
    await c.kv.Put(rpc_pb2.PutRequest(key=b"leased", value=b"v", lease=grant.ID), timeout=5)

    async def keepalives():  # type: ignore[no-untyped-def]
        for _ in range(12):
            yield rpc_pb2.LeaseKeepAliveRequest(ID=grant.ID)
            await asyncio.sleep(0.5)

    answered = [r.TTL async for r in c.lease.LeaseKeepAlive(keepalives(), timeout=60)]
    assert answered == [4] * 12  # kept alive for 6 s, longer than its TTL
    ttl = await c.lease.LeaseTimeToLive(
        rpc_pb2.LeaseTimeToLiveRequest(ID=grant.ID, keys=True), timeout=5
    )
    assert ttl.grantedTTL == 4 and list(ttl.keys) == [b"leased"] and 0 <= ttl.TTL <= 4

    async def gone() -> bool:
        got = await c.kv.Range(rpc_pb2.RangeRequest(key=b"leased"), timeout=5)
        return not got.kvs

    await _until(gone)
    after = await c.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=grant.ID), timeout=5)
    assert after.TTL == -1


def _k8semu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k8semu", *args], capture_output=True, text=True, timeout=120
    )


async def test_snapshot_save_and_restore_into_a_new_cluster(
    store_cluster: K8semuStoreCluster, clients: dict[str, Client], tmp_path: Path
) -> None:
    c = clients["s1"]
    revisions = {}
    for i in range(25):
        put = await _put_retrying(c, b"b%02d" % i, b"v%d" % i)
        revisions[b"b%02d" % i] = put.header.revision
    backup = tmp_path / "backup.snap"
    saved = _k8semu(
        "store", "snapshot", "save", str(backup), "--endpoints", ",".join(store_cluster.endpoints)
    )
    assert saved.returncode == 0, saved.stderr

    corrupt = tmp_path / "corrupt.snap"
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    refused = _k8semu(
        "store", "snapshot", "restore", str(corrupt), "--data-dir", str(tmp_path / "x")
    )
    assert refused.returncode != 0 and "corrupt.snap" in refused.stderr
    assert not (tmp_path / "x").exists()

    fresh = K8semuStoreCluster(tmp_path / "restored", 3)
    with fresh:
        for name, member in fresh.members.items():
            done = _k8semu(
                "store",
                "snapshot",
                "restore",
                str(backup),
                "--data-dir",
                str(member.data_dir),
                "--name",
                name,
                "--initial-cluster",
                fresh.initial_cluster,
                "--initial-cluster-token",
                fresh.token,
            )
            assert done.returncode == 0, done.stderr
        fresh.start()
        fresh.wait_ready(timeout=60)
        async with transport.channel(fresh.endpoints[2]) as ch:
            r = Client(ch)
            got = await r.kv.Range(rpc_pb2.RangeRequest(key=b"b", range_end=b"c"), timeout=5)
            assert {kv.key: kv.mod_revision for kv in got.kvs} == revisions
            put = await _put_retrying(r, b"after", b"restore")
            assert put.header.revision == max(revisions.values()) + 1


def test_bad_flags_exit_nonzero_naming_the_flag(tmp_path: Path) -> None:
    done = _k8semu("store", "--data-dir", str(tmp_path), "--election-timeout", "10")
    assert done.returncode == 2 and "--election-timeout" in done.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        done = _k8semu(
            "store",
            "--data-dir",
            str(tmp_path / "d"),
            "--listen-client-urls",
            f"http://127.0.0.1:{port}",
            "--listen-peer-urls",
            "http://127.0.0.1:0",
        )
    finally:
        busy.close()
    assert done.returncode == 1 and "--listen-client-urls" in done.stderr


def test_sigterm_stops_a_replica_cleanly(tmp_path: Path) -> None:
    cluster = K8semuStoreCluster(tmp_path / "c", 1)
    with cluster:
        cluster.start()
        cluster.wait_ready(timeout=60)
        proc = cluster.member("s1").proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


async def test_progress_notifications_health_and_reflection(tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    cluster = K8semuStoreCluster(
        tmp_path / "c", 1, extra_args=["--experimental-watch-progress-notify-interval", "300ms"]
    )
    with cluster:
        cluster.start()
        cluster.wait_ready(timeout=60)
        async with transport.channel(cluster.endpoints[0]) as ch:
            c = Client(ch)
            health = health_pb2_grpc.HealthStub(ch)
            status = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING

            async def list_services():  # type: ignore[no-untyped-def]
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            reflect = reflection_pb2_grpc.ServerReflectionStub(ch)
            async for answer in reflect.ServerReflectionInfo(list_services(), timeout=5):
                names = {s.name for s in answer.list_services_response.service}
                assert {"etcdserverpb.KV", "etcdserverpb.Watch", "grpc.health.v1.Health"} <= names
                break

            put = await _put_retrying(c, b"p", b"1")

            async def requests():  # type: ignore[no-untyped-def]
                create = rpc_pb2.WatchCreateRequest(key=b"p", progress_notify=True)
                yield rpc_pb2.WatchRequest(create_request=create)
                await asyncio.sleep(30)

            # An idle watcher that asked for them gets empty responses carrying the revision.
            progress = []
            async for resp in c.watch.Watch(requests(), timeout=30):
                if not resp.created and not resp.events:
                    progress.append(resp.header.revision)
                    if len(progress) == 2:
                        break
            assert progress == [put.header.revision] * 2


def test_generated_code_is_current() -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(root / "scripts" / "genproto.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
