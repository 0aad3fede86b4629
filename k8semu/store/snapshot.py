"""Snapshot files of the store's state machine: framing, verification, restore, streaming.

A snapshot file is, in order::

    b"k8semu-store-snapshot/1\\n"                 magic line
    uint32 big-endian N, N bytes                 serialized internal_pb2.SnapshotHeader
    zero bytes up to the next multiple of 512    so the image starts 512-aligned
    header.size bytes                            the SQLite image of kv.db (whole pages)
    32 bytes                                     SHA-256 of everything above

The alignment makes the file's size 32 mod 512, the shape etcdctl 3.4 checks before it
keeps a streamed snapshot (a page-aligned database followed by its SHA-256), so
`etcdctl snapshot save` works against the store.

This module owns only the file format. It never opens the live kv.db (MVCCStore makes the
image) and knows nothing of Raft: the caller decides when a snapshot is taken or installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from google.protobuf.message import DecodeError

from k8semu.pb.store import internal_pb2
from k8semu.store.errors import CorruptSnapshotError

FORMAT = "k8semu-store-snapshot/1"
MAGIC = (FORMAT + "\n").encode()
DIGEST_SIZE = 32
DEFAULT_CHUNK_SIZE = 1 << 20
_MAX_HEADER = 1 << 16
_LEN = struct.Struct(">I")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_COPY_BUF = 1 << 20
_ALIGN = 512


def _padding(header_end: int) -> int:
    return -header_end % _ALIGN


def write(
    dest: BinaryIO | Path | str, header: internal_pb2.SnapshotHeader, image_path: Path | str
) -> internal_pb2.SnapshotHeader:
    """Frame the SQLite image at `image_path` into `dest` and return the header written.

    `header.format` and `header.size` are filled in here from the image; the other fields are
    the caller's. A path destination is written through a temporary file, fsynced and renamed,
    so a crash never leaves a half-written snapshot under the final name.
    """
    out = internal_pb2.SnapshotHeader()
    out.CopyFrom(header)
    out.format = FORMAT
    out.size = os.path.getsize(image_path)
    if isinstance(dest, (str, Path)):
        write_atomically(Path(dest), lambda f: _write_to(f, out, Path(image_path)))
    else:
        _write_to(dest, out, Path(image_path))
    return out


def write_atomically(final: Path, fill: Callable[[BinaryIO], None]) -> None:
    """Write `final` through a temporary file beside it that `fill` writes, fsynced and
    renamed (its directory fsynced too): a crash never leaves half a file under that name."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(final.parent)


def _write_to(f: BinaryIO, header: internal_pb2.SnapshotHeader, image: Path) -> None:
    digest = hashlib.sha256()

    def put(data: bytes) -> None:
        digest.update(data)
        f.write(data)

    blob = header.SerializeToString()
    put(MAGIC)
    put(_LEN.pack(len(blob)))
    put(blob)
    put(bytes(_padding(len(MAGIC) + _LEN.size + len(blob))))
    copied = 0
    with image.open("rb") as src:
        while chunk := src.read(_COPY_BUF):
            put(chunk)
            copied += len(chunk)
    if copied != header.size:
        raise RuntimeError(f"{image}: image changed size while being written to a snapshot")
    f.write(digest.digest())


def verify(path: Path | str) -> internal_pb2.SnapshotHeader:
    """Check a snapshot file end to end and return its header.

    Raises CorruptSnapshotError naming the file and the defect: bad magic, bad header,
    truncation or trailing bytes, checksum mismatch, or an image that is not a SQLite database.
    """
    path = Path(path)
    header, image_offset = _read_header(path)
    total = os.path.getsize(path)
    expected = image_offset + header.size + DIGEST_SIZE
    if total < expected:
        raise CorruptSnapshotError(
            f"snapshot {path}: truncated: {total} bytes, header promises {expected}"
        )
    if total > expected:
        raise CorruptSnapshotError(
            f"snapshot {path}: {total - expected} unexpected trailing bytes after the checksum"
        )
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in _chunks(f, total - DIGEST_SIZE, f"snapshot {path}: truncated while reading"):
            digest.update(chunk)
        trailer = f.read(DIGEST_SIZE)
    if trailer != digest.digest():
        raise CorruptSnapshotError(f"snapshot {path}: SHA-256 checksum mismatch")
    with path.open("rb") as f:
        f.seek(image_offset)
        page = f.read(100)
    problem = _sqlite_header_problem(page, header.size)
    if problem:
        raise CorruptSnapshotError(f"snapshot {path}: bad SQLite image: {problem}")
    return header


