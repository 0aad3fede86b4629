"""The default ClusterRoles are reconciled as kube-apiserver's bootstrap policy: a stored role
gets the default rules it lacks (never loses one), unless annotated autoupdate "false"; and
the ServiceAccount key pair `up` makes is kept across runs."""

from __future__ import annotations

from pathlib import Path

from k8semu import pki
from k8semu.apiserver.auth import policy
from k8semu.pb.api.v1 import rbac_pb2


def _default(name: str) -> rbac_pb2.ClusterRole:
    return next(r for r in policy.cluster_roles() if r.metadata.name == name)


def test_a_stored_default_role_gets_the_rules_it_lacks() -> None:
    default = _default("system:node-proxier")
    stored = rbac_pb2.ClusterRole()
    stored.CopyFrom(default)
    del stored.rules[-1]  # as an older version made it
    own = policy.rule(("get",), ("",), ("configmaps",))
    stored.rules.append(own)  # an administrator's addition stays
    assert policy.reconciled(stored, default)
    assert all(r in stored.rules for r in default.rules) and own in stored.rules
    assert not policy.reconciled(stored, default)  # nothing left to add


def test_autoupdate_false_is_left_alone() -> None:
    default = _default("view")
    stored = rbac_pb2.ClusterRole()
    stored.CopyFrom(default)
    del stored.rules[:]
    stored.metadata.annotations[policy.AUTOUPDATE] = "false"
    assert not policy.reconciled(stored, default) and not stored.rules


def test_the_signing_key_pair_is_made_once(tmp_path: Path) -> None:
    key, pub = tmp_path / "sa.key", tmp_path / "sa.pub"
    pki.ensure_signing_key(key, pub)
    first = key.read_bytes()
    assert key.stat().st_mode & 0o777 == 0o600 and b"PUBLIC KEY" in pub.read_bytes()
    pub.unlink()
    pki.ensure_signing_key(key, pub)
    assert key.read_bytes() == first and pub.exists()
    key.write_text("garbage")
    try:
        pki.ensure_signing_key(key, pub)
    except pki.PKIError as exc:
        assert str(key) in str(exc)
    else:
        raise AssertionError("a garbled key was accepted")


def test_up_plans_authorization_with_tls_only(tmp_path: Path) -> None:
    from k8semu.cluster.config import parse_config
    from k8semu.cluster.plan import plan_cluster
    from tests.support.cluster import write_config

    text = write_config(tmp_path / "c.yaml", name="authz", addons=False).read_text()
    state = tmp_path / "state"
    plan = plan_cluster(parse_config(text), state, python="py", commands={"apiserver"})
    api = next(c for c in plan.components if c.kind == "apiserver")
    argv = " ".join(api.argv)
    for flag in (
        "--authorization-mode Node,RBAC",
        "--anonymous-auth=false",
        f"--service-account-signing-key-file {state}/pki/sa.key",
        f"--service-account-key-file {state}/pki/sa.pub",
        f"--audit-log-path {state}/logs/{api.name}-audit.log",
        "--token-listen-address 127.0.0.1:0",
    ):
        assert flag in argv, (flag, argv)
    plain = plan_cluster(
        parse_config(text + "security: {tls: false}\n"), state, python="py", commands={"apiserver"}
    )
    api = next(c for c in plain.components if c.kind == "apiserver")
    assert "--authorization-mode" not in api.argv and "--audit-log-path" not in api.argv
