"""Snapshot files: MVCCStore.write_snapshot, verify, restore, streaming and corruption."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from k8semu.pb.etcd import rpc_pb2
from k8semu.pb.store import internal_pb2
from k8semu.store import snapshot
from k8semu.store.errors import CorruptSnapshotError
from k8semu.store.mvcc import MVCCStore


def put(i: int, key: bytes, value: bytes = b"v") -> tuple[int, int, bytes]:
    req = internal_pb2.InternalRequest(id=i, put=rpc_pb2.PutRequest(key=key, value=value))
    return (i, 2, req.SerializeToString())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MVCCStore]:
    (tmp_path / "live").mkdir()
    s = MVCCStore(tmp_path / "live" / "kv.db")
    s.apply_batch([put(i, b"k%03d" % (i % 40), b"x" * i) for i in range(1, 120)])
    comp = internal_pb2.InternalRequest(id=1, compaction=rpc_pb2.CompactionRequest(revision=60))
    s.apply_batch([(120, 3, comp.SerializeToString())])
    yield s
    s.close()


@pytest.fixture
def snap(store: MVCCStore, tmp_path: Path) -> Path:
    path = tmp_path / "snap.db"
    store.write_snapshot(path)
    return path


def test_roundtrip(store: MVCCStore, tmp_path: Path) -> None:
    path = tmp_path / "snap.db"
    header = store.write_snapshot(path)
    assert header.format == snapshot.FORMAT
    assert (header.raft_index, header.raft_term) == (120, 3)
    assert (header.revision, header.compact_revision) == (store.revision, 60)
    framing = len(snapshot.MAGIC) + 4 + header.ByteSize()
    aligned = framing + (-framing % 512)
    assert header.size > 0 and path.stat().st_size == aligned + header.size + 32
    # The shape etcdctl 3.4 insists on: 512-aligned data followed by a SHA-256.
    assert path.stat().st_size % 512 == 32
    assert snapshot.verify(path) == header == snapshot.read_header(path)
    dest = tmp_path / "restored" / "kv.db"
    dest.parent.mkdir()
    assert snapshot.restore(path, dest, raft_index=120) == header
    restored = MVCCStore(dest)
    assert restored.hash_kv(0) == store.hash_kv(0)
    assert (restored.applied_index, restored.applied_term) == (120, 3)
    assert (restored.revision, restored.compact_revision) == (store.revision, 60)
    # the restored replica continues exactly like the original
    more = [put(121, b"new")]
    assert [r.revision for r in restored.apply_batch(more)] == [
        r.revision for r in store.apply_batch(more)
    ]
    assert restored.hash_kv(0) == store.hash_kv(0)
    assert not list(dest.parent.glob(".*"))  # no temporary files left behind
    assert not list((tmp_path / "live").glob(".*"))
    restored.close()


def test_write_to_stream_and_iter_chunks(store: MVCCStore, snap: Path, tmp_path: Path) -> None:
    buf = io.BytesIO()
    store.write_snapshot(buf)
    assert buf.getvalue() == snap.read_bytes()  # deterministic image of the same state
    chunks = list(snapshot.iter_chunks(snap, chunk_size=1000))
    assert b"".join(c for c, _ in chunks) == snap.read_bytes()
    assert [r for _, r in chunks][-1] == 0
    assert all(len(c) == 1000 for c, _ in chunks[:-1])
    assert chunks[0][1] == snap.stat().st_size - 1000


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_flipped_bytes_detected(snap: Path) -> None:
    size = snap.stat().st_size
    header_end = len(snapshot.MAGIC) + 4 + snapshot.read_header(snap).ByteSize()
    cases = {
        2: "bad magic",
        len(snapshot.MAGIC) + 3: "",  # header length: truncated or bad header
        header_end + 5000: "checksum mismatch",
        size - 1: "checksum mismatch",
    }
    original = snap.read_bytes()
    for offset, message in cases.items():
        snap.write_bytes(original)
        flip(snap, offset)
        with pytest.raises(CorruptSnapshotError) as ei:
            snapshot.verify(snap)
        assert str(snap) in ei.value.message and message in ei.value.message


@pytest.mark.parametrize("keep", [0, 5, 26, 40, 1000, -32, -1])
def test_truncation_detected(snap: Path, keep: int) -> None:
    data = snap.read_bytes()
    snap.write_bytes(data[:keep])
    with pytest.raises(CorruptSnapshotError, match=r"truncated|bad magic|bad header"):
        snapshot.verify(snap)


def test_trailing_bytes_detected(snap: Path) -> None:
    with snap.open("ab") as f:
        f.write(b"extra")
    with pytest.raises(CorruptSnapshotError, match="trailing"):
        snapshot.verify(snap)


def test_bad_sqlite_image_detected(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"definitely not sqlite" * 100)
    path = tmp_path / "snap"
    snapshot.write(path, internal_pb2.SnapshotHeader(raft_index=1), junk)
    with pytest.raises(CorruptSnapshotError, match="bad SQLite image"):
        snapshot.verify(path)
    # a valid SQLite file that is not a kv.db passes verify but restore refuses it
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    snapshot.write(path, internal_pb2.SnapshotHeader(raft_index=1), other)
    snapshot.verify(path)
    with pytest.raises(CorruptSnapshotError, match="bad SQLite image"):
        snapshot.restore(path, tmp_path / "kv.db")
    assert not (tmp_path / "kv.db").exists()


def test_restore_into_a_new_cluster_rebases_the_raft_index(
    store: MVCCStore, snap: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "kv.db"
    header = snapshot.restore(snap, dest, raft_index=1, raft_term=1)
    assert header.raft_index == 120  # the file's header, unchanged
    s = MVCCStore(dest)
    assert (s.applied_index, s.applied_term) == (1, 1)
    assert (s.revision, s.compact_revision) == (store.revision, 60)
    assert s.hash_kv(0) == store.hash_kv(0)  # MVCC history is untouched
    [r] = s.apply_batch([put(1, b"replayed?"), put(2, b"new")])  # index 1 is the snapshot
    assert (r.index, r.revision) == (2, store.revision + 1)
    s.close()


def test_restore_refuses_to_overwrite(snap: Path, tmp_path: Path) -> None:
    dest = tmp_path / "kv.db"
    dest.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        snapshot.restore(snap, dest)
    assert dest.read_bytes() == b"old"
    dest.unlink()
    (tmp_path / "kv.db-wal").write_bytes(b"stale")
    with pytest.raises(FileExistsError):
        snapshot.restore(snap, dest)
    (tmp_path / "kv.db-wal").unlink()
    snapshot.restore(snap, dest, raft_index=120)  # same index: a no-op rebase
    s = MVCCStore(dest)
    assert (s.applied_index, s.applied_term) == (120, 3)
    s.close()


def test_header_mismatch_with_image_detected(store: MVCCStore, tmp_path: Path) -> None:
    image = tmp_path / "image.db"
    store._db.execute("VACUUM INTO ?", (str(image),))
    lying = internal_pb2.SnapshotHeader(raft_index=999, raft_term=3, revision=store.revision)
    path = tmp_path / "lying.snap"
    snapshot.write(path, lying, image)
    with pytest.raises(CorruptSnapshotError, match="applied_index"):
        snapshot.restore(path, tmp_path / "kv.db")
