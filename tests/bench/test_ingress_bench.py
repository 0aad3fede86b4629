"""`k8semu bench ingress`, short: every path and shape answers, without errors, and the
table names them; the haproxy config routes by host."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from k8semu.bench.ingress import IngressBenchOptions, haproxy_http_config, main, render, run

pytestmark = pytest.mark.slow


def test_short_run_measures_every_path_and_shape(tmp_path: Path) -> None:
    opts = IngressBenchOptions(connections=2, new_conn_workers=2, seconds=0.3, rounds=1)
    results = asyncio.run(run(opts, tmp_path))
    assert [r.path for r in results] == ["proxy", "ingress", "haproxy"]
    for r in results:
        for shape in ("keepalive", "newconn"):
            figures = r.shapes[shape]
            assert figures.rps > 0 and figures.errors == 0, (r.path, shape, figures)
            assert figures.p99_us >= figures.p50_us > 0
    text = render(results, opts)
    assert "ingress   keepalive" in text and "haproxy   newconn" in text


def test_haproxy_routes_by_host_and_bad_flags() -> None:
    cfg = haproxy_http_config(["127.244.254.1"], 8080, 9000)
    assert "acl is_bench hdr(host) -i bench" in cfg and "mode http" in cfg
    assert main(["--paths", "nginx"]) == 2
    assert main(["--shapes", ""]) == 2
