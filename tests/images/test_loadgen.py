"""loadgen against the echo image: the summary's counts match what the server served."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from k8semu.images import loadgen
from tests.images.conftest import ImageProcess


def run_loadgen(
    *args: str, env: dict[str, str] | None = None, code: int = 0
) -> tuple[dict[str, object], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "k8semu.images.loadgen", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == code, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    return json.loads(last), proc.stdout


def test_request_budget_counts_match_the_server(start_image: Callable[..., ImageProcess]) -> None:
    echo = start_image("echo", "--listen=127.0.0.51:0", "--quiet")
    host, port = echo.address()
    summary, _ = run_loadgen("--url", f"http://{host}:{port}/x", "--requests", "500",
                             "--concurrency", "4")  # fmt: skip
    assert summary["requests"] == 500
    assert summary["ok"] == 500 and summary["errors"] == 0
    assert summary["status_codes"] == {"200": 500}
    latency = summary["latency_ms"]
    assert isinstance(latency, dict)
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert echo.terminate() == 0
    echo.wait_line("stopped after 500 requests")  # every request reached the server once


def test_duration_rate_progress_and_errors(start_image: Callable[..., ImageProcess]) -> None:
    echo = start_image("echo", "--listen=127.0.0.52:0", "--quiet", "-status-code=503")
    host, port = echo.address()
    summary, out = run_loadgen("--url", f"http://{host}:{port}/", "--duration", "1.2",
                               "--rate", "50", "--progress", "0.5", code=1)  # fmt: skip
    assert "progress t=" in out
    requests = summary["requests"]
    assert isinstance(requests, int) and 0 < requests <= 61  # paced: at most rate * duration
    assert summary["errors"] == requests  # 503s are errors (and no success: exit code 1)
    # nothing listens here: connection errors are counted, not fatal, and it still stops
    summary, _ = run_loadgen("--url", "http://127.0.0.53:9/", "--requests", "3", "-c", "1",
                             code=1)  # fmt: skip
    assert summary["requests"] == 3 and summary["errors"] == 3


def test_resolves_names_through_the_cluster_dns(
    start_image: Callable[..., ImageProcess], tmp_path: Path
) -> None:
    echo = start_image("echo", "--listen=127.0.0.54:0", "--quiet")
    _, port = echo.address()
    dns = start_image("dns", "--listen", "127.0.0.55:0", "--zone", "svc.test",
                      "--record", "echo A 127.0.0.54", cwd=tmp_path)  # fmt: skip
    dns_host, dns_port = dns.address()
    summary, _ = run_loadgen(
        "--url", f"http://echo:{port}/", "--requests", "10",
        env={"K8SEMU_DNS_SERVER": f"{dns_host}:{dns_port}", "K8SEMU_DNS_SEARCH": "svc.test"},
    )  # fmt: skip
    assert summary["ok"] == 10
    assert summary["address"] == f"127.0.0.54:{port}"


def test_bad_url_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "k8semu.images.loadgen", "--url", "ftp://x/"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 2 and "--url" in proc.stderr


def test_rate_and_durations_in_flag_syntax() -> None:
    config = loadgen.parse_args(
        ["--url", "web.default:8080/x?y=1", "--rate", "100/s", "--duration", "1m30s",
         "--timeout", "500ms"], {"K8SEMU_DNS_SERVER": "127.96.0.10:53"},
    )  # fmt: skip
    assert (config.host, config.port, config.path) == ("web.default", 8080, "/x?y=1")
    assert (config.rate, config.duration, config.timeout) == (100.0, 90.0, 0.5)
    assert config.dns_server == ("127.96.0.10", 53)
    assert loadgen.parse_args(["--url", "http://a/"], {}).duration == 10.0  # always bounded
