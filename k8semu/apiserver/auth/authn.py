"""The authenticator chain: one per API server, used by both faces.

In kube-apiserver's order: the client certificate (CN user, O groups), then a bearer token
from the static token file (`--token-auth-file`), then a ServiceAccount JWT; a request with
none of these is anonymous (system:anonymous in system:unauthenticated) when
`--anonymous-auth=true`, else refused. A bearer token that is presented but accepted by no
authenticator is refused (401), never downgraded to anonymous, as Kubernetes does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k8semu import transport
from k8semu.apiserver.auth import bootstrap as bootstrap_tokens
from k8semu.apiserver.auth.tokens import TokenClaims, Verifier
from k8semu.apiserver.auth.user import ANONYMOUS_USER, UserInfo, authenticated, service_account
from k8semu.apiserver.errors import Invalid, Unauthorized

UNAUTHORIZED = "Unauthorized"  # kube-apiserver's whole 401 message


class TokenFileError(ValueError):
    """A --token-auth-file that cannot be read or has a bad line; the message names both."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request carries: a bearer token, the verified client certificate's subject
    (as `user_from_subject` reads it), impersonation wishes."""

    token: str = ""
    subject: Any = None
    impersonate_user: str = ""
    impersonate_groups: tuple[str, ...] = ()


def parse_token_file(text: str, source: str = "--token-auth-file") -> dict[str, UserInfo]:
    """Kubernetes' static token CSV: token,user,uid[,"group1,group2"] per line."""
    users: dict[str, UserInfo] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or (len(row) == 1 and not row[0].strip()) or row[0].startswith("#"):
            continue
        if len(row) < 3:
            raise TokenFileError(
                f"{source}: line {number}: want token,user,uid[,groups], got {len(row)} fields"
            )
        token, name, uid = (field.strip() for field in row[:3])
        if not token or not name:
            raise TokenFileError(f"{source}: line {number}: the token and user may not be empty")
        if token in users:
            raise TokenFileError(f"{source}: line {number}: duplicate token")
        groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
        users[token] = authenticated(name, uid, groups)
    return users


def load_token_file(path: str) -> dict[str, UserInfo]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TokenFileError(f"--token-auth-file: cannot read {path}: {exc}") from exc
    return parse_token_file(text, f"--token-auth-file {path}")


def user_from_subject(subject: Any) -> UserInfo | None:
    """The user a verified client certificate names: CN the user, each O a group. Takes
    `transport.PeerSubject` (what the TLS listeners give), a `cryptography` x509.Name, an
    RFC 4514 string ("CN=alice,O=dev"), a mapping of attribute names to lists of values, or
    the `subject` of ssl's getpeercert(); None when there is no CN."""
    if subject is None:
        return None
    if isinstance(subject, transport.PeerSubject):  # what the TLS listeners hand over
        return authenticated(subject.user, "", subject.groups) if subject.user else None
    names: list[str] = []
    groups: list[str] = []
    for attr, value in _attributes(subject):
        if attr in ("CN", "commonName"):
            names.append(value)
        elif attr in ("O", "organizationName"):
            groups.append(value)
    if not names or not names[0]:
        return None
    return authenticated(names[0], "", tuple(groups))


def _attributes(subject: Any) -> list[tuple[str, str]]:
    if isinstance(subject, str):
        out = []
        for part in subject.split(","):
            attr, sep, value = part.strip().partition("=")
            if sep:
                out.append((attr.strip(), value.strip()))
        return out
    if isinstance(subject, dict):
        return [(attr, str(v)) for attr, values in subject.items() for v in values]
    if isinstance(subject, tuple):  # ssl's getpeercert()["subject"]: RDNs of (name, value)
        return [(str(attr), str(v)) for rdn in subject for attr, v in rdn]
    # cryptography x509.Name (h-tls's transport gives the verified peer certificate's).
    return [(a.oid._name, str(a.value)) for a in subject]


# Looks a ServiceAccount's (and pod's) uid up: None when it no longer exists.
UidLookup = Callable[[str, str, str], Awaitable[str | None]]


class Authenticator:
    """The chain. `tokens`: the static token file's users; `verifier`: ServiceAccount JWTs
    (with `lookup` checking the ServiceAccount and pod still exist, uids unchanged)."""

    def __init__(
        self,
        *,
        tokens: dict[str, UserInfo] | None = None,
        verifier: Verifier | None = None,
        lookup: UidLookup | None = None,
        anonymous: bool = False,
        bootstrap: bool = False,
    ) -> None:
        self.tokens = tokens or {}
        self.verifier = verifier
        self.lookup = lookup
        self.anonymous = anonymous
        # --enable-bootstrap-token-auth: `secrets` reads kube-system's bootstrap-token Secrets.
        self.bootstrap = bootstrap
        self.secrets: bootstrap_tokens.SecretLookup | None = None

    async def authenticate(self, creds: Credentials) -> UserInfo:
        """The user, or Unauthorized ("Unauthorized", as Kubernetes says no more)."""
        if (user := user_from_subject(creds.subject)) is not None:
            return user
        if creds.token:
            found = self.tokens.get(creds.token)
            if found is not None:
                return found
            if (
                self.bootstrap
                and self.secrets is not None
                and bootstrap_tokens.TOKEN.match(creds.token)
            ):
                user = await bootstrap_tokens.authenticate(creds.token, self.secrets)
                if user is None:
                    raise Unauthorized(UNAUTHORIZED)
                return user
            if self.verifier is not None:
                try:
                    claims = self.verifier.verify(creds.token)
                except Invalid:
                    raise Unauthorized(UNAUTHORIZED) from None
                if claims is not None and await self._live(claims):
                    return service_account(claims.namespace, claims.name, claims.uid)
            raise Unauthorized(UNAUTHORIZED)
        if self.anonymous:
            return ANONYMOUS_USER
        raise Unauthorized(UNAUTHORIZED)

    async def _live(self, claims: TokenClaims) -> bool:
        if self.lookup is None:
            return True
        uid = await self.lookup("serviceaccounts", claims.namespace, claims.name)
        if uid is None or (claims.uid and uid != claims.uid):
            return False
        if claims.pod_name:
            pod_uid = await self.lookup("pods", claims.namespace, claims.pod_name)
            return pod_uid is not None and (not claims.pod_uid or pod_uid == claims.pod_uid)
        return True
