"""Make a new member's data dir from a snapshot file (`k8semu store snapshot restore`).

Every member of the new cluster restores the same file with the same --initial-cluster,
so all start from an identical state at Raft index 1 of a new cluster, with the MVCC
revisions of the snapshot preserved. Nothing is written unless the file verifies, and
an existing data dir is never overwritten.
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

RESTORED_INDEX = 1
RESTORED_TERM = 1


def restore_member(
    file: Path, data_dir: Path, *, name: str, members: Mapping[str, str], token: str
) -> internal_pb2.SnapshotHeader:
    if data_dir.exists() and any(data_dir.iterdir()):
        raise OSError(f"--data-dir: {data_dir} exists and is not empty; refusing to overwrite")
    header = snapshot.verify(file)
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
            file, staging / "kv.db", raft_index=RESTORED_INDEX, raft_term=RESTORED_TERM
        )
        voters = sorted(config.ids.values())
        meta = raft_pb2.SnapshotMetadata(index=RESTORED_INDEX, term=RESTORED_TERM, voters=voters)
        shutil.copyfile(file, staging / "snap" / f"{RESTORED_INDEX:016x}.snap")
        asyncio.run(_write_raft(staging / "raft.db", config, meta))
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        if data_dir.exists():
            data_dir.rmdir()
        staging.rename(data_dir)
    except (StoreError, OSError):
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return header


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
