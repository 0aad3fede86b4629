"""Membership changes on real `k8semu store` processes: MemberAdd/Remove/Update through the
Raft log, a new member joining with --initial-cluster-state existing (catching up by snapshot
when far behind), a replica whose data dir is gone replaced under a writer with no
acknowledged write lost, and the refusals etcd gives, in etcd's words."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from k8semu import transport
from k8semu.chaos.linearizability import HistoryRecorder, check
from k8semu.chaos.workload import Tally, Workload, read_all, run_workload
from k8semu.cluster.processes import K8semuStoreCluster, Member
from k8semu.pb.etcd import rpc_pb2
from tests.store.conftest import Client
from tests.support.poll import Eventually

pytestmark = pytest.mark.slow

TIMEOUT = 5.0
# Replicas restart and elect during these tests: an RPC refused meanwhile is asked again.
eventually = Eventually(retry_on=(grpc.aio.AioRpcError, KeyError))


def _member_ids(cluster: K8semuStoreCluster) -> dict[str, int]:
    cluster.statuses()
    return {name: m.member_id for name, m in cluster.members.items() if m.member_id}


async def _list(client: Client) -> list[rpc_pb2.Member]:
    resp = await client.cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=TIMEOUT)
    return list(resp.members)


async def _put(client: Client, key: bytes, value: bytes) -> int:
    resp = await client.kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=TIMEOUT)
    return resp.header.revision


async def _refused(call: object, text: str) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.details() == text, info.value.details()
    return info.value.code()


class Writer:
    """Puts ``PREFIX<n % keys>`` = ``v<n>`` one after another through every endpoint until
    stopped; what it got acknowledged is the last value of each key (at ``revisions``)."""

    def __init__(self, endpoints: list[str], prefix: bytes, keys: int) -> None:
        self.acked: dict[bytes, bytes] = {}
        self.revisions: dict[bytes, int] = {}
        self.failed: list[str] = []  # the newest refusals, for a failure's message
        self.count = 0
        self._stop = asyncio.Event()
        self._channel = transport.channel(endpoints)
        self._task = asyncio.create_task(self._run(prefix, keys))

    async def _run(self, prefix: bytes, keys: int) -> None:
        client = Client(self._channel)
        n = 0
        while not self._stop.is_set():
            key, value = prefix + b"%d" % (n % keys), b"v%d" % n
            n += 1
            try:
                revision = await _put(client, key, value)
            except grpc.aio.AioRpcError as exc:
                self.failed = [*self.failed[-9:], f"{value!r}: {exc.code().name} {exc.details()}"]
                continue
            self.acked[key] = value
            self.revisions[key] = revision
            self.count += 1

    async def stop(self) -> dict[bytes, bytes]:
        self._stop.set()
        await self._task
        await self._channel.close()
        return self.acked


def _written(value: bytes | None) -> int:
    """Which of the writer's writes ``value`` is (``v<n>``: n), -1 for none."""
    return -1 if value is None else int(value[1:])


def _log_since_start(member: Member) -> str:
    """The tail of ``member``'s log from its newest start on: the file also holds the lines
    of its earlier processes, and a replaced member's old process may have logged what a
    wait means of the new one (a lagging replica installs snapshots too)."""
    tail = member.log_tail(400)
    start = tail.rfind(f": starting {member.name}: ")
    return tail[start:] if start >= 0 else tail


