"""`k8semu up` with TLS (the default), as a user runs it, and `security.tls: false`.

The foreground `up --demo` on free ports comes up over mutual TLS and serves the sample app;
meanwhile kubectl and `k8semu` work with the kubeconfig `up` wrote, `status` says TLS is on,
and the store admits its health-check client but refuses a kubelet's certificate (another CA:
only the API servers reach the store). The plan of a config with `security: {tls: false}` has
no certificate flag, and `up` warns about it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from k8semu.cluster.config import parse_config
from k8semu.cluster.plan import plan_cluster
from k8semu.cluster.state import read_state
from tests.cluster.test_up import Up
from tests.support.cluster import START_TIMEOUT_S, k8semu, user_env, write_config

ETCDCTL = shutil.which("etcdctl")
KUBECTL = shutil.which("kubectl")


def _etcdctl(state: Path, endpoint: str, user: str) -> subprocess.CompletedProcess[str]:
    pki = state / "pki"
    cert = pki / "etcd" / f"{user}.crt" if user == "healthcheck-client" else pki / f"{user}.crt"
    assert ETCDCTL is not None
    return subprocess.run(
        [ETCDCTL, "--endpoints", f"https://{endpoint}", "--cacert", str(pki / "etcd" / "ca.crt"),
         "--cert", str(cert), "--key", str(cert.with_suffix(".key")),
         "--command-timeout", "3s", "put", "/k8semu-test", "x"],
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.skipif(ETCDCTL is None or KUBECTL is None, reason="needs etcdctl and kubectl")
@pytest.mark.slow
def test_up_with_tls_serves_the_demo_and_admits_only_credentials(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    config = write_config(tmp_path / "cluster.yaml", name="tls", addons=False)
    state = tmp_path / "state"
    up = Up(env, "-f", config, "--state-dir", state, "--demo")
    try:
        up.wait_for("The sample app is up", START_TIMEOUT_S)
        assert not any("WARNING: security.tls" in line for line in up.lines)
        assert (state / "pki" / "ca.key").stat().st_mode & 0o077 == 0

        status = k8semu(env, "status", "--state-dir", state)
        assert "security: mutual TLS" in status.stdout, status.stdout + status.stderr
        kubeconfig = state / "kubeconfig"
        kubectl = subprocess.run(
            [KUBECTL or "kubectl", "get", "nodes", "--request-timeout", "20s"],
            env={**env, "KUBECONFIG": str(kubeconfig)},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert kubectl.returncode == 0 and "w1" in kubectl.stdout, kubectl.stderr
        pods = k8semu(env, "get", "pods")  # the CLI config up made current
        assert pods.returncode == 0 and "Running" in pods.stdout, pods.stdout + pods.stderr

        store = read_state(state).store_members[0][1]
        assert _etcdctl(state, store, "healthcheck-client").returncode == 0
        refused = _etcdctl(state, store, "kubelet-w1")
        assert refused.returncode != 0, refused.stdout
    finally:
        # SIGINT: the launcher stops what it started, its pods too, before it ends.
        up.proc.send_signal(signal.SIGINT)
        up.finish(60)
        up.close()


def test_plain_text_only_on_purpose(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cluster.yaml", name="plain", addons=False)
    text = config.read_text() + "security: {tls: false}\n"
    plan = plan_cluster(
        parse_config(text), tmp_path / "state", python="py", commands={"store", "apiserver"}
    )
    assert not plan.tls
    for component in plan.components:
        argv = " ".join(component.argv)
        assert "https://" not in argv and "pki/" not in argv, argv
    secure = plan_cluster(
        parse_config(config.read_text()), tmp_path / "state", python="py", commands={"store"}
    )
    assert secure.tls and all("pki/" in " ".join(c.argv) for c in secure.components)
    config.write_text(text)
    # The warning comes before anything starts; a bad --demo-manifest then ends the run.
    run = k8semu(
        user_env(tmp_path), "up", "-f", config, "--state-dir", tmp_path / "state",
        "--demo", "--demo-manifest", tmp_path / "missing.yaml",
    )  # fmt: skip
    assert run.returncode == 2
    assert "WARNING: security.tls is false" in run.stdout, run.stdout + run.stderr
    assert not (tmp_path / "state" / "pki").exists()
