"""Bootstrap tokens (kubeadm's): `<id>.<secret>` bearer tokens kept as Secrets
`kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`, authenticating
as `system:bootstrap:<id>` in `system:bootstrappers` (and the Secret's `auth-extra-groups`),
with kube-apiserver's `--enable-bootstrap-token-auth`. A token is refused when its Secret is
missing, of another type, not for authentication (`usage-bootstrap-authentication`),
expired (`expiration`, RFC 3339), being deleted, or its secret differs. Pure but the lookup.
"""

from __future__ import annotations

import datetime
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from k8semu.apiserver.auth.user import UserInfo, authenticated

NAMESPACE = "kube-system"
SECRET_TYPE = "bootstrap.kubernetes.io/token"
SECRET_PREFIX = "bootstrap-token-"
GROUP = "system:bootstrappers"
USER_PREFIX = "system:bootstrap:"
TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

#: (namespace, name) -> the Secret (its protobuf message), None when there is none.
SecretLookup = Callable[[str, str], Awaitable[Any]]


def new_token() -> str:
    """A random `<6>.<16>` token, kubeadm's format."""

    def pick(n: int) -> str:
        return "".join(secrets.choice(_ALPHABET) for _ in range(n))

    return f"{pick(6)}.{pick(16)}"


def secret_data(
    token: str, ttl: datetime.timedelta | None, description: str = ""
) -> dict[str, str]:
    """The Secret's stringData for `token` (expiring after `ttl`; None: never)."""
    match = TOKEN.match(token)
    if match is None:
        raise ValueError(f"token: want [a-z0-9]{{6}}.[a-z0-9]{{16}}, got {token!r}")
    data = {
        "token-id": match.group(1),
        "token-secret": match.group(2),
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": "system:bootstrappers:k8semu:default-node-token",
    }
    if description:
        data["description"] = description
    if ttl is not None:
        end = datetime.datetime.now(datetime.UTC) + ttl
        data["expiration"] = end.strftime("%Y-%m-%dT%H:%M:%SZ")
    return data


async def authenticate(token: str, lookup: SecretLookup) -> UserInfo | None:
    """The user of a bootstrap token; None when `token` is not one or is not valid."""
    match = TOKEN.match(token)
    if match is None:
        return None
    token_id, secret_part = match.groups()
    found = await lookup(NAMESPACE, SECRET_PREFIX + token_id)
    if found is None or found.type != SECRET_TYPE or found.metadata.HasField("deletion_timestamp"):
        return None
    data = {k: bytes(v).decode(errors="replace") for k, v in found.data.items()}
    if data.get("token-id") != token_id or data.get("usage-bootstrap-authentication") != "true":
        return None
    if not hmac.compare_digest(data.get("token-secret", ""), secret_part):
        return None
    if _expired(data.get("expiration", "")):
        return None
    extra = [
        g.strip()
        for g in data.get("auth-extra-groups", "").split(",")
        if g.strip().startswith(GROUP + ":")
    ]
    return authenticated(USER_PREFIX + token_id, "", (GROUP, *extra))


def _expired(text: str) -> bool:
    if not text:
        return False
    try:
        end = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return True  # an expiration that cannot be read is no promise of validity
    if end.tzinfo is None:
        end = end.replace(tzinfo=datetime.UTC)
    return end <= datetime.datetime.now(datetime.UTC)
