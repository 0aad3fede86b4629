"""`k8semu bench cluster`: the timed client, the SLO verdicts, the plot, and one small real run
(2 namespaces x 2 Deployments x 5 replicas on 5 hollow nodes) whose counts must add up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k8semu.bench import cluster
from k8semu.bench._clusterrun import TimedClient
from k8semu.bench.cluster import ClusterBenchOptions, ClusterBenchResult, LatencyRow
from k8semu.pb.api.v1 import apps_pb2, core_pb2

ENV = {"load_average": (0.0, 0.0, 0.0), "cpus": 2, "cpu_model": "x", "date": "now"}


class _FakeClient:
    """Answers create/get/list at once; what TimedClient wraps."""

    async def create(self, obj: Any) -> Any:
        return obj

    async def get(self, kind: Any, name: str, *, namespace: str = "") -> Any:
        return kind()

    async def list(self, kind: Any, *, namespace: str | None = None) -> Any:
        class _L:
            items: list[Any] = []

        return _L()


async def test_timed_client_keys_calls_by_verb_and_resource() -> None:
    c = TimedClient(_FakeClient())  # type: ignore[arg-type]
    await c.create(core_pb2.Namespace())
    await c.create(apps_pb2.Deployment())
    await c.get(apps_pb2.Deployment, "d", namespace="n")
    await c.list(apps_pb2.Deployment, namespace="n")
    await c.list(apps_pb2.Deployment)
    assert {k: len(v) for k, v in c.latencies.items()} == {
        "create namespaces": 1,
        "create deployments": 1,
        "get deployments": 1,
        "list deployments": 1,
        "list deployments (cluster)": 1,
    }


def test_slos_per_verb_and_scope() -> None:
    assert cluster._api_slo("create pods")[1] == 1.0
    assert cluster._api_slo("get deployments")[1] == 1.0
    assert cluster._api_slo("list deployments")[1] == 5.0
    assert cluster._api_slo("list deployments (cluster)")[1] == 30.0
    assert cluster._row("x", [0.1] * 98 + [1.5] * 2, "s", 1.0).passed is False
    assert cluster._row("x", [0.1] * 100, "s", 1.0).passed is True


def test_render_and_plot_from_figures(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    r = ClusterBenchResult(options=ClusterBenchOptions(), config="test")
    r.api = [LatencyRow("create deployments", 3, 10, 20, 30, 30, "mutating", True)]
    r.startup = [
        LatencyRow("pod startup (created -> Running seen)", 3, 1, 2, 6000, 6000, "s", False)
    ]
    r.samples = {
        "API create deployments": [0.01, 0.02, 0.03],
        "pod startup": [0.5, 1.0, 6.0],
        "watch deployments": [-0.001, 0.002],
    }
    r.components = [{"name": "apiserver-1", "kind": "apiserver", "cpu_s": 1.0, "peak_rss_mb": 60}]
    r.sampled_seconds = 10
    text = cluster.render(r, ENV)
    assert "| create deployments | 3 |" in text and "PASS" in text and "FAIL" in text
    assert "| apiserver-1 | apiserver | 1.0 | 10% | 60 |" in text
    png = tmp_path / "p.png"
    cluster.plot(r, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _passing_result() -> ClusterBenchResult:
    r = ClusterBenchResult(options=ClusterBenchOptions(namespaces=1, deployments=1, replicas=3))
    r.pods_running = 3
    r.api = [LatencyRow("create deployments", 3, 10, 20, 30, 30, "mutating", True)]
    r.startup = [LatencyRow("pod startup (created -> Running seen)", 3, 1, 2, 900, 900, "s", True)]
    r.lease_changes = {"kube-system/kube-scheduler": 0, "kube-system/kube-controller-manager": None}
    r.components = [{"name": "apiserver-1", "kind": "apiserver", "peak_rss_mb": 80.0, "samples": 4}]
    return r


def test_verdict_slos_leader_changes_and_memory() -> None:
    r = _passing_result()
    r.checks = cluster.verdict(r)
    assert r.passed, r.checks
    assert "apiserver-1 80 MB" in r.checks[-1].detail

    def failing(**changes: object) -> list[str]:
        bad = _passing_result()
        for k, v in changes.items():
            setattr(bad, k, v)
        return [c.name for c in cluster.verdict(bad) if not c.passed]

    assert failing(pods_running=2) == ["every pod Running"]
    slow = [LatencyRow("patch deployments", 3, 10, 20, 1500, 1500, "mutating", False)]
    assert failing(api=slow) == ["mutating API calls p99 <= 1 s"]
    late = [LatencyRow("pod startup (created -> Running seen)", 3, 1, 2, 6000, 6000, "s", False)]
    assert failing(startup=late) == ["pod startup p99 <= 5 s"]
    assert failing(store_term_bumps=1) == ["no store leader change"]
    assert failing(store_leader_changes=1) == ["no store leader change"]
    assert failing(lease_changes={"kube-system/kube-scheduler": 2}) == [
        "no scheduler or controller-manager leader change"
    ]
    assert failing(became_leader={"scheduler-1": 1}) == [
        "no scheduler or controller-manager leader change"
    ]
    assert failing(components=[]) == ["peak RSS reported for every component"]


def test_pods_flag_sets_the_namespaces(capsys: pytest.CaptureFixture[str]) -> None:
    args = cluster.build_parser().parse_args(["--pods", "10000", "--nodes", "1000"])
    opts = cluster.options_from(args)
    assert (opts.namespaces, opts.pods, opts.nodes) == (200, 10_000, 1000)
    with pytest.raises(SystemExit) as exc:
        cluster.main(["--pods", "1001"])
    assert exc.value.code == 2
    assert "--pods 1001 is not a multiple of --deployments x --replicas (50)" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_small_run_counts_add_up(tmp_path: Path) -> None:
    opts = ClusterBenchOptions(
        namespaces=2,
        deployments=2,
        replicas=5,
        rate=20.0,
        nodes=5,
        timeout=120.0,
        ready_timeout=120.0,
        progress=False,
    )
    r = cluster.run(opts, workdir=tmp_path)
    assert not r.error and not r.timed_out, r.error
    assert (r.pods_created, r.pods_bound, r.pods_running) == (20, 20, 20)
    calls = {row.name: row.count for row in r.api}
    assert calls["create namespaces"] == 2
    assert calls["create deployments"] == calls["create services"] == 4
    assert all(row.errors == 0 for row in r.api)
    startup = {row.name: row for row in r.startup}
    assert startup["pod startup (created -> Running seen)"].count == 20
    assert {"created->scheduled", "scheduled->bound", "bound->started"} <= set(startup)
    watch = {row.name.split(":")[0]: row for row in r.watch}
    assert watch["watch namespaces"].count + watch["watch namespaces"].errors == 2
    assert watch["watch deployments"].count + watch["watch deployments"].errors == 4
    assert watch["watch services"].count + watch["watch services"].errors == 4
    assert r.binds_per_s > 0 and 1 <= r.peak_binds_per_s <= 20
    assert {"store", "apiserver", "scheduler", "controller-manager", "kubelet"} <= {
        c["kind"] for c in r.components
    }
    assert all(c["peak_rss_mb"] > 0 for c in r.components)
    assert all(r.rss_timeline[c["name"]] for c in r.components)
    assert set(r.lease_changes) == {
        "kube-system/kube-scheduler",
        "kube-system/kube-controller-manager",
    }
    assert [c.name for c in r.checks][:3] == [
        "every pod Running",
        "mutating API calls p99 <= 1 s",
        "pod startup p99 <= 5 s",
    ]
    doc = cluster.to_json(r, ENV)
    assert "samples" not in doc["result"]
    json.dumps(doc, default=str)
    assert "| create deployments | 4 |" in cluster.render(r, ENV)
    assert list(tmp_path.iterdir()) == []
    assert "Verdict:" in cluster.render(r, ENV)
