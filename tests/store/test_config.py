"""Store flags: etcd's names, validated with errors that name the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from k8semu.cli.store import _run_parser, build_config
from k8semu.store.config import DEFAULT_QUOTA_BACKEND_BYTES, AutoCompaction, ConfigError, member_id


def _config(*argv: str):  # type: ignore[no-untyped-def]
    return build_config(_run_parser().parse_args(list(argv)))


def test_etcd_style_flags_build_a_three_member_config(tmp_path: Path) -> None:
    config = _config(
        "--name",
        "s2",
        "--data-dir",
        str(tmp_path),
        "--listen-client-urls",
        "http://127.0.0.1:12379",
        "--listen-peer-urls",
        "http://127.0.0.1:12380",
        "--initial-cluster",
        "s1=http://127.0.0.1:2380,s2=http://127.0.0.1:12380,s3=http://127.0.0.1:32380",
        "--heartbeat-interval",
        "100",
        "--election-timeout",
        "1000",
    )
    assert config.listen_client == "127.0.0.1:12379"
    assert config.members["s3"] == "127.0.0.1:32380"
    assert config.member_id == member_id("s2", config.cluster_token)
    assert len(set(config.ids.values())) == 3
    assert config.election_tick == 10


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--initial-cluster", "s1=http://127.0.0.1:1"], "--name: 'default' is not in"),
        (["--initial-cluster", "default"], "--initial-cluster: 'default': expected NAME=URL"),
        (["--listen-client-urls", "ftp://127.0.0.1:1"], "expected an http:// or https://"),
        (["--listen-peer-urls", "http://127.0.0.1:notaport"], "--listen-peer-urls"),
        (["--heartbeat-interval", "100", "--election-timeout", "200"], "--election-timeout"),
        (["--listen-client-urls", "http://a:1,http://b:2"], "exactly one URL"),
        (["--auto-compaction-retention", "1 hour"], "--auto-compaction-retention"),
        (
            ["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"],
            "revision mode keeps a number of revisions",
        ),
        (["--max-txn-ops", "0"], "--max-txn-ops"),
    ],
)
def test_bad_flags_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(*argv)


def test_auto_compaction_and_quota_flags_use_etcds_units() -> None:
    assert _config().auto_compaction == AutoCompaction("periodic")  # off, as in etcd
    assert not _config().auto_compaction.enabled
    assert _config("--auto-compaction-retention", "1").auto_compaction.period_s == 3600
    assert _config("--auto-compaction-retention", "5m").auto_compaction.period_s == 300
    revision = _config("--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000")
    assert revision.auto_compaction.revisions == 1000 and revision.auto_compaction.enabled
    assert _config().quota_backend_bytes == DEFAULT_QUOTA_BACKEND_BYTES == 2 * 1024**3
    assert _config("--quota-backend-bytes", "0").quota_backend_bytes == DEFAULT_QUOTA_BACKEND_BYTES
    assert _config("--quota-backend-bytes", "-1").quota_backend_bytes == 0  # no quota
    assert _config("--quota-backend-bytes", "4096").quota_backend_bytes == 4096
