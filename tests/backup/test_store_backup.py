"""Backups of a real 3-replica store: taken from the leader at a linearizable point, verified,
refused when damaged, and restored as a new cluster with its revision bumped and compacted."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import grpc
import pytest

from k8semu import transport
from k8semu.backup import archive, take
from k8semu.backup.archive import BackupError
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from k8semu.store import restore as store_restore
from k8semu.store.config import ConfigError

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 60.0
BUMP = 1_000_000_000


async def _fill(endpoint: str) -> int:
    """Some /registry/ keys of several kinds and one outside it; the last write's revision."""
    async with transport.channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        rev = 0
        for key in (
            b"/registry/pods/default/a",
            b"/registry/pods/default/b",
            b"/registry/secrets/default/s",
            b"/registry/allocations/clusterips/127.96.0.10",
            b"/registry/allocations/nodeports/30001",
            b"/other/key",
        ):
            resp = await kv.Put(rpc_pb2.PutRequest(key=key, value=b"v-" + key), timeout=10)
            rev = resp.header.revision
        return rev


@pytest.fixture
def store(tmp_path: Path) -> K8semuStoreCluster:
    cluster = K8semuStoreCluster(tmp_path / "old", 3)
    cluster.start()
    cluster.wait_ready(timeout=START_TIMEOUT_S)
    return cluster