def read_header(path: Path | str) -> internal_pb2.SnapshotHeader:
    """The header only, checking magic and framing but not the checksum (cheap)."""
    return _read_header(Path(path))[0]


def _read_header(path: Path) -> tuple[internal_pb2.SnapshotHeader, int]:
    with path.open("rb") as f:
        head = f.read(len(MAGIC) + _LEN.size)
        if len(head) < len(MAGIC):
            if MAGIC.startswith(head):
                raise CorruptSnapshotError(f"snapshot {path}: truncated inside the magic line")
            raise CorruptSnapshotError(f"snapshot {path}: bad magic, not a k8semu store snapshot")
        if head[: len(MAGIC)] != MAGIC:
            raise CorruptSnapshotError(f"snapshot {path}: bad magic, not a k8semu store snapshot")
        if len(head) < len(MAGIC) + _LEN.size:
            raise CorruptSnapshotError(f"snapshot {path}: truncated before the header")
        (n,) = _LEN.unpack_from(head, len(MAGIC))
        if n > _MAX_HEADER:
            raise CorruptSnapshotError(f"snapshot {path}: bad header length {n}")
        blob = f.read(n)
    if len(blob) < n:
        raise CorruptSnapshotError(f"snapshot {path}: truncated inside the header")
    header = internal_pb2.SnapshotHeader()
    try:
        header.ParseFromString(blob)
    except DecodeError as exc:
        raise CorruptSnapshotError(f"snapshot {path}: bad header: {exc}") from exc
    if header.format != FORMAT:
        raise CorruptSnapshotError(
            f"snapshot {path}: unsupported format {header.format!r} (want {FORMAT!r})"
        )
    header_end = len(MAGIC) + _LEN.size + n
    return header, header_end + _padding(header_end)


def _sqlite_header_problem(page: bytes, size: int) -> str | None:
    if len(page) < 100 or not page.startswith(_SQLITE_MAGIC):
        return "missing SQLite file header"
    (page_size,) = struct.unpack_from(">H", page, 16)
    if page_size == 1:
        page_size = 65536
    if page_size < 512 or page_size & (page_size - 1):
        return f"invalid page size {page_size}"
    if size % page_size:
        return f"image size {size} is not a multiple of the page size {page_size}"
    change_counter, pages, valid_for = (
        struct.unpack_from(">I", page, 24)[0],
        struct.unpack_from(">I", page, 28)[0],
        struct.unpack_from(">I", page, 92)[0],
    )
    if valid_for == change_counter and pages and pages * page_size != size:
        return f"header says {pages} pages of {page_size} bytes, image has {size} bytes"
    return None


def restore(
    path: Path | str,
    kv_db_path: Path | str,
    *,
    raft_index: int | None = None,
    raft_term: int | None = None,
    bump_revision: int = 0,
    mark_compacted: bool = False,
) -> internal_pb2.SnapshotHeader:
    """Verify the snapshot at `path` and write its image as a new kv.db at `kv_db_path`.

    `raft_index` / `raft_term`, when given, become the restored store's applied index and
    term (default: the snapshot's own): installing a leader's snapshot passes the index it
    was taken at (a no-op), restoring into a brand-new cluster passes the new log's first
    index so that entries from 1 on are not mistaken for replays. MVCC revisions are kept,
    unless `bump_revision` (etcdutl's --bump-revision) moves the store revision up by that
    much, so that revisions after the restore stay above every revision a client saw before;
    `mark_compacted` (etcdutl's --mark-compacted) then makes that new revision the compact
    revision, so reads and watches from any earlier revision fail as compacted (Kubernetes'
    410 Gone: informers relist instead of silently missing what the backup lacks).

    Refuses (FileExistsError) when `kv_db_path` or its -wal/-shm companions exist: the caller
    moves the old state out of the way first. The image's own meta table must agree with the
    header, so a snapshot of some other SQLite file is refused even with a valid checksum.
    Returns the header as found in the file.
    """
    path = Path(path)
    dest = Path(kv_db_path)
    header = verify(path)
    for p in (dest, _companion(dest, "-wal"), _companion(dest, "-shm")):
        if p.exists():
            raise FileExistsError(f"refusing to restore snapshot over existing {p}")
    tmp = dest.with_name(f".{dest.name}.restore-{os.getpid()}")
    try:
        with path.open("rb") as src, tmp.open("wb") as out:
            src.seek(_read_header(path)[1])
            for chunk in _chunks(src, header.size, f"snapshot {path}: truncated while restoring"):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        _check_image(path, tmp, header)
        if (raft_index, raft_term) != (None, None) or bump_revision or mark_compacted:
            _rebase(tmp, raft_index, raft_term, bump_revision, mark_compacted)
        try:
            os.link(tmp, dest)  # fails instead of overwriting if dest appeared meanwhile
        except FileExistsError:
            raise
        except OSError:  # no hard links on this filesystem
            if dest.exists():
                raise FileExistsError(f"refusing to restore over existing {dest}") from None
            os.replace(tmp, dest)
    finally:
        for p in (tmp, _companion(tmp, "-wal"), _companion(tmp, "-shm")):
            with contextlib.suppress(OSError):
                p.unlink()
    _fsync_dir(dest.parent)
    return header


