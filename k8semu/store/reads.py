"""Reading kv.db as etcd does: Range at the current or a past revision, watch events, the hash.

Owns the SQL of reads and etcd's quirks in them (sort and limit order, revision filters,
bounded responses). Functions of a connection and the revisions the caller vouches for: they
never write and never check revisions against compaction (the MVCC store does that first).
"""

from __future__ import annotations

import sqlite3
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

from k8semu.pb.etcd import kv_pb2, rpc_pb2
from k8semu.store import errors
from k8semu.store.schema import SUB_BITS, fill_kv, key_cond

# A Range response is refused once its encoded size would pass this: the gRPC send limit of
# every k8semu server (k8semu.transport.MAX_MESSAGE_BYTES, 64 MiB) less room for the header.
MAX_RANGE_RESPONSE_BYTES: Final = 64 * 1024 * 1024 - 64 * 1024
# Upper bound of the encoded size of one KeyValue beyond its key and value (tags, varints).
_KV_OVERHEAD: Final = 64
_PUT: Final = kv_pb2.Event.PUT
_DELETE: Final = kv_pb2.Event.DELETE
_Sort = rpc_pb2.RangeRequest
# sort target -> (SQL column, index in a range row); "key" stands for the source's key column
_SORT_COLUMNS: Final = {
    _Sort.KEY: ("key", 0),
    _Sort.VERSION: ("h.version", 3),
    _Sort.CREATE: ("h.create_rev", 1),
    _Sort.MOD: ("h.rev", 2),
    _Sort.VALUE: ("h.value", 4),
}
# Revision filters of a Range: (SQL, request field).
_FILTERS: Final = (
    (" AND h.rev >= ?", "min_mod_revision"),
    (" AND h.rev <= ?", "max_mod_revision"),
    (" AND h.create_rev >= ?", "min_create_revision"),
    (" AND h.create_rev <= ?", "max_create_revision"),
)
# A history row and its previous version (p.*, laid out as a schema.Row after p.type).
_SQL_EVENTS: Final = (
    "SELECT h.id, h.rev, h.key, h.type, h.value, h.create_rev, h.version, h.lease,"
    " p.type, p.id, p.create_rev, p.rev, p.version, p.value, p.lease"
    " FROM history h LEFT JOIN history p ON p.key = h.key AND p.rev ="
    " (SELECT max(rev) FROM history WHERE key = h.key AND rev < h.rev)"
    " WHERE h.id >= ? AND h.id < ? AND {cond} ORDER BY h.id"
)
# What a compaction at :c leaves visible: every version above it, and at or below it only a
# key's newest version if that is a put. hash_kv hashes exactly this, so it does not depend
# on how far the physical deletion has got.
SQL_VISIBLE: Final = (
    "(h.rev > :c OR (h.type = 0 AND h.rev ="
    " (SELECT max(rev) FROM history WHERE key = h.key AND rev <= :c)))"
)


@dataclass(frozen=True, slots=True)
class _Source:
    """Where a Range reads its rows from: the kv index (now) or history (a past revision)."""

    key_column: str
    sql: str  # FROM ... WHERE ...
    params: tuple[bytes | int, ...]
    count_sql: str

    def count(self, db: sqlite3.Connection) -> int:
        return int(db.execute(self.count_sql, self.params).fetchone()[0])


def _source(req: rpc_pb2.RangeRequest, at: int, current: int) -> _Source:
    if at < current:
        inner, kparams = key_cond("key", req.key, req.range_end)
        sql = (
            "FROM (SELECT key AS k, max(rev) AS r FROM history"
            f" WHERE {inner} AND rev <= ? GROUP BY key) m"
            " JOIN history h ON h.key = m.k AND h.rev = m.r WHERE h.type = 0"
        )
        return _Source("m.k", sql, (*kparams, at), f"SELECT count(*) {sql}")
    cond, params = key_cond("kv.key", req.key, req.range_end)
    sql = f"FROM kv JOIN history h ON h.id = kv.id WHERE {cond}"
    return _Source("kv.key", sql, params, f"SELECT count(*) FROM kv WHERE {cond}")


def _order(req: rpc_pb2.RangeRequest, kcol: str, sort_after: bool) -> str:
    order = req.sort_order
    column = _SORT_COLUMNS.get(req.sort_target, (kcol, 0))[0]
    if column == "key":
        column = kcol
    if sort_after or (order != _Sort.DESCEND and column == kcol):
        return kcol
    if order == _Sort.DESCEND:
        return f"{column} DESC" if column == kcol else f"{column} DESC, {kcol}"
    return f"{column}, {kcol}"


