"""The kubelets', proxies' (and their tunnels'), scheduler's and controller manager's own
listeners on a live `k8semu up` cluster (TLS, the default), attacked (issue 16 items 1, 4, 7).

Two worker nodes (w1 on 127.0.1.1, w2 on 127.0.1.2), each with a kubelet, a proxy and a
tunnel, and a web pod on w1. Every listener refuses a caller without a client certificate,
with one of another CA, and plain text; it answers the admin's (the launcher's probes). The
kubelet runs pods' streams only for the API server's kubelet-client certificate: the admin's
or another kubelet's is PERMISSION_DENIED, while exec through the API server (`k8semu exec`,
kubectl) works. A tunnel is opened only by a proxy and reaches only its node's pod IPs: the
store's port and another node's address are refused, the pod answers.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from k8semu import transport
from k8semu.cluster.certs import PKIPaths
from k8semu.cluster.processes import free_loopback_ports
from k8semu.cluster.state import read_state
from k8semu.pb.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc
from k8semu.proxy.tunnelwire import EOF_FRAME, stream_frames, unframe
from tests.security.conftest import PKIFiles
from tests.support.cluster import (
    START_TIMEOUT_S,
    k8semu,
    stop_recorded,
    until,
    up_detached,
    user_env,
)

pytestmark = pytest.mark.slow
KUBECTL = shutil.which("kubectl")
PY = shutil.which("python3") or "python3"
_CALL_TIMEOUT = 10.0


@dataclass
class Live:
    env: dict[str, str]
    state: Path
    pki: PKIPaths
    addresses: dict[str, str]  # component name -> its gRPC address
    tunnels: dict[str, str]  # node -> its tunnel's HOST:PORT
    store: str
    pod_ip: str

    def tls(self, name: str, *, ca: Path | None = None) -> transport.ClientTLS:
        files = self.pki.cert(name)
        return transport.ClientTLS(ca_file=ca or files.ca, cert_file=files.cert, key_file=files.key)


def _config(path: Path) -> Path:
    p = iter(free_loopback_ports(12))
    nodes = "".join(
        f"  - {{name: w{i}, nodeIP: 127.0.1.{i}, runtime: process, kubeletPort: {next(p)},"
        f" proxyPort: {next(p)}, tunnelPort: {next(p)}}}\n"
        for i in (1, 2)
    )
    path.write_text(
        "kind: ClusterConfig\nversion: v1alpha1\nname: listeners\n"
        f"store:\n  members:\n    - {{name: s1, clientURL: 'http://127.0.0.1:{next(p)}',"
        f" peerURL: 'http://127.0.0.1:{next(p)}'}}\n"
        f"apiServer: {{instances: [{{port: {next(p)}, restPort: {next(p)}}}]}}\n"
        f"scheduler: {{instances: [{{port: {next(p)}}}]}}\n"
        f"controllerManager: {{instances: [{{port: {next(p)}}}]}}\n"
        f"nodes:\n{nodes}addons: []\n"
        "launcher: {readyTimeout: 60s, restartBackoff: 200ms, stopGracePeriod: 5s}\n"
    )
    return path


_WEB_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web"},
    "spec": {
        "nodeName": "w1",
        "containers": [
            {
                "name": "web",
                "image": "python",
                "command": [PY, "-m", "http.server", "--bind", "$(POD_IP)", "8080"],
            }
        ],
    },
}


def _pod_ip(env: dict[str, str]) -> str | None:
    got = k8semu(env, "get", "pod", "web", "-o", "json")
    if got.returncode != 0:
        return None
    pod = json.loads(got.stdout)
    status = pod.get("status", {})
    return str(status["podIP"]) if status.get("phase") == "Running" else None


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("listeners")
    env, state = user_env(tmp), tmp / "state"
    try:
        up_detached(env, _config(tmp / "cluster.yaml"), state)
        (tmp / "web.json").write_text(json.dumps(_WEB_POD))
        created = k8semu(env, "create", "-f", tmp / "web.json")
        assert created.returncode == 0, created.stdout + created.stderr
        pod_ip = until("the web pod running", lambda: _pod_ip(env), timeout=START_TIMEOUT_S)
        recorded = read_state(state)
        addresses = {c.name: c.address for c in recorded.components if c.address}
        # The control plane's by kind (their names are the instances').
        addresses.update({c.kind: c.address for c in recorded.components if c.address})
        tunnels = {
            c.name.removeprefix("proxy-"): c.ports["tunnel"]
            for c in recorded.components
            if c.kind == "proxy"
        }
        store = next(c.address for c in recorded.components if c.kind == "store")
        yield Live(env, state, PKIPaths(state), addresses, tunnels, store, pod_ip)
    finally:
        k8semu(env, "down", "--state-dir", state, timeout=120)
        stop_recorded([state])


def _health(address: str, tls: transport.ClientTLS | None) -> str:
    """The listener's health status, or the gRPC code that ended the call."""
    if tls is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(address, transport.channel_credentials(tls))
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=_CALL_TIMEOUT
            )
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def test_every_listener_takes_only_cluster_certificates(live: Live, rogue_pki: PKIFiles) -> None:
    ca = live.pki.cert("admin").ca
    rogue = rogue_pki["admin"]
    wrong_ca = transport.ClientTLS(ca_file=ca, cert_file=rogue.cert, key_file=rogue.key)
    listeners = ["kubelet-w1", "proxy-w1", "scheduler", "controller-manager"]
    for name in listeners:
        address = live.addresses[name]
        assert _health(address, live.tls("admin")) == "SERVING", name
        assert _health(address, None) == "UNAVAILABLE", f"{name}: plain text"
        assert _health(address, transport.ClientTLS(ca_file=ca)) == "UNAVAILABLE", name
        assert _health(address, wrong_ca) == "UNAVAILABLE", f"{name}: another CA's cert"
    # `k8semu status` asks them with the cluster's credentials.
    status = k8semu(live.env, "status", "--state-dir", live.state, "-o", "json")
    for c in json.loads(status.stdout)["components"]:
        if c["kind"] in ("kubelet", "proxy", "scheduler", "controller-manager"):
            assert c["health"] == "SERVING", c


