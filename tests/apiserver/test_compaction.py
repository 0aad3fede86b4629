"""The API server's compactor (--etcd-compaction-interval) on `k8semu store` and on a real etcd,
and a full store (etcd's NOSPACE alarm) as clients see it.

Compaction is observed the way any etcd client sees it: a Range at a revision older than the
compacted one fails with OUT_OF_RANGE "required revision has been compacted". The swap on
`compact_rev_key` is observed through the API servers' logs (JSON lines).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from k8semu import transport
from k8semu.apiserver.compaction import COMPACT_REV_KEY
from k8semu.cli.verbs._shared import format_error
from k8semu.client import Client, Informer, ResourceExhausted
from k8semu.cluster.processes import EtcdCluster, K8semuStoreCluster, ProcessCluster
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.client.test_informer import FAST, CountingClient, assert_cache_matches_list
from tests.support.apiserver import APIServerProcess, running, serving
from tests.support.etcdctl import Etcdctl
from tests.support.fixtures import TEST_RETRIES
from tests.support.poll import Eventually

eventually = Eventually(interval=0.1)
COMPACTING = ["--etcd-compaction-interval", "1s", "--log-level", "info", "--log-format", "json"]


def config_map(name: str, size: int = 10) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap()
    cm.metadata.name = name
    cm.metadata.namespace = "default"
    cm.data["x"] = "y" * size
    return cm


async def range_at(store: ProcessCluster, revision: int) -> grpc.StatusCode | None:
    """The status of a Range of `compact_rev_key` at `revision` (None: it worked)."""
    async with transport.channel(store.endpoints) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        try:
            await kv.Range(rpc_pb2.RangeRequest(key=b"x", revision=revision), timeout=5)
        except grpc.aio.AioRpcError as exc:
            assert "compacted" in (exc.details() or ""), exc.details()
            return exc.code()
    return None


async def compact_rev_key(store: ProcessCluster) -> tuple[int, int]:
    """(version, value) of compact_rev_key."""
    async with transport.channel(store.endpoints) as channel:
        resp = await rpc_pb2_grpc.KVStub(channel).Range(
            rpc_pb2.RangeRequest(key=COMPACT_REV_KEY), timeout=5
        )
    if not resp.kvs:
        return 0, 0
    return resp.kvs[0].version, int(resp.kvs[0].value or b"0")


def events(server: APIServerProcess, event: str) -> list[dict[str, object]]:
    out = []
    for line in server.output().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                out.append(record)
    return out


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8semuStoreCluster]:
    with running(K8semuStoreCluster(tmp_path_factory.mktemp("store") / "cluster", 1)) as cluster:
        yield cluster


async def test_two_api_servers_compact_once_per_interval(
    small_store: K8semuStoreCluster, tmp_path: Path
) -> None:
    servers = [
        APIServerProcess(small_store, tmp_path / f"apiserver-{i}.log", COMPACTING) for i in range(2)
    ]
    try:
        for s in servers:
            s.wait_serving()
        async with Client([s.address for s in servers], retries=TEST_RETRIES) as c:
            first = await c.create(config_map("before"))
            old = int(first.metadata.resource_version)
            # Writes keep the revision moving, so each interval has something to compact.
            for i in range(3):
                await c.create(config_map(f"w{i}"))

            async def compacted_past_old() -> bool:
                await c.patch(core_pb2.ConfigMap, "before", {"data": {"n": "1"}})
                return await range_at(small_store, old) == grpc.StatusCode.OUT_OF_RANGE

            await eventually(compacted_past_old, what="a Range at an old revision is compacted")
        # Every bump of compact_rev_key's version was won by exactly one server; each
        # compaction came from a won swap, to a revision nobody compacted before.
        version, _ = await compact_rev_key(small_store)
        won = sorted(
            int(str(e["version"])) for s in servers for e in events(s, "compaction swap won")
        )
        lost = sum(len(events(s, "another API server compacts this interval")) for s in servers)
        assert won == list(range(1, len(won) + 1)) and won[-1] <= version
        assert lost >= 1, "the second API server never lost a swap: both compacted"
        revisions = [
            int(str(e["revision"]))
            for s in servers
            for e in events(s, "compacted the store's history")
        ]
        assert len(revisions) == len(set(revisions)) and len(revisions) < len(won)
        # The server that keeps winning dies: the other takes over within two intervals.
        winner = max(servers, key=lambda s: len(events(s, "compaction swap won")))
        other = servers[1 - servers.index(winner)]
        before = len(events(other, "compacted the store's history"))
        winner.kill()
        async with Client([other.address], retries=TEST_RETRIES) as c:

            async def other_compacts() -> bool:
                await c.patch(core_pb2.ConfigMap, "before", {"data": {"n": "2"}})
                return len(events(other, "compacted the store's history")) > before

            await eventually(other_compacts, what="the surviving API server compacts")
    finally:
        for s in servers:
            s.close()


def etcd(base: Path, *extra: str) -> EtcdCluster:
    if not EtcdCluster.available():
        pytest.skip("no etcd binary at /usr/bin/etcd")
    return EtcdCluster(base / "etcd", 1, extra_args=list(extra))


async def test_compaction_keeps_a_real_etcd_bounded(tmp_path: Path) -> None:
    cluster = etcd(tmp_path)
    with running(cluster), serving(cluster, tmp_path / "apiserver.log", COMPACTING) as server:
        async with Client([server.address], retries=TEST_RETRIES) as c:
            old = int((await c.create(config_map("cm"))).metadata.resource_version)

            async def compacted() -> bool:
                await c.patch(core_pb2.ConfigMap, "cm", {"data": {"n": "1"}})
                return await range_at(cluster, old) == grpc.StatusCode.OUT_OF_RANGE

            await eventually(compacted, what="etcd compacted past the first write")
        # The log line follows etcd's answer to the Compact call: a Range can see the
        # compaction before the API server has written it.
        await eventually(
            lambda: events(server, "compacted the store's history"),
            what="the API server logs its compaction",
        )


async def test_a_full_store_is_a_clear_error_and_compaction_still_runs(tmp_path: Path) -> None:
    """etcd with a 4 MiB quota: creates then fail with RESOURCE_EXHAUSTED and etcd's exact
    text, reads and deletes work, the CLI prints one line, the compactor still compacts
    under the alarm, and after defrag + alarm disarm writes work again."""
    cluster = etcd(tmp_path, "--quota-backend-bytes", str(4 * 1024 * 1024))
    with running(cluster), serving(cluster, tmp_path / "apiserver.log", COMPACTING) as server:
        async with Client([server.address], retries=TEST_RETRIES) as c:
            error: ResourceExhausted | None = None
            made = 0
            for i in range(200):
                try:
                    await c.create(config_map(f"big-{i}", size=100_000))
                    made += 1
                except ResourceExhausted as exc:
                    error = exc
                    break
            assert error is not None, "the quota never filled"
            assert error.message.startswith("etcdserver: mvcc: database space exceeded")
            line = format_error(error)
            assert line.startswith(
                "Error from server (InternalError): etcdserver: mvcc: database space exceeded"
            )
            assert "\n" not in line
            assert (await c.get(core_pb2.ConfigMap, "big-0")).data["x"]
            # Deletes still work: what the operator frees before compacting.
            for i in range(made):
                gone = await c.delete(core_pb2.ConfigMap, f"big-{i}")
            deleted_at = int(gone.metadata.resource_version)
            # The CLI, as a user meets it.
            manifest = tmp_path / "cm.yaml"
            manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: more}\n")
            cli = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "k8semu", "create", "-f", str(manifest),
                 "--server", server.address],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert cli.returncode == 1
            assert cli.stderr.startswith(
                "Error from server (InternalError): etcdserver: mvcc: database space exceeded"
            ), cli.stderr
            assert cli.stderr.count("\n") == 1
            # The compactor cannot swap (a put) but compacts anyway, past the deletes.
            await eventually(
                lambda: events(server, "store is full (NOSPACE): compacting without the swap"),
                what="compaction under NOSPACE",
            )
            await eventually(
                lambda: range_at(cluster, deleted_at - 1), what="compacted past the deletes"
            )
            etcdctl = Etcdctl(cluster.endpoints)
            for args in (["defrag"], ["alarm", "disarm"]):
                done = await asyncio.to_thread(etcdctl.run, *args)
                assert done.returncode == 0, done.stderr
            await c.create(config_map("after", size=10))


async def test_informer_relists_after_the_api_servers_compacted_its_version(
    small_store: K8semuStoreCluster, tmp_path: Path
) -> None:
    """An informer whose API server comes back after the compactor went past its
    resourceVersion gets Gone (410) from the fresh watch cache and lists again."""
    watched_server = APIServerProcess(small_store, tmp_path / "watched.log", COMPACTING)
    writer_server = APIServerProcess(small_store, tmp_path / "writer.log", COMPACTING)
    try:
        watched_server.wait_serving()
        writer_server.wait_serving()
        async with (
            CountingClient([watched_server.address], retries=TEST_RETRIES) as watched,
            Client([writer_server.address], retries=TEST_RETRIES) as writer,
        ):
            await writer.create(config_map("seen"))
            informer: Informer[core_pb2.ConfigMap] = Informer(
                watched, core_pb2.ConfigMap, namespace="default", config=FAST
            )
            informer.start()
            try:
                await informer.wait_synced(10)
                old = int(informer.last_sync_resource_version)
                watched_server.kill()

                async def compacted_past_informer() -> bool:
                    await writer.patch(core_pb2.ConfigMap, "seen", {"data": {"n": "1"}})
                    return await range_at(small_store, old + 1) == grpc.StatusCode.OUT_OF_RANGE

                await eventually(compacted_past_informer, what="compaction past the informer")
                watched_server.start()
                watched_server.wait_serving()
                await assert_cache_matches_list(informer, writer, "default")
                assert watched.lists == 2, "Gone from the restarted server: one relist"
            finally:
                await informer.stop()
    finally:
        watched_server.close()
        writer_server.close()
