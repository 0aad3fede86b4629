"""The backup file: one uncompressed POSIX tar with exactly two members, in this order::

    metadata.json     what the backup holds (below), UTF-8 JSON
    store.snapshot    a store snapshot file (k8semu.store.snapshot's format, itself framed and
                      SHA-256-checksummed: a header, the SQLite image of kv.db, its digest)

A tar, so that `tar tf` shows what is inside and `tar xf` hands the snapshot to
`k8semu store snapshot restore` by hand. ``metadata.json``::

    formatVersion     1 (a reader refuses a newer one)
    cluster           the cluster's name
    storeClusterId    the store's cluster id (hex) the snapshot came from
    revision          the store revision the snapshot was taken at (its linearizable point)
    compactRevision   the store's compact revision then
    takenAt           RFC 3339 UTC time
    k8semuVersion     the version that wrote it
    source            the store endpoint (the leader) it was streamed from
    payloadBytes      size of store.snapshot
    payloadSha256     SHA-256 (hex) of store.snapshot
    objects           {resource: count} of the keys under /registry/ (``pods``, ``secrets``,
                      ``allocations/clusterips``, ...), counted from the image itself

Writing goes through a temporary file, fsynced and renamed: a crash never leaves a
half-written backup under its final name. ``verify`` checks everything (the tar framing, the
metadata, the payload's size and SHA-256, the snapshot's own framing and checksum, the SQLite
integrity check, and that the object counts and revision agree with the image); restore
refuses a file that fails any of it, before writing anything.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from k8semu import __version__
from k8semu.store import snapshot
from k8semu.store.errors import StoreError

__all__ = [
    "FORMAT_VERSION",
    "SUFFIX",
    "BackupError",
    "Metadata",
    "count_objects",
    "extracted_payload",
    "read_metadata",
    "verify",
    "write",
]

FORMAT_VERSION = 1
SUFFIX = ".k8semu-backup"
METADATA = "metadata.json"
PAYLOAD = "store.snapshot"
_MAX_METADATA = 1 << 20
_BUF = 1 << 20
REGISTRY = b"/registry/"
#: Resources whose keys have a sub-kind segment counted apart (``allocations/clusterips``).
_NESTED = ("allocations",)


#: (attribute, metadata.json key) of every Metadata field, in the file's order.
_JSON_NAMES = (
    ("format_version", "formatVersion"), ("cluster", "cluster"),
    ("store_cluster_id", "storeClusterId"), ("revision", "revision"),
    ("compact_revision", "compactRevision"), ("taken_at", "takenAt"),
    ("k8semu_version", "k8semuVersion"), ("source", "source"),
    ("payload_bytes", "payloadBytes"), ("payload_sha256", "payloadSha256"),
    ("objects", "objects"),
)  # fmt: skip


class BackupError(Exception):
    """A backup that cannot be written, read or used; the message names the file and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Metadata:
    """``metadata.json`` of one backup (see the module docstring)."""

    cluster: str
    store_cluster_id: str
    revision: int
    compact_revision: int
    taken_at: str
    source: str
    payload_bytes: int
    payload_sha256: str
    objects: dict[str, int] = field(default_factory=dict)
    k8semu_version: str = __version__
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        out = {key: getattr(self, attr) for attr, key in _JSON_NAMES}
        out["objects"] = dict(sorted(self.objects.items()))
        return out

    @classmethod
    def from_json(cls, raw: object, where: str) -> Metadata:
        """Parse and check ``metadata.json``; BackupError naming the field that is wrong."""
        if not isinstance(raw, dict):
            raise BackupError(f"{where}: {METADATA} is not a JSON object")
        version = raw.get("formatVersion")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise BackupError(f"{where}: {METADATA}: formatVersion: missing or not a number")
        if version > FORMAT_VERSION:
            raise BackupError(
                f"{where}: backup format version {version} is newer than this k8semu"
                f" ({__version__}) reads (up to {FORMAT_VERSION}); use a newer k8semu"
            )
        text = {k: raw.get(k) for k in ("cluster", "storeClusterId", "takenAt", "source")}
        text["k8semuVersion"] = raw.get("k8semuVersion")
        for key, value in text.items():
            if not isinstance(value, str):
                raise BackupError(f"{where}: {METADATA}: {key}: missing or not a string")
        numbers = {k: raw.get(k) for k in ("revision", "compactRevision", "payloadBytes")}
        for key, value in numbers.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise BackupError(f"{where}: {METADATA}: {key}: missing or not a number >= 0")
        digest = raw.get("payloadSha256")
        if not isinstance(digest, str) or len(digest) != 64:
            raise BackupError(f"{where}: {METADATA}: payloadSha256: missing or not a SHA-256")
        objects = raw.get("objects")
        if not isinstance(objects, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in objects.items()
        ):
            raise BackupError(f"{where}: {METADATA}: objects: not a map of counts")
        if numbers["compactRevision"] > numbers["revision"]:  # type: ignore[operator]
            raise BackupError(f"{where}: {METADATA}: compactRevision is above revision")
        return cls(
            cluster=str(text["cluster"]),
            store_cluster_id=str(text["storeClusterId"]),
            revision=int(numbers["revision"]),  # type: ignore[arg-type]
            compact_revision=int(numbers["compactRevision"]),  # type: ignore[arg-type]
            taken_at=str(text["takenAt"]),
            source=str(text["source"]),
            payload_bytes=int(numbers["payloadBytes"]),  # type: ignore[arg-type]
            payload_sha256=digest,
            objects=dict(objects),
            k8semu_version=str(text["k8semuVersion"]),
            format_version=version,
        )


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_BUF):
            digest.update(chunk)
    return digest.hexdigest()


