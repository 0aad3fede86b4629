"""`k8semu bench store --sustained`: a tiny real run (both backends, a second each) whose
report is well formed. Timings are not checked here: the benchmark prints them."""

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
    doc = json.loads((tmp_path / "out.json").read_text())
    for name, backend in doc["results"].items():
        assert backend["error"] == "", (name, backend["error"])
        (run,) = backend["runs"]
        assert (run["rate"], run["clients"]) == (60, 6)
        assert run["sent"] == run["ok"] + run["failed"]
        assert run["ok"] > 0 and run["server_cpu_s"] is not None
        assert run["leaders"], run
