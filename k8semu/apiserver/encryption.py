"""Encryption at rest: kube-apiserver's `--encryption-provider-config` (EncryptionConfiguration).

The API server's store client (`store.py`) passes every value it writes through `Transformer.seal`
and every value it reads (Range, Txn responses, watch events) through `Transformer.open`, so the
store (its database, Raft log, snapshots, and the backups made of them) only ever holds
ciphertext of the resources the configuration lists, and everything above the store client
(watch cache, verbs, both faces) sees plain objects.

Kubernetes' semantics:
- per listed resource, the FIRST provider (and its first key) encrypts every write; every
  listed provider and key decrypts, picked by the stored value's prefix
  `k8s:enc:<provider>:v1:<key name>:`. `identity` writes plain values and reads any value
  without the `k8s:enc:` prefix (list it last while encryption is turned on, so values written
  before stay readable, or first to turn it off).
- aesgcm: AES-GCM with a 16, 24 or 32 byte key, a random 12-byte nonce before the ciphertext,
  the etcd key as authenticated data (a value copied under another key does not decrypt).
- secretbox: XSalsa20-Poly1305 (libsodium's secretbox, PyNaCl) with a 32-byte key, a random
  24-byte nonce before the box.
- a value read with another provider or key than the first is *stale*: an update that changes
  nothing still writes it (so `kubectl get secrets -A -o json | kubectl replace -f -` or
  `k8semu secrets rewrite` re-encrypts everything with the first key: key rotation).

Pure: no I/O but reading the configuration file.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import nacl.exceptions
import nacl.secret
import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from k8semu.api import kinds
from k8semu.api.errors import UnknownKindError
from k8semu.apiserver.errors import StatusError
from k8semu.pb.etcd import kv_pb2, rpc_pb2

API_VERSION = "apiserver.config.k8s.io/v1"
KIND = "EncryptionConfiguration"
ENC_PREFIX = b"k8s:enc:"
_AESGCM_NONCE = 12
_AESGCM_SIZES = (16, 24, 32)
# Only these are implemented; Kubernetes' others are named in the error.
_PROVIDERS = ("aesgcm", "secretbox", "identity")
_NOT_SUPPORTED = ("aescbc", "kms")


class EncryptionConfigError(ValueError):
    """A bad configuration file; the message names the file and the field."""


class Undecryptable(StatusError):
    """A stored value no configured provider can read (INTERNAL, as kube-apiserver's 500
    `unable to transform key`): the message names the object's key, never the value."""


class Provider(Protocol):
    """One provider of a resource's list (its values begin `k8s:enc:<name>:v1:`)."""

    @property
    def name(self) -> str: ...

    def seal(self, key: bytes, plain: bytes) -> bytes: ...

    def open(self, key: bytes, stored: bytes) -> tuple[bytes, bool] | None:
        """(plain, written by this provider's first key) when the value is this provider's,
        None when not; raises ValueError when it is but does not decrypt."""


@dataclass(frozen=True)
class _Identity:
    name: str = "identity"

    def seal(self, key: bytes, plain: bytes) -> bytes:
        return plain

    def open(self, key: bytes, stored: bytes) -> tuple[bytes, bool] | None:
        return None if stored.startswith(ENC_PREFIX) else (stored, True)


@dataclass(frozen=True)
class _Keyed:
    """aesgcm or secretbox: named keys, the first encrypts, any decrypts by its name."""

    name: str
    keys: tuple[tuple[str, bytes], ...]

    def _prefix(self, key_name: str) -> bytes:
        return ENC_PREFIX + f"{self.name}:v1:{key_name}:".encode()

    def seal(self, key: bytes, plain: bytes) -> bytes:
        key_name, secret = self.keys[0]
        return self._prefix(key_name) + _seal(self.name, secret, key, plain)

    def open(self, key: bytes, stored: bytes) -> tuple[bytes, bool] | None:
        mine = ENC_PREFIX + f"{self.name}:v1:".encode()
        if not stored.startswith(mine):
            return None
        key_name = stored[len(mine) :].split(b":", 1)[0].decode("utf-8", "replace")
        for i, (name, secret) in enumerate(self.keys):
            if name == key_name:
                body = stored[len(self._prefix(name)) :]
                return _open(self.name, secret, key, body), i == 0
        raise ValueError(f"no {self.name} key named {key_name!r} is configured")