async def _holdings(cluster: K8semuStoreCluster, keys: list[bytes]) -> list[str]:
    """What each member holds of ``keys`` (value@mod_revision), serializable and linearizable,
    to tell a stale read from a replica that lost writes (or writes lost everywhere)."""
    lines = []
    for name, member in cluster.members.items():
        async with transport.channel(member.endpoint) as ch:
            client = Client(ch)
            for serializable in (True, False):
                request = rpc_pb2.RangeRequest(key=b"k", range_end=b"l", serializable=serializable)
                try:
                    got = await client.kv.Range(request, timeout=TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    lines.append(f"{name} serializable={serializable}: {exc.code().name}")
                    continue
                held = {kv.key: f"{kv.value!r}@{kv.mod_revision}" for kv in got.kvs}
                lines.append(
                    f"{name} serializable={serializable} at {got.header.revision}:"
                    f" {[(k, held.get(k)) for k in keys]}"
                )
    return lines


async def _until_healthy(client: Client, taken: str) -> None:
    """Until changes are no longer refused as "unhealthy cluster" (as etcd, for 5 s after
    its members connected): asked with an add whose peer URL clashes, which never writes."""

    async def healthy() -> bool:
        try:
            await client.cluster.MemberAdd(
                rpc_pb2.MemberAddRequest(peerURLs=[taken]), timeout=TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            return exc.details() != "etcdserver: unhealthy cluster"
        raise AssertionError("a clashing add was taken")

    await eventually(healthy, what="cluster healthy for changes")


@pytest.fixture
async def leader_client(store_cluster: K8semuStoreCluster) -> AsyncIterator[Client]:
    leader = store_cluster.leader()
    async with transport.channel(store_cluster.member(leader).endpoint) as ch:
        yield Client(ch)


async def _join(cluster: K8semuStoreCluster, client: Client, name: str) -> int:
    """Add ``name`` through ``client``, start it, and wait until it serves as a started
    member; its id."""
    member = cluster.add_member(name)
    # Refused as "unhealthy cluster" until every member was connected for 5 s (as etcd).
    added = await eventually(
        lambda: client.cluster.MemberAdd(
            rpc_pb2.MemberAddRequest(peerURLs=[member.peer_url]), timeout=TIMEOUT
        ),
        what=f"{name} added",
    )
    assert added.member.name == "" and list(added.member.peerURLs) == [member.peer_url]
    assert added.member.ID in {m.ID for m in added.members}
    cluster.start_member(name)

    async def published() -> bool:
        listed = {m.ID: m for m in await _list(client)}
        return listed[added.member.ID].name == name

    await eventually(published, what=f"{name} published its name")
    return added.member.ID


async def test_add_a_member_that_joins_and_serves(
    store_cluster: K8semuStoreCluster, leader_client: Client
) -> None:
    before = await _list(leader_client)
    assert sorted(m.name for m in before) == ["s1", "s2", "s3"]
    await _put(leader_client, b"before-join", b"1")
    new_id = await _join(store_cluster, leader_client, "s4")
    listed = await _list(leader_client)
    assert [m.ID for m in listed] == sorted(m.ID for m in listed)
    s4 = next(m for m in listed if new_id == m.ID)
    assert list(s4.clientURLs) == [store_cluster.member("s4").client_url]
    # It caught up and serves: a linearizable read on it sees a write made through another.
    revision = await _put(leader_client, b"after-join", b"2")
    async with transport.channel(store_cluster.member("s4").endpoint) as ch:
        got = await Client(ch).kv.Range(rpc_pb2.RangeRequest(key=b"after-join"), timeout=TIMEOUT)
        assert got.header.revision >= revision and got.kvs[0].value == b"2"
        old = await Client(ch).kv.Range(rpc_pb2.RangeRequest(key=b"before-join"), timeout=TIMEOUT)
        assert old.kvs[0].value == b"1"
    # Every replica lists the same four members.
    for m in store_cluster.members.values():
        async with transport.channel(m.endpoint) as ch:
            assert {x.ID for x in await _list(Client(ch))} == {x.ID for x in listed}
    # The new member survives a restart (its ids come from its data dir, not the flags).
    store_cluster.restart("s4")
    store_cluster.wait_ready(timeout=30)


async def test_refusals_in_etcds_words(
    store_cluster: K8semuStoreCluster, leader_client: Client
) -> None:
    ids = _member_ids(store_cluster)
    cluster = leader_client.cluster
    taken = store_cluster.member("s2").peer_url
    await _until_healthy(leader_client, taken)
    code = await _refused(
        cluster.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[taken]), timeout=TIMEOUT),
        "etcdserver: Peer URLs already exists",
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    await _refused(
        cluster.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=["nonsense"]), timeout=TIMEOUT),
        "etcdserver: given member URLs are invalid",
    )
    code = await _refused(
        cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=12345), timeout=TIMEOUT),
        "etcdserver: member not found",
    )
    assert code == grpc.StatusCode.NOT_FOUND
    await _refused(
        cluster.MemberUpdate(
            rpc_pb2.MemberUpdateRequest(ID=12345, peerURLs=["http://127.0.0.1:1"]),
            timeout=TIMEOUT,
        ),
        "etcdserver: member not found",
    )
    await _refused(
        cluster.MemberUpdate(
            rpc_pb2.MemberUpdateRequest(ID=ids["s1"], peerURLs=[taken]), timeout=TIMEOUT
        ),
        "etcdserver: Peer URLs already exists",
    )
    # With one follower down, removing the other one (connected) would leave the leader
    # alone of two: etcd's strict check refuses, the cluster would lose its quorum.
    leader = store_cluster.leader()
    down, other = (n for n in ("s1", "s2", "s3") if n != leader)
    store_cluster.kill(down)

    # Once the leader misses it (an election timeout), changes are refused as unhealthy:
    # etcd checks that before anything else, so a clashing add says it without writing.
    async def unhealthy() -> bool:
        try:
            await cluster.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[taken]), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            return exc.details() == "etcdserver: unhealthy cluster"
        raise AssertionError("a clashing add was taken")

    await eventually(unhealthy, what="add refused as unhealthy")
    await _refused(
        cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=ids[other]), timeout=TIMEOUT),
        "etcdserver: unhealthy cluster",
    )
    assert len(await _list(leader_client)) == 3  # nothing was written
    # The member that is down can go: it is not part of the active quorum.
    removed = await cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=ids[down]), timeout=TIMEOUT)
    assert {m.ID for m in removed.members} == {ids[leader], ids[other]}
    store_cluster.forget_member(down)


