"""RBAC, the Node authorizer and authentication end to end: a real store and API server
(token file, ServiceAccount keys, --authorization-mode Node,RBAC, an audit log), driven over
REST (urllib, kubectl, the Python kubernetes client) and gRPC with bearer tokens. Every
refused attempt gets Kubernetes' code and wording, and writes nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from k8semu.apiserver.auth.tokens import Issuer, TokenClaims
from k8semu.cluster.processes import free_loopback_ports
from k8semu.pb.api.v1 import (
    apiserver_pb2,
    apiserver_pb2_grpc,
    authorization_pb2,
    podstreams_pb2_grpc,
)
from k8semu.pb.kubelet.v1 import kubelet_pb2
from tests.apiserver.rest.conftest import REST
from tests.security.conftest import Secured, wait_until
from tests.support.apiserver import APIServerProcess

ADMIN, ALICE, NODE1 = "admin-token", "alice-token", "node1-token"
ISSUER = "https://kubernetes.default.svc.cluster.local"
GROUP = "rbac.authorization.k8s.io"


def _ok(result: tuple[int, Any], code: int = 200) -> Any:
    got, body = result
    assert got == code, body
    return body


def _namespace(s: Secured, name: str) -> None:
    code, body = s.request("POST", "/api/v1/namespaces", ADMIN, {"metadata": {"name": name}})
    assert code in (201, 409), body


def _sa_token(s: Secured, namespace: str, name: str) -> str:
    _namespace(s, namespace)
    code, body = s.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", ADMIN,
                           {"metadata": {"name": name}})  # fmt: skip
    assert code in (201, 409), body
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
    review = _ok(s.request("POST", path, ADMIN, {"spec": {"expirationSeconds": 3600}}), 201)
    assert review["kind"] == "TokenRequest" and review["status"]["expirationTimestamp"]
    return str(review["status"]["token"])


@pytest.fixture(scope="module")
def viewer(secured: Secured) -> str:
    """A ServiceAccount team-a/reader bound to `view` in team-a; its token."""
    token = _sa_token(secured, "team-a", "reader")
    _namespace(secured, "team-b")
    binding = {
        "metadata": {"name": "reader-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "team-a"}],
    }
    path = "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings"
    _ok(secured.request("POST", path, ADMIN, binding), 201)
    # The binding reaches the authorizer through the watch cache: wait until it counts.
    wait_until(lambda: secured.request("GET", "/api/v1/namespaces/team-a/pods", token)[0] == 200,
               timeout=30, message="the RoleBinding never took effect")  # fmt: skip
    return token


def test_no_or_bad_credentials_401(secured: Secured) -> None:
    key = serialization.load_pem_private_key(secured.signing_key.read_bytes(), password=None)
    expired, _ = Issuer(key, ISSUER, (ISSUER,)).sign(  # type: ignore[arg-type]
        TokenClaims("default", "default", ""), now=time.time() - 7200
    )
    for token in ("", "garbled", "a.b.c", expired):
        code, body = secured.request("GET", "/api/v1/namespaces/default/configmaps", token)
        assert code == 401, (token, body)
        assert body["reason"] == "Unauthorized" and body["message"] == "Unauthorized"
    with grpc.insecure_channel(secured.grpc_address) as channel:
        stub = apiserver_pb2_grpc.APIStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.List(apiserver_pb2.ListRequest(resource="pods"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_service_account_bound_to_view(secured: Secured, viewer: str) -> None:
    _ok(secured.request("GET", "/api/v1/namespaces/team-a/pods", viewer))
    code, body = secured.request("GET", "/api/v1/namespaces/team-a/secrets/x", viewer)
    assert code == 403
    assert body["message"] == (
        'secrets "x" is forbidden: User "system:serviceaccount:team-a:reader" cannot get'
        ' resource "secrets" in API group "" in the namespace "team-a"'
    )
    assert body["reason"] == "Forbidden" and body["details"] == {"kind": "secrets", "name": "x"}
    pod = {"metadata": {"name": "intruder"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    assert secured.request("POST", "/api/v1/namespaces/team-a/pods", viewer, pod)[0] == 403
    assert secured.request("GET", "/api/v1/namespaces/team-b/pods", viewer)[0] == 403
    assert secured.request("GET", "/api/v1/pods", viewer)[0] == 403  # every namespace
    # Nothing was written.
    assert _ok(secured.request("GET", "/api/v1/namespaces/team-a/pods", ADMIN))["items"] == []


def test_python_client_with_bearer_token(secured: Secured, viewer: str) -> None:
    kubernetes = pytest.importorskip("kubernetes")
    config = kubernetes.client.Configuration()
    config.host = secured.url
    config.api_key = {"authorization": f"Bearer {viewer}"}
    with kubernetes.client.ApiClient(config) as api:
        core = kubernetes.client.CoreV1Api(api)
        assert core.list_namespaced_config_map("team-a").items is not None
        with pytest.raises(kubernetes.client.ApiException) as err:
            core.list_namespaced_secret("team-a")
        assert err.value.status == 403
        body = kubernetes.client.V1ConfigMap(metadata={"name": "nope"})
        with pytest.raises(kubernetes.client.ApiException) as err:
            core.create_namespaced_config_map("team-b", body)
        assert err.value.status == 403


@pytest.fixture(scope="module")
def open_server(secured: Secured, viewer: str) -> Iterator[Secured]:
    """A second API server on the same store that lets anonymous requests in (kubectl sends
    no token over plain HTTP), where anonymous may only impersonate (granted below)."""
    role = {"metadata": {"name": "test-impersonator"}, "rules": [{"verbs": ["impersonate"],
            "apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"]}]}  # fmt: skip
    binding = {
        "metadata": {"name": "test-impersonator"},
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "test-impersonator"},
        "subjects": [{"kind": "Group", "apiGroup": GROUP, "name": "system:unauthenticated"}],
    }
    for plural, doc in (("clusterroles", role), ("clusterrolebindings", binding)):
        _ok(secured.request("POST", f"/apis/{GROUP}/v1/{plural}", ADMIN, doc), 201)
    port = free_loopback_ports(1)[0]
    args = ["--rest-address", f"127.0.0.1:{port}", "--anonymous-auth=true",
            "--authorization-mode", "RBAC",
            "--service-account-signing-key-file", str(secured.signing_key)]  # fmt: skip
    server = APIServerProcess(_Endpoints(list(secured.store_endpoints)),
                              secured.base / "open.log", args)  # fmt: skip
    try:
        server.wait_serving()
        yield dataclasses.replace(secured, url=f"http://127.0.0.1:{port}")
    finally:
        server.close()


@dataclasses.dataclass
class _Endpoints:
    endpoints: list[str]


def test_kubectl_auth_can_i_and_impersonation(open_server: Secured) -> None:
    # kubectl --server URL (tests/apiserver/rest's helper); check=False gives stdout+stderr.
    kubectl = REST(open_server.url, "", ()).kubectl
    as_reader = "--as=system:serviceaccount:team-a:reader"
    assert kubectl(as_reader, "auth", "can-i", "list", "pods", "-n", "team-a") == "yes\n"
    for verb, what in (("create", "pods"), ("get", "secrets")):
        no = kubectl(as_reader, "auth", "can-i", verb, what, "-n", "team-a", check=False)
        assert no == "no\n"
    root = ("--as=root", "--as-group=system:masters")
    assert kubectl(*root, "auth", "can-i", "*", "*") == "yes\n"
    denied = kubectl(as_reader, "get", "secrets", "-n", "team-a", check=False)
    assert (
        'User "system:serviceaccount:team-a:reader" cannot list resource "secrets" in API group'
        ' "" in the namespace "team-a"'
    ) in denied
    out = kubectl(*root, "get", "clusterroles", "-o", "name").split()
    assert {"clusterrole.rbac.authorization.k8s.io/cluster-admin",
            "clusterrole.rbac.authorization.k8s.io/view"} <= set(out)  # fmt: skip
    anonymous = kubectl("get", "pods", check=False)  # may only impersonate
    assert 'User "system:anonymous" cannot list resource "pods"' in anonymous
    # kubectl create token: a TokenRequest in Kubernetes' protobuf.
    token = kubectl(*root, "create", "token", "reader", "-n", "team-a", "--duration=20m").strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:team-a:reader"
    assert claims["exp"] - claims["iat"] == 1200
    assert open_server.request("GET", "/api/v1/namespaces/team-a/pods", token)[0] == 200


def test_grpc_face_authorizes(secured: Secured, viewer: str) -> None:
    with grpc.insecure_channel(secured.grpc_address) as channel:
        stub = apiserver_pb2_grpc.APIStub(channel)
        auth = (("authorization", f"Bearer {viewer}"),)
        stub.List(apiserver_pb2.ListRequest(resource="pods", namespace="team-a"),
                  metadata=auth, timeout=10)  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            stub.Get(apiserver_pb2.GetRequest(resource="secrets", namespace="team-a", name="s"),
                     metadata=auth, timeout=10)  # fmt: skip
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert 'cannot get resource "secrets"' in str(err.value.details())
        with pytest.raises(grpc.RpcError) as err:
            watch = stub.Watch(apiserver_pb2.WatchRequest(resource="pods", namespace="team-b"),
                               metadata=auth, timeout=10)  # fmt: skip
            next(iter(watch))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_pod_streams_are_authorized_on_both_faces(secured: Secured, viewer: str) -> None:
    """`view` may read pods/log but not open pods/exec: over gRPC (PodStreams, what `k8semu
    logs|exec` use) and REST, exec is refused before any pod lookup, logs get as far as it."""
    with grpc.insecure_channel(secured.grpc_address) as channel:
        stub = podstreams_pb2_grpc.PodStreamsStub(channel)
        auth = (("authorization", f"Bearer {viewer}"),)
        logs = kubelet_pb2.LogsRequest(namespace="team-a", pod="ghost")
        with pytest.raises(grpc.RpcError) as err:
            next(iter(stub.Logs(logs, metadata=auth, timeout=10)))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # authorized, then no such pod
        start = kubelet_pb2.InteractInput(
            start=kubelet_pb2.ExecStart(namespace="team-a", pod="ghost", command=["ls"])
        )
        with pytest.raises(grpc.RpcError) as err:
            next(iter(stub.Interact(iter([start]), metadata=auth, timeout=10)))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert 'cannot create resource "pods/exec"' in str(err.value.details())
    base = "/api/v1/namespaces/team-a/pods/ghost"
    assert secured.request("GET", f"{base}/log", viewer)[0] == 404
    code, body = secured.request("GET", f"{base}/exec?command=ls&stdout=true", viewer)
    assert code == 403 and 'cannot create resource "pods/exec"' in body["message"]


def test_bad_rbac_objects_invalid(secured: Secured) -> None:
    binding = {"metadata": {"name": "bad"}, "roleRef": {"kind": "Nope", "name": "view"},
               "subjects": [{"kind": "User", "name": "x"}]}  # fmt: skip
    path = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
    code, body = secured.request("POST", path, ADMIN, binding)
    assert code == 422, body
    assert (
        'roleRef.kind: Unsupported value: "Nope": supported values: "ClusterRole"'
        in (body["message"])
    )
    assert secured.request("GET", f"{path}/bad", ADMIN)[0] == 404


def test_node_authorizer(secured: Secured) -> None:
    for name, token, code in (("node-1", NODE1, 201), ("node-2", NODE1, 403)):
        got, body = secured.request("POST", "/api/v1/nodes", token, {"metadata": {"name": name}})
        assert got == code, body
    for pod, node in (("on-1", "node-1"), ("on-2", "node-2")):
        secret = {"metadata": {"name": f"{pod}-secret"}, "stringData": {"k": "v"}}
        _ok(secured.request("POST", "/api/v1/namespaces/default/secrets", ADMIN, secret), 201)
        doc = {"metadata": {"name": pod}, "spec": {"nodeName": node,
               "containers": [{"name": "c", "image": "x"}],
               "volumes": [{"name": "s", "secret": {"secretName": f"{pod}-secret"}}]}}  # fmt: skip
        _ok(secured.request("POST", "/api/v1/namespaces/default/pods", ADMIN, doc), 201)
    path = "/api/v1/namespaces/default/secrets/"
    wait_until(lambda: secured.request("GET", path + "on-1-secret", NODE1)[0] == 200, timeout=30,
               message="node-1 never got its pod's secret")  # fmt: skip
    code, body = secured.request("GET", path + "on-2-secret", NODE1)
    assert code == 403
    assert "no relationship found between node 'node-1' and this object" in body["message"]
    status = {"status": {"phase": "Running"}}
    for pod, code in (("on-1", 200), ("on-2", 403)):
        got, _ = secured.request("PATCH", f"/api/v1/namespaces/default/pods/{pod}/status", NODE1,
                                 status, "application/merge-patch+json")  # fmt: skip
        assert got == code, pod


def test_audit_line_for_a_create(secured: Secured) -> None:
    cm = {"metadata": {"name": "audited"}, "data": {"a": "b"}}
    _ok(secured.request("POST", "/api/v1/namespaces/default/configmaps", ADMIN, cm), 201)
    lines = [json.loads(line) for line in secured.audit_log.read_text().splitlines()]
    mine = [e for e in lines if e["verb"] == "create" and e.get("objectRef", {}).get(
        "resource") == "configmaps"]  # fmt: skip
    assert mine, lines[-3:]
    event = mine[-1]
    assert event["user"]["username"] == "admin"
    assert event["responseStatus"]["code"] == 201
    assert event["objectRef"]["namespace"] == "default"
    assert event["level"] == "Metadata" and "requestObject" not in event
    refused = [e for e in lines if e["responseStatus"]["code"] == 401]
    assert refused  # the unauthenticated attempts are audited too (as system:anonymous)


def _k8semu(s: Secured, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k8semu", *args, "--server", s.grpc_address],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(s.base / "no-kubeconfig")},
    )


def test_k8semu_auth_can_i(secured: Secured, viewer: str) -> None:
    yes = _k8semu(secured, "auth", "can-i", "list", "pods", "-n", "team-a", "--token", viewer)
    assert (yes.returncode, yes.stdout) == (0, "yes\n"), yes.stderr
    for args in (("get", "secrets", "-n", "team-a"), ("list", "pods", "-n", "team-b"),
                 ("create", "deployments.apps", "-n", "team-a")):  # fmt: skip
        no = _k8semu(secured, "auth", "can-i", *args, "--token", viewer)
        assert (no.returncode, no.stdout) == (1, "no\n"), (args, no.stderr)
    as_reader = ("--as", "system:serviceaccount:team-a:reader")
    assert _k8semu(secured, "auth", "can-i", "get", "pods/log", "-n", "team-a", *as_reader,
                   "--token", ADMIN).stdout == "yes\n"  # fmt: skip
    refused = _k8semu(secured, "auth", "can-i", "get", "pods", *as_reader, "--token", viewer)
    assert refused.returncode == 1
    assert 'cannot impersonate resource "serviceaccounts"' in refused.stderr
    bad = _k8semu(secured, "auth", "can-i", "get", "widgets", "--token", ADMIN)
    assert 'the server doesn\'t have a resource type "widgets"' in bad.stderr


def test_grpc_token_request(secured: Secured, viewer: str) -> None:
    with grpc.insecure_channel(secured.grpc_address) as channel:
        stub = apiserver_pb2_grpc.APIStub(channel)
        admin = (("authorization", f"Bearer {ADMIN}"),)
        answer = stub.CreateToken(
            apiserver_pb2.CreateTokenRequest(namespace="team-a", name="reader"),
            metadata=admin,
            timeout=10,
        )
        token = answer.status.token
        review = stub.Review(
            authorization_pb2.SelfSubjectAccessReview(
                spec={
                    "resource_attributes": {
                        "verb": "list",
                        "resource": "pods",
                        "namespace": "team-a",
                    }
                }
            ),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
        assert review.status.allowed
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateToken(apiserver_pb2.CreateTokenRequest(namespace="team-a", name="nobody"),
                             metadata=admin, timeout=10)  # fmt: skip
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        as_viewer = (("authorization", f"Bearer {viewer}"),)
        with pytest.raises(grpc.RpcError) as err:  # a viewer may not mint tokens
            stub.CreateToken(apiserver_pb2.CreateTokenRequest(namespace="team-a", name="reader"),
                             metadata=as_viewer, timeout=10)  # fmt: skip
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
