"""`k8semu join --token` (kubeadm's discovery): a TLS cluster from `k8semu up` publishes
kube-public/cluster-info; `token create --print-join-command` prints the join command with
the CA's hash; a second state dir on this machine joins with it (and --ca-dir, for the
certificates) and runs a pod; a wrong hash, an unknown or expired token, or a missing
--ca-dir stop join before it writes anything; the token reads cluster-info and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from k8semu.cluster import clusterinfo
from tests.support.cluster import k8semu, until, up_detached, user_env, write_config

START_S = 120.0


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
    ctx = ssl.create_default_context(cafile=str(cluster.state / "pki" / "ca.crt"))

    def get(path: str) -> int:
        req = urllib.request.Request(
            f"https://{server}{path}", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert get("/api/v1/namespaces/kube-public/configmaps/cluster-info") == 200
    assert get("/api/v1/namespaces/kube-public/configmaps") == 403
    assert get("/api/v1/namespaces/kube-system/configmaps/cluster-info") == 403


def test_refusals_write_nothing(cluster: Cluster) -> None:
    args = _join_command(cluster)
    pin, token = _flag(args, clusterinfo.PIN_FLAG), _flag(args, "--token")
    other = "sha256:" + "0" * 64
    cases = [
        ([*args[:args.index(clusterinfo.PIN_FLAG)], clusterinfo.PIN_FLAG, other],
         f"has public key hash {pin}, not the pinned {other}"),
        ([a if a != token else "abcdef.0123456789abcdef" for a in args],
         "refused the token (401)"),
        (args, "give --ca-dir too"),
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
    ca_dir = cluster.tmp / "ca-copy"
    ca_dir.mkdir()
    for name in ("ca.crt", "ca.key"):
        shutil.copy(cluster.state / "pki" / name, ca_dir / name)
    joined = _join(cluster, args, "j1", "--ca-dir", ca_dir, "--detach")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: on-j1}\nspec: {nodeName: j1,"
        " containers: [{name: c, image: k8semu/process, command: [sleep, '600']}]}\n"
    )
    made = subprocess.run(
        ["kubectl", "--kubeconfig", str(cluster.state / "kubeconfig"), "apply", "-f", "-"],
        input=pod, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr

    def running() -> bool | None:
        got = k8semu(cluster.env, "get", "pod", "on-j1", "-o", "json")
        return True if got.returncode == 0 and '"Running"' in got.stdout else None

    until("the pod on the joined node running", running, timeout=60)
