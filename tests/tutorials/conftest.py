"""One `k8semu up` cluster for the tutorial tests (a store replica, an API server with its REST
port, scheduler, controller manager, one process-runtime node with its proxy, the DNS
add-on; TLS and authorization as `up` sets them), on free ports and a node IP and pod range of
its own, so that clusters of other test runs on the machine do not share pod addresses. The
tests follow Kubernetes tutorials with the real `kubectl` and the kubeconfig `up` writes,
as a user does (docs/tutorials.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

from k8semu.bench._clusterrun import ClusterLayout, bench_config
from tests.support import cluster
from tests.support.cluster import k8semu, stop_recorded, user_env

KUBECTL = shutil.which("kubectl")
T = TypeVar("T")


@dataclass
class Tutorial:
    """The cluster and the user's shell: `kubectl` with the cluster's kubeconfig."""

    state_dir: Path
    env: dict[str, str]
    node_ip: str

    def kubectl(
        self, *args: str, stdin: str = "", check: bool = True, timeout: float = 30.0
    ) -> str:
        """`kubectl ARGS` as the tutorial types it; stdout (stdout + stderr when not
        `check`); AssertionError with stderr when it fails and `check`."""
        assert KUBECTL is not None
        proc = subprocess.run(
            [KUBECTL, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
            env=self.env,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.returncode}\n{proc.stderr}")
        return proc.stdout if check else proc.stdout + proc.stderr

    def background(self, *args: str) -> subprocess.Popen[str]:
        """`kubectl ARGS` left running (`kubectl proxy`); the caller ends it."""
        assert KUBECTL is not None
        return subprocess.Popen(
            [KUBECTL, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=self.env,
        )  # fmt: skip

    def pod_names(self, selector: str) -> list[str]:
        out = self.kubectl("get", "pods", "-l", selector, "-o", "name")
        return [line.split("/", 1)[1] for line in out.split()]


def until(what: str, check: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll `check()` until it returns something true (returned); fail naming `what`."""
    return cluster.until(what, check, timeout)


def http_get(url: str, timeout: float = 5.0) -> str:
    """The body of a GET (any status); "" when nothing answered (a server still starting)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())
    except (OSError, ValueError):
        return ""


@pytest.fixture(scope="package")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tutorial]:
    if KUBECTL is None:
        pytest.skip("no kubectl on PATH")
    base = tmp_path_factory.mktemp("tutorial")
    layout = ClusterLayout(
        name=f"tut-{uuid.uuid4().hex[:6]}", store_replicas=1, real_nodes=1, tls=True,
        addons=("dns",), timings={}, ready_timeout_s=90,
    )  # fmt: skip
    doc = bench_config(layout)
    node_ip = doc["nodes"][0]["nodeIP"]
    config = base / "cluster.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = user_env(base)
    state_dir = base / "state"
    try:
        up = k8semu(env, "up", "-f", config, "--state-dir", state_dir, "--detach", timeout=150)
        assert up.returncode == 0, up.stdout + up.stderr
        # The kubeconfig `up` writes, as the README tells users to use it; no proxy between
        # kubectl and the loopback API server whatever the machine's environment says.
        shell = {**env, "KUBECONFIG": str(state_dir / "kubeconfig"), "NO_PROXY": "*"}
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            shell.pop(var, None)
        yield Tutorial(state_dir, shell, node_ip)
    finally:
        k8semu(env, "down", "--state-dir", state_dir, timeout=90)
        stop_recorded([state_dir])


@pytest.fixture(autouse=True)
def _no_proxy_for_urllib(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib goes straight to the loopback addresses (no HTTP proxy from the environment)."""
    for var in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    assert "NO_PROXY" in os.environ
