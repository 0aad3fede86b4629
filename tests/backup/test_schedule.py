"""Scheduled backups against a real store: taken on the interval, pruned to the newest N, and a
failed one reported and tried again at the next interval; the `backups:` config section and the
restored store token a state dir remembers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from k8semu.backup.schedule import BackupSchedule, list_backups
from k8semu.cluster.backups import remembered_store_token
from k8semu.cluster.config import parse_config
from k8semu.cluster.errors import ClusterConfigError
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.store import restore as store_restore
from k8semu.store.config import ConfigError
from tests.support.cluster import until

HEAD = "kind: ClusterConfig\nversion: v1alpha1\nname: bk\n"


@pytest.mark.slow
def test_schedule_takes_prunes_and_retries(tmp_path: Path) -> None:
    said: list[str] = []
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            said.append(line)

    with K8semuStoreCluster(tmp_path / "store", 1) as store:
        store.start()
        store.wait_ready(timeout=60)
        directory = tmp_path / "backups"
        directory.write_text("a file where the directory should be")
        schedule = BackupSchedule(
            cluster="bk",
            endpoints=store.endpoints,
            directory=directory,
            interval_s=0.2,
            keep=2,
            say=say,
        )
        assert schedule.run_once() is None
        assert schedule.failed == 1 and "scheduled backup failed" in said[-1], said
        directory.unlink()
        schedule.start()
        try:
            until("4 scheduled backups", lambda: schedule.taken >= 4, timeout=60)
        finally:
            schedule.close()
    kept = list_backups(directory, "bk")
    assert len(kept) == 2 and all(b.metadata is not None for b in kept), kept
    assert kept[0].path.name < kept[1].path.name  # named by time: they sort by age


def test_backups_config_section() -> None:
    spec = parse_config(HEAD + "backups: {interval: 10m, keep: 3, directory: /b}\n").backups
    assert (spec.interval_ms, spec.keep, spec.directory, spec.enabled) == (600_000, 3, "/b", True)
    assert not parse_config(HEAD).backups.enabled
    for text, field in (
        ("backups: {interval: 10ms}\n", "backups.interval"),
        ("backups: {interval: 1m, keep: 0}\n", "backups.keep"),
        ("backups: {interval: 1m, kept: 2}\n", "backups.kept"),
        ("backups: {interval: 1m}\nstore: {backend: etcd}\n", "backups.interval"),
    ):
        with pytest.raises(ClusterConfigError, match=field):
            parse_config(HEAD + text)


def test_restored_token_is_remembered(tmp_path: Path) -> None:
    config = parse_config(HEAD)
    assert remembered_store_token(tmp_path, config) is None
    members = sorted(m.name for m in config.store.members)
    identity = {"name": "bk", "storeToken": "k8semu-bk-restore-1234abcd", "storeMembers": members}
    (tmp_path / "cluster.json").write_text(json.dumps(identity))
    assert remembered_store_token(tmp_path, config) == "k8semu-bk-restore-1234abcd"
    # Another cluster's identity, or a token that is not a restore of this one: ignored.
    for other in ({"name": "x"}, {"storeToken": "k8semu-other-restore-1"}, {"storeMembers": []}):
        (tmp_path / "cluster.json").write_text(json.dumps(identity | other))
        assert remembered_store_token(tmp_path, config) is None


def test_bump_flags_follow_etcdutl() -> None:
    store_restore.check_bump(0, False)
    store_restore.check_bump(10, True)
    with pytest.raises(ConfigError, match="--mark-compacted: required"):
        store_restore.check_bump(10, False)
    with pytest.raises(ConfigError, match="--mark-compacted: disallowed"):
        store_restore.check_bump(0, True)
    with pytest.raises(ConfigError, match="--bump-revision: must be >= 0"):
        store_restore.check_bump(-1, True)
    assert store_restore.MAX_REVISION == 2**39  # about 549 restores with the default bump
