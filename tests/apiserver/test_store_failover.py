"""The API server's etcd client moves a call to another store endpoint when the one it used
answers UNAVAILABLE: reads always, writes only when the store cannot have applied them."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from k8semu.apiserver.errors import Unavailable
from k8semu.apiserver.store import Store
from k8semu.cluster.processes import K8semuStoreCluster, free_loopback_ports
from k8semu.pb.etcd import rpc_pb2


async def _until_leaderless(cluster: K8semuStoreCluster, name: str) -> None:
    """Until the replica knows it has no leader (its election timer ran out)."""
    for _ in range(300):
        status = cluster.statuses().get(name)
        if isinstance(status, rpc_pb2.StatusResponse) and status.leader == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} still names a leader")


def _put(key: bytes, value: bytes) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))]
    )


async def test_calls_move_off_a_dead_and_a_leaderless_endpoint(tmp_path: Path) -> None:
    """Endpoints: a healthy 3-replica store, a port nobody listens on (connection refused) and
    the lone survivor of another store (answers "no leader"). Every read and write succeeds."""
    with (
        K8semuStoreCluster(tmp_path / "good", 3) as good,
        K8semuStoreCluster(tmp_path / "orphan", 3) as orphan,
    ):
        good.start()
        orphan.start()
        good.wait_ready(timeout=60)
        orphan.wait_ready(timeout=60)
        survivor, *others = list(orphan.members)
        for name in others:
            orphan.kill(name)
        await _until_leaderless(orphan, survivor)
        (dead_port,) = free_loopback_ports(1)
        endpoints = [
            f"127.0.0.1:{dead_port}",
            orphan.members[survivor].endpoint,
            *good.endpoints,
        ]
        store = Store(endpoints, deadline=10.0)
        try:
            for n in range(30):
                await store.txn(_put(b"k%02d" % n, b"v"))
                got = await store.range(rpc_pb2.RangeRequest(key=b"k%02d" % n))
                assert got.kvs[0].value == b"v"
        finally:
            await store.close()


async def test_a_lone_leaderless_endpoint_surfaces_etcds_error(tmp_path: Path) -> None:
    """A lone endpoint whose replica knows no leader: the call is tried twice, then the
    error surfaces as Unavailable naming etcd's text."""
    with K8semuStoreCluster(tmp_path / "c", 3) as cluster:
        cluster.start()
        cluster.wait_ready(timeout=60)
        survivor, *others = list(cluster.members)
        for name in others:
            cluster.kill(name)
        await _until_leaderless(cluster, survivor)
        store = Store([cluster.members[survivor].endpoint], deadline=10.0)
        try:
            with pytest.raises(Unavailable) as err:
                await store.range(rpc_pb2.RangeRequest(key=b"x"))
            assert "etcdserver: no leader" in str(err.value)
            with pytest.raises(Unavailable) as err:
                await store.txn(_put(b"x", b"y"))
            assert "etcdserver: no leader" in str(err.value)
        finally:
            await store.close()


async def test_writes_through_a_rolling_restart_of_the_store(tmp_path: Path) -> None:
    """Every replica restarted in turn (SIGTERM, leader included) while writers run: with the
    leader's hand-over and the endpoint fail-over, few writes fail and only those whose
    outcome is unknown ("leader changed", CANCELLED), none with "no leader" or a refused
    connection."""
    with K8semuStoreCluster(tmp_path / "c", 3) as cluster:
        cluster.start()
        cluster.wait_ready(timeout=60)
        store = Store(list(cluster.endpoints), deadline=10.0)
        writers = _Writers(store, 4)
        try:
            for name in list(cluster.members):
                await asyncio.to_thread(cluster.restart, name, 10.0)
                await asyncio.to_thread(cluster.wait_ready, 60)
        finally:
            await writers.stop()
            await store.close()
        oks, failures = writers.ok, writers.failures
        assert oks > 50, (oks, failures)
        # Only writes whose outcome is unknown may fail (they are not resent): forwarded to
        # the old leader just before its followers heard of the transfer ("leader changed"),
        # or in flight at a replica whose gRPC server's stop grace ran out (CANCELLED).
        # On a loaded machine a write may also time out (outcome unknown as well).
        unknown = ("etcdserver: leader changed", "CANCELLED", "timed out", "no answer in time")
        assert all(any(u in f for u in unknown) for f in failures), failures
        assert len(failures) * 10 < oks, (oks, failures)


async def test_a_replica_that_stops_answering_holds_up_only_its_own_calls(tmp_path: Path) -> None:
    """A follower frozen (SIGSTOP: connected, it answers nothing) under four writers: the
    calls sent to it wait for their deadline and fail "no answer in time", and it is tried
    last for a while; the writers do not all end up waiting on it in turn (round-robin alone
    sent every writer's next call there: each waited out its deadline, and the writes went
    at the pace of the deadline)."""
    with K8semuStoreCluster(tmp_path / "c", 3) as cluster:
        cluster.start()
        leader = cluster.wait_ready(timeout=60)
        frozen = next(n for n in cluster.members if n != leader)
        store = Store(list(cluster.endpoints), deadline=5.0)
        for n in range(len(cluster.endpoints)):
            await store.txn(_put(b"warm%d" % n, b"v"))  # connected to each (round-robin)
        cluster.pause(frozen)
        writers = _Writers(store, 4)
        try:
            await writers.until(300)
        finally:
            await writers.stop()
            await store.close()
            cluster.resume(frozen)
        assert all("no answer in time" in f for f in writers.failures), writers.failures
        assert len(writers.failures) * 10 < writers.ok, (writers.ok, writers.failures)


class _Writers:
    """`count` tasks writing new keys through `store` until stopped; what was acknowledged
    (`ok`) and the failures' texts."""

    def __init__(self, store: Store, count: int) -> None:
        self.store = store
        self.ok = 0
        self.failures: list[str] = []
        self._done = asyncio.Event()
        self._tasks = [asyncio.create_task(self._write(w)) for w in range(count)]

    async def _write(self, w: int) -> None:
        for n in itertools.count():
            if self._done.is_set():
                return
            try:
                await self.store.txn(_put(f"w{w}/{n}".encode(), b"v"))
                self.ok += 1
            except Unavailable as exc:
                self.failures.append(str(exc))

    async def until(self, at_least: int) -> None:
        """Until `at_least` writes are acknowledged (no rate is asserted: a busy host writes
        slowly)."""
        for _ in range(1200):
            if self.ok >= at_least:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.ok} writes acknowledged, not {at_least}")

    async def stop(self) -> None:
        self._done.set()
        await asyncio.gather(*self._tasks)
