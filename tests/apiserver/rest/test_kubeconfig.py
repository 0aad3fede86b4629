"""The kubeconfig `k8semu up` writes: kubectl and k8semu both read it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from k8semu.cli import _kubeconfig
from k8semu.cli import kubeconfig as kubeconfig_cli
from k8semu.cluster import clientconfig
from k8semu.cluster.state import KUBECONFIG_FILE

from .conftest import KUBECTL, REST


def test_kubectl_and_k8semu_read_the_same_file(rest: REST, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    clientconfig.write_kubeconfig(path, "restcluster", (rest.grpc_address,), rest.url)
    target = _kubeconfig.resolve(kubeconfig=str(path), environ={})
    assert target.servers == (rest.grpc_address,) and target.namespace == "default"
    if KUBECTL is None:
        pytest.skip("no kubectl on PATH")
    out = subprocess.run(
        [KUBECTL, "get", "namespaces", "-o", "name", "--request-timeout=20s"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"KUBECONFIG": str(path), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    assert "namespace/kube-system" in out.split()


def test_kubeconfig_command_prints_and_merges(
    rest: REST, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    clientconfig.write_kubeconfig(state / KUBECONFIG_FILE, "c1", ("127.0.0.1:6443",), rest.url)
    assert kubeconfig_cli.main(["--state-dir", str(state)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["clusters"] == [{"name": "c1", "cluster": {"server": rest.url}}]
    assert printed["current-context"] == "c1"
    # --merge keeps what kubectl's config already holds.
    mine = tmp_path / "kube" / "config"
    mine.parent.mkdir()
    mine.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "other", "cluster": {"server": "https://x"}}],
                "contexts": [{"name": "other", "context": {"cluster": "other"}}],
                "current-context": "other",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(mine))
    assert kubeconfig_cli.main(["--state-dir", str(state), "--merge"]) == 0
    merged = yaml.safe_load(mine.read_text())
    assert [c["name"] for c in merged["clusters"]] == ["other", "c1"]
    assert merged["current-context"] == "c1"
    assert kubeconfig_cli.main(["--state-dir", str(tmp_path / "none")]) == 2
