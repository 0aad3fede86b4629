"""`k8semu bench dr`: the objects it creates, its flags, its report; the drills themselves on
a real cluster (a benchmark: about 90 s; CI covers each step's mechanism in
tests/store/test_member_replace.py and tests/backup/test_restore_cluster.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from k8semu.api import manifest
from k8semu.bench import dr


def test_the_default_run_creates_exactly_200_objects() -> None:
    objs = manifest.load_all(dr.objects_yaml(10, 200), source="t")
    kinds = [type(o).__name__ for o in objs]
    assert kinds.count("Namespace") == 1 and len(objs) == 201
    assert kinds.count("Deployment") == 10
    assert kinds.count("ConfigMap") == kinds.count("Secret") == 60
    assert kinds.count("Service") == 10 + 60


def test_bad_flags_are_refused_before_anything_starts() -> None:
    for args, text in (
        (["--objects", "1"], "--objects must be >= 2"),
        (["--nodes", "0"], "--nodes >= 1"),
        (["--backup-interval", "soon"], "--backup-interval"),
        (["--drill", "some"], "invalid choice"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "k8semu", "bench", "dr", *args], capture_output=True, text=True
        )
        assert run.returncode == 2 and text in run.stderr, (args, run.stderr)


def test_the_report_says_what_was_lost_and_whether_each_target_is_met() -> None:
    out = {
        "objects": 200,
        "nodes": 3,
        "loadAverage": [4.0, 5.0, 6.0],
        "replica": {
            "replica": "s1",
            "replaceSeconds": 6.1,
            "writesAcknowledged": 900,
            "acknowledgedWritesLost": 0,
            "longestUnavailabilitySeconds": 0.4,
            "longestGapBeforeSeconds": 0.1,
            "oneElectionSeconds": 1.0,
            "ok": True,
        },
        "all": {
            "backup": "dr-x.k8semu-backup",
            "backupRevision": 10,
            "lastAcknowledgedRevision": 12,
            "lost": ["late-3", "late-4"],
            "rpoExact": True,
            "heldByBackupButLost": [],
            "restoreCommandSeconds": 20.0,
            "rtoSeconds": 31.0,
            "ok": False,
        },
    }
    text = "\n".join(dr.report(out))
    assert "0 lost (target 0)" in text and "met" in text
    assert "lost: late-3, late-4" in text and "exactly those after the backup: True" in text
    assert "RTO: 31.0s" in text and "NOT MET" in text


@pytest.mark.benchmark
def test_the_drills_on_a_small_cluster(tmp_path: Path) -> None:
    figures = tmp_path / "dr.json"
    run = subprocess.run(
        [sys.executable, "-m", "k8semu", "bench", "dr", "--objects", "6", "--nodes", "1",
         "--workdir", str(tmp_path), "--json", str(figures)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = json.loads(figures.read_text())
    assert out["replica"]["acknowledgedWritesLost"] == 0, run.stdout + run.stderr
    assert out["all"]["rpoExact"] and not out["all"]["heldByBackupButLost"], out["all"]
    assert out["all"]["lost"], "the writes after the backup are listed as lost"