async def test_backup_verify_and_refusals(store: K8semuStoreCluster, tmp_path: Path) -> None:
    with store:
        last = await _fill(store.endpoints[0])
        dest = tmp_path / "b.k8semu-backup"
        meta = await take.take(store.endpoints, dest, cluster="c1")
    # Every acknowledged write is in it: the backup's revision is at or after the last one.
    assert meta.revision >= last
    assert meta.objects == {
        "allocations/clusterips": 1,
        "allocations/nodeports": 1,
        "pods": 2,
        "secrets": 1,
    }
    assert archive.verify(dest) == meta
    assert meta.cluster == "c1" and meta.format_version == archive.FORMAT_VERSION
    with tarfile.open(dest) as tar:
        assert tar.getnames() == ["metadata.json", "store.snapshot"]

    data = dest.read_bytes()
    bad = tmp_path / "bad.k8semu-backup"
    cases: list[tuple[bytes, str]] = [
        (data[: len(data) // 2], "truncated"),
        (b"hello", "not a k8semu backup"),
    ]
    with tarfile.open(dest) as tar:
        payload = tar.getmember("store.snapshot")
    flipped = bytearray(data)
    flipped[payload.offset_data + payload.size // 2] ^= 0xFF
    cases.append((bytes(flipped), "checksum mismatch"))
    for content, why in cases:
        bad.write_bytes(content)
        with pytest.raises(BackupError, match=why):
            archive.verify(bad)

    newer = tmp_path / "newer.k8semu-backup"
    raw = meta.to_json() | {"formatVersion": archive.FORMAT_VERSION + 1}
    _rewrite_metadata(dest, newer, raw)
    with pytest.raises(BackupError, match="format version 2 is newer"):
        archive.verify(newer)
    lying = tmp_path / "lying.k8semu-backup"
    _rewrite_metadata(dest, lying, meta.to_json() | {"objects": {"pods": 7}})
    with pytest.raises(BackupError, match="object counts"):
        archive.verify(lying)


def _rewrite_metadata(src: Path, dest: Path, raw: dict[str, object]) -> None:
    with tarfile.open(src) as tin, tarfile.open(dest, "w") as tout:
        blob = json.dumps(raw).encode()
        info = tarfile.TarInfo("metadata.json")
        info.size = len(blob)
        tout.addfile(info, io.BytesIO(blob))
        member = tin.getmember("store.snapshot")
        tout.addfile(member, tin.extractfile(member))


async def test_restore_new_cluster_bumped_and_compacted(
    store: K8semuStoreCluster, tmp_path: Path
) -> None:
    """Every replica restored from one backup with a new token: a new cluster id, the same
    keys, the revision bumped by 10^9 and compacted (a watch from before gets 410), and new
    writes above the bump."""
    with store:
        await _fill(store.endpoints[0])
        dest = tmp_path / "b.k8semu-backup"
        meta = await take.take(store.endpoints, dest, cluster="c1")
        old_status = store.statuses()
    old_id = next(iter(old_status.values())).header.cluster_id  # type: ignore[attr-defined]

    new = K8semuStoreCluster(tmp_path / "new", 3, token="restored-token", reuse_data=True)
    members = {n: m.peer_url.removeprefix("http://") for n, m in new.members.items()}
    with archive.extracted_payload(dest) as (_, payload):
        with pytest.raises(ConfigError, match="--mark-compacted: required"):
            store_restore.check_bump(BUMP, False)
        options = {"members": members, "token": new.token, "bump_revision": BUMP}
        restore = functools.partial(store_restore.restore_member, mark_compacted=True)
        too_far = options | {"bump_revision": store_restore.MAX_REVISION}
        with pytest.raises(ConfigError, match="past the store's limit"):
            await asyncio.to_thread(restore, payload, tmp_path / "x", name="s1", **too_far)
        assert not (tmp_path / "x").exists()
        for name, m in new.members.items():
            # In a thread: it runs an event loop of its own.
            await asyncio.to_thread(restore, payload, m.data_dir, name=name, **options)
    # An old replica mixed into the new cluster (its data dir under the new flags) is refused.
    flags = new.member_flags(new.members["s1"])
    flags[flags.index("--data-dir") + 1] = str(store.members["s1"].data_dir)
    mixed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "k8semu", "store", *flags],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert mixed.returncode != 0 and "belongs to cluster" in mixed.stderr, mixed.stderr[-2000:]
    with new:
        new.start()
        new.wait_ready(timeout=START_TIMEOUT_S)
        async with transport.channel(new.endpoints[0]) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            got = await kv.Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"), timeout=10)
            assert got.header.cluster_id != old_id
            assert got.header.revision == meta.revision + BUMP
            assert len(got.kvs) == 6
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await kv.Range(rpc_pb2.RangeRequest(key=b"/other/key", revision=2), timeout=10)
            assert gone.value.code() == grpc.StatusCode.OUT_OF_RANGE
            put = await kv.Put(rpc_pb2.PutRequest(key=b"/after", value=b"x"), timeout=10)
            assert put.header.revision == meta.revision + BUMP + 1
            watch = rpc_pb2_grpc.WatchStub(ch).Watch(
                iter(
                    [
                        rpc_pb2.WatchRequest(
                            create_request=rpc_pb2.WatchCreateRequest(
                                key=b"/", range_end=b"0", start_revision=meta.revision
                            )
                        )
                    ]
                ),
                timeout=10,
            )
            async for resp in watch:
                if resp.compact_revision or resp.canceled:
                    assert resp.compact_revision == meta.revision + BUMP
                    break
            watch.cancel()


async def test_a_store_without_quorum_is_backed_up_from_its_survivor(
    store: K8semuStoreCluster, tmp_path: Path
) -> None:
    """Two of three replicas lost: no leader, so a normal backup is refused, and the one
    member that is left is backed up as it stands (`k8semu backup --from-member`), holding
    every write it had applied."""
    with store:
        last = await _fill(store.endpoints[0])
        survivor = store.member("s3")
        # Each replica applies an acknowledged write soon; wait until s3 has the last one.
        await _applied(survivor.endpoint, last)
        store.kill("s1")
        store.kill("s2")
        dest = tmp_path / "lone.k8semu-backup"
        with pytest.raises(BackupError, match="a backup needs a store with quorum"):
            await take.take([survivor.endpoint], dest, cluster="c1")
        assert not dest.exists()
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "k8semu", "backup", "-o", str(dest),
             "--from-member", survivor.endpoint, "--endpoints", survivor.endpoint],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "without a leader" in run.stderr
    meta = archive.verify(dest)
    assert meta.revision >= last and meta.objects["pods"] == 2


async def _applied(endpoint: str, revision: int) -> None:
    async with transport.channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for _ in range(200):
            got = await kv.Range(
                rpc_pb2.RangeRequest(key=b"/", range_end=b"0", serializable=True, count_only=True),
                timeout=5,
            )
            if got.header.revision >= revision:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{endpoint} never applied revision {revision}")
