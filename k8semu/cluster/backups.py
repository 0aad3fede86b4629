"""A cluster's backups: the supervisor's schedule, and restoring the store of a stopped
cluster from a backup file (``k8semu restore``).

Restore makes a *new* store cluster: every replica of the config is restored from the same
file with a new store token (so a new store cluster id: a replica of the old cluster is
refused by the new one's members), with the revision bumped (``bump``, default etcd's and
Kubernetes' 1,000,000,000) and marked compacted, so every client that watched the old cluster
gets 410 Gone and relists instead of silently missing what the backup lacks. The replicas are
written into a staging directory first; only when all are written is the old ``store/``
directory moved aside (to ``store.before-restore-<time>/``, never deleted) and the new one
renamed into place. The new token is recorded in ``cluster.json``, where ``k8semu up`` finds
it again (``remembered_store_token``).

This module decides nothing about processes: the caller stops the cluster first (leaving
the pods running, for the kubelets to adopt) and starts it afterwards.
"""

from __future__ import annotations

import datetime
import json
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k8semu.backup import archive
from k8semu.backup.archive import BackupError, Metadata
from k8semu.backup.schedule import BackupSchedule
from k8semu.cluster import certs
from k8semu.cluster.config import BackupsSpec, ClusterConfig, format_duration
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.plan import STORE_DIR
from k8semu.cluster.state import ClusterState
from k8semu.store import restore as store_restore
from k8semu.store.config import ConfigError as StoreConfigError
from k8semu.store.errors import StoreError

__all__ = [
    "DEFAULT_BUMP",
    "IDENTITY_FILE",
    "RestoreResult",
    "backup_schedule",
    "backups_dir",
    "other_cluster",
    "remembered_store_token",
    "restore_store",
    "scheduled_backups",
]

#: etcdutl --bump-revision as Kubernetes' docs use it: far above any revision a cluster
#: reached between two backups.
DEFAULT_BUMP = 1_000_000_000
IDENTITY_FILE = "cluster.json"  # the launcher's (k8semu.cluster.launcher.IDENTITY_FILE)
_RESTORED = "-restore-"


def backups_dir(state_dir: Path, directory: str) -> Path:
    """Where the scheduled backups of the cluster in ``state_dir`` go."""
    return Path(directory) if directory else state_dir / "backups"


def backup_schedule(
    cluster: str,
    state_dir: Path,
    spec: BackupsSpec,
    endpoints: Sequence[str],
    say: Callable[[str], None],
) -> BackupSchedule | None:
    """The supervisor's schedule for ``spec``, or None when it schedules none."""
    if not spec.enabled or not endpoints:
        return None
    directory = backups_dir(state_dir, spec.directory)
    say(
        f"scheduled backups: every {format_duration(spec.interval_ms)} into {directory},"
        f" keeping {spec.keep}"
    )
    return BackupSchedule(
        cluster=cluster,
        endpoints=endpoints,
        directory=directory,
        interval_s=spec.interval_ms / 1000,
        keep=spec.keep,
        say=say,
        tls=certs.PKIPaths(state_dir).store_client(),
    )


def scheduled_backups(
    state: ClusterState, state_dir: Path, say: Callable[[str], None]
) -> BackupSchedule | None:
    """The schedule a detached supervisor runs, from ``state.json``'s ``backups``."""
    try:
        spec = BackupsSpec(**state.backups)
    except (TypeError, ValueError) as exc:
        say(f"state.json's backups section is unusable ({exc}): no scheduled backups")
        return None
    endpoints = [address for _, address in state.store_members]
    return backup_schedule(state.cluster, state_dir, spec, endpoints, say)


def _identity(state_dir: Path) -> dict[str, Any]:
    try:
        raw = json.loads((state_dir / IDENTITY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def remembered_store_token(state_dir: Path, config: ClusterConfig) -> str | None:
    """The store token of a restored store in ``state_dir`` when it belongs to ``config``'s
    cluster (same name and members), else None (the config's own token)."""
    have = _identity(state_dir)
    token = have.get("storeToken")
    members = sorted(m.name for m in config.store.members)
    if (
        isinstance(token, str)
        and token.startswith(config.store_token + _RESTORED)
        and have.get("name") == config.name
        and have.get("storeMembers") == members
    ):
        return token
    return None


def other_cluster(file: Path, backed_up: str, target: str) -> str:
    return (
        f"{file} is a backup of cluster {backed_up!r}, not of {target!r}: refusing to mix them"
        " (nothing was changed; pass --from-other-cluster to move it here)"
    )


@dataclass(frozen=True, slots=True)
class RestoreResult:
    metadata: Metadata
    token: str
    #: The store revision the restored cluster starts at (the backup's + the bump).
    revision: int
    members: tuple[str, ...]
    #: Where the replaced store data went (None when there was none).
    moved_aside: Path | None


def restore_store(
    file: Path,
    config: ClusterConfig,
    state_dir: Path,
    *,
    bump: int = DEFAULT_BUMP,
    allow_other_cluster: bool = False,
) -> RestoreResult:
    """Replace the store data of the (stopped) cluster of ``config`` in ``state_dir`` with the
    backup ``file``. Nothing is written unless the file verifies; BackupError or ClusterError
    say why."""
    store = config.store
    if store.external or store.backend == "etcd":
        raise ClusterError(
            "store.backend: restore needs the k8semu store; load an etcd with"
            " `k8semu backup import` (from `k8semu backup export`) or etcdutl"
        )
    members = {m.name: m.peer_address for m in store.members}
    state_dir.mkdir(parents=True, exist_ok=True)
    with archive.extracted_payload(file, scratch=state_dir) as (meta, payload):
        if meta.cluster != config.name and not allow_other_cluster:
            raise BackupError(other_cluster(file, meta.cluster, config.name))
        token = f"{config.store_token}{_RESTORED}{uuid.uuid4().hex[:8]}"
        staging = state_dir / f".{STORE_DIR}.restoring"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for name in members:
                store_restore.restore_member(
                    payload,
                    staging / name,
                    name=name,
                    members=members,
                    token=token,
                    bump_revision=bump,
                    mark_compacted=bump > 0,
                )
        except (StoreError, StoreConfigError, OSError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ClusterError(f"restore of the store from {file}: {exc}") from exc
    moved = _swap_in(state_dir, staging)
    _write_identity(state_dir, config, token, file, meta)
    return RestoreResult(
        metadata=meta,
        token=token,
        revision=meta.revision + bump,
        members=tuple(members),
        moved_aside=moved,
    )


def _swap_in(state_dir: Path, staging: Path) -> Path | None:
    """Move the old store dir aside (kept) and the staged one into its place."""
    root = state_dir / STORE_DIR
    moved = None
    if root.exists():
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        moved = state_dir / f"{STORE_DIR}.before-restore-{stamp}"
        root.rename(moved)
    staging.rename(root)
    return moved


def _write_identity(
    state_dir: Path, config: ClusterConfig, token: str, file: Path, meta: Metadata
) -> None:
    identity = {
        "name": config.name,
        "storeToken": token,
        "storeMembers": sorted(m.name for m in config.store.members),
        "restoredFrom": {
            "file": str(file.resolve()),
            "revision": meta.revision,
            "takenAt": meta.taken_at,
        },
    }
    path = state_dir / IDENTITY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