def _fetch(cursor: sqlite3.Cursor, max_bytes: int) -> list[Any]:
    """All rows, or ErrResponseTooLarge as soon as they would encode to more than
    ``max_bytes`` (0: no bound), before the whole answer is in memory."""
    if not max_bytes:
        return cursor.fetchall()
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
    return rows


def range_into(
    db: sqlite3.Connection,
    req: rpc_pb2.RangeRequest,
    current: int,
    resp: rpc_pb2.RangeResponse,
    *,
    max_bytes: int = 0,
) -> None:
    """Fill `resp` with etcd's answer to `req` at store revision `current`. With `max_bytes`,
    raise ErrResponseTooLarge past that size. Ranges inside a txn are not bounded: refusing
    there would be a write-path decision."""
    resp.header.revision = current
    source = _source(req, req.revision if req.revision > 0 else current, current)
    if req.count_only:
        resp.count = source.count(db)
        return
    filters = "".join(sql for sql, name in _FILTERS if getattr(req, name))
    fparams = [v for _, name in _FILTERS if (v := getattr(req, name))]
    # Beyond any real store, and limit + 1 must still be an SQLite integer (int64).
    limit = min(req.limit, 1 << 62)
    # etcd quirk, kept for wire compatibility: with sort_order NONE etcd applies the
    # limit in key order first (it fetches everything only for an explicit order or a
    # revision filter), then sorts those limit+1 keys ascending by the target.
    sort_after = (
        req.sort_target != _Sort.KEY and req.sort_order == _Sort.NONE and limit > 0 and not fparams
    )
    value = "X''" if req.keys_only and not sort_after else "h.value"
    sql = (
        f"SELECT h.key, h.create_rev, h.rev, h.version, {value}, h.lease {source.sql}"
        f"{filters} ORDER BY {_order(req, source.key_column, sort_after)}"
    )
    if limit > 0:
        sql += f" LIMIT {limit + 1}"
    rows = _fetch(db.execute(sql, (*source.params, *fparams)), max_bytes)
    if sort_after:
        index = _SORT_COLUMNS.get(req.sort_target, ("", 0))[1]
        rows.sort(key=lambda r: r[index])  # stable, like Go's sort on small slices
        if req.keys_only:
            rows = [(*r[:4], b"", r[5]) for r in rows]
    if limit > 0 and len(rows) > limit:
        resp.more = True
        del rows[limit:]
    add = resp.kvs.add
    for row in rows:  # laid out as a schema.Row, with the key where a Row has its id
        fill_kv(add(), row[0], row)
    resp.count = source.count(db) if resp.more or fparams else len(rows)


def events(
    db: sqlite3.Connection,
    start_rev: int,
    end_rev: int,
    key: bytes,
    range_end: bytes,
    limit: int,
) -> list[kv_pb2.Event]:
    """History events for keys in [key, range_end) with start_rev <= rev <= end_rev, in
    revision order, sub-order within a revision, prev_kv filled when a previous version
    exists; at most about `limit` of them, but never a revision split in two."""
    cond, params = key_cond("h.key", key, range_end)
    sql = _SQL_EVENTS.format(cond=cond)
    hi = (end_rev + 1) << SUB_BITS
    rows = db.execute(
        sql + f" LIMIT {max(1, limit)}", (start_rev << SUB_BITS, hi, *params)
    ).fetchall()
    if rows and len(rows) >= limit:
        last_id, last_rev = rows[-1][0], rows[-1][1]
        rows += db.execute(sql, (last_id + 1, (last_rev + 1) << SUB_BITS, *params)).fetchall()
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
            fill_kv(ev.prev_kv, k, tuple(prev))
        out.append(ev)
    return out


def hash_kv(db: sqlite3.Connection, rev: int, compact_rev: int) -> int:
    """CRC-32 of the history visible at `rev` after a compaction at `compact_rev`."""
    crc = 0
    pack = struct.Struct(">qqbqqqII").pack
    for rv, sub, key, typ, val, create, version, lease in db.execute(
        "SELECT rev, sub, key, type, value, create_rev, version, lease FROM history h"
        f" WHERE id < :hi AND {SQL_VISIBLE} ORDER BY id",
        {"hi": (rev + 1) << SUB_BITS, "c": compact_rev},
    ):
        crc = zlib.crc32(pack(rv, sub, typ, create, version, lease, len(key), len(val)), crc)
        crc = zlib.crc32(key, crc)
        crc = zlib.crc32(val, crc)
    return crc
