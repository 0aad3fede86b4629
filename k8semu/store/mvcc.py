"""The MVCC key-value state machine: etcd v3 semantics on one SQLite file (kv.db).

Owns revisions, per-key history, lease records (existence and granted TTL, not their clocks:
see lessor.py), compaction and the consistency hash. It applies committed Raft entries
deterministically, so replicas that apply the same entries hold the same history and the same
hash. It must not do network I/O, touch asyncio, or know about Raft beyond (index, term): the
driver calls it from one thread (a single-thread executor), one call at a time.

Revisions follow etcd exactly: an empty store is at revision 1, every put, delete and txn with
writes bumps it once (a txn's writes share a main revision and are told apart by a sub index),
a delete that deletes nothing does not.

Layout of kv.db: see schema.py. Reads are in reads.py, txn checks in txn.py.

Compaction is two steps, as in etcd: applying a Compact entry only moves compact_revision
(reads below it fail at once); `compact_step` deletes the rows it made unreachable and
`defrag_step` gives free pages back, in bounded batches the caller interleaves with applies
(reclaim.py). What is logically visible (reads, watches, hash_kv) never depends on how far
the physical deletion has got.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

from google.protobuf.message import DecodeError, Message

from k8semu.pb.etcd import kv_pb2, rpc_pb2
from k8semu.pb.store import internal_pb2
from k8semu.store import errors, reads, reclaim, snapshot
from k8semu.store import metrics as store_metrics
from k8semu.store.errors import StoreError
from k8semu.store.reads import MAX_RANGE_RESPONSE_BYTES
from k8semu.store.schema import SUB_BITS, Row, fill_kv, key_cond, open_kv, to_i64, to_u64
from k8semu.store.txn import APPLY_MAX_TXN_OPS, compare_holds, txn_has_put, validate_txn

_NOSPACE: Final = rpc_pb2.NOSPACE
_CORRUPT: Final = rpc_pb2.CORRUPT
MAX_LEASE_TTL: Final = 9_000_000_000

_PUT: Final = kv_pb2.Event.PUT
_DELETE: Final = kv_pb2.Event.DELETE
_SUB_LIMIT: Final = 1 << SUB_BITS
_MISSING: Final = object()

_SQL_CURRENT: Final = (
    "SELECT h.id, h.create_rev, h.rev, h.version, h.value, h.lease"
    " FROM kv JOIN history h ON h.id = kv.id WHERE kv.key = ?"
)
_SQL_INSERT_HISTORY: Final = "INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SQL_UPSERT_KV: Final = (
    "INSERT INTO kv (key, id, lease) VALUES (?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET id = excluded.id, lease = excluded.lease"
)
_SQL_DELETE_KV: Final = "DELETE FROM kv WHERE key = ?"
_SQL_SET_META: Final = "UPDATE meta SET value = ? WHERE name = ?"


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
        self._db = open_kv(self._path, busy_timeout)
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
            (to_u64(m), t) for m, t in self._db.execute("SELECT member, type FROM alarm")
        )
        self._page_size: int = self._db.execute("PRAGMA page_size").fetchone()[0]
        self.max_range_response_bytes = MAX_RANGE_RESPONSE_BYTES
        self._size = self.db_size()
        # Write-behind buffers for the open batch: history rows to insert and the newest
        # current row per key (None = deleted). Flushed before any SQL read that could
        # otherwise miss them and at the end of the batch.
        self._pending_history: list[tuple[int, int, int, bytes, int, bytes, int, int, int]] = []
        self._pending_kv: dict[bytes, Row | None] = {}
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
            began = time.perf_counter()
            db.execute("COMMIT")
            store_metrics.BACKEND_COMMIT.observe(time.perf_counter() - began)
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
                    "INSERT INTO alarm (member, type) VALUES (?, ?)", (to_i64(item[0]), item[1])
                )
                self._alarms = self._alarms | {item}
            resp.alarms.add(memberID=item[0], alarm=req.alarm)
        elif req.action == rpc_pb2.AlarmRequest.DEACTIVATE and item in self._alarms:
            self._db.execute(
                "DELETE FROM alarm WHERE member = ? AND type = ?", (to_i64(item[0]), item[1])
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

    def _check_put(self, req: rpc_pb2.PutRequest, prev: Row | None) -> None:
        if (req.ignore_value or req.ignore_lease) and prev is None:
            raise errors.ErrKeyNotFound
        if req.lease and not req.ignore_lease and not self._lease_ttl(req.lease):
            raise errors.ErrLeaseNotFound

    def _exec_put(
        self, req: rpc_pb2.PutRequest, prev: Row | None, w: _Writes, resp: rpc_pb2.PutResponse
    ) -> None:
        value = prev[4] if req.ignore_value and prev is not None else req.value
        lease = prev[5] if req.ignore_lease and prev is not None else req.lease
        self._write_put(w, req.key, value, lease, prev)
        resp.header.revision = w.rev
        if req.prev_kv and prev is not None:
            fill_kv(resp.prev_kv, req.key, prev)

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
            cond, params = key_cond("kv.key", req.key, req.range_end)
            rows: list[tuple[bytes, Row]] = [
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
                fill_kv(resp.prev_kvs.add(), key, prev)
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
                # Not bounded (max_bytes): refusing here would be an apply-time decision.
                reads.range_into(
                    self._db, op.request_range, w.read_rev(self._rev), out.response_range
                )
            elif kind == "request_txn":
                self._exec_txn(op.request_txn, path, w, out.response_txn)
        resp.header.revision = w.read_rev(self._rev)

    def _compare(self, c: rpc_pb2.Compare) -> bool:
        rows: list[Row]
        if c.range_end:
            self._flush()
            cond, params = key_cond("kv.key", c.key, c.range_end)
            rows = self._db.execute(
                "SELECT h.id, h.create_rev, h.rev, h.version, h.value, h.lease"
                f" FROM kv JOIN history h ON h.id = kv.id WHERE {cond}",
                params,
            ).fetchall()
        else:
            row = self._current(c.key)
            rows = [] if row is None else [row]
        return compare_holds(c, rows)

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

    def _current(self, key: bytes) -> Row | None:
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
        self, w: _Writes, key: bytes, value: bytes, lease: int, prev: Row | None
    ) -> None:
        rid, sub = self._next_id(w)
        rev = w.rev
        if prev is None:
            create, version = rev, 1
        else:
            create, version = prev[1], prev[3] + 1
        self._pending_history.append((rid, rev, sub, key, _PUT, value, create, version, lease))
        row = self._pending_kv[key] = (rid, create, rev, version, value, lease)
        ev = kv_pb2.Event()
        fill_kv(ev.kv, key, row)
        if prev is not None:
            fill_kv(ev.prev_kv, key, prev)
        w.events.append(ev)

    def _write_delete(self, w: _Writes, key: bytes, prev: Row) -> None:
        rid, sub = self._next_id(w)
        self._pending_history.append((rid, w.rev, sub, key, _DELETE, b"", 0, 0, 0))
        self._pending_kv[key] = None
        ev = kv_pb2.Event(type=_DELETE)
        ev.kv.key = key
        ev.kv.mod_revision = w.rev
        fill_kv(ev.prev_kv, key, prev)
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
        reads.range_into(self._db, req, self._rev, resp, max_bytes=self.max_range_response_bytes)
        return resp

    def _check_range_revision(self, rev: int, current: int) -> None:
        if rev > current:
            raise errors.ErrFutureRev
        if 0 < rev < self._compact_rev:
            raise errors.ErrCompacted

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
        return reads.events(self._db, start_rev, end_rev, key, range_end, limit)

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
        crc = reads.hash_kv(self._db, rev, self._compact_rev)
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

    def compact_step(self, max_rows: int = reclaim.COMPACT_BATCH_ROWS) -> bool:
        """Delete the history a past compaction made unreachable, one bounded batch
        (reclaim.py); True while more remains. The caller runs it between apply batches,
        never inside apply_batch."""
        target = self._compact_rev
        if self._compact_physical >= target:
            return False
        resume = reclaim.compact_batch(self._db, target, self._compact_cursor, max_rows)
        if resume is None:
            self._compact_physical = target
            self._compact_cursor = (target + 1) << SUB_BITS
            return False
        self._compact_cursor = resume
        return True

    def defrag_step(self, max_pages: int = reclaim.DEFRAG_BATCH_PAGES) -> bool:
        """Give up to `max_pages` free pages back to the file system; True while more remain."""
        more = reclaim.defrag_batch(self._db, max_pages)
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