async def test_update_then_remove_through_a_follower_and_remove_the_leader(
    store_cluster: K8semuStoreCluster, tmp_path: Path
) -> None:
    ids = _member_ids(store_cluster)
    leader = store_cluster.leader()
    follower = next(n for n in ("s1", "s2", "s3") if n != leader)
    other = next(n for n in ("s1", "s2", "s3") if n not in (leader, follower))
    async with transport.channel(store_cluster.member(follower).endpoint) as ch:
        client = Client(ch)
        await _until_healthy(client, store_cluster.member(other).peer_url)
        # A follower forwards the change to the leader.
        url = store_cluster.member(other).peer_url
        updated = await client.cluster.MemberUpdate(
            rpc_pb2.MemberUpdateRequest(ID=ids[other], peerURLs=[url]), timeout=TIMEOUT
        )
        assert {m.ID for m in updated.members} == set(ids.values())
        # Removing the leader: it hands leadership over first, then is removed; its
        # process stops, saying so.
        removed = await client.cluster.MemberRemove(
            rpc_pb2.MemberRemoveRequest(ID=ids[leader]), timeout=TIMEOUT
        )
        assert {m.ID for m in removed.members} == {ids[follower], ids[other]}
        proc = store_cluster.member(leader).proc
        assert proc is not None
        proc.wait(timeout=20)
        assert "permanently removed" in store_cluster.member(leader).log_tail()
        store_cluster.forget_member(leader)
        await _put(client, b"two-left", b"ok")
        assert len(await _list(client)) == 2


