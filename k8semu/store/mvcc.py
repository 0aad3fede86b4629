"""The MVCC key-value state machine: etcd v3 semantics on one SQLite file (kv.db).

Owns revisions, per-key history, lease records (existence and granted TTL, not their clocks:
see lessor.py), compaction and the consistency hash. It applies committed Raft entries
deterministically, so replicas that apply the same entries hold the same history and the same
hash. It must not do network I/O, touch asyncio, or know about Raft beyond (index, term): the
driver calls it from one thread (a single-thread executor), one call at a time.

Revisions follow etcd exactly: an empty store is at revision 1, every put, delete and txn with
writes bumps it once (a txn's writes share a main revision and are told apart by a sub index),
a delete that deletes nothing does not.

Layout of kv.db:

    history   one row per write: id = rev << SUB_BITS | sub, so rowid order is history order;
              tombstones (type 1) mark deletes; index (key, rev) serves historical reads
    kv        the current state: key -> id of its latest history row (+ lease, indexed)
    lease     id -> granted TTL
    alarm     (member, type): the active alarms (NOSPACE, CORRUPT), cluster state like etcd's
    meta      applied_index, applied_term, revision, compact_revision, schema,
              compact_physical (history below it is physically reduced; see compact_step)

Compaction is two steps, as in etcd: applying a Compact entry only moves compact_revision
(reads below it fail at once); the rows it makes unreachable are deleted afterwards by
`compact_step`, in bounded batches that the caller interleaves with applies, so a large
compaction never holds the MVCC thread for long. What is logically visible (reads, watches,
hash_kv) never depends on how far the physical deletion has got.

New files use SQLite's incremental auto-vacuum, so `defrag_step` can hand free pages back to
the file system a bounded batch at a time (Maintenance.Defragment) instead of one VACUUM.

Values live only in history; the kv table is a small index of the newest row per key.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

from google.protobuf.message import DecodeError, Message

from k8semu.pb.etcd import kv_pb2, rpc_pb2
from k8semu.pb.store import internal_pb2
from k8semu.store import errors, snapshot
from k8semu.store.errors import CorruptDataError, StoreError

SCHEMA_VERSION: Final = 1
SUB_BITS: Final = 24
MAX_TXN_OPS: Final = 128  # etcd's --max-txn-ops default
# Applying re-checks a txn against this fixed bound (not the configured --max-txn-ops, which
# may differ between replicas): whatever reaches the log can never cost more than this.
APPLY_MAX_TXN_OPS: Final = 1 << 14
# Rows of history examined, and at most deleted, per compact_step (etcd deletes 1,000
# revisions per batch).
COMPACT_BATCH_ROWS: Final = 1000
# Pages handed back to the file system per defrag_step (1 MiB at 4 KiB pages).
DEFRAG_BATCH_PAGES: Final = 256
# A Range response is refused once its encoded size would pass this: the gRPC send limit of
# every k8semu server (k8semu.transport.MAX_MESSAGE_BYTES, 64 MiB) less room for the header.
MAX_RANGE_RESPONSE_BYTES: Final = 64 * 1024 * 1024 - 64 * 1024
# Upper bound of the encoded size of one KeyValue beyond its key and value (tags, varints).
_KV_OVERHEAD: Final = 64
_NOSPACE: Final = rpc_pb2.NOSPACE
_CORRUPT: Final = rpc_pb2.CORRUPT
MAX_LEASE_TTL: Final = 9_000_000_000

_PUT: Final = kv_pb2.Event.PUT
_DELETE: Final = kv_pb2.Event.DELETE
_SUB_LIMIT: Final = 1 << SUB_BITS
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_CORRUPT_CODES: Final = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_META_KEYS: Final = ("schema", "applied_index", "applied_term", "revision", "compact_revision")
_Cmp = rpc_pb2.Compare
_Sort = rpc_pb2.RangeRequest

# A current row as the apply path carries it: (history id, create_rev, mod_rev, version,
# value, lease).
_Row = tuple[int, int, int, int, bytes, int]
_ZERO_ROW: Final[_Row] = (0, 0, 0, 0, b"", 0)
_MISSING: Final = object()

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

_SQL_CURRENT: Final = (
    "SELECT h.id, h.create_rev, h.rev, h.version, h.value, h.lease"
    " FROM kv JOIN history h ON h.id = kv.id WHERE kv.key = ?"
)
# sort target -> (SQL column, index in a range row); "key" stands for the source's key column
_SORT_COLUMNS: Final = {
    _Sort.KEY: ("key", 0),
    _Sort.VERSION: ("h.version", 3),
    _Sort.CREATE: ("h.create_rev", 1),
    _Sort.MOD: ("h.rev", 2),
    _Sort.VALUE: ("h.value", 4),
}
_SQL_INSERT_HISTORY: Final = "INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SQL_UPSERT_KV: Final = (
    "INSERT INTO kv (key, id, lease) VALUES (?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET id = excluded.id, lease = excluded.lease"
)
_SQL_DELETE_KV: Final = "DELETE FROM kv WHERE key = ?"
_SQL_SET_META: Final = "UPDATE meta SET value = ? WHERE name = ?"
_SQL_EVENTS: Final = (
    "SELECT h.id, h.rev, h.key, h.type, h.value, h.create_rev, h.version, h.lease,"
    " p.type, p.value, p.create_rev, p.rev, p.version, p.lease"
    " FROM history h LEFT JOIN history p ON p.key = h.key AND p.rev ="
    " (SELECT max(rev) FROM history WHERE key = h.key AND rev < h.rev)"
    " WHERE h.id >= ? AND h.id < ? AND {cond} ORDER BY h.id"
)
# Physical compaction at C: for every key written since the previous one, drop every version
# older than its newest version at or below C, and that newest version too if it is a delete.
# Keys not written since the previous compaction were already reduced to one put.
_SQL_COMPACT_KEYS: Final = (
    "SELECT id, key FROM history WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"
)
_SQL_COMPACT_LATEST: Final = "SELECT max(rev) FROM history WHERE key = ? AND rev <= ?"
_SQL_COMPACT_OLDER: Final = (
    "DELETE FROM history WHERE id IN"
    " (SELECT id FROM history WHERE key = ? AND rev < ? ORDER BY rev LIMIT ?)"
)
_SQL_COMPACT_TOMBSTONE: Final = "DELETE FROM history WHERE key = ? AND rev = ? AND type = 1"
# What a compaction at :c leaves visible: every version above it, and at or below it only a
# key's newest version if that is a put. hash_kv hashes exactly this, so it does not depend
# on how far the physical deletion has got.
_SQL_VISIBLE: Final = (
    "(h.rev > :c OR (h.type = 0 AND h.rev ="
    " (SELECT max(rev) FROM history WHERE key = h.key AND rev <= :c)))"
)


@dataclass(slots=True)
class ApplyResult:
    """What applying one Raft entry produced.

    `response` is the etcd response (header.revision filled, other header fields left for the
    servicer) or None when `error` is set or the entry was a no-op. `events` lists the writes in
    order with prev_kv set whenever a previous version existed. `revision` is the store
    revision after the entry.
    """

    index: int
    request_id: int
    response: Message | None
    error: StoreError | None
    events: list[kv_pb2.Event] = field(default_factory=list)
    revision: int = 0


class _Writes:
    """Writes of one entry: they share main revision `rev` and take sub indexes in order."""

    __slots__ = ("events", "rev", "sub")

    def __init__(self, rev: int) -> None:
        self.rev = rev
        self.sub = 0
        self.events: list[kv_pb2.Event] = []

    def read_rev(self, base: int) -> int:
        """The revision a read sees: this entry's revision once it has written."""
        return self.rev if self.sub else base