def _chunks(f: BinaryIO, size: int, truncated: str) -> Iterator[bytes]:
    """The next `size` bytes of `f` in bounded chunks; CorruptSnapshotError(`truncated`) if
    the file ends first."""
    remaining = size
    while remaining:
        chunk = f.read(min(_COPY_BUF, remaining))
        if not chunk:
            raise CorruptSnapshotError(truncated)
        yield chunk
        remaining -= len(chunk)


def _check_image(snap: Path, image: Path, header: internal_pb2.SnapshotHeader) -> None:
    try:
        db = sqlite3.connect(f"file:{image}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise CorruptSnapshotError(f"snapshot {snap}: bad SQLite image: {exc}") from exc
    try:
        check = db.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            detail = "; ".join(str(r[0]) for r in check[:5])
            raise CorruptSnapshotError(f"snapshot {snap}: bad SQLite image: {detail}")
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    except sqlite3.Error as exc:
        raise CorruptSnapshotError(f"snapshot {snap}: bad SQLite image: {exc}") from exc
    finally:
        db.close()
    want = {
        "applied_index": header.raft_index,
        "applied_term": header.raft_term,
        "revision": header.revision,
        "compact_revision": header.compact_revision,
    }
    for name, value in want.items():
        if meta.get(name) != value:
            raise CorruptSnapshotError(
                f"snapshot {snap}: image {name} is {meta.get(name)}, header says {value}"
            )


def _rebase(
    image: Path, raft_index: int | None, raft_term: int | None, bump: int, mark_compacted: bool
) -> None:
    if bump < 0:
        raise ValueError(f"bump_revision must be >= 0, got {bump}")
    db = sqlite3.connect(image, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = DELETE").fetchone()  # no WAL left beside the image
        db.execute("BEGIN IMMEDIATE")
        for name, value in (("applied_index", raft_index), ("applied_term", raft_term)):
            if value is not None:
                db.execute("UPDATE meta SET value = ? WHERE name = ?", (value, name))
        # Only the store revision moves: every key keeps its create/mod revision (as etcd),
        # and the next write gets revision + bump + 1.
        db.execute("UPDATE meta SET value = value + ? WHERE name = 'revision'", (bump,))
        if mark_compacted:
            db.execute(
                "UPDATE meta SET value = (SELECT value FROM meta WHERE name = 'revision')"
                " WHERE name = 'compact_revision'"
            )
        db.execute("COMMIT")
    finally:
        db.close()


def iter_chunks(
    path: Path | str, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[tuple[bytes, int]]:
    """Yield (blob, remaining_bytes_after_blob) over the whole snapshot file, for the
    Maintenance.Snapshot stream (SnapshotResponse.blob / remaining_bytes)."""
    path = Path(path)
    remaining = os.path.getsize(path)
    with path.open("rb") as f:
        while remaining > 0:
            blob = f.read(min(chunk_size, remaining))
            if not blob:
                raise CorruptSnapshotError(f"snapshot {path}: shrank while being streamed")
            remaining -= len(blob)
            yield blob, remaining


def _companion(p: Path, suffix: str) -> Path:
    return p.with_name(p.name + suffix)


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
