"""Server-side apply through the gRPC face (PatchRequest patch_type "apply", field_manager,
force): the same fieldmanager as the REST PATCH, against a real store and API server."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from k8semu import transport
from k8semu.apiserver.grpcface import FIELD_MANAGER_METADATA, caller_manager
from k8semu.apiserver.objects import pack
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import apiserver_pb2_grpc, core_pb2
from tests.support.apiserver import APIServerProcess

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
    obj = unpack(resp.object, core_pb2.ConfigMap)
    obj.metadata.annotations["created"] = str(resp.created)  # for the test to read
    return obj


async def test_apply_over_grpc(client: Client) -> None:
    created = await _apply(client, {"a": "1", "b": "2"}, "one")
    assert dict(created.data) == {"a": "1", "b": "2"}
    assert created.metadata.annotations["created"] == "True"
    assert [(e.manager, e.operation) for e in created.metadata.managed_fields] == [("one", "Apply")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _apply(client, {"a": "changed"}, "two")
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert 'conflict with "one" using v1: .data.a' in (caught.value.details() or "")
    forced = await _apply(client, {"a": "changed"}, "two", force=True)
    assert dict(forced.data) == {"a": "changed", "b": "2"}
    assert forced.metadata.annotations["created"] == "False"
    dropped = await _apply(client, {"a": "changed"}, "one")  # "one" stops applying b
    assert dict(dropped.data) == {"a": "changed"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _apply(client, {"a": "x"}, "")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fieldManager: Required value" in (caught.value.details() or "")


async def test_grpc_writes_record_the_callers_manager(apiserver: APIServerProcess) -> None:
    """A write names its manager by metadata, else by its user agent (k8semu.client sends the
    component's name); an apply then conflicts with what that manager changed."""
    cm = core_pb2.ConfigMap()
    cm.metadata.name, cm.metadata.namespace = "grpc-managers", "default"
    cm.data["a"] = "1"
    async with transport.channel(apiserver.address, user_agent="kube-controller-manager") as ch:
        stub = apiserver_pb2_grpc.APIStub(ch)
        made = await stub.Create(api.CreateRequest(resource="configmaps", namespace="default",
                                                   object=pack(cm)), timeout=10)  # fmt: skip
        cm = unpack(made.object, core_pb2.ConfigMap)
        cm.data["b"] = "2"
        meta = ((FIELD_MANAGER_METADATA, "my-script"),)
        done = await stub.Update(
            api.UpdateRequest(resource="configmaps", object=pack(cm)), timeout=10, metadata=meta
        )
    got = unpack(done.object, core_pb2.ConfigMap)
    owners = {e.manager: (e.operation, json_format.MessageToDict(e.fields_v1))
              for e in got.metadata.managed_fields}  # fmt: skip
    assert owners == {
        "kube-controller-manager": ("Update", {"f:data": {"f:a": {}}}),
        "my-script": ("Update", {"f:data": {"f:b": {}}}),
    }
    async with transport.channel(apiserver.address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await apiserver_pb2_grpc.APIStub(ch).Patch(
                api.PatchRequest(
                    resource="configmaps", namespace="default", name="grpc-managers",
                    patch_type="apply", field_manager="kubectl",
                    patch=json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": {"name": "grpc-managers"},
                                      "data": {"a": "9"}}).encode(),
                ),
                timeout=10,
            )  # fmt: skip
    assert 'conflict with "kube-controller-manager" using v1: .data.a' in (
        caught.value.details() or ""
    )
    assert (
        caller_manager((("user-agent", "kubelet grpc-python-asyncio/1.6 grpc-c/4"),)) == "kubelet"
    )
    assert caller_manager((("user-agent", "grpc-python/1.6 grpc-c/4"),)) == "grpc-python"
    assert caller_manager(()) == ""