class MVCCStore:
    """etcd v3 MVCC state machine on SQLite.

    Invariants: `revision` >= 1 and never decreases; 0 <= `compact_revision` <= `revision`;
    `applied_index`, `revision` and the data they describe are committed in one SQLite
    transaction, so after a crash the store is at some batch boundary and replaying entries
    from `applied_index + 1` restores it exactly. Not thread-safe: one caller at a time.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 2.0) -> None:
        self._path = Path(path)
        self._db = _open(self._path, busy_timeout)
        meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        self._applied_index: int = meta["applied_index"]
        self._applied_term: int = meta["applied_term"]
        self._rev: int = meta["revision"]
        self._compact_rev: int = meta["compact_revision"]
        self._compact_physical: int = meta["compact_physical"]
        # Next history id compact_step looks at (ids below it are reduced to the current
        # compaction target); restarts from compact_physical after a restart (idempotent).
        self._compact_cursor = (self._compact_physical + 1) << SUB_BITS
        self._alarms: frozenset[tuple[int, int]] = frozenset(
            (_to_u64(m), t) for m, t in self._db.execute("SELECT member, type FROM alarm")
        )
        self._page_size: int = self._db.execute("PRAGMA page_size").fetchone()[0]
        self.max_range_response_bytes = MAX_RANGE_RESPONSE_BYTES
        self._size = self.db_size()
        # Write-behind buffers for the open batch: history rows to insert and the newest
        # current row per key (None = deleted). Flushed before any SQL read that could
        # otherwise miss them and at the end of the batch.
        self._pending_history: list[tuple[int, int, int, bytes, int, bytes, int, int, int]] = []
        self._pending_kv: dict[bytes, _Row | None] = {}
        self._handlers: dict[str, Callable[[Any, _Writes], Message]] = {
            "put": self._apply_put,
            "delete_range": self._apply_delete_range,
            "txn": self._apply_txn,
            "compaction": self._apply_compaction,
            "lease_grant": self._apply_lease_grant,
            "lease_revoke": self._apply_lease_revoke,
            "lease_keep_alive": self._apply_lease_keep_alive,
            "alarm": self._apply_alarm,
        }

    # --- properties -------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def applied_index(self) -> int:
        return self._applied_index

    @property
    def applied_term(self) -> int:
        return self._applied_term

    @property
    def revision(self) -> int:
        return self._rev

    @property
    def compact_revision(self) -> int:
        return self._compact_rev

    @property
    def compaction_pending(self) -> bool:
        """History below compact_revision still holds rows compact_step will delete."""
        return self._compact_physical < self._compact_rev

    @property
    def size(self) -> int:
        """db_size as of the end of the last apply batch (cheap: no SQL; any thread)."""
        return self._size

    def alarms(self, alarm: int = rpc_pb2.NONE) -> list[tuple[int, int]]:
        """Active alarms as (member id, type), of one type or (NONE) all, in a stable order."""
        return sorted((m, t) for m, t in self._alarms if alarm in (rpc_pb2.NONE, t))

    # --- applying ---------------------------------------------------------------------

    def apply_batch(self, entries: Sequence[tuple[int, int, bytes]]) -> list[ApplyResult]:
        """Apply committed entries (raft index, raft term, data) in one SQLite transaction.

        Entries at or below `applied_index` are skipped and get no result (crash replay).
        Every other entry gets exactly one result, in order; a refused request is a result
        with `error` set, never an exception. An exception (disk error, bug) rolls the whole
        batch back, leaving the store as it was before the call.
        """
        todo = [e for e in entries if e[0] > self._applied_index]
        if not todo:
            return []
        saved = (self._applied_index, self._applied_term, self._rev, self._compact_rev)
        alarms = self._alarms
        results: list[ApplyResult] = []
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for index, term, data in todo:
                if index <= self._applied_index:
                    continue
                results.append(self._apply_entry(index, data))
                self._applied_index = index
                self._applied_term = term
            self._flush()
            db.executemany(
                _SQL_SET_META,
                (
                    (self._applied_index, "applied_index"),
                    (self._applied_term, "applied_term"),
                    (self._rev, "revision"),
                    (self._compact_rev, "compact_revision"),
                ),
            )
            db.execute("COMMIT")
        except BaseException:
            self._pending_history.clear()
            self._pending_kv.clear()
            (self._applied_index, self._applied_term, self._rev, self._compact_rev) = saved
            self._alarms = alarms
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._size = db.execute("PRAGMA page_count").fetchone()[0] * self._page_size
        return results

    def _apply_entry(self, index: int, data: bytes) -> ApplyResult:
        if not data:
            return ApplyResult(index, 0, None, None, [], self._rev)
        req = internal_pb2.InternalRequest()
        try:
            req.ParseFromString(data)
        except DecodeError:
            return ApplyResult(index, 0, None, errors.ErrMalformedEntry(), [], self._rev)
        kind = req.WhichOneof("request")
        handler = self._handlers.get(kind) if kind else None
        if handler is None:
            return ApplyResult(index, req.id, None, errors.ErrMalformedEntry(), [], self._rev)
        w = _Writes(self._rev + 1)
        try:
            if self._alarms:
                self._check_alarms(kind or "", req)
            resp = handler(getattr(req, kind), w)  # type: ignore[arg-type]
        except StoreError as err:
            # Handlers validate before writing, so a refused request has written nothing.
            return ApplyResult(index, req.id, None, err, [], self._rev)
        if w.sub:
            self._rev = w.rev
        return ApplyResult(index, req.id, resp, None, w.events, self._rev)

    def _check_alarms(self, kind: str, req: internal_pb2.InternalRequest) -> None:
        """etcd's capped and corrupt appliers: with NOSPACE active only what may grow the
        store is refused (puts, txns with puts, lease grants); with CORRUPT everything but
        keep-alives and alarms."""
        types = {t for _, t in self._alarms}
        if _CORRUPT in types and kind not in ("alarm", "lease_keep_alive"):
            raise errors.ErrCorrupt
        if _NOSPACE in types and (
            kind in ("put", "lease_grant") or (kind == "txn" and txn_has_put(req.txn))
        ):
            raise errors.ErrNoSpace

    def _apply_alarm(self, req: rpc_pb2.AlarmRequest, w: _Writes) -> rpc_pb2.AlarmResponse:
        """etcd's alarm store: ACTIVATE answers with the alarm (also when it was already
        active), DEACTIVATE with the alarm it cleared (nothing if it was not active)."""
        resp = rpc_pb2.AlarmResponse()
        resp.header.revision = self._rev
        item = (req.memberID, int(req.alarm))
        if req.action == rpc_pb2.AlarmRequest.GET:
            for member, alarm in self.alarms(req.alarm):
                resp.alarms.add(memberID=member, alarm=alarm)
        elif req.action == rpc_pb2.AlarmRequest.ACTIVATE:
            if item not in self._alarms:
                self._db.execute(
                    "INSERT INTO alarm (member, type) VALUES (?, ?)", (_to_i64(item[0]), item[1])
                )
                self._alarms = self._alarms | {item}
            resp.alarms.add(memberID=item[0], alarm=req.alarm)
        elif req.action == rpc_pb2.AlarmRequest.DEACTIVATE and item in self._alarms:
            self._db.execute(
                "DELETE FROM alarm WHERE member = ? AND type = ?", (_to_i64(item[0]), item[1])
            )
            self._alarms = self._alarms - {item}
            resp.alarms.add(memberID=item[0], alarm=req.alarm)
        return resp

    def _apply_put(self, req: rpc_pb2.PutRequest, w: _Writes) -> rpc_pb2.PutResponse:
        if not req.key:
            raise errors.ErrEmptyKey
        prev = self._current(req.key)
        self._check_put(req, prev)
        resp = rpc_pb2.PutResponse()
        self._exec_put(req, prev, w, resp)
        return resp

    def _check_put(self, req: rpc_pb2.PutRequest, prev: _Row | None) -> None:
        if (req.ignore_value or req.ignore_lease) and prev is None:
            raise errors.ErrKeyNotFound
        if req.lease and not req.ignore_lease and not self._lease_ttl(req.lease):
            raise errors.ErrLeaseNotFound

    def _exec_put(
        self, req: rpc_pb2.PutRequest, prev: _Row | None, w: _Writes, resp: rpc_pb2.PutResponse
    ) -> None:
        value = prev[4] if req.ignore_value and prev is not None else req.value
        lease = prev[5] if req.ignore_lease and prev is not None else req.lease
        self._write_put(w, req.key, value, lease, prev)
        resp.header.revision = w.rev
        if req.prev_kv and prev is not None:
            _fill_kv(resp.prev_kv, req.key, prev)

    def _apply_delete_range(
        self, req: rpc_pb2.DeleteRangeRequest, w: _Writes
    ) -> rpc_pb2.DeleteRangeResponse:
        if not req.key:
            raise errors.ErrEmptyKey
        resp = rpc_pb2.DeleteRangeResponse()
        self._exec_delete_range(req, w, resp)
        return resp

    def _exec_delete_range(
        self, req: rpc_pb2.DeleteRangeRequest, w: _Writes, resp: rpc_pb2.DeleteRangeResponse
    ) -> None:
        if req.range_end:
            self._flush()
            cond, params = _key_cond("kv.key", req.key, req.range_end)
            rows: list[tuple[bytes, _Row]] = [
                (r[0], r[1:])
                for r in self._db.execute(
                    "SELECT kv.key, h.id, h.create_rev, h.rev, h.version, h.value, h.lease"
                    f" FROM kv JOIN history h ON h.id = kv.id WHERE {cond} ORDER BY kv.key",
                    params,
                )
            ]
        else:
            prev = self._current(req.key)
            rows = [] if prev is None else [(req.key, prev)]
        if w.sub + len(rows) > _SUB_LIMIT and not w.sub:
            raise errors.ErrTooManyKeys
        for key, prev in rows:
            self._write_delete(w, key, prev)
            if req.prev_kv:
                _fill_kv(resp.prev_kvs.add(), key, prev)
        resp.deleted = len(rows)
        resp.header.revision = w.read_rev(self._rev)

    def _apply_txn(self, req: rpc_pb2.TxnRequest, w: _Writes) -> rpc_pb2.TxnResponse:
        validate_txn(req, max_ops=APPLY_MAX_TXN_OPS)
        # Like etcd, every compare of the txn and of its nested txns is decided against the
        # state before the txn writes anything; then the chosen path is checked; then run.
        path: list[bool] = []
        self._txn_path(req, path)
        self._check_txn(req, iter(path))
        resp = rpc_pb2.TxnResponse()
        self._exec_txn(req, iter(path), w, resp)
        return resp

    def _txn_path(self, txn: rpc_pb2.TxnRequest, path: list[bool]) -> None:
        ok = all(self._compare(c) for c in txn.compare)
        path.append(ok)
        for op in txn.success if ok else txn.failure:
            if op.WhichOneof("request") == "request_txn":
                self._txn_path(op.request_txn, path)

    def _check_txn(self, txn: rpc_pb2.TxnRequest, path: Iterator[bool]) -> None:
        for op in txn.success if next(path) else txn.failure:
            kind = op.WhichOneof("request")
            if kind == "request_put":
                self._check_put(op.request_put, self._current(op.request_put.key))
            elif kind == "request_range":
                self._check_range_revision(op.request_range.revision, self._rev)
            elif kind == "request_txn":
                self._check_txn(op.request_txn, path)

    def _exec_txn(
        self,
        txn: rpc_pb2.TxnRequest,
        path: Iterator[bool],
        w: _Writes,
        resp: rpc_pb2.TxnResponse,
    ) -> None:
        ok = next(path)
        resp.succeeded = ok
        for op in txn.success if ok else txn.failure:
            out = resp.responses.add()
            kind = op.WhichOneof("request")
            if kind == "request_put":
                put = op.request_put
                self._exec_put(put, self._current(put.key), w, out.response_put)
            elif kind == "request_delete_range":
                self._exec_delete_range(op.request_delete_range, w, out.response_delete_range)
            elif kind == "request_range":
                self._flush()
                self._range(op.request_range, w.read_rev(self._rev), out.response_range)
            elif kind == "request_txn":
                self._exec_txn(op.request_txn, path, w, out.response_txn)
        resp.header.revision = w.read_rev(self._rev)

    def _compare(self, c: rpc_pb2.Compare) -> bool:
        rows: list[_Row]
        if c.range_end:
            self._flush()
            cond, params = _key_cond("kv.key", c.key, c.range_end)
            rows = self._db.execute(
                "SELECT h.id, h.create_rev, h.rev, h.version, h.value, h.lease"
                f" FROM kv JOIN history h ON h.id = kv.id WHERE {cond}",
                params,
            ).fetchall()
        else:
            row = self._current(c.key)
            rows = [] if row is None else [row]
        target = c.target
        if not rows:
            if target == _Cmp.VALUE:
                return False  # a missing key has no value to compare, as in etcd
            rows = [_ZERO_ROW]
        want: int | bytes
        if target == _Cmp.VERSION:
            col, want = 3, c.version
        elif target == _Cmp.CREATE:
            col, want = 1, c.create_revision
        elif target == _Cmp.MOD:
            col, want = 2, c.mod_revision
        elif target == _Cmp.VALUE:
            col, want = 4, c.value
        elif target == _Cmp.LEASE:
            col, want = 5, c.lease
        else:
            return False
        result = c.result
        for row in rows:
            have: Any = row[col]
            if result == _Cmp.EQUAL:
                ok = have == want
            elif result == _Cmp.GREATER:
                ok = have > want
            elif result == _Cmp.LESS:
                ok = have < want
            elif result == _Cmp.NOT_EQUAL:
                ok = have != want
            else:
                ok = False
            if not ok:
                return False
        return True

    def _apply_compaction(
        self, req: rpc_pb2.CompactionRequest, w: _Writes
    ) -> rpc_pb2.CompactionResponse:
        rev = req.revision
        if rev <= self._compact_rev:
            raise errors.ErrCompacted
        if rev > self._rev:
            raise errors.ErrFutureRev
        # Only the logical step: the rows it makes unreachable go in compact_step batches.
        self._compact_rev = rev
        resp = rpc_pb2.CompactionResponse()
        resp.header.revision = self._rev
        return resp

    def _apply_lease_grant(
        self, req: rpc_pb2.LeaseGrantRequest, w: _Writes
    ) -> rpc_pb2.LeaseGrantResponse:
        if req.ID == 0:
            raise errors.ErrLeaseNotFound  # the proposer picks the ID; 0 means "no lease"
        if req.TTL <= 0:
            raise errors.ErrLeaseTTLInvalid
        if req.TTL > MAX_LEASE_TTL:
            raise errors.ErrLeaseTTLTooLarge
        if self._lease_ttl(req.ID):
            raise errors.ErrLeaseExist
        self._db.execute("INSERT INTO lease (id, ttl) VALUES (?, ?)", (req.ID, req.TTL))
        resp = rpc_pb2.LeaseGrantResponse(ID=req.ID, TTL=req.TTL)
        resp.header.revision = self._rev
        return resp

    def _apply_lease_revoke(
        self, req: rpc_pb2.LeaseRevokeRequest, w: _Writes
    ) -> rpc_pb2.LeaseRevokeResponse:
        if not self._lease_ttl(req.ID):
            raise errors.ErrLeaseNotFound
        self._flush()
        rows = self._db.execute(
            "SELECT kv.key, h.id, h.create_rev, h.rev, h.version, h.value, h.lease"
            " FROM kv JOIN history h ON h.id = kv.id"
            " WHERE kv.lease = ? AND kv.lease != 0 ORDER BY kv.key",
            (req.ID,),
        ).fetchall()
        if len(rows) > _SUB_LIMIT:
            raise errors.ErrTooManyKeys
        for r in rows:
            self._write_delete(w, r[0], r[1:])
        self._db.execute("DELETE FROM lease WHERE id = ?", (req.ID,))
        resp = rpc_pb2.LeaseRevokeResponse()
        resp.header.revision = w.read_rev(self._rev)
        return resp

    def _apply_lease_keep_alive(
        self, req: rpc_pb2.LeaseKeepAliveRequest, w: _Writes
    ) -> rpc_pb2.LeaseKeepAliveResponse:
        ttl = self._lease_ttl(req.ID)
        if not ttl:
            raise errors.ErrLeaseNotFound
        resp = rpc_pb2.LeaseKeepAliveResponse(ID=req.ID, TTL=ttl)
        resp.header.revision = self._rev
        return resp

    # --- write helpers ----------------------------------------------------------------

    def _current(self, key: bytes) -> _Row | None:
        row: Any = self._pending_kv.get(key, _MISSING)
        if row is _MISSING:
            row = self._db.execute(_SQL_CURRENT, (key,)).fetchone()
        return row  # type: ignore[no-any-return]

    def _next_id(self, w: _Writes) -> tuple[int, int]:
        sub = w.sub
        if sub >= _SUB_LIMIT:
            # Top-level deletes check this before writing; only a txn of huge deletes
            # gets here, part-way through its writes, so the whole batch must abort.
            raise RuntimeError(f"more than {_SUB_LIMIT} writes in revision {w.rev}")
        w.sub = sub + 1
        return (w.rev << SUB_BITS) | sub, sub

    def _write_put(
        self, w: _Writes, key: bytes, value: bytes, lease: int, prev: _Row | None
    ) -> None:
        rid, sub = self._next_id(w)
        rev = w.rev
        if prev is None:
            create, version = rev, 1
        else:
            create, version = prev[1], prev[3] + 1
        self._pending_history.append((rid, rev, sub, key, _PUT, value, create, version, lease))
        self._pending_kv[key] = (rid, create, rev, version, value, lease)
        ev = kv_pb2.Event()
        kv = ev.kv
        kv.key = key
        kv.create_revision = create
        kv.mod_revision = rev
        kv.version = version
        kv.value = value
        kv.lease = lease
        if prev is not None:
            _fill_kv(ev.prev_kv, key, prev)
        w.events.append(ev)

    def _write_delete(self, w: _Writes, key: bytes, prev: _Row) -> None:
        rid, sub = self._next_id(w)
        self._pending_history.append((rid, w.rev, sub, key, _DELETE, b"", 0, 0, 0))
        self._pending_kv[key] = None
        ev = kv_pb2.Event(type=_DELETE)
        ev.kv.key = key
        ev.kv.mod_revision = w.rev
        _fill_kv(ev.prev_kv, key, prev)
        w.events.append(ev)

    def _flush(self) -> None:
        db = self._db
        if self._pending_history:
            db.executemany(_SQL_INSERT_HISTORY, self._pending_history)
            self._pending_history.clear()
        if self._pending_kv:
            items = self._pending_kv.items()
            db.executemany(_SQL_UPSERT_KV, [(k, r[0], r[5]) for k, r in items if r is not None])
            db.executemany(_SQL_DELETE_KV, [(k,) for k, r in items if r is None])
            self._pending_kv.clear()

    def _lease_ttl(self, lease_id: int) -> int:
        row = self._db.execute("SELECT ttl FROM lease WHERE id = ?", (lease_id,)).fetchone()
        return 0 if row is None else int(row[0])

    # --- reads ------------------------------------------------------------------------

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """etcd Range at the newest or a historical revision; header.revision is the
        current revision. Raises ErrEmptyKey, ErrCompacted, ErrFutureRev."""
        if not req.key:
            raise errors.ErrEmptyKey
        self._check_range_revision(req.revision, self._rev)
        resp = rpc_pb2.RangeResponse()
        self._range(req, self._rev, resp, max_bytes=self.max_range_response_bytes)
        return resp

    def _check_range_revision(self, rev: int, current: int) -> None:
        if rev > current:
            raise errors.ErrFutureRev
        if 0 < rev < self._compact_rev:
            raise errors.ErrCompacted

    def _range(
        self,
        req: rpc_pb2.RangeRequest,
        current: int,
        resp: rpc_pb2.RangeResponse,
        *,
        max_bytes: int = 0,
    ) -> None:
        """Fill `resp`. With `max_bytes`, raise ErrResponseTooLarge as soon as the rows read
        would encode to more than that (before the whole answer is in memory). Ranges inside
        a txn are not bounded: refusing there would be a write-path decision."""
        resp.header.revision = current
        at = req.revision if req.revision > 0 else current
        historical = at < current
        db = self._db
        if historical:
            kcol = "m.k"
            inner, kparams = _key_cond("key", req.key, req.range_end)
            params: tuple[bytes | int, ...] = (*kparams, at)
            source = (
                "FROM (SELECT key AS k, max(rev) AS r FROM history"
                f" WHERE {inner} AND rev <= ? GROUP BY key) m"
                " JOIN history h ON h.key = m.k AND h.rev = m.r WHERE h.type = 0"
            )
            count_sql = f"SELECT count(*) {source}"
        else:
            kcol = "kv.key"
            cond, params = _key_cond(kcol, req.key, req.range_end)
            source = f"FROM kv JOIN history h ON h.id = kv.id WHERE {cond}"
            count_sql = f"SELECT count(*) FROM kv WHERE {cond}"

        def count() -> int:
            return int(db.execute(count_sql, params).fetchone()[0])

        if req.count_only:
            resp.count = count()
            return
        filters = ""
        fparams: list[int] = []
        for sql, v in (
            (" AND h.rev >= ?", req.min_mod_revision),
            (" AND h.rev <= ?", req.max_mod_revision),
            (" AND h.create_rev >= ?", req.min_create_revision),
            (" AND h.create_rev <= ?", req.max_create_revision),
        ):
            if v:
                filters += sql
                fparams.append(v)
        order = req.sort_order
        target = req.sort_target
        # Beyond any real store, and limit + 1 must still be an SQLite integer (int64).
        limit = min(req.limit, 1 << 62)
        column, index = _SORT_COLUMNS.get(target, (kcol, 0))
        if column == "key":
            column = kcol
        # etcd quirk, kept for wire compatibility: with sort_order NONE etcd applies the
        # limit in key order first (it fetches everything only for an explicit order or a
        # revision filter), then sorts those limit+1 keys ascending by the target.
        sort_after = target != _Sort.KEY and order == _Sort.NONE and limit > 0 and not fparams
        if sort_after or (order != _Sort.DESCEND and column == kcol):
            order_by = kcol
        elif order == _Sort.DESCEND:
            order_by = f"{column} DESC" if column == kcol else f"{column} DESC, {kcol}"
        else:
            order_by = f"{column}, {kcol}"
        value = "X''" if req.keys_only and not sort_after else "h.value"
        sql = (
            f"SELECT h.key, h.create_rev, h.rev, h.version, {value}, h.lease {source}"
            f"{filters} ORDER BY {order_by}"
        )
        if limit > 0:
            sql += f" LIMIT {limit + 1}"
        cursor = db.execute(sql, (*params, *fparams))
        if max_bytes:
            rows = []
            size = 0
            for row in cursor:
                size += len(row[0]) + len(row[4]) + _KV_OVERHEAD
                if size > max_bytes:
                    raise errors.ErrResponseTooLarge(
                        f"{errors.ErrResponseTooLarge.message}: more than {max_bytes} bytes"
                        " (read fewer keys at a time: a limit, keys_only or count_only)"
                    )
                rows.append(row)
        else:
            rows = cursor.fetchall()
        if sort_after:
            rows.sort(key=lambda r: r[index])  # stable, like Go's sort on small slices
            if req.keys_only:
                rows = [(*r[:4], b"", r[5]) for r in rows]
        if limit > 0 and len(rows) > limit:
            resp.more = True
            del rows[limit:]
        add = resp.kvs.add
        for key, create, mod, version, val, lease in rows:
            add(
                key=key,
                create_revision=create,
                mod_revision=mod,
                version=version,
                value=val,
                lease=lease,
            )
        resp.count = count() if resp.more or fparams else len(rows)

    def events(
        self, start_rev: int, key: bytes, range_end: bytes, *, end_rev: int, limit: int = 1000
    ) -> list[kv_pb2.Event]:
        """History events for keys in [key, range_end) with start_rev <= rev <= end_rev.

        In revision order, sub-order within a revision, prev_kv filled when a previous
        version exists. Returns at most about `limit` events but never splits a revision
        (a large txn comes back whole). end_rev is clamped to the current revision. Raises
        ErrCompacted when start_rev < compact_revision (as etcd: the compaction revision
        itself can still be watched from).
        """
        if start_rev < self._compact_rev:
            raise errors.ErrCompacted
        end_rev = min(end_rev, self._rev)
        if start_rev > end_rev:
            return []
        cond, params = _key_cond("h.key", key, range_end)
        sql = _SQL_EVENTS.format(cond=cond)
        hi = (end_rev + 1) << SUB_BITS
        rows = self._db.execute(
            sql + f" LIMIT {max(1, limit)}", (start_rev << SUB_BITS, hi, *params)
        ).fetchall()
        if rows and len(rows) >= limit:
            last_id, last_rev = rows[-1][0], rows[-1][1]
            rows += self._db.execute(
                sql, (last_id + 1, (last_rev + 1) << SUB_BITS, *params)
            ).fetchall()
        out: list[kv_pb2.Event] = []
        for _id, rev, k, typ, val, create, version, lease, ptype, *prev in rows:
            ev = kv_pb2.Event()
            kv = ev.kv
            kv.key = k
            kv.mod_revision = rev
            if typ == _PUT:
                kv.create_revision = create
                kv.version = version
                kv.value = val
                kv.lease = lease
            else:
                ev.type = _DELETE
            if ptype == _PUT:
                pval, pcreate, pmod, pversion, please = prev
                p = ev.prev_kv
                p.key = k
                p.create_revision = pcreate
                p.mod_revision = pmod
                p.version = pversion
                p.value = pval
                p.lease = please
            out.append(ev)
        return out

    def lease_time_to_live(self, lease_id: int, keys: bool) -> tuple[int, list[bytes]] | None:
        """(granted TTL, attached keys in key order) or None when the lease does not exist."""
        ttl = self._lease_ttl(lease_id)
        if not ttl:
            return None
        attached: list[bytes] = []
        if keys:
            attached = [
                r[0]
                for r in self._db.execute(
                    "SELECT key FROM kv WHERE lease = ? AND lease != 0 ORDER BY key", (lease_id,)
                )
            ]
        return ttl, attached

    def leases(self) -> list[tuple[int, int]]:
        """Every lease as (id, granted TTL), by id."""
        return [
            (int(i), int(t)) for i, t in self._db.execute("SELECT id, ttl FROM lease ORDER BY id")
        ]

    def hash_kv(self, revision: int = 0) -> tuple[int, int, int]:
        """(CRC-32 of all history up to `revision`, compact_revision, hashed revision).

        `revision` <= 0 hashes up to the current revision. Replicas that applied the same
        entries return the same triple. Raises ErrFutureRev / ErrCompacted like etcd.
        """
        rev = revision if revision > 0 else self._rev
        if rev > self._rev:
            raise errors.ErrFutureRev
        if rev < self._compact_rev:
            raise errors.ErrCompacted
        crc = 0
        pack = struct.Struct(">qqbqqqII").pack
        for rv, sub, key, typ, val, create, version, lease in self._db.execute(
            "SELECT rev, sub, key, type, value, create_rev, version, lease FROM history h"
            f" WHERE id < :hi AND {_SQL_VISIBLE} ORDER BY id",
            {"hi": (rev + 1) << SUB_BITS, "c": self._compact_rev},
        ):
            crc = zlib.crc32(pack(rv, sub, typ, create, version, lease, len(key), len(val)), crc)
            crc = zlib.crc32(key, crc)
            crc = zlib.crc32(val, crc)
        return crc, self._compact_rev, rev

    def db_size(self) -> int:
        """Bytes of the database file as SQLite sees it (pages x page size)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)

    def db_size_in_use(self) -> int:
        """Bytes of pages holding data (db_size minus the free list)."""
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return self.db_size() - int(free) * int(size)

    # --- snapshots and lifecycle --------------------------------------------------------

    def write_snapshot(self, dest: BinaryIO | Path) -> internal_pb2.SnapshotHeader:
        """Write a consistent snapshot of the store (framed per snapshot.py) to `dest`.

        Reads kv.db through its own connection (see `write_snapshot_of`), so it may run
        on any thread while this store keeps applying.
        """
        return write_snapshot_of(self._path, dest)

    def compact_step(self, max_rows: int = COMPACT_BATCH_ROWS) -> bool:
        """Delete the history a past compaction made unreachable: at most `max_rows` rows
        examined and at most `max_rows` deleted; True while more remains. One short
        transaction: the caller runs it between apply batches, never inside apply_batch."""
        target = self._compact_rev
        if self._compact_physical >= target:
            return False
        db = self._db
        hi = (target + 1) << SUB_BITS
        budget = max_rows
        resume: int | None = None  # where the next step starts when the budget ran out
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(_SQL_COMPACT_KEYS, (self._compact_cursor, hi, max_rows)).fetchall()
            first_ids: dict[bytes, int] = {}
            for rid, key in rows:
                first_ids.setdefault(key, rid)
            for key, rid in first_ids.items():
                (latest,) = db.execute(_SQL_COMPACT_LATEST, (key, target)).fetchone()
                if latest is None:
                    continue
                budget -= db.execute(_SQL_COMPACT_OLDER, (key, latest, budget)).rowcount
                if budget <= 0:
                    resume = rid  # this key may have more: look at it again next time
                    break
                budget -= db.execute(_SQL_COMPACT_TOMBSTONE, (key, latest)).rowcount
            done = resume is None and len(rows) < max_rows
            if done:
                db.execute(_SQL_SET_META, (target, "compact_physical"))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if done:
            self._compact_physical = target
            self._compact_cursor = hi
        else:
            self._compact_cursor = resume if resume is not None else rows[-1][0] + 1
        return not done

    def defrag_step(self, max_pages: int = DEFRAG_BATCH_PAGES) -> bool:
        """Give up to `max_pages` free pages back to the file system; True while more remain.

        A file made before incremental auto-vacuum was used gets one full VACUUM instead
        (which converts it, and holds the thread for as long as it takes)."""
        db = self._db
        if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.execute("VACUUM")
            more = False
        else:
            # executescript steps the pragma to the end (a plain execute frees one page).
            db.executescript(
                f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({int(max_pages)}); COMMIT;"
            )
            more = bool(db.execute("PRAGMA freelist_count").fetchone()[0])
        if not more:
            # The file shrinks when the WAL is checkpointed into it.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        self._size = self.db_size()
        return more

    def defragment(self) -> None:
        """Every free page back to the file system in one call (tests, tools)."""
        while self.defrag_step():
            pass

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> MVCCStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_snapshot_seq = itertools.count()


