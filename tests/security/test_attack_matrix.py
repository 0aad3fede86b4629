"""The attack matrix against a live `k8semu up` cluster (TLS and authorization: the default).

One cluster for the module (free ports, one worker w1 running a pod that uses a Secret), then
each attempt with the wrong credentials, its refusal and its code, and a look afterwards that
nothing was written:

- the API's REST face without credentials (401), gRPC without a certificate (the handshake
  is refused: UNAVAILABLE, nothing reaches a servicer);
- a certificate of another CA (REST and gRPC: handshake refused);
- an expired ServiceAccount token (401);
- another node's kubelet certificate writing w1's Node or its pod's status, or reading the
  Secret w1's pod uses (403); w1's own certificate reading a Secret no pod of w1 uses (403);
- a ServiceAccount bound to `view` in team-a reading Secrets, creating a pod, reading team-b
  (403, nothing created);
- the token gRPC port (pods' gRPC clients: no certificate) without a token or with a bad
  one (UNAUTHENTICATED), with the `view` token (answered; Secrets and team-b
  PERMISSION_DENIED);
- the store with a kubelet's certificate (refused: only the API servers reach it);
- a bootstrap token from `k8semu token create`: system:bootstrap:<id> (403 on pods), a
  wrong secret 401, expired 401;
- and the pod side: the Python `kubernetes` client's in-cluster config in a pod lists its
  namespace's pods with the mounted token and CA, and is refused Secrets (403).
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from k8semu import pki, transport
from k8semu.apiserver.auth.config import DEFAULT_ISSUER
from k8semu.apiserver.auth.tokens import Issuer, TokenClaims
from k8semu.cluster.state import read_state
from k8semu.pb.api.v1 import apiserver_pb2, apiserver_pb2_grpc
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.cluster.test_up import Up
from tests.security.conftest import wait_until
from tests.support.cluster import START_TIMEOUT_S, k8semu, user_env, write_config

TIMEOUT = 30.0
SECRET_VALUE = "s3cr3t-attack-matrix"


@dataclass(frozen=True)
class Live:
    state: Path
    rest: str  # https://HOST:PORT
    grpc: str  # HOST:PORT
    store: str  # HOST:PORT of the store's client port
    env: dict[str, str]  # `up`'s environment: the CLI's current context is this cluster

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    def files(self, name: str) -> pki.CertFiles:
        return pki.CertFiles(
            self.pki / f"{name}.crt", self.pki / f"{name}.key", self.pki / "ca.crt"
        )

    def context(self, cert: str = "", ca: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca or self.pki / "ca.crt"))
        if cert:
            files = self.files(cert) if "/" not in cert else _pair(Path(cert))
            ctx.load_cert_chain(str(files.cert), str(files.key))
        return ctx

    def request(
        self, method: str, path: str, *, cert: str = "", token: str = "", doc: Any = None
    ) -> tuple[int, Any]:
        """(status, parsed body) of one REST request with a certificate and/or token."""
        body = None if doc is None else json.dumps(doc).encode()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.rest + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT, context=self.context(cert)) as r:
                code, raw = r.status, r.read()
        except urllib.error.HTTPError as exc:
            code, raw = exc.code, exc.read()
        return code, json.loads(raw) if raw else None

    def admin(self, method: str, path: str, doc: Any = None) -> Any:
        code, body = self.request(method, path, cert="admin", doc=doc)
        assert code in (200, 201), (method, path, code, body)
        return body


def _pair(crt: Path) -> pki.CertFiles:
    return pki.CertFiles(crt, crt.with_suffix(".key"), crt.parent / "ca.crt")


def _pod(name: str, node: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "k8semu/process", "command": command}],
            **spec,
        },
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("attack")
    # write_config gives the cluster a Service range of its own: a pod must reach this
    # cluster's `kubernetes` Service, not another's on the same loopback ClusterIP.
    config = write_config(tmp / "cluster.yaml", name="attack", addons=False)
    state = tmp / "state"
    env = user_env(tmp)
    up = Up(env, "-f", config, "--state-dir", state)
    try:
        up.wait_for(r"^Supervising", START_TIMEOUT_S)
        st = read_state(state)
        api = st.component("apiserver-1")
        assert api is not None
        live = Live(state, f"https://{api.ports['rest']}", api.address, st.store_members[0][1], env)
        _setup(live)
        yield live
    finally:
        up.proc.send_signal(signal.SIGINT)  # the launcher stops its processes and pods
        up.finish(60)
        up.close()


def _setup(live: Live) -> None:
    """The Secret `db` used by a pod on w1; namespaces team-a and team-b; another node's
    kubelet certificate (system:node:w2, signed by the cluster CA)."""
    live.admin(
        "POST",
        "/api/v1/namespaces/default/secrets",
        {"metadata": {"name": "db"}, "stringData": {"password": SECRET_VALUE}},
    )
    live.admin("POST", "/api/v1/namespaces/default/secrets",
               {"metadata": {"name": "unused"}, "stringData": {"k": "v"}})  # fmt: skip
    pod = _pod("uses-db", "w1", ["sleep", "600"],
               volumes=[{"name": "s", "secret": {"secretName": "db"}}])  # fmt: skip
    live.admin("POST", "/api/v1/namespaces/default/pods", pod)
    for ns in ("team-a", "team-b"):
        live.admin("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    ca = pki.CertificateAuthority.load_or_create(live.pki)
    ca.ensure(pki.CertSpec("kubelet-w2", "system:node:w2", ("system:nodes",), server=False))


def test_rest_without_credentials_is_401_and_writes_nothing(live: Live) -> None:
    assert live.request("GET", "/api/v1/namespaces/default/pods")[0] == 401
    doc = _pod("anon", "w1", ["true"])
    code, body = live.request("POST", "/api/v1/namespaces/default/pods", doc=doc)
    assert code == 401 and body["reason"] == "Unauthorized", body
    assert live.request("GET", "/version")[0] == 401  # anonymous is off altogether
    assert live.request("GET", "/api/v1/namespaces/default/pods/anon", cert="admin")[0] == 404


def _grpc_list(live: Live, tls: transport.ClientTLS) -> grpc.StatusCode | None:
    async def call() -> grpc.StatusCode | None:
        async with transport.channel(live.grpc, tls=tls) as ch:
            stub = apiserver_pb2_grpc.APIStub(ch)
            try:
                await stub.List(apiserver_pb2.ListRequest(resource="pods"), timeout=10)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return None

    return asyncio.run(call())


def test_grpc_without_a_certificate_or_with_another_ca_is_refused(
    live: Live, rogue_pki: Any
) -> None:
    ca = live.pki / "ca.crt"
    assert _grpc_list(live, transport.ClientTLS(ca_file=ca)) == grpc.StatusCode.UNAVAILABLE
    rogue = rogue_pki["admin"]
    wrong = transport.ClientTLS(ca_file=ca, cert_file=rogue.cert, key_file=rogue.key)
    assert _grpc_list(live, wrong) == grpc.StatusCode.UNAVAILABLE
    admin = live.files("admin")
    ok = transport.ClientTLS(ca_file=ca, cert_file=admin.cert, key_file=admin.key)
    assert _grpc_list(live, ok) is None


def test_rest_with_another_cas_certificate_fails_the_handshake(live: Live, rogue_pki: Any) -> None:
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        live.request("GET", "/api/v1/namespaces/default/pods", cert=str(rogue_pki["admin"].cert))


def test_an_expired_serviceaccount_token_is_401(live: Live) -> None:
    sa = live.admin("GET", "/api/v1/namespaces/default/serviceaccounts/default")
    key = serialization.load_pem_private_key((live.pki / "sa.key").read_bytes(), None)
    issuer = Issuer(key, DEFAULT_ISSUER, (DEFAULT_ISSUER,))  # type: ignore[arg-type]
    claims = TokenClaims("default", "default", sa["metadata"]["uid"])
    fresh, _ = issuer.sign(claims, expiration=600)
    expired, _ = issuer.sign(claims, expiration=600, now=time.time() - 3600)
    # The same token, in date, authenticates (then RBAC refuses the default account: 403).
    assert live.request("GET", "/api/v1/namespaces/default/pods", token=fresh)[0] == 403
    code, body = live.request("GET", "/api/v1/namespaces/default/pods", token=expired)
    assert code == 401 and body["message"] == "Unauthorized", body


def test_another_nodes_kubelet_is_refused_w1s_objects(live: Live) -> None:
    w2 = str(live.pki / "kubelet-w2.crt")
    patch = {"metadata": {"labels": {"attacker": "w2"}}}
    code, body = _patch(live, "/api/v1/nodes/w1", patch, w2)
    assert code == 403 and "no relationship found between node 'w2'" in body["message"], body
    code, _ = _patch(live, "/api/v1/nodes/w1/status", {"status": {"phase": "x"}}, w2)
    assert code == 403
    status = {"status": {"message": "owned by w2"}}
    assert _patch(live, "/api/v1/namespaces/default/pods/uses-db/status", status, w2)[0] == 403
    code, body = live.request("GET", "/api/v1/namespaces/default/secrets/db", cert=w2)
    assert code == 403 and SECRET_VALUE not in json.dumps(body)
    # w1 reads the Secret its pod uses, not one no pod of it uses.
    wait_until(
        lambda: (
            live.request("GET", "/api/v1/namespaces/default/secrets/db", cert="kubelet-w1")[0]
            == 200
        ),
        timeout=TIMEOUT,
        message="w1 never got the Secret its pod uses",
    )
    assert (
        live.request("GET", "/api/v1/namespaces/default/secrets/unused", cert="kubelet-w1")[0]
        == 403
    )
    node = live.admin("GET", "/api/v1/nodes/w1")
    assert "attacker" not in node["metadata"].get("labels", {})
    pod = live.admin("GET", "/api/v1/namespaces/default/pods/uses-db")
    assert pod["status"].get("message") != "owned by w2"


def _patch(live: Live, path: str, doc: Any, cert: str) -> tuple[int, Any]:
    req = urllib.request.Request(
        live.rest + path,
        data=json.dumps(doc).encode(),
        method="PATCH",
        headers={"Content-Type": "application/merge-patch+json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT, context=live.context(cert)) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _viewer_token(live: Live) -> str:
    """A token of team-a/r, bound to `view` in team-a (made by the first caller)."""
    sa = "/api/v1/namespaces/team-a/serviceaccounts"
    if live.request("GET", sa + "/r", cert="admin")[0] == 404:
        live.admin("POST", sa, {"metadata": {"name": "r"}})
        binding = {
            "metadata": {"name": "r-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "r", "namespace": "team-a"}],
        }  # fmt: skip
        rolebindings = "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings"
        live.admin("POST", rolebindings, binding)
    review = live.admin("POST", "/api/v1/namespaces/team-a/serviceaccounts/r/token", {"spec": {}})
    token = str(review["status"]["token"])
    wait_until(
        lambda: live.request("GET", "/api/v1/namespaces/team-a/pods", token=token)[0] == 200,
        timeout=TIMEOUT,
        message="the RoleBinding never took effect",
    )
    return token


def test_a_view_serviceaccount_stays_in_its_lane(live: Live) -> None:
    token = _viewer_token(live)
    code, body = live.request("GET", "/api/v1/namespaces/team-a/secrets", token=token)
    assert code == 403, body
    assert body["message"] == (
        'secrets is forbidden: User "system:serviceaccount:team-a:r" cannot list resource'
        ' "secrets" in API group "" in the namespace "team-a"'
    )
    doc = _pod("sneaky", "w1", ["true"])
    assert live.request("POST", "/api/v1/namespaces/team-a/pods", token=token, doc=doc)[0] == 403
    assert live.request("GET", "/api/v1/namespaces/team-b/pods", token=token)[0] == 403
    assert live.request("GET", "/api/v1/namespaces/team-a/pods/sneaky", cert="admin")[0] == 404


def _token_port(live: Live) -> str:
    """The API server's token listener, as pods find it: the kubernetes Endpoints' grpc port."""
    ep = live.admin("GET", "/api/v1/namespaces/default/endpoints/kubernetes")
    ports = {p["name"]: p["port"] for p in ep["subsets"][0]["ports"]}
    return f"127.0.0.1:{ports['grpc']}"


def _token_call(live: Live, token: str, resource: str, namespace: str) -> grpc.StatusCode | None:
    path = live.state / "token"
    path.write_text(token)
    tls = transport.ClientTLS(ca_file=live.pki / "ca.crt", token_file=path if token else None)

    async def call() -> grpc.StatusCode | None:
        async with transport.channel(_token_port(live), tls=tls) as ch:
            request = apiserver_pb2.ListRequest(resource=resource, namespace=namespace)
            try:
                await apiserver_pb2_grpc.APIStub(ch).List(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return None

    return asyncio.run(call())


def test_the_token_grpc_port_wants_a_token_and_authorizes_it(live: Live) -> None:
    """The port pods' gRPC clients use (no client certificate: a bearer token)."""
    assert _token_call(live, "", "pods", "team-a") == grpc.StatusCode.UNAUTHENTICATED
    assert _token_call(live, "not-a-token", "pods", "team-a") == grpc.StatusCode.UNAUTHENTICATED
    token = _viewer_token(live)
    assert _token_call(live, token, "pods", "team-a") is None
    assert _token_call(live, token, "secrets", "team-a") == grpc.StatusCode.PERMISSION_DENIED
    assert _token_call(live, token, "pods", "team-b") == grpc.StatusCode.PERMISSION_DENIED