def test_existing_state_without_a_cluster_to_join_is_refused(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "k8semu", "store", "--data-dir", str(tmp_path / "d"), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    alone = run("--name", "s9", "--initial-cluster-state", "existing")
    assert alone.returncode != 0
    assert "--initial-cluster names no member but s9" in alone.stderr, alone.stderr
    foreign = run(
        "--name",
        "s9",
        "--listen-peer-urls",
        "http://127.0.0.1:0",
        "--initial-cluster-state",
        "existing",
        "--initial-cluster",
        "s9=http://127.0.0.1:1,s1=http://127.0.0.1:9",
    )
    assert foreign.returncode != 0
    assert "cannot fetch cluster info from peer urls" in foreign.stderr, foreign.stderr
    # Nothing was written: no Raft log, no marker (a later proper join is not blocked).
    assert not (tmp_path / "d" / "raft.db").exists()
    assert not (tmp_path / "d" / "member").exists()


async def test_replace_a_replica_whose_data_is_gone_under_a_writer(tmp_path: Path) -> None:
    """s2's data dir is destroyed: remove it, add it back under a new id with the same URLs,
    start it empty; it catches up by snapshot (the leader compacted its log). A writer runs
    throughout: every write acknowledged is there afterwards (or a later one to its key: the
    write in flight on s2 when it is killed fails, but has often been applied)."""
    cluster = K8semuStoreCluster(tmp_path / "c", 3, extra_args=("--snapshot-count", "100"))
    with cluster:
        cluster.start()
        cluster.wait_ready(timeout=60)
        writer = Writer(cluster.endpoints, b"k", 300)
        try:
            # Past snapshot-count + the 1000 entries a leader keeps for lagging followers:
            # a new member cannot catch up from the log alone.
            # 30 s was short on a busy machine (three test workers beside real clusters).
            await eventually(lambda: writer.count >= 1500, timeout=120, what="writes")
            ids = _member_ids(cluster)
            # The cluster's waits run in threads: the writer goes on meanwhile.
            await asyncio.to_thread(cluster.kill, "s2")
            shutil.rmtree(cluster.member("s2").data_dir)
            leader = await asyncio.to_thread(cluster.leader)
            async with transport.channel(cluster.member(leader).endpoint) as ch:
                client = Client(ch)
                # If s2 led, the new leader refuses changes as an "unhealthy cluster" until it
                # has heard from its peers for a while (as etcd does); a client retries.
                await eventually(
                    lambda: client.cluster.MemberRemove(
                        rpc_pb2.MemberRemoveRequest(ID=ids["s2"]), timeout=TIMEOUT
                    ),
                    what="s2 removed",
                )
                added = await eventually(
                    lambda: client.cluster.MemberAdd(
                        rpc_pb2.MemberAddRequest(peerURLs=[cluster.member("s2").peer_url]),
                        timeout=TIMEOUT,
                    ),
                    what="s2 added again",
                )
                assert ids["s2"] != added.member.ID
                cluster.rejoin_member("s2")
                cluster.start_member("s2")
                await asyncio.to_thread(cluster.wait_ready, 30)
            # It catches up by snapshot (the leader compacted its log) while the writer writes.
            # Only the new process's lines count: the old s2 may have installed one too.
            s2 = cluster.member("s2")
            await eventually(
                lambda: "state restored from snapshot" in _log_since_start(s2),
                timeout=30,
                what="s2 installed a snapshot",
            )
            await eventually(
                lambda: "member attributes published" in _log_since_start(s2),
                timeout=30,
                what="s2 published its name",
            )
        finally:
            acked = await writer.stop()
        async with transport.channel(cluster.member("s2").endpoint) as ch:
            client = Client(ch)
            got = await client.kv.Range(
                rpc_pb2.RangeRequest(key=b"k", range_end=b"l"), timeout=TIMEOUT
            )
            have = {kv.key: kv.value for kv in got.kvs}
        # The new replica holds the last acknowledged value of every key, or the value of a
        # later write to it that failed: a timed-out write may still have been applied.
        wrong = sorted(k for k, v in acked.items() if _written(have.get(k)) < _written(v))[:5]
        if wrong:
            acks = [f"{k!r}: {acked[k]!r}@{writer.revisions[k]}" for k in wrong]
            report = [f"acknowledged {acks}", *await _holdings(cluster, wrong)]
            report.append(f"latest refused writes: {writer.failed}")
            pytest.fail("s2 misses acknowledged writes:\n" + "\n".join(report))


async def test_grow_to_five_and_shrink_back_to_three_linearizably(tmp_path: Path) -> None:
    """3 -> 5 one member at a time (each started and caught up before the next add, as
    etcd's health check wants), then 5 -> 3 removing two of the original members, under the
    register workload of the chaos tests (clients over s1..s3, moving on to another endpoint
    when theirs is gone): the history, with a final read from the last members, is
    linearizable."""
    cluster = K8semuStoreCluster(tmp_path / "c", 3)
    with cluster:
        cluster.start()
        cluster.wait_ready(timeout=60)
        recorder = HistoryRecorder()
        stop = asyncio.Event()
        workload = Workload(clients=6, keys=6, max_seconds=90.0, max_ops=200_000)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(run_workload(cluster.endpoints, recorder, workload, seed=1, stop=stop))
            try:
                await _grow_and_shrink(cluster)
            finally:
                stop.set()
        assert sorted(cluster.members) == ["s3", "s4", "s5"]
        await read_all(cluster.endpoints, recorder, workload.key_names(), client=workload.clients)
    history = recorder.history()
    result = await asyncio.to_thread(check, history, timeout=30.0)
    assert result.ok, result.detail
    tally = Tally.of(history)
    assert tally.status("ok") > 100, tally  # not vacuous


async def _grow_and_shrink(cluster: K8semuStoreCluster) -> None:
    async with transport.channel(cluster.member("s1").endpoint) as ch:
        client = Client(ch)
        for name in ("s4", "s5"):
            await _join(cluster, client, name)
            await asyncio.to_thread(cluster.wait_ready, 30)
        assert len(await _list(client)) == 5
    ids = _member_ids(cluster)
    async with transport.channel(cluster.member("s5").endpoint) as ch:
        client = Client(ch)
        for name in ("s1", "s2"):
            await eventually(
                lambda name=name: client.cluster.MemberRemove(  # type: ignore[misc]
                    rpc_pb2.MemberRemoveRequest(ID=ids[name]), timeout=TIMEOUT
                ),
                what=f"{name} removed",
            )
            proc = cluster.member(name).proc
            assert proc is not None
            await asyncio.to_thread(proc.wait, 30)
            cluster.forget_member(name)
        assert sorted(m.name for m in await _list(client)) == ["s3", "s4", "s5"]


async def test_not_enough_started_members(tmp_path: Path) -> None:
    """A one-member cluster may add one member (etcd's special case), but with that one not
    started yet, another add or removing the started member would leave the started members
    short of a quorum: refused, in etcd's words, before anything is written."""
    cluster = K8semuStoreCluster(tmp_path / "c", 1)
    with cluster:
        cluster.start()
        cluster.wait_ready(timeout=60)
        async with transport.channel(cluster.member("s1").endpoint) as ch:
            client = Client(ch)
            await _until_healthy(client, cluster.member("s1").peer_url)
            added = await client.cluster.MemberAdd(
                rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:9"]), timeout=TIMEOUT
            )
            assert added.member.name == "" and len(added.members) == 2
            text = "etcdserver: re-configuration failed due to not enough started members"
            await _refused(
                client.cluster.MemberAdd(
                    rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:10"]), timeout=TIMEOUT
                ),
                text,
            )
            await _refused(
                client.cluster.MemberRemove(
                    rpc_pb2.MemberRemoveRequest(ID=_member_ids(cluster)["s1"]), timeout=TIMEOUT
                ),
                text,
            )
            assert len(await _list(client)) == 2
