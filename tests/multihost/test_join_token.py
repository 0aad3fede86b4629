"""`k8semu join --token` (kubeadm's discovery and TLS bootstrap): a TLS cluster from `k8semu
up` publishes kube-public/cluster-info; `token create --print-join-command` prints the join
command with the CA's hash; a second state dir on this machine joins with it alone (its
certificates by CertificateSigningRequests, no CA key) and runs a pod whose log the API
server reads from its kubelet; a wrong hash, an unknown or expired token, another CA's
--ca-dir stop join before it writes anything; the token reads cluster-info and nothing else;
requests a bootstrapper or a node may not have (a registered node's name, server usages,
another signer's subject, another node's name) stay unsigned while a good one is signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from k8semu import pki
from k8semu.api.csr import APISERVER_CLIENT as CLIENT
from k8semu.api.csr import KUBELET_CLIENT as KUBELET
from k8semu.api.csr import KUBELET_SERVING as SERVING
from k8semu.cluster import clusterinfo
from tests.support.cluster import k8semu, until, up_detached, user_env, write_config

START_S = 120.0
CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


@dataclass(frozen=True)
class Cluster:
    state: Path
    env: dict[str, str]
    tmp: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("jointoken")
    env = user_env(tmp)
    config = write_config(tmp / "cluster.yaml", name="jointoken", workers=False, addons=False)
    state = tmp / "state"
    try:
        up_detached(env, config, state)
        yield Cluster(state, env, tmp)
    finally:
        for joined in tmp.glob("join-*"):
            k8semu(env, "down", "--state-dir", joined, timeout=120)
        k8semu(env, "down", "--state-dir", state, timeout=120)


class _Rest:
    """JSON requests to the API server's HTTPS port with a token or a client certificate."""

    def __init__(
        self, server: str, ca: str, *, token: str = "", cert: tuple[Path, Path] | None = None
    ) -> None:
        self.base, self.ctx = f"https://{server}", ssl.create_default_context(cafile=ca)
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if cert:
            self.ctx.load_cert_chain(str(cert[0]), str(cert[1]))

    def call(self, method: str, path: str, doc: Any = None) -> tuple[int, Any]:
        data = None if doc is None else json.dumps(doc).encode()
        req = urllib.request.Request(self.base + path, data, self.headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ctx) as r:
                code, raw = int(r.status), r.read()
        except urllib.error.HTTPError as exc:
            code, raw = exc.code, exc.read()
        return code, json.loads(raw) if raw else None


def _join_command(c: Cluster) -> list[str]:
    made = k8semu(c.env, "token", "create", "--ttl", "10m", "--print-join-command")
    assert made.returncode == 0, made.stderr
    words = made.stdout.split()
    assert words[:3] == ["k8semu", "join", "--server"], made.stdout
    return words[2:]


def _join(
    c: Cluster, args: list[str], name: str, *more: str | Path
) -> subprocess.CompletedProcess[str]:
    return k8semu(
        c.env, "join", *args, "--node-name", name, "--node-ip", "127.0.1.1",
        "--state-dir", c.tmp / f"join-{name}", *more, timeout=START_S,
    )  # fmt: skip


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_the_pin_is_the_hash_of_the_ca_public_key(cluster: Cluster) -> None:
    ca = (cluster.state / "pki" / "ca.crt").read_bytes()
    pubkey = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout"], input=ca, capture_output=True, check=True
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pubkey, capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    assert clusterinfo.ca_hash(ca) == "sha256:" + hashlib.sha256(der).hexdigest()
    args = _join_command(cluster)
    assert _flag(args, clusterinfo.PIN_FLAG) == clusterinfo.ca_hash(ca)
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", _flag(args, "--token"))
    for bad in ("sha256:abc", "md5:" + "0" * 64, ""):
        with pytest.raises(ValueError, match=clusterinfo.PIN_FLAG):
            clusterinfo.parse_pin(bad)


def test_the_token_reads_cluster_info_only(cluster: Cluster) -> None:
    args = _join_command(cluster)
    server, token = _flag(args, "--server"), _flag(args, "--token")
    rest = _Rest(server, str(cluster.state / "pki" / "ca.crt"), token=token)

    def get(path: str) -> int:
        return rest.call("GET", path)[0]

    assert get("/api/v1/namespaces/kube-public/configmaps/cluster-info") == 200
    assert get("/api/v1/namespaces/kube-public/configmaps") == 403
    assert get("/api/v1/namespaces/kube-system/configmaps/cluster-info") == 403


