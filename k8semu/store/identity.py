"""Raft identity protection: a member that was bootstrapped never starts again without its log.

A member's Raft log (raft.db) holds its term and its vote. Started without it, the member
would come back as a fresh one under its old id (term 0, no vote) and could vote a second
time in a term it already voted in, electing two leaders in one term. etcd refuses such a
start ("member ... has already been bootstrapped"); so does this module.

The evidence that a member was bootstrapped, any one of which is enough:
  - the `member` file in its data dir, written when its raft.db was first created;
  - a kv.db that has applied entries, or snapshot files in snap/ (the state machine ran);
  - `--initial-cluster-state existing` (the operator says it was a member).
Lost means: raft.db missing, empty, or without its identity row (not a k8semu Raft log of
this data dir any more), or a raft.db that never left term 0 beside a state machine that
applied entries. A raft.db at term 0 with its identity row and nothing applied is a member
that started but never took part in an election: safe to start again.

A brand-new member (empty data dir, --initial-cluster-state new) and a data dir made by
`k8semu store snapshot restore` (raft.db at term 1 with a snapshot) start normally.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from pathlib import Path

from k8semu.store.config import StoreConfig
from k8semu.store.errors import MemberDataLostError

MARKER = "member"
# A data dir prepared for a member that joins a running cluster (`k8semu store replace`
# writes it): it starts as with --initial-cluster-state existing whatever its flags say, so
# a supervisor restarting it with its usual command does not bootstrap it anew.
JOIN_MARKER = "join"
_EXISTING = "--initial-cluster-state existing"


def needs_join(config: StoreConfig) -> bool:
    """A member started with --initial-cluster-state existing (or on a data dir prepared to
    join) with no Raft log yet: it joins a running cluster that added it
    (store.members.fetch_cluster)."""
    data_dir = config.data_dir
    return (
        (config.initial_cluster_state == "existing" or (data_dir / JOIN_MARKER).exists())
        and not (data_dir / "raft.db").exists()
        and not (data_dir / MARKER).exists()
    )


def prepare_join(data_dir: Path, note: str) -> None:
    """Make ``data_dir`` (new, empty) one whose member joins a running cluster."""
    data_dir.mkdir(parents=True)
    (data_dir / JOIN_MARKER).write_text(note + "\n")


def recorded(config: StoreConfig) -> tuple[int, int, bool] | None:
    """(cluster id, member id, joined) as the data dir's marker recorded them when this member
    first started; None without a marker of this --name and --initial-cluster-token (then
    the ids follow from the flags, and raft.db refuses a data dir of another cluster). As
    etcd ignores --initial-cluster once a data dir exists, so do these ids: the membership
    may have changed since."""
    try:
        marker = json.loads((config.data_dir / MARKER).read_text())
        if marker.get("name") != config.name or marker.get("token") != _token_tag(config):
            return None
        return int(marker["cluster"], 16), int(marker["member"], 16), bool(marker.get("joined"))
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None


def _token_tag(config: StoreConfig) -> str:
    """The cluster token, hashed (the marker need not show it)."""
    return hashlib.sha256(config.cluster_token.encode()).hexdigest()[:16]


def check(config: StoreConfig) -> None:
    """Raise MemberDataLostError if this member was bootstrapped but lost its Raft log."""
    data_dir = config.data_dir
    raft_db = data_dir / "raft.db"
    evidence = _evidence(config)
    lost = _raft_log_lost(raft_db)
    if lost is None:
        applied = _kv_applied_index(data_dir / "kv.db")
        if applied > 0 and _raft_term(raft_db) == 0:
            lost = (
                f"{raft_db} never left term 0, but kv.db has applied entries up to index "
                f"{applied} (the Raft log was replaced)"
            )
            evidence = evidence or ["kv.db has applied entries"]
    if lost is None or not evidence:
        return
    if evidence == [_EXISTING] and not raft_db.exists():
        return  # an empty data dir joining a running cluster (needs_join)
    raise MemberDataLostError(
        f"member {config.name} ({config.member_id:x}) of cluster {config.cluster_id:x} was "
        f"already bootstrapped ({'; '.join(evidence)}), but {lost}. Its Raft data is lost: "
        "starting it as a new member under its old id could make it vote twice in one term. "
        "Refusing to start. To replace it, remove the member (`etcdctl member remove ID`), "
        "add a new one (`etcdctl member add NAME --peer-urls URL`) and start that with an "
        "empty data dir and --initial-cluster-state existing, or restore every member from "
        "a backup (`k8semu store snapshot restore`)."
    )


def mark(config: StoreConfig, *, joined: bool = False) -> None:
    """Record that this data dir's member is bootstrapped (once its raft.db exists). A marker
    of an older version (no token) is completed, so its ids are recorded from now on."""
    path = config.data_dir / MARKER
    if path.exists() and recorded(config) is not None:
        return
    if path.exists():
        with contextlib.suppress(OSError, ValueError):
            joined = joined or bool(json.loads(path.read_text()).get("joined"))
    tmp = path.with_name(MARKER + ".tmp")
    tmp.write_text(
        json.dumps(
            {
                "name": config.name,
                "member": f"{config.member_id:x}",
                "cluster": f"{config.cluster_id:x}",
                "joined": joined,
                "token": _token_tag(config),
            }
        )
        + "\n"
    )
    tmp.replace(path)


def _evidence(config: StoreConfig) -> list[str]:
    data_dir = config.data_dir
    found = []
    if (data_dir / MARKER).exists():
        found.append(f"{data_dir / MARKER} exists")
    if _kv_applied_index(data_dir / "kv.db") > 0:
        found.append("kv.db has applied entries")
    if any((data_dir / "snap").glob("*.snap")):
        found.append("snapshots exist in snap/")
    if config.initial_cluster_state == "existing":
        found.append(_EXISTING)
    return found


def _raft_log_lost(raft_db: Path) -> str | None:
    """Why raft.db cannot be this member's Raft log, or None if it looks like one."""
    if not raft_db.exists():
        return f"its Raft log {raft_db} is missing"
    if raft_db.stat().st_size == 0:
        return f"its Raft log {raft_db} is empty"
    try:
        with contextlib.closing(_open_ro(raft_db)) as db:
            row = db.execute("SELECT count(*) FROM identity").fetchone()
    except sqlite3.Error:
        return None  # not readable as a Raft log at all: RaftStorage says why, precisely
    if not row or row[0] == 0:
        return f"its Raft log {raft_db} is empty (no member identity)"
    return None


def _raft_term(raft_db: Path) -> int:
    from k8semu.pb.raft import raft_pb2

    try:
        with contextlib.closing(_open_ro(raft_db)) as db:
            row = db.execute("SELECT data FROM entries WHERE idx = 0").fetchone()
            snap = db.execute("SELECT count(*) FROM snapshot").fetchone()
    except sqlite3.Error:
        return -1
    if snap and snap[0]:
        return -1  # a snapshot was installed: not a never-started log
    if row is None:
        return 0
    try:
        return raft_pb2.HardState.FromString(row[0]).term
    except Exception:
        return -1


def _kv_applied_index(kv_db: Path) -> int:
    if not kv_db.exists() or kv_db.stat().st_size == 0:
        return 0
    try:
        with contextlib.closing(_open_ro(kv_db)) as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'applied_index'").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row and isinstance(row[0], int) else 0


def _open_ro(path: Path) -> sqlite3.Connection:
    # Read-only, so looking never creates or changes a file; WAL content is still seen.
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
