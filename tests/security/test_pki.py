"""`k8semu.pki`: certificates are reused while they fit and made again when they do not;
`renew` keeps what a certificate says; `k8semu certs` lists a state dir's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography import x509

from k8semu import pki
from k8semu.cluster import certs
from k8semu.cluster.config import parse_config
from tests.support.cluster import write_config


def _serial(files: pki.CertFiles) -> int:
    return x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number


def test_reused_while_it_fits_made_again_when_not(tmp_path: Path) -> None:
    spec = pki.CertSpec("web", "web", hosts=("127.0.0.1", "localhost"))
    first = pki.ensure_all(tmp_path, [spec])["web"]
    assert first.key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600
    serial = _serial(first)
    assert _serial(pki.ensure_all(tmp_path, [spec])["web"]) == serial  # a second `up`
    moved = pki.CertSpec("web", "web", hosts=("127.0.0.2", "localhost"))
    again = _serial(pki.ensure_all(tmp_path, [moved])["web"])
    assert again != serial  # another address: a new certificate
    assert pki.list_certs(tmp_path)[1].hosts == ("localhost", "127.0.0.2")
    (tmp_path / "ca.crt").unlink()  # a new CA: everything it did not sign is made again
    assert _serial(pki.ensure_all(tmp_path, [moved])["web"]) != again


def test_renew_keeps_subject_names_and_usages(tmp_path: Path) -> None:
    spec = pki.CertSpec("node", "system:node:n1", ("system:nodes",), hosts=("127.0.1.1",))
    files = pki.ensure_all(tmp_path, [spec])["node"]
    before, key = _serial(files), files.key.read_bytes()
    assert pki.renew(tmp_path) == ["node"]
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert cert.serial_number != before and files.key.read_bytes() != key
    assert pki.spec_of("node", cert) == pki.CertSpec(
        "node", "system:node:n1", ("system:nodes",), hosts=("127.0.1.1",)
    )


def test_certs_lists_what_up_makes(tmp_path: Path) -> None:
    config = parse_config(write_config(tmp_path / "c.yaml", name="certs").read_text())
    certs.ensure(config, tmp_path / "state")
    run = subprocess.run(
        [sys.executable, "-m", "k8semu", "certs", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    for name in ("ca", "apiserver", "admin", "kubelet-w1", "etcd/store-s1", "etcd/ca"):
        assert f"\n{name} " in run.stdout, run.stdout
    assert "CN=kubernetes-admin,O=system:masters" in run.stdout
    assert "kubernetes.default.svc.cluster.local" in run.stdout
