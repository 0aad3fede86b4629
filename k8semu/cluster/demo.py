"""``k8semu up --demo`` (``make run``): deploy the sample app on the cluster just started and
show how to reach it.

Applies the manifest with the ``k8semu`` CLI (as a user would, against the cluster's own
kubeconfig), waits for the Deployment to roll out, reads the Service's nodePort, and fetches
``http://<first node IP>:<nodePort>/`` once to prove the path works end to end (node IP ->
proxy -> a pod). Every wait has a deadline and ends early when the launcher is told to stop.
A failure is a LaunchError; the launcher then stops the cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from k8semu.cluster.errors import LaunchError, WaitCancelledError
from k8semu.cluster.launcher import StopFlag
from k8semu.cluster.plan import Plan
from k8semu.cluster.state import KUBECONFIG_FILE

__all__ = ["Demo"]

# No proxy from the environment: the app is on this host's loopback.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
ROLLOUT_TIMEOUT_S = 120
FETCH_TIMEOUT_S = 30.0
POLL_S = 0.2


class Demo:
    """Deploys ``manifest`` once the cluster of ``plan`` is up (``run`` is the launcher's
    after-start hook)."""

    def __init__(
        self,
        manifest: Path,
        state_dir: Path,
        plan: Plan,
        *,
        say: Callable[[str], None],
        stop: StopFlag,
        python: str = sys.executable,
    ) -> None:
        self.manifest = manifest.resolve()
        self.kubeconfig = state_dir / KUBECONFIG_FILE
        self.plan = plan
        self._say = say
        self._stop = stop
        self.python = python

    def _k8semu(self, *args: str, timeout: float) -> str:
        """Run ``k8semu ARGS`` against the cluster; its stdout. LaunchError when it fails."""
        argv = [self.python, "-m", "k8semu", *args, "--kubeconfig", str(self.kubeconfig)]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if self._stop.is_set() or time.monotonic() >= deadline:
                proc.kill()
                proc.wait()
                if self._stop.is_set():
                    raise WaitCancelledError("demo cancelled")
                raise LaunchError(f"demo: `k8semu {' '.join(args)}` took over {timeout:g}s")
            self._stop.wait(POLL_S)
        out = proc.communicate()[0].decode("utf-8", "replace")
        if proc.returncode != 0:
            raise LaunchError(f"demo: `k8semu {' '.join(args)}` failed:\n{out.rstrip()}")
        return out

    def run(self) -> None:
        self._say("")
        self._say(f"demo: deploying {self.manifest}")
        for line in self._k8semu("apply", "-f", str(self.manifest), timeout=30).splitlines():
            self._say(f"  {line}")
        deployment, service = _names(self.manifest)
        t0 = time.monotonic()
        self._k8semu(
            "rollout", "status", f"deploy/{deployment}", "--timeout", str(ROLLOUT_TIMEOUT_S),
            timeout=ROLLOUT_TIMEOUT_S + 10,
        )  # fmt: skip
        self._say(f"  deployment.apps/{deployment} rolled out after {time.monotonic() - t0:.1f}s")
        svc = json.loads(self._k8semu("get", "svc", service, "-o", "json", timeout=30))
        node_port = int(svc["spec"]["ports"][0]["nodePort"])
        node_ips = [
            c.address.rpartition(":")[0] for c in self.plan.components if c.kind == "kubelet"
        ]
        url = f"http://{node_ips[0] if node_ips else '127.0.0.1'}:{node_port}/"
        first = self._fetch(url)
        self._say(f"  GET {url} -> {first}")
        self._say("")
        self._say("The sample app is up. Try:")
        self._say(f"  curl {url}            # again: another pod may answer")
        for ip in node_ips[1:]:
            self._say(f"  curl http://{ip}:{node_port}/")
        self._say(
            "  .venv/bin/k8semu get pods -o wide    # the CLI's current context is this cluster"
        )
        self._say("  .venv/bin/k8semu delete pod <one of them>     # the ReplicaSet replaces it")
        self._say("")

    def _fetch(self, url: str) -> str:
        """The first line of the answer at ``url``, retried while the proxy catches up."""
        deadline = time.monotonic() + FETCH_TIMEOUT_S
        while True:
            try:
                with _DIRECT.open(url, timeout=2) as resp:
                    body = resp.read(4096).decode("utf-8", "replace")
                    return body.splitlines()[0] if body else f"HTTP {resp.status}"
            except (OSError, urllib.error.URLError) as exc:
                if time.monotonic() >= deadline:
                    raise LaunchError(f"demo: {url} does not answer: {exc}") from exc
            if self._stop.wait(POLL_S):
                raise WaitCancelledError("demo cancelled")


def _names(manifest: Path) -> tuple[str, str]:
    """The first Deployment's and the first Service's names in ``manifest``."""
    try:
        docs = [d for d in yaml.safe_load_all(manifest.read_text(encoding="utf-8")) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise LaunchError(f"demo: cannot read {manifest}: {exc}") from exc
    found: dict[str, str] = {}
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") in ("Deployment", "Service"):
            found.setdefault(doc["kind"], str((doc.get("metadata") or {}).get("name")))
    if len(found) < 2:
        raise LaunchError(f"demo: {manifest} needs a Deployment and a NodePort Service")
    return found["Deployment"], found["Service"]
