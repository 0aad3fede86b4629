"""A Secret's stringData is merged into data on every write through the gRPC face (create,
update, each patch type, server-side apply) and never stored or returned, as Kubernetes does."""

from __future__ import annotations

import json

import grpc
import pytest

from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import core_pb2

from .conftest import Client, unpack


async def _patch(
    client: Client, doc: object, patch_type: str, manager: str = ""
) -> core_pb2.Secret:
    req = api.PatchRequest(
        resource="secrets",
        namespace="default",
        name="sd",
        patch_type=patch_type,
        patch=json.dumps(doc).encode(),
        field_manager=manager,
        force=bool(manager),
    )
    resp = await client.stub.Patch(req, timeout=10)
    secret: core_pb2.Secret = unpack(resp.object, core_pb2.Secret)
    return secret


async def _stored(client: Client) -> core_pb2.Secret:
    secret: core_pb2.Secret = unpack((await client.get("secrets", "sd", "default")).object,
                                     core_pb2.Secret)  # fmt: skip
    assert not secret.string_data, secret
    return secret


async def test_string_data_is_merged_into_data_on_every_write(client: Client) -> None:
    new = core_pb2.Secret(data={"a": b"1", "b": b"2"}, string_data={"b": "two", "c": "3"})
    new.metadata.name = "sd"
    resp = await client.create("secrets", new, "default")
    created = unpack(resp.object, core_pb2.Secret)
    assert dict(created.data) == {"a": b"1", "b": b"two", "c": b"3"}
    assert not created.string_data
    assert dict((await _stored(client)).data) == dict(created.data)

    stored = await _stored(client)
    stored.string_data["a"] = "one"
    updated = unpack((await client.update("secrets", stored)).object, core_pb2.Secret)
    assert (updated.data["a"], updated.string_data) == (b"one", {})

    for patch_type, doc, key in (
        ("merge", {"stringData": {"m": "merge"}}, "m"),
        ("strategic", {"stringData": {"s": "strategic"}}, "s"),
        ("json", [{"op": "add", "path": "/stringData", "value": {"j": "json"}}], "j"),
    ):
        patched = await _patch(client, doc, patch_type)
        assert patched.data[key] == doc_value(doc, key).encode(), patch_type
        assert not patched.string_data, patch_type
    assert (await _stored(client)).data["j"] == b"json"

    applied = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sd"},
               "stringData": {"a": "applied"}}  # fmt: skip
    out = await _patch(client, applied, "apply", manager="sd-test")
    assert (out.data["a"], out.string_data) == (b"applied", {})
    assert dict((await _stored(client)).data) == {
        "a": b"applied", "b": b"two", "c": b"3", "m": b"merge", "s": b"strategic", "j": b"json",
    }  # fmt: skip
    await client.delete("secrets", "sd", "default")


def doc_value(doc: object, key: str) -> str:
    """The stringData value a patch document sets for `key`."""
    if isinstance(doc, list):
        return str(doc[0]["value"][key])
    assert isinstance(doc, dict)
    return str(doc["stringData"][key])


def _named(obj: core_pb2.ConfigMap | core_pb2.Secret, name: str) -> None:
    obj.metadata.name = name


async def _refusal(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    return err.value.details() or ""


async def test_immutable_data_stays_and_the_flag_cannot_be_taken_back(client: Client) -> None:
    cm = core_pb2.ConfigMap(data={"a": "1"}, binary_data={"b": b"\x00"}, immutable=True)
    _named(cm, "frozen-cm")
    await client.create("configmaps", cm, "default")
    stored = unpack((await client.get("configmaps", "frozen-cm", "default")).object,
                    core_pb2.ConfigMap)  # fmt: skip
    changed = core_pb2.ConfigMap()
    changed.CopyFrom(stored)
    changed.data["a"], changed.binary_data["b"], changed.immutable = "2", b"\x01", False
    text = await _refusal(client.update("configmaps", changed))
    for field in ("data", "binaryData", "immutable"):
        assert f"{field}: Forbidden: field is immutable when `immutable` is set" in text, text
    # Metadata may change; the data is what it was.
    stored.metadata.labels["l"] = "v"
    await client.update("configmaps", stored)
    got = unpack((await client.get("configmaps", "frozen-cm", "default")).object,
                 core_pb2.ConfigMap)  # fmt: skip
    assert (dict(got.data), got.metadata.labels["l"]) == ({"a": "1"}, "v")

    secret = core_pb2.Secret(data={"k": b"v"}, immutable=True)
    _named(secret, "frozen-secret")
    await client.create("secrets", secret, "default")
    stored_secret = unpack((await client.get("secrets", "frozen-secret", "default")).object,
                           core_pb2.Secret)  # fmt: skip
    assert stored_secret.type == "Opaque"
    stored_secret.string_data["k"] = "other"
    text = await _refusal(client.update("secrets", stored_secret))
    assert "data: Forbidden: field is immutable when `immutable` is set" in text, text
    for name, kind in (("frozen-cm", "configmaps"), ("frozen-secret", "secrets")):
        await client.delete(kind, name, "default")


async def test_keys_sizes_and_types_are_checked(client: Client) -> None:
    cm = core_pb2.ConfigMap(data={"bad key": "1", "..x": "2", "dup": "3"}, binary_data={"dup": b""})
    _named(cm, "bad-cm")
    text = await _refusal(client.create("configmaps", cm, "default"))
    assert 'data[bad key]: Invalid value: "bad key": a valid config key must consist' in text
    assert "data[..x]: Invalid value: \"..x\": must not start with '..'" in text, text
    assert 'data[dup]: Invalid value: "dup": duplicate of key present in binaryData' in text
    big = core_pb2.ConfigMap(data={"a": "x" * 700_000, "b": "y" * 400_000})
    _named(big, "big-cm")
    text = await _refusal(client.create("configmaps", big, "default"))
    assert "data: Too long: must have at most 1048576 bytes" in text, text
    tls = core_pb2.Secret(type="kubernetes.io/tls", data={"tls.crt": b"c"})
    _named(tls, "half-tls")
    text = await _refusal(client.create("secrets", tls, "default"))
    assert "data[tls.key]: Required value" in text, text
    token = core_pb2.Secret(type="kubernetes.io/service-account-token")
    _named(token, "no-sa")
    text = await _refusal(client.create("secrets", token, "default"))
    assert "metadata.annotations[kubernetes.io/service-account.name]: Required value" in text
    for name in ("bad-cm", "big-cm"):
        with pytest.raises(grpc.aio.AioRpcError):
            await client.get("configmaps", name, "default")