def _seal(provider: str, secret: bytes, key: bytes, plain: bytes) -> bytes:
    if provider == "aesgcm":
        nonce = os.urandom(_AESGCM_NONCE)
        return nonce + AESGCM(secret).encrypt(nonce, plain, key)
    return bytes(nacl.secret.SecretBox(secret).encrypt(plain))


def _open(provider: str, secret: bytes, key: bytes, body: bytes) -> bytes:
    try:
        if provider == "aesgcm":
            nonce, sealed = body[:_AESGCM_NONCE], body[_AESGCM_NONCE:]
            if len(nonce) != _AESGCM_NONCE:
                raise ValueError("the value is too short")
            return AESGCM(secret).decrypt(nonce, sealed, key)
        return bytes(nacl.secret.SecretBox(secret).decrypt(body))
    except (InvalidTag, nacl.exceptions.CryptoError) as exc:
        raise ValueError(f"{provider}: the value does not decrypt with its key") from exc


@dataclass
class Transformer:
    """The providers of each encrypted resource, by key prefix (`/registry/secrets/`).

    `stale` holds the keys last read in a form the first provider would not write: an update
    of such a key writes even when the object did not change (rotation by rewriting)."""

    chains: Mapping[bytes, Sequence[Provider]]
    stale: set[bytes] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._prefixes = tuple(self.chains)

    def _chain(self, key: bytes) -> Sequence[Provider] | None:
        if not key.startswith(self._prefixes):
            return None
        for prefix in self._prefixes:  # the most specific (longest) prefix first
            if key.startswith(prefix):
                return self.chains[prefix]
        return None  # pragma: no cover - startswith above found one

    def seal(self, key: bytes, value: bytes) -> bytes:
        chain = self._chain(key)
        if chain is None:
            return value
        self.stale.discard(key)
        return chain[0].seal(key, value)

    def open(self, key: bytes, value: bytes) -> bytes:
        chain = self._chain(key)
        if chain is None or not value:
            return value
        for provider in chain:
            try:
                got = provider.open(key, value)
            except ValueError as exc:
                raise _undecryptable(key, str(exc)) from None
            if got is not None:
                plain, first_key = got
                if first_key and provider is chain[0]:
                    self.stale.discard(key)
                else:
                    self.stale.add(key)
                return plain
        what = _stored_prefix(value)
        raise _undecryptable(key, f"no provider of --encryption-provider-config reads {what}")

    # ---- the etcd messages the store client sends and receives ----

    def seal_txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnRequest:
        """`req` with the values of its puts (nested Txns included) sealed; a copy when one
        changes, `req` itself when none is of an encrypted resource."""
        if not any(self._chain(op.request_put.key) is not None for op in _puts(req)):
            return req
        out = rpc_pb2.TxnRequest()
        out.CopyFrom(req)
        for op in _puts(out):
            op.request_put.value = self.seal(op.request_put.key, op.request_put.value)
        return out

    def open_kvs(self, kvs: Iterable[kv_pb2.KeyValue]) -> None:
        for kv in kvs:
            kv.value = self.open(kv.key, kv.value)

    def open_txn(self, resp: rpc_pb2.TxnResponse) -> None:
        for r in resp.responses:
            which = r.WhichOneof("response")
            if which == "response_range":
                self.open_kvs(r.response_range.kvs)
            elif which == "response_put" and r.response_put.HasField("prev_kv"):
                self.open_kvs([r.response_put.prev_kv])
            elif which == "response_delete_range":
                self.open_kvs(r.response_delete_range.prev_kvs)
            elif which == "response_txn":
                self.open_txn(r.response_txn)

    def open_events(self, events: Iterable[kv_pb2.Event]) -> None:
        for ev in events:
            self.open_kvs([ev.kv])
            if ev.HasField("prev_kv"):
                self.open_kvs([ev.prev_kv])

    def is_stale(self, key: bytes) -> bool:
        return key in self.stale


