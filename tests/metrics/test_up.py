"""`k8semu up` with metrics ports: the launcher starts each component with its metrics flag,
`k8semu status` lists the addresses, and each serves /metrics there."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from k8semu.cluster.processes import free_loopback_ports
from tests.support.cluster import (
    by_name,
    k8semu,
    status,
    stop_recorded,
    up_detached,
    user_env,
    write_config,
)
from tests.support.metrics import scrape, value

pytestmark = pytest.mark.slow


@pytest.fixture
def cleanup() -> Iterator[list[Path]]:
    dirs: list[Path] = []
    yield dirs
    stop_recorded(dirs)


def _with_metrics(config: Path) -> None:
    """Every component of the test config given a free metrics port."""
    text = config.read_text()
    ports = iter(free_loopback_ports(6))
    text = re.sub(
        r"(peerURL: '[^']*')",
        lambda m: f"{m[1]}, metricsURL: 'http://127.0.0.1:{next(ports)}'",
        text,
    )
    text = re.sub(  # every instance: {port: N} or {port: N, restPort: M}
        r"\{port: (\d+)", lambda m: f"{{port: {m[1]}, metricsPort: {next(ports)}", text
    )
    text = re.sub(
        r"(proxyPort: \d+)",
        lambda m: f"{m[1]}, kubeletMetricsPort: {next(ports)}, proxyMetricsPort: {next(ports)}",
        text,
    )
    config.write_text(text)


def test_up_starts_metrics_listeners_and_status_lists_them(
    tmp_path: Path, cleanup: list[Path]
) -> None:
    env = user_env(tmp_path)
    config = write_config(tmp_path / "c.yaml", name="metrics", runtime="simulated", addons=False)
    _with_metrics(config)
    state_dir = tmp_path / "state"
    cleanup.append(state_dir)
    up_detached(env, config, state_dir)
    rows = by_name(status(env, state_dir))
    assert set(rows) == {
        "store-s1", "apiserver-1", "scheduler-1", "controller-manager-1", "kubelet-w1", "proxy-w1",
    }  # fmt: skip
    for name, row in rows.items():
        host, _, port = row["metrics"].rpartition(":")
        samples = scrape(int(port), host)
        assert value(samples, "process_open_fds") > 0, name
    text = k8semu(env, "status", "--state-dir", state_dir)
    assert "METRICS" in text.stdout and rows["apiserver-1"]["metrics"] in text.stdout
    down = k8semu(env, "down", "--state-dir", state_dir)
    assert down.returncode == 0, down.stdout + down.stderr