def test_the_store_refuses_a_kubelets_certificate(live: Live) -> None:
    kubelet = live.files("kubelet-w1")
    etcd_ca = live.pki / "etcd" / "ca.crt"

    async def put(cert: pki.CertFiles) -> grpc.StatusCode | None:
        tls = transport.ClientTLS(ca_file=etcd_ca, cert_file=cert.cert, key_file=cert.key)
        async with transport.channel(live.store, tls=tls) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            try:
                await kv.Put(rpc_pb2.PutRequest(key=b"/attack", value=b"x"), timeout=10)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return None

    assert asyncio.run(put(kubelet)) == grpc.StatusCode.UNAVAILABLE

    async def absent() -> int:
        tls = live.pki / "etcd"
        files = pki.CertFiles(tls / "healthcheck-client.crt", tls / "healthcheck-client.key",
                              etcd_ca)  # fmt: skip
        client = transport.ClientTLS(ca_file=etcd_ca, cert_file=files.cert, key_file=files.key)
        async with transport.channel(live.store, tls=client) as ch:
            got = await rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"/attack"))
            return int(got.count)

    assert asyncio.run(absent()) == 0


# Runs in the pod (cwd: the pod directory, where the token volume is: no mount namespace).
_IN_CLUSTER = """
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.config import incluster_config as ic
ic.InClusterConfigLoader(ic.SERVICE_TOKEN_FILENAME.lstrip("/"),
                         ic.SERVICE_CERT_FILENAME.lstrip("/")).load_and_set()
api = client.CoreV1Api()
ns = open("var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
print("pods", len(api.list_namespaced_pod(ns).items))
try:
    api.list_namespaced_secret(ns)
except ApiException as exc:
    print("secrets", exc.status)
"""


