"""A Secret's stringData is merged into data on every write through the gRPC face (create,
update, each patch type, server-side apply) and never stored or returned, as Kubernetes does."""

from __future__ import annotations

import json

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
