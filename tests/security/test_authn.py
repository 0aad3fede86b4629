"""The authenticator chain, pure: the static token file, ServiceAccount JWTs (valid,
expired, garbled, another issuer or key, another audience), client-certificate subjects
(certificates made with `cryptography`), anonymous."""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from k8semu.apiserver.auth.authn import (
    Authenticator,
    Credentials,
    TokenFileError,
    parse_token_file,
    user_from_subject,
)
from k8semu.apiserver.auth.tokens import (
    Issuer,
    KeyFileError,
    TokenClaims,
    Verifier,
    check_expiration,
    load_public_keys,
)
from k8semu.apiserver.errors import Invalid, Unauthorized
from tests.security.conftest import write_rsa_key

ISSUER = "https://kubernetes.default.svc.cluster.local"
CLAIMS = TokenClaims("team-a", "reader", "sa-uid", "web-0", "pod-uid")


def test_token_file_lines() -> None:
    users = parse_token_file('t1,alice,u1,"dev,ops"\n\n# comment\nt2,bob,u2\n')
    assert users["t1"].name == "alice"
    assert users["t1"].groups == ("dev", "ops", "system:authenticated")
    assert users["t2"].groups == ("system:authenticated",)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("t1,alice\n", "line 1: want token,user,uid"), ("t,a,1\nt,b,2\n", "line 2: duplicate"),
     (",alice,1\n", "may not be empty")],
)  # fmt: skip
def test_token_file_errors_name_the_line(text: str, problem: str) -> None:
    with pytest.raises(TokenFileError, match=problem):
        parse_token_file(text)


