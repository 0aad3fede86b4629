"""`k8semu backup` and `k8semu restore`: bad flags and files get a clear error and exit code,
and nothing is written."""

from __future__ import annotations

from pathlib import Path

from tests.support.cluster import k8semu, user_env


def test_bad_input(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    junk = tmp_path / "junk.k8semu-backup"
    junk.write_bytes(b"\0" * 2048)
    state = tmp_path / "state"
    for args, code, why in (
        (("backup", "verify", tmp_path / "missing"), 1, "no such file"),
        (("backup", "verify", junk), 1, "not a k8semu backup"),
        (("backup", "--state-dir", state), 2, "no cluster in"),
        (("backup", "import", "--endpoints", "", junk), 2, "--endpoints: no endpoint"),
        (("restore", junk, "--state-dir", state, "--bump-revision", "-1"), 2, "--bump-revision"),
        (("restore", junk, "--state-dir", state, "--yes"), 1, "not a k8semu backup"),
    ):
        run = k8semu(env, *args)
        assert run.returncode == code and why in run.stderr, (args, run.stdout, run.stderr)
    assert not state.exists()  # nothing written
    listed = k8semu(env, "backup", "list", "--dir", tmp_path)
    assert listed.returncode == 0 and "unreadable" in listed.stdout, listed.stdout