def _puts(req: rpc_pb2.TxnRequest) -> list[rpc_pb2.RequestOp]:
    out: list[rpc_pb2.RequestOp] = []
    stack = [*req.success, *req.failure]
    while stack:
        op = stack.pop()
        which = op.WhichOneof("request")
        if which == "request_put":
            out.append(op)
        elif which == "request_txn":
            stack.extend([*op.request_txn.success, *op.request_txn.failure])
    return out


def _stored_prefix(value: bytes) -> str:
    """How an unreadable value is named in errors: its provider and key name, never data."""
    if not value.startswith(ENC_PREFIX):
        return "a value stored unencrypted (list the identity provider to read it)"
    parts = value.split(b":", 5)
    name = b":".join(parts[:5]).decode("utf-8", "replace")
    return f"a value stored as {name!r}"


def _undecryptable(key: bytes, why: str) -> Undecryptable:
    name = key.decode("utf-8", "replace")
    return Undecryptable(f'unable to transform key "{name}": {why}')


# ---- the configuration file ----------------------------------------------------------------


def load(path: str) -> Transformer:
    """The Transformer of an EncryptionConfiguration file; EncryptionConfigError naming the
    file and field otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as exc:
        raise EncryptionConfigError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise EncryptionConfigError(f"{path}: not YAML: {exc}") from None
    try:
        return parse(doc)
    except EncryptionConfigError as exc:
        raise EncryptionConfigError(f"{path}: {exc}") from None


def parse(doc: Any) -> Transformer:
    if not isinstance(doc, dict):
        raise EncryptionConfigError(f"expected a {KIND} object")
    if doc.get("kind") != KIND:
        raise EncryptionConfigError(f'kind: Unsupported value: {doc.get("kind")!r}: want "{KIND}"')
    if doc.get("apiVersion") != API_VERSION:
        got = doc.get("apiVersion")
        raise EncryptionConfigError(f'apiVersion: Unsupported value: {got!r}: want "{API_VERSION}"')
    entries = doc.get("resources")
    if not isinstance(entries, list) or not entries:
        raise EncryptionConfigError("resources: Required value: at least one entry")
    chains: dict[bytes, Sequence[Provider]] = {}
    for i, entry in enumerate(entries):
        where = f"resources[{i}]"
        if not isinstance(entry, dict):
            raise EncryptionConfigError(f"{where}: Invalid value: expected an object")
        providers = _providers(entry.get("providers"), f"{where}.providers")
        for prefix in _prefixes(entry.get("resources"), f"{where}.resources"):
            if prefix in chains:
                raise EncryptionConfigError(
                    f"{where}.resources: Duplicate value: {prefix.decode()!r} is listed twice"
                )
            chains[prefix] = providers
    # Longest prefix first: a kind listed by name wins over a wildcard covering it.
    ordered = dict(sorted(chains.items(), key=lambda kv: -len(kv[0])))
    return Transformer(ordered)


def _prefixes(names: Any, where: str) -> list[bytes]:
    if not isinstance(names, list) or not names:
        raise EncryptionConfigError(f"{where}: Required value: at least one resource")
    out = []
    for j, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise EncryptionConfigError(f"{where}[{j}]: Required value")
        out.append(_prefix_of(name, f"{where}[{j}]"))
    return out


def _prefix_of(name: str, where: str) -> bytes:
    """The key prefix of a resource name: `secrets`, `deployments.apps`, `*.*` (everything),
    `*.` (the core group), `*.apps` (one group)."""
    if name.startswith("*."):
        group = name[2:]
        if group == "*":
            return b"/registry/"
        found = [k for k in kinds.all_kinds() if k.stored and k.group == group]
        if not found:
            raise EncryptionConfigError(f'{where}: Invalid value: "{name}": no such API group')
        # Several prefixes would be needed; Kubernetes' wildcard is rare enough to refuse.
        raise EncryptionConfigError(
            f'{where}: Invalid value: "{name}": only "*.*" is supported as a wildcard;'
            " list the resources of the group by name"
        )
    try:
        kind = kinds.for_resource(name)
    except UnknownKindError:
        raise EncryptionConfigError(f'{where}: Invalid value: "{name}": no such resource') from None
    if not kind.stored or name.lower() not in (kind.plural, f"{kind.plural}.{kind.group}"):
        raise EncryptionConfigError(
            f'{where}: Invalid value: "{name}": name a stored resource by its plural'
            f' ("{kind.plural}")'
        )
    return f"/registry/{kind.plural}/".encode()


def _providers(items: Any, where: str) -> list[Provider]:
    if not isinstance(items, list) or not items:
        raise EncryptionConfigError(f"{where}: Required value: at least one provider")
    out: list[Provider] = []
    for j, item in enumerate(items):
        here = f"{where}[{j}]"
        if not isinstance(item, dict) or not item:
            raise EncryptionConfigError(f"{here}: Required value: one of {', '.join(_PROVIDERS)}")
        if len(item) > 1:
            raise EncryptionConfigError(
                f"{here}: Invalid value: more than one provider specified in a single element,"
                " should split into different list elements"
            )
        ((name, body),) = item.items()
        if name in _NOT_SUPPORTED:
            raise EncryptionConfigError(
                f'{here}.{name}: Unsupported value: "{name}" is not'
                f" implemented (use one of {', '.join(_PROVIDERS)})"
            )
        if name not in _PROVIDERS:
            raise EncryptionConfigError(
                f'{here}: Unsupported value: "{name}": one of {", ".join(_PROVIDERS)}'
            )
        out.append(_Identity() if name == "identity" else _keyed(name, body, f"{here}.{name}"))
    return out


def _keyed(name: str, body: Any, where: str) -> _Keyed:
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list) or not keys:
        raise EncryptionConfigError(f"{where}.keys: Required value: at least one key")
    sizes = _AESGCM_SIZES if name == "aesgcm" else (nacl.secret.SecretBox.KEY_SIZE,)
    out: list[tuple[str, bytes]] = []
    for k, key in enumerate(keys):
        here = f"{where}.keys[{k}]"
        if not isinstance(key, dict):
            raise EncryptionConfigError(f"{here}: Invalid value: expected name and secret")
        key_name = key.get("name")
        if not isinstance(key_name, str) or not key_name:
            raise EncryptionConfigError(f"{here}.name: Required value")
        if ":" in key_name:
            raise EncryptionConfigError(
                f'{here}.name: Invalid value: "{key_name}": should not contain ":"'
            )
        if any(key_name == n for n, _ in out):
            raise EncryptionConfigError(f'{here}.name: Duplicate value: "{key_name}"')
        out.append((key_name, _secret(key.get("secret"), sizes, f"{here}.secret")))
    return _Keyed(name, tuple(out))


def _secret(text: Any, sizes: tuple[int, ...], where: str) -> bytes:
    """A key's secret, base64; the error never repeats it (REDACTED, as Kubernetes)."""
    if not isinstance(text, str) or not text:
        raise EncryptionConfigError(f"{where}: Required value")
    try:
        secret = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionConfigError(
            f'{where}: Invalid value: "REDACTED": secret is not a valid base64 string'
        ) from None
    if len(secret) not in sizes:
        want = " ".join(str(s) for s in sizes)
        raise EncryptionConfigError(
            f'{where}: Invalid value: "REDACTED": secret is not of the expected length,'
            f" got {len(secret)}, expected one of [{want}]"
        )
    return secret
