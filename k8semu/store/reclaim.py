"""Giving kv.db's space back in bounded steps: history a compaction made unreachable, free pages.

Compaction is two steps, as in etcd: applying a Compact entry only moves compact_revision
(reads below it fail at once); the rows it makes unreachable are deleted afterwards, a batch
at a time, between applies, so a large compaction never holds the MVCC thread for long.
Defragmentation hands free pages back to the file system the same way. Each step is one short
transaction of its own; what is logically visible never depends on how far they have got.
It must not decide when to run: compactor.py does, through the MVCC store.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from k8semu.store.schema import SUB_BITS

# Rows of history examined, and at most deleted, per compaction step (etcd deletes 1,000
# revisions per batch).
COMPACT_BATCH_ROWS: Final = 1000
# Pages handed back to the file system per defragmentation step (1 MiB at 4 KiB pages).
DEFRAG_BATCH_PAGES: Final = 256

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
_SQL_SET_PHYSICAL: Final = "UPDATE meta SET value = ? WHERE name = 'compact_physical'"


def compact_batch(db: sqlite3.Connection, target: int, cursor: int, max_rows: int) -> int | None:
    """Reduce the history below `target` from history id `cursor` on: at most `max_rows` rows
    examined and at most `max_rows` deleted. Returns the id to resume from, or None when the
    whole history is reduced (then compact_physical = `target` is recorded)."""
    hi = (target + 1) << SUB_BITS
    budget = max_rows
    resume: int | None = None  # where the next step starts when the budget ran out
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute(_SQL_COMPACT_KEYS, (cursor, hi, max_rows)).fetchall()
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
            db.execute(_SQL_SET_PHYSICAL, (target,))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if done:
        return None
    return resume if resume is not None else rows[-1][0] + 1


def defrag_batch(db: sqlite3.Connection, max_pages: int) -> bool:
    """Give up to `max_pages` free pages back to the file system; True while more remain.

    A file made before incremental auto-vacuum was used gets one full VACUUM instead
    (which converts it, and holds the thread for as long as it takes)."""
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")
        more = False
    else:
        # executescript steps the pragma to the end (a plain execute frees one page).
        db.executescript(f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({int(max_pages)}); COMMIT;")
        more = bool(db.execute("PRAGMA freelist_count").fetchone()[0])
    if not more:
        # The file shrinks when the WAL is checkpointed into it.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return more