def write(dest: Path, metadata: Metadata, payload: Path) -> None:
    """Write the backup file ``dest`` from ``metadata`` and the store snapshot ``payload``
    (whose size and SHA-256 the metadata must already state); atomically."""
    if payload.stat().st_size != metadata.payload_bytes:
        raise BackupError(f"{payload}: size changed while the backup was written")
    blob = (json.dumps(metadata.to_json(), indent=2) + "\n").encode()

    def fill(out: BinaryIO) -> None:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(METADATA)
            info.size = len(blob)
            info.mtime = int(datetime.datetime.now(datetime.UTC).timestamp())
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(blob))
            tar.add(payload, arcname=PAYLOAD, recursive=False)

    snapshot.write_atomically(dest, fill)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[tuple[tarfile.TarFile, list[tarfile.TarInfo]]]:
    try:
        tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed below, errors told apart
    except FileNotFoundError:
        raise BackupError(f"{path}: no such file") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupError(f"{path}: not a k8semu backup (not a readable tar: {exc})") from exc
    try:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BackupError(f"{path}: truncated or corrupt backup ({exc})") from exc
        names = [m.name for m in members]
        if names != [METADATA, PAYLOAD] or not all(m.isfile() for m in members):
            raise BackupError(
                f"{path}: not a k8semu backup (holds {names[:5]}, want [{METADATA}, {PAYLOAD}])"
            )
        yield tar, members
    finally:
        tar.close()


def _metadata_of(path: Path, tar: tarfile.TarFile, info: tarfile.TarInfo) -> Metadata:
    if info.size > _MAX_METADATA:
        raise BackupError(f"{path}: {METADATA} is implausibly large ({info.size} bytes)")
    f = tar.extractfile(info)
    assert f is not None  # a regular file, checked by _opened
    try:
        raw = json.loads(f.read().decode())
    except (ValueError, UnicodeDecodeError, EOFError, tarfile.TarError, OSError) as exc:
        raise BackupError(f"{path}: {METADATA} is corrupt ({exc})") from exc
    return Metadata.from_json(raw, str(path))


def read_metadata(path: Path) -> Metadata:
    """The metadata only, checking the tar framing and the format version (cheap)."""
    with _opened(path) as (tar, members):
        meta = _metadata_of(path, tar, members[0])
        if members[1].size != meta.payload_bytes:
            raise BackupError(
                f"{path}: truncated or corrupt backup: {PAYLOAD} has {members[1].size} bytes,"
                f" metadata says {meta.payload_bytes}"
            )
        return meta


