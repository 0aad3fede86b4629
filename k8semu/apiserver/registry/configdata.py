"""The ConfigMap and Secret rows (v1): key names, sizes, `immutable`, Secret types.

As kube-apiserver: every key of `data` (and a ConfigMap's `binaryData`) is a config key
(`[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..` nor starting with `..`); a
ConfigMap key is in `data` or in `binaryData`, not both; the values together hold at most
1 MiB. Once `immutable: true` is stored, no update may change the data or take the flag
back (delete and re-create instead); a Secret's `type` never changes, is `Opaque` when
empty, and the built-in types need their keys (`kubernetes.io/tls`: `tls.crt` and
`tls.key`, `kubernetes.io/basic-auth`: `username` or `password`, ...).

A Secret's stringData is a write-only convenience: Kubernetes merges it into data when it
decodes any write (create, update, every patch type, server-side apply: the merged object
is decoded the same way), a stringData key replacing a data key of the same name, and never
stores or returns it. Here the merge is the row's defaulting, which the strategy runs on
create and on every update; every patch and apply ends in that update, so no write path can
skip it. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from k8semu.apiserver.validation import FieldError
from k8semu.pb.api.v1 import core_pb2

MAX_DATA_BYTES = 1024 * 1024
_KEY = re.compile(r"[-._a-zA-Z0-9]+")
# Kubernetes' words, double spaces included (kubectl's own check prints the same).
_KEY_MESSAGE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)
_IMMUTABLE = "Forbidden: field is immutable when `immutable` is set"
# The keys each built-in Secret type must hold (Kubernetes' ValidateSecret).
_REQUIRED_KEYS = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


def _key_problem(key: str) -> str | None:
    if len(key) > 253:
        return "must be no more than 253 characters"
    if not _KEY.fullmatch(key):
        return _KEY_MESSAGE
    if key in (".", ".."):
        return f"must not be '{key}'"
    if key.startswith(".."):
        return "must not start with '..'"
    return None


def _keys(field: str, keys: Iterable[str]) -> Iterator[FieldError]:
    for key in keys:
        problem = _key_problem(key)
        if problem is not None:
            yield FieldError(f"{field}[{key}]", f'Invalid value: "{key}": {problem}')


def _too_long(field: str, total: int) -> Iterator[FieldError]:
    if total > MAX_DATA_BYTES:
        yield FieldError(field, f"Too long: must have at most {MAX_DATA_BYTES} bytes")


def validate_config_map(cm: core_pb2.ConfigMap) -> Iterator[FieldError]:
    yield from _keys("data", cm.data)
    yield from _keys("binaryData", cm.binary_data)
    for key in cm.data:
        if key in cm.binary_data:
            yield FieldError(
                f"data[{key}]", f'Invalid value: "{key}": duplicate of key present in binaryData'
            )
    total = sum(len(v.encode()) for v in cm.data.values())
    yield from _too_long("data", total + sum(len(v) for v in cm.binary_data.values()))


def validate_config_map_update(
    new: core_pb2.ConfigMap, old: core_pb2.ConfigMap
) -> Iterator[FieldError]:
    yield from _frozen(new, old)
    if old.immutable and dict(new.binary_data) != dict(old.binary_data):
        yield FieldError("binaryData", _IMMUTABLE)


def _frozen(
    new: core_pb2.ConfigMap | core_pb2.Secret, old: core_pb2.ConfigMap | core_pb2.Secret
) -> Iterator[FieldError]:
    """What `immutable: true` (stored) forbids both kinds: clearing it, changing data."""
    if not old.immutable:
        return
    if not new.immutable:
        yield FieldError("immutable", _IMMUTABLE)
    if dict(new.data) != dict(old.data):
        yield FieldError("data", _IMMUTABLE)


def secret_defaults(secret: core_pb2.Secret) -> None:
    """Move stringData into data (UTF-8; stringData wins a shared key); an empty type is
    Opaque. In place."""
    for key, value in secret.string_data.items():
        secret.data[key] = value.encode()
    secret.ClearField("string_data")
    if not secret.type:
        secret.type = "Opaque"


def validate_secret(secret: core_pb2.Secret) -> Iterator[FieldError]:
    yield from _keys("data", secret.data)
    yield from _too_long("data", sum(len(v) for v in secret.data.values()))
    for key in _REQUIRED_KEYS.get(secret.type, ()):
        if key not in secret.data:
            yield FieldError(f"data[{key}]", "Required value")
    if secret.type == "kubernetes.io/basic-auth" and not (
        "username" in secret.data or "password" in secret.data
    ):
        yield FieldError("data[username]", "Required value")
        yield FieldError("data[password]", "Required value")
    if secret.type == "kubernetes.io/service-account-token":
        annotation = "kubernetes.io/service-account.name"
        if not secret.metadata.annotations.get(annotation):
            yield FieldError(f"metadata.annotations[{annotation}]", "Required value")


def validate_secret_update(new: core_pb2.Secret, old: core_pb2.Secret) -> Iterator[FieldError]:
    # A Secret stored before types were defaulted has none: Opaque is no change from it.
    if new.type != (old.type or "Opaque"):
        yield FieldError("type", f'Invalid value: "{new.type}": field is immutable')
    yield from _frozen(new, old)
