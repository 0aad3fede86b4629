"""Server-side apply through the gRPC face (PatchRequest patch_type "apply", field_manager,
force): the same fieldmanager as the REST PATCH, against a real store and API server."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import core_pb2

from .conftest import Client, unpack


def _config(data: dict[str, str]) -> bytes:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "grpc-apply"}}
    return json.dumps({**doc, "data": data}).encode()


async def _apply(client: Client, data: dict[str, str], manager: str, **more: Any) -> Any:
    req = api.PatchRequest(
        resource="configmaps",
        namespace="default",
        name="grpc-apply",
        patch_type="apply",
        patch=_config(data),
        field_manager=manager,
        **more,
    )
    resp = await client.stub.Patch(req, timeout=10)
    return unpack(resp.object, core_pb2.ConfigMap)


async def test_apply_over_grpc(client: Client) -> None:
    created = await _apply(client, {"a": "1", "b": "2"}, "one")
    assert dict(created.data) == {"a": "1", "b": "2"}
    assert [(e.manager, e.operation) for e in created.metadata.managed_fields] == [("one", "Apply")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _apply(client, {"a": "changed"}, "two")
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert 'conflict with "one" using v1: .data.a' in (caught.value.details() or "")
    forced = await _apply(client, {"a": "changed"}, "two", force=True)
    assert dict(forced.data) == {"a": "changed", "b": "2"}
    dropped = await _apply(client, {"a": "changed"}, "one")  # "one" stops applying b
    assert dict(dropped.data) == {"a": "changed"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _apply(client, {"a": "x"}, "")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fieldManager: Required value" in (caught.value.details() or "")