def write_snapshot_of(kv_path: Path, dest: BinaryIO | Path) -> internal_pb2.SnapshotHeader:
    """Write a consistent snapshot of the kv.db at `kv_path` (framed per snapshot.py) to `dest`.

    Safe to call from any thread while an MVCCStore applies to the same file: it opens its
    own connection and copies the database with SQLite's online backup API in one step,
    which is one read transaction (WAL readers never block the writer, nor it them), so the
    image is exactly the state after some applied batch. The header's Raft index, revision
    and compact revision are read from that image itself. Most of the work (page copy,
    checksum, file writes) runs in C without the GIL.
    """
    tmp = kv_path.with_name(f".{kv_path.name}.snapshot-{os.getpid()}-{next(_snapshot_seq)}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        src = sqlite3.connect(str(kv_path), isolation_level=None)
        try:
            image = sqlite3.connect(str(tmp), isolation_level=None)
            try:
                src.backup(image)
                # The copy carries kv.db's WAL flag; a snapshot image is a plain file.
                image.execute("PRAGMA journal_mode = DELETE").fetchone()
                meta = dict(image.execute("SELECT name, value FROM meta").fetchall())
            finally:
                image.close()
        finally:
            src.close()
        header = internal_pb2.SnapshotHeader(
            raft_index=meta["applied_index"],
            raft_term=meta["applied_term"],
            revision=meta["revision"],
            compact_revision=meta["compact_revision"],
        )
        return snapshot.write(dest, header, tmp)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def validate_txn(txn: rpc_pb2.TxnRequest, *, max_ops: int = MAX_TXN_OPS) -> None:
    """Reject a txn etcd's API layer would reject: too many ops, empty keys, a key written
    twice. Pure and cheap: servicers call it before proposing; apply calls it again.

    A flat txn may have up to `max_ops` compares, success ops and failure ops, as in etcd.
    Nested txns count against the same budget: every nested txn adds the larger of its
    compare/success/failure counts (etcd gives each nesting level whatever its parent left,
    which lets a nested txn grow exponentially with depth)."""
    if txn_ops(txn) > max_ops:
        raise errors.ErrTooManyOps
    _check_keys(txn)
    _branch_writes(txn.success)
    _branch_writes(txn.failure)


def txn_ops(txn: rpc_pb2.TxnRequest) -> int:
    """The operation count of a txn and every txn nested in it (see validate_txn)."""
    total = max(len(txn.compare), len(txn.success), len(txn.failure))
    for op in itertools.chain(txn.success, txn.failure):
        if op.WhichOneof("request") == "request_txn":
            total += txn_ops(op.request_txn)
    return total


def txn_has_put(txn: rpc_pb2.TxnRequest) -> bool:
    """Whether a txn (nested ones included) may write a new value: what NOSPACE refuses."""
    for op in itertools.chain(txn.success, txn.failure):
        kind = op.WhichOneof("request")
        if kind == "request_put" or (kind == "request_txn" and txn_has_put(op.request_txn)):
            return True
    return False


def _check_keys(txn: rpc_pb2.TxnRequest) -> None:
    for op in itertools.chain(txn.success, txn.failure):
        kind = op.WhichOneof("request")
        if kind == "request_txn":
            _check_keys(op.request_txn)
        elif kind is not None and not getattr(op, kind).key:
            raise errors.ErrEmptyKey


def _branch_writes(
    ops: Sequence[rpc_pb2.RequestOp],
) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    """Puts and delete ranges one branch may perform; ErrDuplicateKey if two of its writes
    could touch the same key. The two branches of a nested txn exclude each other, so
    they may write the same key; anything else may not (stricter than etcd, which misses a
    put in one nested txn under a delete in a later sibling)."""
    puts: set[bytes] = set()
    dels: list[tuple[bytes, bytes]] = []

    def merge(new_puts: set[bytes], new_dels: list[tuple[bytes, bytes]]) -> None:
        if puts & new_puts:
            raise errors.ErrDuplicateKey
        if any(_in_range(k, d) for k in new_puts for d in dels) or any(
            _in_range(k, d) for k in puts for d in new_dels
        ):
            raise errors.ErrDuplicateKey
        puts.update(new_puts)
        dels.extend(new_dels)

    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_put":
            merge({op.request_put.key}, [])
        elif kind == "request_delete_range":
            d = op.request_delete_range
            merge(set(), [(d.key, d.range_end)])
        elif kind == "request_txn":
            then_puts, then_dels = _branch_writes(op.request_txn.success)
            else_puts, else_dels = _branch_writes(op.request_txn.failure)
            merge(then_puts | else_puts, then_dels + else_dels)
    return puts, dels


def _in_range(key: bytes, rng: tuple[bytes, bytes]) -> bool:
    start, end = rng
    if not end:
        return key == start
    if end == b"\x00":
        return key >= start
    return start <= key < end


def _key_cond(col: str, key: bytes, range_end: bytes) -> tuple[str, tuple[bytes, ...]]:
    """SQL condition for etcd's key range: "" = one key, "\\0" = every key >= key."""
    if not range_end:
        return f"{col} = ?", (key,)
    if range_end == b"\x00":
        return f"{col} >= ?", (key,)
    return f"{col} >= ? AND {col} < ?", (key, range_end)


_U64: Final = 1 << 64


def _to_i64(value: int) -> int:
    """A uint64 member id as SQLite's signed 64-bit integer (two's complement)."""
    return value - _U64 if value >= 1 << 63 else value


def _to_u64(value: int) -> int:
    return value + _U64 if value < 0 else value


def _fill_kv(kv: kv_pb2.KeyValue, key: bytes, row: _Row) -> None:
    kv.key = key
    kv.create_revision = row[1]
    kv.mod_revision = row[2]
    kv.version = row[3]
    kv.value = row[4]
    kv.lease = row[5]


def _open(path: Path, busy_timeout: float) -> sqlite3.Connection:
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
