"""Bootstrap tokens (kubeadm's): the Secret `k8semu token create` writes, and the
authenticator's verdicts on tokens against such Secrets (valid, other secret, expired, not
for authentication, another type, being deleted, not a bootstrap token at all)."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from k8semu.apiserver.auth import bootstrap
from k8semu.apiserver.auth.authn import Authenticator, Credentials
from k8semu.apiserver.errors import Unauthorized
from k8semu.pb.api.v1 import core_pb2


def _secret(token: str, ttl: datetime.timedelta | None = datetime.timedelta(hours=1),
            **changes: str) -> core_pb2.Secret:  # fmt: skip
    secret = core_pb2.Secret(type=bootstrap.SECRET_TYPE)
    secret.metadata.name = bootstrap.SECRET_PREFIX + token[:6]
    secret.metadata.namespace = bootstrap.NAMESPACE
    for key, value in {**bootstrap.secret_data(token, ttl), **changes}.items():
        secret.data[key] = value.encode()
    return secret


def _check(token: str, secret: core_pb2.Secret | None) -> Any:
    async def lookup(namespace: str, name: str) -> Any:
        wanted = (bootstrap.NAMESPACE, bootstrap.SECRET_PREFIX + token[:6])
        return secret if (namespace, name) == wanted else None

    return asyncio.run(bootstrap.authenticate(token, lookup))


def test_new_tokens_have_kubeadms_format_and_are_distinct() -> None:
    tokens = {bootstrap.new_token() for _ in range(50)}
    assert len(tokens) == 50 and all(bootstrap.TOKEN.match(t) for t in tokens)
    with pytest.raises(ValueError, match="token: want"):
        bootstrap.secret_data("ABC.def", None)


def test_a_valid_token_is_its_bootstrap_user() -> None:
    token = bootstrap.new_token()
    user = _check(token, _secret(token))
    assert user.name == f"system:bootstrap:{token[:6]}"
    assert set(user.groups) == {
        "system:bootstrappers",
        "system:bootstrappers:k8semu:default-node-token",
        "system:authenticated",
    }
    assert _check(token, _secret(token, None)) is not None  # no expiration: never expires


def test_refused_tokens() -> None:
    token = bootstrap.new_token()
    other = token[:7] + ("a" if token[7] != "a" else "b") + token[8:]
    assert _check(other, _secret(token)) is None  # another secret, same id
    past = {"expiration": "2020-01-01T00:00:00Z"}
    assert _check(token, _secret(token, **past)) is None
    assert _check(token, _secret(token, expiration="tomorrow")) is None
    assert _check(token, _secret(token, **{"usage-bootstrap-authentication": "false"})) is None
    wrong_type = _secret(token)
    wrong_type.type = "Opaque"
    assert _check(token, wrong_type) is None
    deleting = _secret(token)
    deleting.metadata.deletion_timestamp.seconds = 1
    assert _check(token, deleting) is None
    assert _check(token, None) is None
    assert _check("not-a-bootstrap-token", _secret(token)) is None


def test_the_chain_refuses_a_bad_bootstrap_token_without_falling_through() -> None:
    token = bootstrap.new_token()
    chain = Authenticator(bootstrap=True)

    async def lookup(namespace: str, name: str) -> Any:
        return _secret(token)

    chain.secrets = lookup
    user = asyncio.run(chain.authenticate(Credentials(token, None, "", ())))
    assert user.name.startswith("system:bootstrap:")
    bad = token[:7] + ("a" if token[7] != "a" else "b") + token[8:]
    with pytest.raises(Unauthorized):
        asyncio.run(chain.authenticate(Credentials(bad, None, "", ())))
    off = Authenticator()  # without --enable-bootstrap-token-auth: an unknown token
    off.secrets = lookup
    with pytest.raises(Unauthorized):
        asyncio.run(off.authenticate(Credentials(token, None, "", ())))
