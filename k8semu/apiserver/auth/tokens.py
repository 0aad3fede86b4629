"""ServiceAccount tokens: JWTs as Kubernetes' bound tokens, signed by the API server.

Claims: `iss` (--service-account-issuer), `sub` system:serviceaccount:NS:NAME, `aud` (the
TokenRequest's audiences, else the API server's), `exp`/`iat`/`nbf`, `jti`, and the private
`kubernetes.io` claim naming the namespace, the ServiceAccount (name, uid) and, for a
token bound to a pod, the pod (name, uid). RS256 for an RSA key, ES256 for an EC one.
Verification checks signature, issuer, audience and expiry here; that the ServiceAccount
(and pod) still exist with those uids is the caller's (guard.py), as kube-apiserver does.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from k8semu.apiserver.errors import Invalid

DEFAULT_EXPIRATION = 3600  # seconds; a TokenRequest's expirationSeconds default
MIN_EXPIRATION = 600  # kube-apiserver refuses shorter TokenRequests
CLAIM = "kubernetes.io"
_PEM = re.compile(rb"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", re.DOTALL)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class KeyFileError(ValueError):
    """A key file that cannot be read or holds no usable key; the message names the flag."""


def _algorithm(key: PublicKey | PrivateKey) -> str:
    return "RS256" if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey) else "ES256"


def load_private_key(path: str, flag: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"{flag}: cannot read a private key from {path}: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{flag}: {path}: only RSA and EC keys sign tokens")
    return key


def load_public_keys(path: str, flag: str) -> list[PublicKey]:
    """Every public key in a PEM file; a private key counts as its public half (as
    kube-apiserver's --service-account-key-file accepts both)."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{flag}: cannot read {path}: {exc}") from exc
    keys: list[PublicKey] = []
    for match in _PEM.finditer(text):
        pem = match.group(0)
        try:
            if b"PRIVATE KEY" in pem:
                key: Any = serialization.load_pem_private_key(pem, password=None).public_key()
            else:
                key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{flag}: {path}: {exc}") from exc
        if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            keys.append(key)
    if not keys:
        raise KeyFileError(f"{flag}: {path} holds no RSA or EC key")
    return keys


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid token says."""

    namespace: str
    name: str
    uid: str
    pod_name: str = ""
    pod_uid: str = ""


class Issuer:
    """Signs ServiceAccount tokens (the TokenRequest subresource)."""

    def __init__(self, key: PrivateKey, issuer: str, audiences: tuple[str, ...]) -> None:
        self.key, self.issuer, self.audiences = key, issuer, audiences
        self.algorithm = _algorithm(key)

    def sign(
        self,
        claims: TokenClaims,
        *,
        audiences: tuple[str, ...] = (),
        expiration: int = DEFAULT_EXPIRATION,
        now: float | None = None,
    ) -> tuple[str, int]:
        """The token and its expiry (seconds since the epoch)."""
        issued = int(time.time() if now is None else now)
        private: dict[str, Any] = {
            "namespace": claims.namespace,
            "serviceaccount": {"name": claims.name, "uid": claims.uid},
        }
        if claims.pod_name:
            private["pod"] = {"name": claims.pod_name, "uid": claims.pod_uid}
        payload = {
            "iss": self.issuer,
            "sub": f"system:serviceaccount:{claims.namespace}:{claims.name}",
            "aud": list(audiences or self.audiences),
            "iat": issued,
            "nbf": issued,
            "exp": issued + expiration,
            "jti": str(uuid.uuid4()),
            CLAIM: private,
        }
        return jwt.encode(payload, self.key, algorithm=self.algorithm), issued + expiration


class Verifier:
    """Checks a bearer token is one of ours: signature by one of `keys`, `issuer`, one of
    `audiences`, not expired. None for a token that is no JWT of this issuer (the chain
    tries the next authenticator); Invalid for one that is but fails a check."""

    def __init__(self, keys: list[PublicKey], issuer: str, audiences: tuple[str, ...]) -> None:
        self.keys, self.issuer, self.audiences = keys, issuer, audiences

    def verify(self, token: str) -> TokenClaims | None:
        if token.count(".") != 2:
            return None
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        if unverified.get("iss") != self.issuer:
            return None
        last: Exception | None = None
        for key in self.keys:
            try:
                payload = jwt.decode(
                    token,
                    key,
                    algorithms=[_algorithm(key)],
                    audience=list(self.audiences),
                    issuer=self.issuer,
                    options={"require": ["exp", "sub", "iss"]},
                )
            except jwt.InvalidSignatureError as exc:
                last = exc
                continue
            except jwt.PyJWTError as exc:
                raise Invalid(f"invalid bearer token: {exc}") from exc
            return _claims(payload)
        raise Invalid(f"invalid bearer token: {last}")


def _claims(payload: dict[str, Any]) -> TokenClaims:
    private = payload.get(CLAIM)
    sub = str(payload.get("sub", ""))
    parts = sub.split(":")
    if (
        not isinstance(private, dict)
        or len(parts) != 4
        or parts[:2] != ["system", "serviceaccount"]
    ):
        raise Invalid("invalid bearer token: not a ServiceAccount token")
    sa = private.get("serviceaccount") or {}
    pod = private.get("pod") or {}
    if private.get("namespace") != parts[2] or sa.get("name") != parts[3]:
        raise Invalid("invalid bearer token: the subject and the kubernetes.io claim differ")
    return TokenClaims(
        parts[2],
        parts[3],
        str(sa.get("uid", "")),
        str(pod.get("name", "")),
        str(pod.get("uid", "")),
    )


def check_expiration(seconds: int | None) -> int:
    """A TokenRequest's expirationSeconds, defaulted and checked as kube-apiserver's."""
    if seconds is None:
        return DEFAULT_EXPIRATION
    if seconds < MIN_EXPIRATION:
        raise Invalid(
            f"spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less"
            " than 10 minutes"
        )
    if seconds > 2**32:
        raise Invalid(
            f"spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration larger"
            " than 2^32 seconds"
        )
    return seconds
