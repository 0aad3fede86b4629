"""The kubelet's ServiceAccount token mount against the secured API server, acting as node-1
(its token in the gRPC metadata, where a kubelet will present its client certificate): the
files of /var/run/secrets/kubernetes.io/serviceaccount/, a token that authenticates as the
pod's ServiceAccount, automountServiceAccountToken honoured, and no token for a pod of
another node (the Node authorizer)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from k8semu.bench._auth import channel as bearer_channel
from k8semu.client import Client
from k8semu.kubelet.env import EnvError
from k8semu.kubelet.satoken import MOUNT_PATH, TokenMounter
from k8semu.pb.api.v1 import core_pb2
from tests.security.conftest import Secured
from tests.support.poll import Eventually

ADMIN, NODE1 = "admin-token", "node1-token"


@pytest.fixture
async def node_client(secured: Secured) -> AsyncIterator[Client]:
    def channel(address: str) -> grpc.aio.Channel:
        return bearer_channel(address, (), NODE1)

    async with Client([secured.grpc_address], channel_factory=channel) as client:
        yield client


def _pod(secured: Secured, name: str, node: str, automount: bool | None = None) -> core_pb2.Pod:
    spec: dict[str, Any] = {"nodeName": node, "serviceAccountName": "runner",
                            "containers": [{"name": "c", "image": "x"}]}  # fmt: skip
    if automount is not None:
        spec["automountServiceAccountToken"] = automount
    code, body = secured.request("POST", "/api/v1/namespaces/default/pods", ADMIN,
                                 {"metadata": {"name": name}, "spec": spec})  # fmt: skip
    assert code == 201, body
    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace = name, "default"
    pod.metadata.uid = body["metadata"]["uid"]
    pod.spec.node_name, pod.spec.service_account_name = node, "runner"
    if automount is not None:
        pod.spec.automount_service_account_token = automount
    return pod


async def test_token_mount(secured: Secured, node_client: Client) -> None:
    code, body = secured.request("POST", "/api/v1/namespaces/default/serviceaccounts", ADMIN,
                                 {"metadata": {"name": "runner"}})  # fmt: skip
    assert code in (201, 409), body
    ca = {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "PEM"}}
    assert secured.request("POST", "/api/v1/namespaces/default/configmaps", ADMIN, ca)[0] == 201
    mine = _pod(secured, "mounted", "node-1")
    mounter = TokenMounter(node_client)
    # The pod reaches the Node authorizer's graph through the watch cache: poll.
    poll = Eventually(retry_on=(EnvError,))
    files = await poll(lambda: mounter.files(mine), what="the token mount of node-1's pod")
    by_path = {f.path: f for f in files}
    assert set(by_path) == {f"{MOUNT_PATH}/", f"{MOUNT_PATH}/token", f"{MOUNT_PATH}/ca.crt",
                            f"{MOUNT_PATH}/namespace"}  # fmt: skip
    assert by_path[f"{MOUNT_PATH}/namespace"].data == b"default"
    assert by_path[f"{MOUNT_PATH}/ca.crt"].data == b"PEM"
    token = by_path[f"{MOUNT_PATH}/token"].data.decode()
    code, body = secured.request("GET", "/api/v1/namespaces/default/secrets", token)
    assert code == 403, body  # authenticated as the ServiceAccount, which may not list secrets
    assert 'User "system:serviceaccount:default:runner"' in body["message"]
    assert await mounter.files(_pod(secured, "opted-out", "node-1", automount=False)) == []
    theirs = _pod(secured, "elsewhere", "node-2")
    with pytest.raises(EnvError, match="forbidden"):
        await mounter.files(theirs)