@contextlib.contextmanager
def extracted_payload(path: Path, scratch: Path | None = None) -> Iterator[tuple[Metadata, Path]]:
    """Verify ``path`` end to end (see ``verify``) and yield its metadata and the store
    snapshot extracted to a temporary file (under ``scratch``), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="k8semu-backup-", dir=scratch) as tmp:
        out = Path(tmp) / PAYLOAD
        with _opened(path) as (tar, members):
            meta = _metadata_of(path, tar, members[0])
            _copy_checked(path, tar, members[1], out, meta)
        _check_snapshot(path, out, meta, Path(tmp))
        yield meta, out


def verify(path: Path, scratch: Path | None = None) -> Metadata:
    """Check the backup at ``path`` end to end and return its metadata.

    BackupError naming the file and the defect: not a tar, truncated, unknown members, bad
    or newer-format metadata, payload size or SHA-256 mismatch, a store snapshot that fails
    its own checks, a SQLite image that fails ``PRAGMA integrity_check``, or an image whose
    revision or object counts differ from the metadata's.
    """
    with extracted_payload(path, scratch) as (meta, _):
        return meta


def _copy_checked(
    path: Path, tar: tarfile.TarFile, info: tarfile.TarInfo, out: Path, meta: Metadata
) -> None:
    if info.size != meta.payload_bytes:
        raise BackupError(
            f"{path}: truncated or corrupt backup: {PAYLOAD} has {info.size} bytes, metadata"
            f" says {meta.payload_bytes}"
        )
    src = tar.extractfile(info)
    assert src is not None
    digest = hashlib.sha256()
    copied = 0
    try:
        with out.open("wb") as dst:
            while chunk := src.read(_BUF):
                digest.update(chunk)
                dst.write(chunk)
                copied += len(chunk)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupError(f"{path}: truncated backup ({exc})") from exc
    if copied != meta.payload_bytes:
        raise BackupError(
            f"{path}: truncated backup: {copied} of {meta.payload_bytes} payload bytes"
        )
    if digest.hexdigest() != meta.payload_sha256:
        raise BackupError(f"{path}: SHA-256 checksum mismatch: the payload is corrupt")


def _check_snapshot(path: Path, snap: Path, meta: Metadata, scratch: Path) -> None:
    kv = scratch / "kv.db"
    try:
        header = snapshot.restore(snap, kv)
    except StoreError as exc:
        raise BackupError(f"{path}: bad store snapshot inside: {exc.message}") from exc
    if header.revision != meta.revision or header.compact_revision != meta.compact_revision:
        raise BackupError(
            f"{path}: metadata says revision {meta.revision} (compacted {meta.compact_revision}),"
            f" the snapshot holds {header.revision} ({header.compact_revision})"
        )
    try:
        with contextlib.closing(sqlite3.connect(f"file:{kv}?mode=ro", uri=True)) as db:
            check = db.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: the store image does not open: {exc}") from exc
    if check != [("ok",)]:
        detail = "; ".join(str(r[0]) for r in check[:5])
        raise BackupError(f"{path}: the store image fails its integrity check: {detail}")
    counted = count_objects(kv)
    if counted != meta.objects:
        raise BackupError(
            f"{path}: metadata's object counts {meta.objects} differ from the image's {counted}"
        )


def count_objects(kv_db: Path) -> dict[str, int]:
    """{resource: number of current keys} under /registry/ in a kv.db image."""
    counts: dict[str, int] = {}
    with contextlib.closing(sqlite3.connect(f"file:{kv_db}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT key FROM kv WHERE key >= ? AND key < ?", (REGISTRY, REGISTRY[:-1] + b"0")
        )
        for (key,) in rows:
            parts = bytes(key)[len(REGISTRY) :].split(b"/")
            kind = parts[0].decode(errors="replace")
            if kind in _NESTED and len(parts) > 1:
                kind = f"{kind}/{parts[1].decode(errors='replace')}"
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))