def test_refusals_write_nothing(cluster: Cluster) -> None:
    pki.CertificateAuthority.load_or_create(cluster.tmp / "other-ca")
    args = _join_command(cluster)
    pin, token = _flag(args, clusterinfo.PIN_FLAG), _flag(args, "--token")
    other = "sha256:" + "0" * 64
    cases = [
        ([*args[:args.index(clusterinfo.PIN_FLAG)], clusterinfo.PIN_FLAG, other],
         f"has public key hash {pin}, not the pinned {other}"),
        ([a if a != token else "abcdef.0123456789abcdef" for a in args],
         "refused the token (401)"),
        ([*args, "--ca-dir", cluster.tmp / "other-ca"], "its ca.crt is not the discovered"),
        (args[:4], "--discovery-token-ca-cert-hash: required with --token"),
        ([*args[:2], "--token", "nope", *args[4:]], "--token: expected ID.SECRET"),
    ]  # fmt: skip
    for argv, message in cases:
        run = _join(cluster, argv, "refused")
        assert run.returncode == 2, run.stdout + run.stderr
        assert message in run.stderr, run.stderr
        assert not (cluster.tmp / "join-refused").exists()
    # Expired: its Secret's expiration in the past; the same command is then refused.
    token_id = token.partition(".")[0]
    past = base64.b64encode(b"2020-01-01T00:00:00Z").decode()
    patched = k8semu(
        cluster.env, "patch", "secret", f"bootstrap-token-{token_id}", "-n", "kube-system",
        "-p", json.dumps({"data": {"expiration": past}}),
    )  # fmt: skip
    assert patched.returncode == 0, patched.stderr

    def refused() -> bool | None:
        run = _join(cluster, args, "refused")
        return True if "refused the token (401)" in run.stderr else None

    until("the expired token refused", refused, timeout=30)
    assert not (cluster.tmp / "join-refused").exists()


def test_a_node_joins_by_token_and_runs_a_pod(cluster: Cluster) -> None:
    args = _join_command(cluster)
    joined = _join(cluster, args, "j1", "--detach")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    node_pki = cluster.tmp / "join-j1" / "pki"
    assert (node_pki / "kubelet-j1.crt").exists() and not (node_pki / "ca.key").exists()
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: on-j1}\nspec: {nodeName: j1,"
        " containers: [{name: c, image: k8semu/process,"
        " command: [sh, -c, 'echo hi; sleep 600']}]}\n"
    )
    assert _kubectl(cluster, "apply", "-f", "-", stdin=pod).returncode == 0

    def logged() -> bool | None:
        got = _kubectl(cluster, "logs", "on-j1")  # the API server to the node's serving cert
        return True if got.returncode == 0 and got.stdout.strip() == "hi" else None

    until("the pod on the joined node logging", logged, timeout=60)
    csrs = _kubectl(cluster, "get", "csr").stdout
    assert csrs.count("Approved,Issued") == 3, csrs


def _kubectl(c: Cluster, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(c.state / "kubeconfig"), *args],
        input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _csr(
    name: str, cn: str, orgs: tuple[str, ...], signer: str, usages: list[str]
) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    req = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    pem = req.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    spec = {"request": base64.b64encode(pem).decode(), "signerName": signer, "usages": usages}
    spec |= {"username": "kubernetes-admin", "groups": ["system:masters"]}  # not kept
    return {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": name}, "spec": spec}  # fmt: skip


def test_requests_beyond_a_joiners_rights_are_not_signed(cluster: Cluster) -> None:
    """After the join above (j1 is registered)."""
    args = _join_command(cluster)
    server, token = _flag(args, "--server"), _flag(args, "--token")
    ca = str(cluster.state / "pki" / "ca.crt")
    as_token = _Rest(server, ca, token=token)
    j1 = cluster.tmp / "join-j1" / "pki"
    as_node = _Rest(server, ca, cert=(j1 / "kubelet-j1.crt", j1 / "kubelet-j1.key"))
    node = ("digital signature", "client auth")
    refused = [
        (as_token, _csr("registered", "system:node:j1", ("system:nodes",), KUBELET, [*node])),
        (as_token, _csr("server-usage", "system:node:j7", ("system:nodes",), KUBELET,
                        ["digital signature", "server auth"])),
        (as_token, _csr("admin", "kubernetes-admin", ("system:masters",), CLIENT, [*node])),
        (as_token, _csr("serving", "system:node:j7", ("system:nodes",), SERVING,
                        ["server auth"])),
        (as_node, _csr("other-node", "system:node:j8", ("system:nodes",), KUBELET, [*node])),
    ]  # fmt: skip
    for rest, doc in refused:
        code, body = rest.call("POST", CSRS, doc)
        assert code == 201, body
        assert body["spec"]["username"] != "kubernetes-admin"
        assert "system:masters" not in body["spec"]["groups"]
    code, body = as_token.call("POST", CSRS, _csr("good", "system:node:j7", ("system:nodes",),
                                                  KUBELET, [*node]))  # fmt: skip
    assert code == 201, body

    def issued() -> bool | None:
        code, body = as_token.call("GET", f"{CSRS}/good")
        return True if code == 200 and body.get("status", {}).get("certificate") else None

    until("the good request signed", issued, timeout=30)
    for _, doc in refused:
        code, body = as_token.call("GET", f"{CSRS}/{doc['metadata']['name']}")
        assert code == 200, body
        assert not body.get("status", {}).get("certificate"), body
        assert not body.get("status", {}).get("conditions"), body  # pending, as Kubernetes
    # An administrator decides (kubectl sends these through /approval in protobuf): a denied
    # request stays unsigned; an approved one its signer refuses (server usages on a client
    # signer) is marked Failed, unsigned.
    assert _kubectl(cluster, "certificate", "deny", "admin").returncode == 0
    assert _kubectl(cluster, "certificate", "approve", "server-usage").returncode == 0

    def conditions(name: str) -> list[str]:
        body = as_token.call("GET", f"{CSRS}/{name}")[1]
        assert not body["status"].get("certificate"), body
        return [c["type"] for c in body["status"].get("conditions", [])]

    assert conditions("admin") == ["Denied"]
    until("the signer's refusal", lambda: conditions("server-usage") == ["Approved", "Failed"])
