"""The walkthrough's image (registry.k8s.io/hpa-example) as a real process: every request
answers ``OK!`` and costs CPU time in the server (read from its own counters when it stops);
/healthz is free; it resolves from the walkthrough's image names."""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
from collections.abc import Callable

from k8semu import images
from k8semu.images import hpaexample
from tests.images.conftest import ImageProcess


def get(host: str, port: int, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_answers_ok_and_burns_cpu_per_request(start_image: Callable[..., ImageProcess]) -> None:
    server = start_image("hpaexample", "--listen=127.0.0.61:0", "--iterations", "200000")
    host, port = server.address()
    for _ in range(5):
        assert get(host, port) == (200, b"OK!")
    assert get(host, port, "/healthz") == (200, b"ok\n")
    assert server.terminate() == 0
    found = server.wait_line(r"stopped after (\d+) requests, ([\d.]+) ms CPU each")
    assert found.group(1) == "5"  # /healthz does not count
    assert float(found.group(2)) > 0  # each request did burn CPU


def test_the_loop_is_the_walkthroughs() -> None:
    # x += sqrt(x), from 0.0001, 1,000,001 times (index.php's `for ($i = 0; $i <= 1000000 ...`).
    x = 0.0001
    for _ in range(11):
        x += x**0.5
    assert hpaexample.burn(10) == x
    assert hpaexample.DEFAULT_ITERATIONS == 1_000_000


def test_walkthrough_image_names_resolve() -> None:
    for name in ("registry.k8s.io/hpa-example", "k8s.gcr.io/hpa-example:latest"):
        argv = images.resolve(name, [], [])
        assert argv is not None and argv[-1] == "k8semu.images.hpaexample"


def test_bad_iterations_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "k8semu.images.hpaexample", "--iterations", "-1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "--iterations" in proc.stderr
    assert re.search(r"0\.\.\d+", proc.stderr)
