"""`k8semu chaos` end to end, short and seeded: a real cluster (3 store replicas, API server,
scheduler, controller manager, 3 process-runtime workers with proxies) on free ports, faults
every ~2 s for 15 s, then the report's invariants; and the CLI's refusals of bad options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from k8semu.bench._clusterrun import ClusterLayout, bench_config
from k8semu.cluster.state import read_state


def _chaos(*args: str | Path, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k8semu", "chaos", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_seeded_chaos_run_keeps_the_invariants_and_cleans_up(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    layout = ClusterLayout(name="chaos", real_nodes=3, runtime="process", ready_timeout_s=180)
    config.write_text(yaml.safe_dump(bench_config(layout)))
    state_dir = tmp_path / "state"
    report_path = tmp_path / "report.json"
    run = _chaos(
        "-f", config, "--duration", "15s", "--seed", "7", "--interval", "2s",
        "--state-dir", state_dir, "--report", report_path, "--converge-timeout", "60s",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verdict: OK" in run.stdout
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["seed"] == 7 and not report["violations"]
    injected = [f for f in report["faults"] if f["done"]]
    assert len(injected) >= 3, report["faults"]
    assert {f["fault"]["fault"] for f in injected} <= {"kill", "pause", "restart"}
    assert all(f["pid"] > 0 for f in injected)
    assert report["store"]["verdict"] == "linearizable"
    assert report["store"]["ops"] > 100
    assert report["convergence"]["seconds_after_last_fault"] is not None
    assert report["availability"]["requests"] > 100
    # The run stopped the cluster it started: no recorded process is left.
    state = read_state(state_dir)
    assert not state.launcher_alive()
    assert [c.name for c in state.components if c.alive()] == []


def test_bad_options_exit_2_naming_them(tmp_path: Path) -> None:
    run = _chaos("--faults", "kill,explode", timeout=60)
    assert run.returncode == 2 and "--faults: unknown explode" in run.stderr
    run = _chaos("--targets", "database", timeout=60)
    assert run.returncode == 2 and "--targets: unknown database" in run.stderr
    run = _chaos("--faults", "partition", timeout=60)
    assert run.returncode == 2 and "network namespaces" in run.stderr
    run = _chaos("--duration", "soon", timeout=60)
    assert run.returncode == 2 and "soon" in run.stderr
