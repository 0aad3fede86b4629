"""One `k8semu up` cluster (a store replica, API server, scheduler, controller manager, a
process-runtime worker w1, the DNS and storage add-ons) for the workload tutorials of the
Kubernetes docs, driven with the real `kubectl` through the kubeconfig `up` wrote, as a user
follows them (docs/tutorials.md, "Workload tutorials").

Each module keeps to its own objects (names from the tutorials), so the modules share the
cluster in any order.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.cluster import k8semu, stop_recorded, user_env, write_config
from tests.support.cluster import until as support_until

KUBECTL = shutil.which("kubectl")
#: The tutorials' manifests as the pages give them (a change is said in the test using it).
MANIFESTS = Path(__file__).parent / "manifests"
#: Generous: a step takes a second or two on a quiet machine, but `kubectl exec` alone took
#: 10 s at load average 50 on the shared 2-core test machine.
WAIT = 90.0
T = TypeVar("T")


@dataclass(frozen=True)
class Cluster:
    env: dict[str, str]
    state_dir: Path

    def run(
        self, *args: str, stdin: str = "", timeout: float = WAIT
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl ARGS` with the cluster's kubeconfig, to its end."""
        assert KUBECTL is not None
        env = {**self.env, "KUBECONFIG": str(self.state_dir / "kubeconfig")}
        return subprocess.run(
            [KUBECTL, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=env
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """`kubectl ARGS` left running (a watch), its stdout a pipe; the caller ends it."""
        assert KUBECTL is not None
        env = {**self.env, "KUBECONFIG": str(self.state_dir / "kubeconfig")}
        return subprocess.Popen(
            [KUBECTL, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )

    def kubectl(self, *args: str, stdin: str = "", timeout: float = WAIT) -> str:
        """`kubectl ARGS`'s stdout; AssertionError with its stderr when it fails."""
        proc = self.run(*args, stdin=stdin, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.returncode}\n{proc.stderr}")
        return proc.stdout

    def get(self, *args: str) -> Any:
        """`kubectl get ARGS -o json`, parsed; None when it is not found."""
        proc = self.run("get", *args, "-o", "json")
        if proc.returncode != 0:
            assert "NotFound" in proc.stderr or "not found" in proc.stderr, proc.stderr
            return None
        return json.loads(proc.stdout)

    def pods(self, selector: str, namespace: str = "default") -> dict[str, Any]:
        """The pods `selector` matches, by name (those being deleted left out)."""
        items = self.get("pods", "-n", namespace, "-l", selector)["items"]
        return {
            p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")
        }


def until(what: str, check: Callable[[], T | None], timeout: float = WAIT) -> T:
    """Poll `check()` until it returns something true, which it returns; fail naming `what`."""
    return support_until(what, check, timeout)


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def waiting_reason(pod: dict[str, Any]) -> tuple[str, str]:
    """The first container's waiting (reason, message), or ("", "")."""
    statuses = pod.get("status", {}).get("containerStatuses", [])
    waiting = statuses[0].get("state", {}).get("waiting", {}) if statuses else {}
    return waiting.get("reason", ""), waiting.get("message", "")


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    if KUBECTL is None:
        pytest.skip("no kubectl on PATH")
    # Not under pytest's /tmp/pytest-of-<user>: every pytest session that starts on the
    # machine chmods it back to 0700 when it sees group bits (_pytest/tmpdir.py), and those
    # are the ACL mask the kubelet set for pod users to traverse: until the kubelet grants
    # it again, pods cannot reach their own directories (web-0 answered 500 once, a
    # PermissionError on its volume). mkdtemp's directory is this test's alone.
    base = Path(tempfile.mkdtemp(prefix="k8semu-workloads-"))
    env = user_env(base)
    config = write_config(base / "cluster.yaml", name=f"tut-{uuid.uuid4().hex[:6]}")
    state_dir = base / "state"
    try:
        # `up` takes ~5 s on a quiet machine; more than 90 s was seen at load average 40.
        up = k8semu(env, "up", "-f", config, "--state-dir", state_dir, "--detach", timeout=240)
        assert up.returncode == 0, up.stdout + up.stderr
        yield Cluster(env, state_dir)
    finally:
        k8semu(env, "down", "--state-dir", state_dir, timeout=60)
        stop_recorded([state_dir])
        shutil.rmtree(base, ignore_errors=True)