def _issuer(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Issuer:
    return Issuer(key, ISSUER, (ISSUER,))


@pytest.mark.parametrize("curve", [False, True])
def test_service_account_token_round_trip(curve: bool) -> None:
    key = (
        ec.generate_private_key(ec.SECP256R1()) if curve else rsa.generate_private_key(65537, 2048)
    )
    token, expires = _issuer(key).sign(CLAIMS)
    assert expires > time.time() + 3000
    claims = Verifier([key.public_key()], ISSUER, (ISSUER,)).verify(token)
    assert claims == CLAIMS


def test_bad_tokens_are_invalid_or_not_ours() -> None:
    key = rsa.generate_private_key(65537, 2048)
    other = rsa.generate_private_key(65537, 2048)
    verifier = Verifier([key.public_key()], ISSUER, (ISSUER,))
    expired, _ = _issuer(key).sign(CLAIMS, now=time.time() - 7200)
    with pytest.raises(Invalid, match="expired"):
        verifier.verify(expired)
    forged, _ = _issuer(other).sign(CLAIMS)
    with pytest.raises(Invalid, match="invalid bearer token"):
        verifier.verify(forged)
    elsewhere, _ = _issuer(key).sign(CLAIMS, audiences=("vault",))
    with pytest.raises(Invalid, match=r"(?i)audience"):
        verifier.verify(elsewhere)
    foreign, _ = Issuer(key, "https://elsewhere", (ISSUER,)).sign(CLAIMS)
    assert verifier.verify(foreign) is None  # another issuer's: the chain goes on
    assert verifier.verify("not.a.jwt") is None
    assert verifier.verify("plain-token") is None


def test_expiration_seconds_checked() -> None:
    assert check_expiration(None) == 3600
    with pytest.raises(Invalid, match="less than 10 minutes"):
        check_expiration(60)


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "sa.key"
    write_rsa_key(path)
    assert len(load_public_keys(str(path), "--service-account-key-file")) == 1
    (tmp_path / "empty.pem").write_text("nothing\n")
    with pytest.raises(KeyFileError, match=r"--service-account-key-file: .* holds no RSA or EC"):
        load_public_keys(str(tmp_path / "empty.pem"), "--service-account-key-file")


def _certificate(cn: str, orgs: list[str]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        ([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
        + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    )
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_user_from_certificate_subject() -> None:
    cert = _certificate("system:node:node-1", ["system:nodes"])
    user = user_from_subject(cert.subject)
    assert user is not None
    assert user.name == "system:node:node-1"
    assert user.groups == ("system:nodes", "system:authenticated")
    assert user.node_name == "node-1"
    text = user_from_subject("CN=alice,O=dev,O=ops")
    assert text is not None and text.groups == ("dev", "ops", "system:authenticated")
    assert user_from_subject(_certificate("", ["x"]).subject) is None
    peercert = ((("commonName", "carol"),), (("organizationName", "ops"),))  # ssl's form
    from_ssl = user_from_subject(peercert)
    assert from_ssl is not None and (from_ssl.name, from_ssl.groups[0]) == ("carol", "ops")


async def test_chain_order_and_anonymous() -> None:
    key = rsa.generate_private_key(65537, 2048)
    tokens = parse_token_file("static,alice,u1\n")
    verifier = Verifier([key.public_key()], ISSUER, (ISSUER,))
    chain = Authenticator(tokens=tokens, verifier=verifier)
    cert = _certificate("bob", ["dev"])
    assert (await chain.authenticate(Credentials("static", cert.subject))).name == "bob"
    assert (await chain.authenticate(Credentials("static"))).name == "alice"
    sa_token, _ = _issuer(key).sign(CLAIMS)
    sa = await chain.authenticate(Credentials(sa_token))
    assert sa.name == "system:serviceaccount:team-a:reader"
    assert "system:serviceaccounts:team-a" in sa.groups
    for bad in ("wrong", sa_token[:-4] + "AAAA"):
        with pytest.raises(Unauthorized, match=r"^Unauthorized$"):
            await chain.authenticate(Credentials(bad))
    with pytest.raises(Unauthorized):
        await chain.authenticate(Credentials())
    open_chain = Authenticator(tokens=tokens, anonymous=True)
    anon = await open_chain.authenticate(Credentials())
    assert (anon.name, anon.groups) == ("system:anonymous", ("system:unauthenticated",))
    with pytest.raises(Unauthorized):  # a bad token is never downgraded to anonymous
        await open_chain.authenticate(Credentials("wrong"))


async def test_deleted_service_account_token_refused() -> None:
    key = rsa.generate_private_key(65537, 2048)
    live: dict[tuple[str, str, str], str] = {("serviceaccounts", "team-a", "reader"): "sa-uid"}

    async def lookup(resource: str, namespace: str, name: str) -> str | None:
        return live.get((resource, namespace, name))

    chain = Authenticator(verifier=Verifier([key.public_key()], ISSUER, (ISSUER,)), lookup=lookup)
    token, _ = _issuer(key).sign(TokenClaims("team-a", "reader", "sa-uid"))
    assert (await chain.authenticate(Credentials(token))).name.endswith(":reader")
    bound, _ = _issuer(key).sign(CLAIMS)  # bound to pod web-0, which does not exist
    with pytest.raises(Unauthorized):
        await chain.authenticate(Credentials(bound))
    live[("serviceaccounts", "team-a", "reader")] = "another-uid"  # deleted and made again
    with pytest.raises(Unauthorized):
        await chain.authenticate(Credentials(token))


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--authorization-mode", "RBAC,Magic"], "--authorization-mode: unknown mode 'Magic'"),
        (["--authorization-mode", "RBAC,RBAC"], "--authorization-mode: a mode is listed twice"),
        (["--audit-policy-file", "p.yaml"], "--audit-policy-file needs --audit-log-path"),
        (["--audit-log-path", "a.log", "--audit-log-maxsize", "-1"], "--audit-log-maxsize"),
    ],
)
def test_bad_flags_name_the_flag(args: list[str], problem: str) -> None:
    from k8semu.cli.apiserver import _parser, config_from_args

    with pytest.raises(ValueError, match=problem):
        config_from_args(_parser().parse_args(args))


def test_unreadable_files_fail_the_start(tmp_path: Path) -> None:
    from k8semu.apiserver.auth.config import AuthConfig, build_guard
    from k8semu.apiserver.watchcache import WatchCaches

    caches: Any = WatchCaches(None)  # type: ignore[arg-type]  # never started: nothing read
    missing = str(tmp_path / "missing")
    for config, flag in (
        (AuthConfig(token_auth_file=missing), "--token-auth-file"),
        (AuthConfig(service_account_key_files=(missing,)), "--service-account-key-file"),
        (
            AuthConfig(service_account_signing_key_file=missing),
            "--service-account-signing-key-file",
        ),
        (AuthConfig(audit_log_path="a", audit_policy_file=missing), "--audit-policy-file"),
    ):
        with pytest.raises(ValueError, match=flag):
            build_guard(config, caches)
    assert build_guard(AuthConfig(), caches) is None  # nothing configured: no guard at all