def test_the_python_client_in_a_pod_uses_its_serviceaccount(live: Live) -> None:
    binding = {
        "metadata": {"name": "default-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "team-b"}],
    }
    live.admin("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team-b/rolebindings", binding)
    # The default ServiceAccount comes from its controller, the binding through the
    # authorizer's watch cache: wait until a token of that account may list pods.
    sa = "/api/v1/namespaces/team-b/serviceaccounts/default"
    wait_until(
        lambda: live.request("GET", sa, cert="admin")[0] == 200,
        timeout=TIMEOUT,
        message="team-b never got its default ServiceAccount",
    )
    token = live.admin("POST", sa + "/token", {"spec": {}})["status"]["token"]
    wait_until(
        lambda: live.request("GET", "/api/v1/namespaces/team-b/pods", token=token)[0] == 200,
        timeout=TIMEOUT,
        message="the RoleBinding never took effect",
    )
    pod = _pod("in-cluster", "w1", [sys.executable, "-c", _IN_CLUSTER])
    live.admin("POST", "/api/v1/namespaces/team-b/pods", pod)
    path = "/api/v1/namespaces/team-b/pods/in-cluster"
    phase = wait_until(
        lambda: (
            live.admin("GET", path).get("status", {}).get("phase") in ("Succeeded", "Failed")
            and live.admin("GET", path)["status"]["phase"]
        ),
        timeout=60,
        message="the in-cluster pod never finished",
    )
    code, log = _text(live, path + "/log")
    assert phase == "Succeeded" and "pods 1" in log and "secrets 403" in log, (code, log)


def _text(live: Live, path: str) -> tuple[int, str]:
    req = urllib.request.Request(live.rest + path)
    with urllib.request.urlopen(req, timeout=TIMEOUT, context=live.context("admin")) as r:
        return r.status, r.read().decode()


def test_bootstrap_tokens_authenticate_until_they_expire(live: Live) -> None:
    made = k8semu(live.env, "token", "create", "--ttl", "10m", "--description", "test")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    token_id = token.partition(".")[0]
    code, body = live.request("GET", "/api/v1/namespaces/default/pods", token=token)
    assert code == 403, body  # authenticated as the bootstrap user, which may not list pods
    assert f'User "system:bootstrap:{token_id}"' in body["message"]
    wrong = token[:-1] + ("a" if token[-1] != "a" else "b")
    assert live.request("GET", "/api/v1/namespaces/default/pods", token=wrong)[0] == 401
    # Expired: the same Secret with an expiration in the past.
    path = f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{token_id}"
    past = base64.b64encode(b"2020-01-01T00:00:00Z").decode()
    code, body = _patch(live, path, {"data": {"expiration": past}}, "admin")
    assert code == 200, body
    wait_until(
        lambda: live.request("GET", "/api/v1/namespaces/default/pods", token=token)[0] == 401,
        timeout=TIMEOUT,
        message="an expired bootstrap token still authenticates",
    )
    can = k8semu(live.env, "auth", "can-i", "create", "secrets", "-n", "kube-system")
    assert (can.returncode, can.stdout.strip()) == (0, "yes"), can.stderr  # as the admin
    bad = k8semu(live.env, "token", "create", "--ttl", "-5m")
    assert bad.returncode == 2 and "--ttl" in bad.stderr


def test_no_component_was_refused(live: Live) -> None:
    """The audit log of the whole module's run: every refusal is one of the attempts above,
    none is a component's (scheduler, controller manager, kubelet w1, proxy)."""
    refused = []
    for line in (live.state / "logs" / "apiserver-1-audit.log").read_text().splitlines():
        event = json.loads(line)
        user, ref = event["user"]["username"], event.get("objectRef", {})
        component = user.startswith("system:kube-") or user == "system:node:w1"
        attempt = user == "system:node:w1" and ref.get("name") == "unused"  # the test's own
        if event["responseStatus"]["code"] in (401, 403) and component and not attempt:
            refused.append((user, event["verb"], ref))
    assert refused == []
