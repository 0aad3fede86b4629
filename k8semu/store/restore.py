"""Make a new member's data dir from a snapshot file (`k8semu store snapshot restore`).

Every member of the new cluster restores the same file with the same --initial-cluster,
so all start from an identical state at Raft index 1 of a new cluster, with the MVCC
revisions of the snapshot preserved (or bumped, as etcdutl's --bump-revision). The new
cluster's id comes from --initial-cluster-token and the member names: a new token gives a
new cluster, whose members refuse the Raft messages of the old one. Nothing is written
unless the file verifies, and an existing data dir is never overwritten.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from pathlib import Path

from k8semu.pb.raft import raft_pb2
from k8semu.pb.store import internal_pb2
from k8semu.raft.errors import RaftError
from k8semu.raft.storage import RaftStorage
from k8semu.store import config as cfg
from k8semu.store import snapshot
from k8semu.store.errors import StoreError, from_raft
from k8semu.store.schema import SUB_BITS

RESTORED_INDEX = 1
RESTORED_TERM = 1
#: A history row's id is revision << SUB_BITS | sub, a signed 64-bit integer.
MAX_REVISION = 1 << (63 - SUB_BITS)


def restore_member(
    file: Path,
    data_dir: Path,
    *,
    name: str,
    members: Mapping[str, str],
    token: str,
    bump_revision: int = 0,
    mark_compacted: bool = False,
) -> internal_pb2.SnapshotHeader:
    """Make `data_dir` a member of the new cluster from snapshot `file`; return the header
    of the state it starts from (revisions after any bump)."""
    check_bump(bump_revision, mark_compacted)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise OSError(f"--data-dir: {data_dir} exists and is not empty; refusing to overwrite")
    header = snapshot.verify(file)
    if header.revision + bump_revision >= MAX_REVISION:
        raise cfg.ConfigError(
            f"--bump-revision: {bump_revision} would take the revision ({header.revision}) past"
            f" the store's limit {MAX_REVISION - 1}; use a smaller bump"
        )
    config = cfg.StoreConfig(
        name=name,
        data_dir=data_dir,
        listen_client="127.0.0.1:0",
        listen_peer=members.get(name, "127.0.0.1:0"),
        members=members,
        cluster_token=token,
    )
    staging = data_dir.with_name(data_dir.name + ".restoring")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "snap").mkdir(parents=True)
    try:
        snapshot.restore(
            file,
            staging / "kv.db",
            raft_index=RESTORED_INDEX,
            raft_term=RESTORED_TERM,
            bump_revision=bump_revision,
            mark_compacted=mark_compacted,
        )
        voters = sorted(config.ids.values())
        meta = raft_pb2.SnapshotMetadata(index=RESTORED_INDEX, term=RESTORED_TERM, voters=voters)
        # The snapshot at index 1 is made from the restored image, not copied from `file`:
        # its header must say what kv.db holds (index 1, the bumped revisions).
        header = internal_pb2.SnapshotHeader(
            raft_index=RESTORED_INDEX,
            raft_term=RESTORED_TERM,
            revision=header.revision + bump_revision,
            compact_revision=(
                header.revision + bump_revision if mark_compacted else header.compact_revision
            ),
        )
        header = snapshot.write(
            staging / "snap" / f"{RESTORED_INDEX:016x}.snap", header, staging / "kv.db"
        )
        asyncio.run(_write_raft(staging / "raft.db", config, meta))
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        if data_dir.exists():
            data_dir.rmdir()
        staging.rename(data_dir)
    except (StoreError, OSError):
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return header


def check_bump(bump_revision: int, mark_compacted: bool) -> None:
    """etcdutl's rule: --mark-compacted is required with --bump-revision > 0, and refused
    without it (a bump without it lets a watch from an old revision silently miss events)."""
    if bump_revision < 0:
        raise cfg.ConfigError(f"--bump-revision: must be >= 0, got {bump_revision}")
    if bump_revision > 0 and not mark_compacted:
        raise cfg.ConfigError("--mark-compacted: required if --bump-revision > 0")
    if mark_compacted and bump_revision == 0:
        raise cfg.ConfigError("--mark-compacted: disallowed unless --bump-revision > 0")


async def _write_raft(path: Path, config: cfg.StoreConfig, meta: raft_pb2.SnapshotMetadata) -> None:
    try:
        storage = await RaftStorage.open(
            path, cluster_id=config.cluster_id, member_id=config.member_id
        )
    except RaftError as exc:
        raise from_raft(exc) from exc
    try:
        await storage.save(
            raft_pb2.HardState(term=RESTORED_TERM, commit=RESTORED_INDEX), [], snapshot=meta
        )
    finally:
        await storage.close()