def _exec(address: str, tls: transport.ClientTLS, command: list[str]) -> grpc.StatusCode | bytes:
    with grpc.secure_channel(address, transport.channel_credentials(tls)) as channel:
        request = kubelet_pb2.ExecRequest(pod="web", namespace="default", command=command)
        try:
            reply = kubelet_pb2_grpc.KubeletStub(channel).Exec(request, timeout=_CALL_TIMEOUT)
        except grpc.RpcError as exc:
            return exc.code()
    return bytes(reply.stdout)


def test_the_kubelet_runs_pod_streams_only_for_the_api_server(live: Live) -> None:
    kubelet = live.addresses["kubelet-w1"]
    for caller in ("admin", "kubelet-w2", "proxy-w1", "controller-manager"):
        assert _exec(kubelet, live.tls(caller), ["echo", "hi"]) == (
            grpc.StatusCode.PERMISSION_DENIED
        ), caller
    with grpc.secure_channel(kubelet, transport.channel_credentials(live.tls("admin"))) as ch:
        logs = kubelet_pb2_grpc.KubeletStub(ch).Logs(
            kubelet_pb2.LogsRequest(pod="web", namespace="default"), timeout=_CALL_TIMEOUT
        )
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(logs))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "kube-apiserver-kubelet-client" in str(refused.value.details())
    # The streaming calls too: exec/attach (Interact) and port-forward.
    with grpc.secure_channel(kubelet, transport.channel_credentials(live.tls("admin"))) as ch:
        stub = kubelet_pb2_grpc.KubeletStub(ch)
        start = kubelet_pb2.ExecStart(pod="web", command=["id"], stdout=True)
        forward = kubelet_pb2.PortForwardStart(pod="web", port=8080)
        calls = (
            stub.Interact(iter([kubelet_pb2.InteractInput(start=start)]), timeout=_CALL_TIMEOUT),
            stub.PortForward(
                iter([kubelet_pb2.PortForwardData(start=forward)]), timeout=_CALL_TIMEOUT
            ),
        )
        for call in calls:
            with pytest.raises(grpc.RpcError) as refused:
                list(call)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The usage summary: also the controller manager's (the HPA reads it), not the admin's.
    summary = kubelet_pb2.SummaryRequest(node="w1")
    for caller, works in (("controller-manager", True), ("admin", False)):
        with grpc.secure_channel(kubelet, transport.channel_credentials(live.tls(caller))) as ch:
            try:
                kubelet_pb2_grpc.KubeletStub(ch).Summary(summary, timeout=_CALL_TIMEOUT)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
        assert code == (grpc.StatusCode.OK if works else grpc.StatusCode.PERMISSION_DENIED)
    # The API server scrapes the kubelets as itself: `k8semu top` has figures.
    until("k8semu top nodes", lambda: "w1" in k8semu(live.env, "top", "nodes").stdout or None)
    # The API server's own certificate is the one that works...
    assert _exec(kubelet, live.tls("apiserver-kubelet-client"), ["echo", "hi"]) == b"hi\n"
    # ...and so exec through the API server, as users do.
    through = k8semu(live.env, "exec", "web", "--", "echo", "through-the-api")
    assert through.returncode == 0 and "through-the-api" in through.stdout, through.stderr
    if KUBECTL is not None:
        kubectl = subprocess.run(
            [KUBECTL, "exec", "web", "--", "echo", "kubectl-exec"],
            env={**live.env, "KUBECONFIG": str(live.state / "kubeconfig")},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert kubectl.returncode == 0 and "kubectl-exec" in kubectl.stdout, kubectl.stderr


def _unframed(tls: ssl.SSLSocket) -> bytes:
    """The payload a TLS tunnel sends after OK, up to its EOF frame (tunnelwire)."""
    buf, out = bytearray(), b""
    while chunk := tls.recv(65536):
        buf += chunk
        for payload in unframe(buf):
            if not payload:
                return out
            out += payload
    return out


def _tunnel(live: Live, node: str, client: str | None, line: str) -> bytes:
    """Everything the tunnel of `node` answers to `line` (and, once OK, an HTTP/1.0 GET
    followed by the request's EOF, as `nc -N` sends it), dialed over TLS as `client` (None:
    no client certificate)."""
    host, _, port = live.tunnels[node].rpartition(":")
    context = ssl.create_default_context(cafile=str(live.pki.cert("admin").ca))
    if client is not None:
        files = live.pki.cert(client)
        context.load_cert_chain(files.cert, files.key)
    with socket.create_connection((host, int(port)), timeout=_CALL_TIMEOUT) as raw:
        try:
            tls = context.wrap_socket(raw, server_hostname=host)
        except (ssl.SSLError, OSError) as exc:
            return f"handshake: {exc}".encode()
        with tls:
            try:
                tls.sendall(line.encode())
                answer = tls.recv(4096)
                if answer == b"OK\n":
                    get = b"GET / HTTP/1.0\r\n\r\n"
                    tls.sendall(b"".join(stream_frames(get)) + EOF_FRAME)
                    answer += _unframed(tls)
            except (ssl.SSLError, OSError) as exc:
                return f"closed: {exc}".encode()
    return answer


def test_a_tunnel_is_for_proxies_and_reaches_only_its_nodes_pods(live: Live) -> None:
    pod = f"CONNECT {live.pod_ip}:8080\n"
    through = _tunnel(live, "w1", "proxy-w2", pod)
    # The whole page: the pod got the request's EOF and answered, then closed its side.
    assert through.startswith(b"OK\nHTTP/1.0 200") and through.endswith(b"</html>\n"), through
    refused = _tunnel(live, "w1", "proxy-w2", f"CONNECT {live.store}\n")
    assert refused.startswith(b"ERR") and b"not a pod IP of node w1" in refused, refused
    kubelet_w1 = live.addresses["kubelet-w1"]
    assert _tunnel(live, "w1", "proxy-w2", f"CONNECT {kubelet_w1}\n").startswith(b"ERR")
    # w2's tunnel does not reach w1's pod.
    assert _tunnel(live, "w2", "proxy-w1", pod).startswith(b"ERR")
    # Only proxies open tunnels; a caller without a certificate fails the handshake.
    as_admin = _tunnel(live, "w1", "admin", pod)
    assert as_admin.startswith(b"ERR") and b"may not open a tunnel" in as_admin, as_admin
    assert not _tunnel(live, "w1", None, pod).startswith(b"OK")
    # Plain text: the TLS listener never says OK.
    host, _, port = live.tunnels["w1"].rpartition(":")
    with socket.create_connection((host, int(port)), timeout=_CALL_TIMEOUT) as raw:
        raw.sendall(pod.encode())
        try:
            answer = raw.recv(4096)
        except OSError:
            answer = b""
    assert not answer.startswith(b"OK"), answer
