"""kv.db's layout: its tables, opening and checking a file, and bringing an older one up to date.

Owns the schema of the MVCC state (see mvcc.py for what it means) and the rules of its rows:
a history id is ``rev << SUB_BITS | sub``, so rowid order is history order; a current row as
the store carries it; etcd's key ranges as SQL. It must not apply or read requests.

Layout of kv.db:

    history   one row per write: id = rev << SUB_BITS | sub, so rowid order is history order;
              tombstones (type 1) mark deletes; index (key, rev) serves historical reads
    kv        the current state: key -> id of its latest history row (+ lease, indexed)
    lease     id -> granted TTL
    alarm     (member, type): the active alarms (NOSPACE, CORRUPT), cluster state like etcd's
    meta      applied_index, applied_term, revision, compact_revision, schema,
              compact_physical (history below it is physically reduced; see reclaim.py)

Values live only in history; the kv table is a small index of the newest row per key. New
files use SQLite's incremental auto-vacuum, so free pages go back to the file system a bounded
batch at a time (reclaim.py) instead of one VACUUM.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

from k8semu.pb.etcd import kv_pb2
from k8semu.store.errors import CorruptDataError

SCHEMA_VERSION: Final = 1
SUB_BITS: Final = 24
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_CORRUPT_CODES: Final = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_META_KEYS: Final = ("schema", "applied_index", "applied_term", "revision", "compact_revision")

# A current row as the apply path carries it: (history id, create_rev, mod_rev, version,
# value, lease).
Row = tuple[int, int, int, int, bytes, int]

_SCHEMA: Final = f"""
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE history (
    id INTEGER PRIMARY KEY,
    rev INTEGER NOT NULL,
    sub INTEGER NOT NULL,
    key BLOB NOT NULL,
    type INTEGER NOT NULL,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL
);
CREATE UNIQUE INDEX history_key_rev ON history (key, rev);
CREATE TABLE kv (key BLOB PRIMARY KEY, id INTEGER NOT NULL, lease INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX kv_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE lease (id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL);
INSERT INTO meta (name, value) VALUES
    ('schema', {SCHEMA_VERSION}), ('applied_index', 0), ('applied_term', 0),
    ('revision', 1), ('compact_revision', 0);
"""
# Added after schema 1 shipped; files without them get them at open.
_SCHEMA_ADDITIONS: Final = """
CREATE TABLE IF NOT EXISTS alarm (
    member INTEGER NOT NULL, type INTEGER NOT NULL, PRIMARY KEY (member, type)
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value)
    SELECT 'compact_physical', value FROM meta WHERE name = 'compact_revision';
"""
_EXPECTED_COLUMNS: Final = {
    "meta": ["name", "value"],
    "history": ["id", "rev", "sub", "key", "type", "value", "create_rev", "version", "lease"],
    "kv": ["key", "id", "lease"],
    "lease": ["id", "ttl"],
}


def fill_kv(kv: kv_pb2.KeyValue, key: bytes, row: Row) -> None:
    """Fill an etcd KeyValue from a current row."""
    kv.key = key
    kv.create_revision = row[1]
    kv.mod_revision = row[2]
    kv.version = row[3]
    kv.value = row[4]
    kv.lease = row[5]


def key_cond(col: str, key: bytes, range_end: bytes) -> tuple[str, tuple[bytes, ...]]:
    """SQL condition for etcd's key range: "" = one key, "\\0" = every key >= key."""
    if not range_end:
        return f"{col} = ?", (key,)
    if range_end == b"\x00":
        return f"{col} >= ?", (key,)
    return f"{col} >= ? AND {col} < ?", (key, range_end)


_U64: Final = 1 << 64


def to_i64(value: int) -> int:
    """A uint64 member id as SQLite's signed 64-bit integer (two's complement)."""
    return value - _U64 if value >= 1 << 63 else value


def to_u64(value: int) -> int:
    return value + _U64 if value < 0 else value


def open_kv(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Open (or create) kv.db and check it; CorruptDataError names the file and the defect."""
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        head = b""
    if head and head != _SQLITE_MAGIC:
        raise CorruptDataError(f"{path}: not a SQLite database (bad file header)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: directory {path.parent} does not exist")
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(
            str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        # Only takes effect on a new, empty file (before its first table).
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("PRAGMA journal_mode = WAL").fetchone()
        # NORMAL: a power cut may lose the newest batches but never corrupts; the Raft log is
        # the durable record and replay from applied_index restores them.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA cache_size = -65536")
        db.execute("PRAGMA temp_store = MEMORY")
        check = db.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            detail = "; ".join(str(r[0]) for r in check[:5])
            raise CorruptDataError(f"{path}: SQLite integrity check failed: {detail}")
        _check_schema(db, path)
        db.executescript("BEGIN IMMEDIATE;" + _SCHEMA_ADDITIONS + "COMMIT;")
    except sqlite3.DatabaseError as exc:
        if db is not None:
            db.close()
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if isinstance(exc, sqlite3.OperationalError) and code not in _CORRUPT_CODES:
            raise  # locked, unreadable, I/O error: a problem, but not a corrupt file
        raise CorruptDataError(f"{path}: {exc}") from exc
    except BaseException:
        if db is not None:
            db.close()
        raise
    return db


def _check_schema(db: sqlite3.Connection, path: Path) -> None:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        return
    for table, columns in _EXPECTED_COLUMNS.items():
        if table not in tables:
            raise CorruptDataError(f"{path}: not a k8semu kv.db (missing table {table!r})")
        have = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
        if have != columns:
            raise CorruptDataError(f"{path}: table {table!r} has columns {have}, want {columns}")
    meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    missing = [k for k in _META_KEYS if not isinstance(meta.get(k), int)]
    if missing:
        raise CorruptDataError(f"{path}: meta table lacks {', '.join(missing)}")
    if meta["schema"] != SCHEMA_VERSION:
        raise CorruptDataError(
            f"{path}: schema version {meta['schema']}, this k8semu reads {SCHEMA_VERSION}"
        )
    rev, compact, applied = meta["revision"], meta["compact_revision"], meta["applied_index"]
    if rev < 1 or not 0 <= compact <= rev or applied < 0 or meta["applied_term"] < 0:
        raise CorruptDataError(
            f"{path}: inconsistent meta: revision={rev} compact_revision={compact}"
            f" applied_index={applied}"
        )
    (last_id,) = db.execute("SELECT max(id) FROM history").fetchone()
    if last_id is not None and last_id >> SUB_BITS > rev:
        raise CorruptDataError(
            f"{path}: history holds revision {last_id >> SUB_BITS} beyond meta revision {rev}"
        )
