"""EncryptionConfiguration parsing and the providers, pure (no store): every bad file is
refused with the field named; values round trip; the key name in the prefix picks the key;
a value no provider reads is an error naming the key, never a crash."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8semu.apiserver import encryption
from k8semu.apiserver.encryption import EncryptionConfigError, Transformer, Undecryptable
from k8semu.cluster.certs import PKIPaths, ensure_encryption_config
from k8semu.pb.etcd import rpc_pb2

KEY = b"/registry/secrets/default/db"
K16, K32, K32B = b"a" * 16, b"b" * 32, b"c" * 32


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _doc(*providers: dict[str, Any], resources: tuple[str, ...] = ("secrets",)) -> dict[str, Any]:
    return {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [{"resources": list(resources), "providers": list(providers)}],
    }


def _aesgcm(*keys: tuple[str, bytes]) -> dict[str, Any]:
    return {"aesgcm": {"keys": [{"name": n, "secret": _b64(s)} for n, s in keys]}}


def _secretbox(*keys: tuple[str, bytes]) -> dict[str, Any]:
    return {"secretbox": {"keys": [{"name": n, "secret": _b64(s)} for n, s in keys]}}


IDENTITY: dict[str, Any] = {"identity": {}}


def test_aesgcm_round_trip_prefix_and_key_as_authenticated_data() -> None:
    t = encryption.parse(_doc(_aesgcm(("k1", K16)), IDENTITY))
    sealed = t.seal(KEY, b"hunter2")
    assert sealed.startswith(b"k8s:enc:aesgcm:v1:k1:") and b"hunter2" not in sealed
    assert t.seal(KEY, b"hunter2") != sealed  # a fresh nonce each time
    assert t.open(KEY, sealed) == b"hunter2" and not t.is_stale(KEY)
    # The etcd key is authenticated: the value copied under another name does not open.
    with pytest.raises(Undecryptable, match=r'"/registry/secrets/default/other".*aesgcm'):
        t.open(b"/registry/secrets/default/other", sealed)


def test_secretbox_round_trip_and_other_resources_untouched() -> None:
    t = encryption.parse(_doc(_secretbox(("box", K32))))
    sealed = t.seal(KEY, b"hunter2")
    assert sealed.startswith(b"k8s:enc:secretbox:v1:box:") and b"hunter2" not in sealed
    assert t.open(KEY, sealed) == b"hunter2"
    other = b"/registry/configmaps/default/db"
    assert t.seal(other, b"plain") == b"plain" and t.open(other, b"plain") == b"plain"
    # No identity listed: a plain value of an encrypted resource is not read as such.
    with pytest.raises(Undecryptable, match="stored unencrypted"):
        t.open(KEY, b"plain")


def test_rotation_key_name_picks_the_key_and_marks_stale() -> None:
    old = encryption.parse(_doc(_aesgcm(("k1", K32)), IDENTITY))
    sealed_old = old.seal(KEY, b"v1")
    new = encryption.parse(_doc(_aesgcm(("k2", K32B), ("k1", K32)), IDENTITY))
    assert new.open(KEY, sealed_old) == b"v1" and new.is_stale(KEY)
    resealed = new.seal(KEY, b"v1")
    assert resealed.startswith(b"k8s:enc:aesgcm:v1:k2:") and not new.is_stale(KEY)
    assert new.open(KEY, resealed) == b"v1" and not new.is_stale(KEY)
    assert new.open(KEY, b"written before") == b"written before" and new.is_stale(KEY)
    # Once everything is rewritten the old key can go; without it, old values are errors.
    only_new = encryption.parse(_doc(_aesgcm(("k2", K32B))))
    assert only_new.open(KEY, resealed) == b"v1"
    with pytest.raises(Undecryptable, match=r"no aesgcm key named 'k1'"):
        only_new.open(KEY, sealed_old)
    # A provider of another kind than the value's: named, not a crash.
    box = encryption.parse(_doc(_secretbox(("k1", K32))))
    with pytest.raises(Undecryptable, match=r"k8s:enc:aesgcm:v1:k1"):
        box.open(KEY, sealed_old)


def test_same_key_name_wrong_secret_is_an_error() -> None:
    sealed = encryption.parse(_doc(_aesgcm(("k1", K32)))).seal(KEY, b"v")
    wrong = encryption.parse(_doc(_aesgcm(("k1", K32B))))
    with pytest.raises(Undecryptable, match="does not decrypt") as info:
        wrong.open(KEY, sealed)
    assert info.value.code.name == "INTERNAL"


def test_identity_first_writes_plain_and_reads_encrypted() -> None:
    sealed = encryption.parse(_doc(_aesgcm(("k1", K32)))).seal(KEY, b"v")
    t = encryption.parse(_doc(IDENTITY, _aesgcm(("k1", K32))))
    assert t.seal(KEY, b"v") == b"v"
    assert t.open(KEY, sealed) == b"v" and t.is_stale(KEY)
    assert t.open(KEY, b"v") == b"v" and not t.is_stale(KEY)


def test_txn_puts_sealed_nested_included_and_request_kept() -> None:
    t = encryption.parse(_doc(_aesgcm(("k1", K32))))
    put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=KEY, value=b"v"))
    plain = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"/registry/pods/a", value=b"p"))
    nested = rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(failure=[put]))
    req = rpc_pb2.TxnRequest(success=[put, plain], failure=[nested])
    out = t.seal_txn(req)
    assert req.success[0].request_put.value == b"v"  # the caller's request is not changed
    assert out.success[0].request_put.value.startswith(b"k8s:enc:aesgcm:v1:k1:")
    assert out.success[1].request_put.value == b"p"
    assert out.failure[0].request_txn.failure[0].request_put.value.startswith(b"k8s:enc:")
    only_plain = rpc_pb2.TxnRequest(success=[plain])
    assert t.seal_txn(only_plain) is only_plain


def test_resource_names_and_wildcard() -> None:
    t = encryption.parse(_doc(_aesgcm(("k1", K32)), resources=("secrets", "deployments.apps")))
    assert t.seal(b"/registry/deployments/default/web", b"x").startswith(b"k8s:enc:")
    every = encryption.parse(_doc(_aesgcm(("k1", K32)), resources=("*.*",)))
    assert every.seal(b"/registry/pods/default/web", b"x").startswith(b"k8s:enc:")


BAD: list[tuple[str, Any, str]] = [
    ("kind", {"kind": "Nope"}, 'kind: Unsupported value: .Nope.'),
    ("apiVersion", {"apiVersion": "v1"}, "apiVersion: Unsupported value"),
    ("no resources", {"resources": []}, "resources: Required value"),
    ("no providers", {"resources": [{"resources": ["secrets"]}]},
     r"resources\[0\]\.providers: Required value"),
    ("unknown resource", {"resources": [{"resources": ["frobs"], "providers": [IDENTITY]}]},
     r'resources\[0\]\.resources\[0\]: Invalid value: "frobs": no such resource'),
    ("short name", {"resources": [{"resources": ["po"], "providers": [IDENTITY]}]},
     r'resources\[0\]\.resources\[0\]: Invalid value: "po".*"pods"'),
    ("two providers in one", _doc({"identity": {}, "aesgcm": {}}),
     r"providers\[0\]: Invalid value: more than one provider"),
    ("unknown provider", _doc({"rot13": {}}), r'providers\[0\]: Unsupported value: "rot13"'),
    ("kms", _doc({"kms": {"name": "x"}}), r'providers\[0\]\.kms: Unsupported value'),
    ("no keys", _doc({"aesgcm": {"keys": []}}), r"providers\[0\]\.aesgcm\.keys: Required value"),
    ("no name", _doc({"aesgcm": {"keys": [{"secret": _b64(K32)}]}}),
     r"aesgcm\.keys\[0\]\.name: Required value"),
    ("colon", _doc(_aesgcm(("a:b", K32))), r'keys\[0\]\.name: Invalid value: "a:b"'),
    ("duplicate", _doc(_aesgcm(("k", K32), ("k", K32B))), r'keys\[1\]\.name: Duplicate value'),
    ("not base64", _doc({"aesgcm": {"keys": [{"name": "k", "secret": "%%%"}]}}),
     r'keys\[0\]\.secret: Invalid value: "REDACTED": secret is not a valid base64'),
    ("aesgcm length", _doc(_aesgcm(("k", b"x" * 20))),
     r"expected length, got 20, expected one of \[16 24 32\]"),
    ("secretbox length", _doc(_secretbox(("k", K16))),
     r"secretbox\.keys\[0\]\.secret: .*got 16, expected one of \[32\]"),
    ("listed twice", {"resources": [{"resources": ["secrets"], "providers": [IDENTITY]},
                                    {"resources": ["secrets"], "providers": [IDENTITY]}]},
     r"resources\[1\]\.resources: Duplicate value"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "change", "error"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_the_field(what: str, change: Any, error: str) -> None:
    doc = copy.deepcopy(_doc(IDENTITY))
    doc.update(change)
    with pytest.raises(EncryptionConfigError, match=error) as info:
        encryption.parse(doc)
    assert _b64(K32) not in str(info.value)  # a secret is never repeated


def test_load_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(EncryptionConfigError, match=r"missing\.yaml: No such file"):
        encryption.load(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("resources: [")
    with pytest.raises(EncryptionConfigError, match=r"bad\.yaml: not YAML"):
        encryption.load(str(bad))
    bad.write_text(yaml.safe_dump(_doc({"aesgcm": {"keys": []}})))
    with pytest.raises(EncryptionConfigError, match=r"bad.yaml: resources\[0\]"):
        encryption.load(str(bad))


def test_up_writes_one_private_config_and_reuses_it(tmp_path: Path) -> None:
    path = tmp_path / "pki" / "encryption-config.yaml"
    ensure_encryption_config(path)
    assert path.stat().st_mode & 0o777 == 0o600
    first = path.read_bytes()
    ensure_encryption_config(path)
    assert path.read_bytes() == first  # reused: a new key would strand every Secret
    flags = PKIPaths(tmp_path).apiserver_flags(store=True)
    assert flags[flags.index("--encryption-provider-config") + 1] == str(path)
    t: Transformer = encryption.load(str(path))
    assert t.seal(KEY, b"v").startswith(b"k8s:enc:aesgcm:v1:key1:")
    assert t.open(KEY, b"written before") == b"written before"
