"""The component listeners' TLS flags: what `up` plans for each kind, and bad flags refused
with a message naming the flag (exit 2), before anything starts."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from k8semu.cli import apiserver, controller_manager, kubelet, proxy, scheduler
from k8semu.cluster.config import parse_config
from k8semu.cluster.plan import plan_cluster
from tests.security.conftest import PKIFiles
from tests.support.cluster import write_config


def _value(argv: Sequence[str], flag: str) -> str:
    return argv[list(argv).index(flag) + 1]


def test_up_plans_each_listener_with_its_certificate(tmp_path: Path) -> None:
    config = parse_config(write_config(tmp_path / "c.yaml", name="flags", addons=False).read_text())
    state = tmp_path / "state"
    plan = plan_cluster(config, state, python=sys.executable, commands={"store", "apiserver",
                        "scheduler", "controller-manager", "kubelet", "proxy"})  # fmt: skip
    pki = state / "pki"
    expected = {
        "kubelet": "kubelet-w1",
        "proxy": "proxy-w1",
        "scheduler": "scheduler",
        "controller-manager": "controller-manager",
    }
    kinds = {c.kind: c.argv for c in plan.components}
    for kind, cert in expected.items():
        argv = kinds[kind]
        assert _value(argv, "--tls-cert-file") == str(pki / f"{cert}.crt"), kind
        assert _value(argv, "--tls-private-key-file") == str(pki / f"{cert}.key"), kind
        assert _value(argv, "--client-ca-file") == str(pki / "ca.crt"), kind
    api = kinds["apiserver"]
    assert _value(api, "--kubelet-client-certificate") == str(pki / "apiserver-kubelet-client.crt")
    assert _value(api, "--kubelet-client-key") == str(pki / "apiserver-kubelet-client.key")
    assert _value(api, "--kubelet-certificate-authority") == str(pki / "ca.crt")


Main = Callable[[Sequence[str]], int]


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (kubelet.main, ["--client-ca-file", "{ca}"], "--client-ca-file: needs --tls-cert-file"),
        (scheduler.main, ["--tls-cert-file", "{missing}", "--tls-private-key-file", "{key}"],
         "--tls-cert-file: {missing}: no such file"),
        (controller_manager.main, ["--tls-cert-file", "{cert}"],
         "--tls-cert-file and --tls-private-key-file: give both or neither"),
        (proxy.main, ["--tunnel-port", "10262", "--tls-cert-file", "{cert}",
                      "--tls-private-key-file", "{key}", "--client-ca-file", "{ca}"],
         "--tunnel-port: a tunnel serving TLS"),
        (apiserver.main, ["--kubelet-client-certificate", "{cert}", "--kubelet-client-key",
                          "{key}"],
         "--kubelet-certificate-authority: needed with --kubelet-client-certificate"),
    ],
)  # fmt: skip
def test_bad_tls_flags_are_named(
    main: Main,
    argv: list[str],
    message: str,
    cluster_pki: PKIFiles,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = cluster_pki["server"]
    values = {
        "ca": str(cluster_pki.ca),
        "cert": str(files.cert),
        "key": str(files.key),
        "missing": str(tmp_path / "missing.crt"),
    }
    assert main([a.format(**values) for a in argv]) == 2
    assert message.format(**values) in capsys.readouterr().err
