"""`k8semu bench tls`, its short version: both stacks start, both are measured, the ratios are
printed (the figures themselves are the benchmark's, not asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bench_tls_short_run_prints_both_stacks_and_the_ratios() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "k8semu", "bench", "tls", "--puts", "40", "--clients", "2",
         "--calls", "20", "--rounds", "1"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("plain ") for line in lines), run.stdout
    assert any(line.startswith("tls ") for line in lines), run.stdout
    assert "TLS cost (target <= 1.3x)" in run.stdout
    assert "kubelet p50" in run.stdout  # the kubelet path, as the API server calls it
