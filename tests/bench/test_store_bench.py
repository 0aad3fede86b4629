"""`k8semu bench store` (throughput, both client shapes) and `--sustained`: tiny real runs
whose reports are well formed. Timings are not checked here: the benchmarks print them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k8semu.bench import store, sustained
from k8semu.cluster.processes import EtcdCluster


def test_rates_parse_and_bad_ones_are_refused() -> None:
    assert sustained._rates("1000:200,2000:400") == [(1000, 200), (2000, 400)]
    parser = sustained.build_parser()
    for bad in ("abc", "0:5", "10:0", "10:x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--rates", bad])


def test_tiny_sustained_run_reports_both_backends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--sustained", "--rates", "60:6", "--duration", "1.5", "--snapshot-count", "30"]
    argv += ["--json", str(tmp_path / "out.json"), "--workdir", str(tmp_path / "w")]
    if not EtcdCluster.available():
        argv += ["--only", "k8semu"]
    assert store.main(argv) == 0
    out = capsys.readouterr().out
    assert "Sustained 60 writes/s from 6 clients for 1.5 s:" in out
    assert "| achieved writes/s |" in out and "| leader changes |" in out
    assert "| server CPU us per write |" in out and "load average" in out
    assert "| max ms from the send |" in out
    doc = json.loads((tmp_path / "out.json").read_text())
    for name, backend in doc["results"].items():
        assert backend["error"] == "", (name, backend["error"])
        (run,) = backend["runs"]
        assert (run["rate"], run["clients"]) == (60, 6)
        assert run["sent"] == run["ok"] + run["failed"]
        assert run["ok"] > 0 and run["server_cpu_s"] is not None
        # From the send is never longer than from the due time (the send is at or after it).
        assert 0 < run["request_p50_ms"] <= run["p50_ms"] + 1e-6
        assert run["request_max_ms"] <= run["max_ms"] + 1e-6
        assert run["leaders"], run


def test_throughput_bench_runs_both_client_shapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--only", "k8semu", "--clients", "1,4", "--puts", "40", "--failover-runs", "0"]
    argv += ["--json", str(tmp_path / "out.json"), "--workdir", str(tmp_path / "w")]
    assert store.main(argv) == 0
    out = capsys.readouterr().out
    assert "| 4 clients, shared |" in out and "| 4 clients, per-client |" in out
    doc = json.loads((tmp_path / "out.json").read_text())
    loads = doc["results"]["k8semu"]["loads"]
    # One client is the same in both shapes, so it runs once.
    assert sorted((r["clients"], r["shape"]) for r in loads) == [
        (1, "per-client"),
        (4, "per-client"),
        (4, "shared"),
    ]
    assert all(r["puts"] == 40 and r["server_cpu_s"] is not None for r in loads)


def test_bad_shape_is_refused() -> None:
    with pytest.raises(SystemExit):
        store.build_parser().parse_args(["--shapes", "per-client,pooled"])
