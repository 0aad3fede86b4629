"""Ingress end to end on a cluster started with `k8semu up` (one process-runtime worker with
its proxy and the built-in ingress controller on NODE_IP:80, the ingress add-on's default
class): two Deployments behind the Kubernetes docs' simple-fanout Ingress applied with
kubectl, reached by host and path through the node's ingress address; `kubectl get ing`
shows the class, hosts and the node's address; a bad Ingress is refused by kubectl with
Kubernetes' message and nothing is written."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import yaml

from k8semu.bench._clusterrun import BenchCluster, ClusterLayout
from k8semu.cluster.state import KUBECONFIG_FILE

pytestmark = pytest.mark.slow


def _app(name: str, replicas: int, port: int) -> str:
    """A Deployment of echo pods (port 8080) and its Service on `port`, as flow YAML."""
    labels = f"{{matchLabels: {{app: {name}}}}}"
    container = "{name: echo, image: k8semu/echo, ports: [{containerPort: 8080}]}"
    return (
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\n"
        f"spec: {{replicas: {replicas}, selector: {labels},"
        f" template: {{metadata: {{labels: {{app: {name}}}}},"
        f" spec: {{containers: [{container}]}}}}}}\n"
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
        f"spec: {{selector: {{app: {name}}}, ports: [{{port: {port}, targetPort: 8080}}]}}\n---\n"
    )


APPS = _app("service1", 2, 4200) + _app("service2", 1, 8080)

# concepts/services-networking/ingress, "Simple fanout", as the docs print it.
FANOUT = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: simple-fanout-example
spec:
  rules:
  - host: foo.bar.com
    http:
      paths:
      - path: /foo
        pathType: Prefix
        backend:
          service:
            name: service1
            port:
              number: 4200
      - path: /bar
        pathType: Prefix
        backend:
          service:
            name: service2
            port:
              number: 8080
"""

BAD = FANOUT.replace("simple-fanout-example", "bad").replace("path: /bar", "path: bar")


@pytest.fixture(scope="module")
def cluster() -> Iterator[BenchCluster]:
    layout = ClusterLayout(name="ing", store_replicas=1, real_nodes=1, addons=("ingress",))
    with BenchCluster(layout, say=lambda _line: None) as c:
        # Another process holds the node's ingress port while `up` runs: the cluster starts
        # all the same, and the proxy binds the port once it is free.
        node_ip = yaml.safe_load(c.config_path.read_text())["nodes"][0]["nodeIP"]
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind((node_ip, 80))
            squatter.listen()
            c.start()
        yield c


def _kubectl(c: BenchCluster, *argv: str, stdin: str = "", check: bool = True) -> str:
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(c.state_dir / KUBECONFIG_FILE), *argv],
        input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def _get(address: str, host: str, path: str) -> tuple[int, str]:
    async def go() -> tuple[int, str]:
        ip, port = address.rsplit(":", 1)
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(ip, int(port))
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            data = (await reader.read()).decode(errors="replace")
            writer.close()
        status = int(data.split(" ", 2)[1]) if data.startswith("HTTP/1.1 ") else 0
        return status, data

    return asyncio.run(go())


def _pod(body: str) -> str:
    return next((line.split()[1] for line in body.splitlines() if line.startswith("pod:")), "")


def _until(what: str, check: object, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < end, f"not within {timeout} s: {what}"
        time.sleep(0.3)


def test_fanout_by_host_and_path_through_the_node_and_kubectl_get_ing(
    cluster: BenchCluster,
) -> None:
    proxy = next(c for c in cluster.components if c.kind == "proxy")
    address = proxy.ports["ingress"]
    node_ip = address.rsplit(":", 1)[0]
    _kubectl(cluster, "apply", "-f", "-", stdin=APPS)
    assert "created" in _kubectl(cluster, "apply", "-f", "-", stdin=FANOUT)

    def served() -> bool:
        try:  # refused until the proxy binds the port the squatter held at start
            foo, bar = _get(address, "foo.bar.com", "/foo"), _get(address, "foo.bar.com", "/bar")
        except OSError:
            return False
        return foo[0] == bar[0] == 200

    _until("both paths answer through the ingress", served, timeout=120)
    foo = {_pod(_get(address, "foo.bar.com", "/foo/x")[1]) for _ in range(6)}
    bar = {_pod(_get(address, "foo.bar.com", "/bar")[1]) for _ in range(3)}
    assert len(foo) == 2 and all(p.startswith("service1-") for p in foo), foo
    assert len(bar) == 1 and all(p.startswith("service2-") for p in bar), bar
    assert _get(address, "foo.bar.com", "/baz")[0] == 404
    assert _get(address, "other.com", "/foo")[0] == 404

    def listed() -> bool:
        return node_ip in _kubectl(cluster, "get", "ing", "simple-fanout-example")

    _until("kubectl get ing shows the node's address", listed, timeout=30)
    table = _kubectl(cluster, "get", "ingress").splitlines()
    assert table[0].split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert table[1].split()[:5] == ["simple-fanout-example", "k8semu", "foo.bar.com", node_ip, "80"]
    ours = subprocess.run(
        [sys.executable, "-m", "k8semu", "get", "ing"],
        capture_output=True, text=True, timeout=60, env=cluster.env,
    ).stdout.splitlines()  # fmt: skip
    assert ours[1].split()[:5] == table[1].split()[:5]
    described = subprocess.run(
        [sys.executable, "-m", "k8semu", "describe", "ingress", "simple-fanout-example"],
        capture_output=True, text=True, timeout=60, env=cluster.env,
    ).stdout  # fmt: skip
    assert "service1:4200" in described and "Address:" in described
    out = _kubectl(cluster, "apply", "-f", "-", stdin=BAD, check=False)
    assert 'spec.rules[0].http.paths[1].path: Invalid value: "bar": must be an absolute path' in out
    assert "NotFound" in _kubectl(cluster, "get", "ing", "bad", check=False)
