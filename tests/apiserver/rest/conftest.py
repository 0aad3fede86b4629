"""Fixtures: one store and one `k8semu apiserver --rest-address` process for the package, and the
clients that talk to its REST API: the `kubectl` binary and plain HTTP (urllib)."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from k8semu.cluster.processes import K8semuStoreCluster, free_loopback_ports
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.support.apiserver import APIServerProcess, running

KUBECTL = shutil.which("kubectl")
TIMEOUT = 30.0


@dataclass(frozen=True)
class REST:
    """The API server's REST URL, its gRPC address and its store's endpoints."""

    url: str
    grpc_address: str
    store_endpoints: tuple[str, ...]

    def compact(self, revision: int) -> None:
        """Compact the store's history up to `revision` (etcd's Compact)."""
        with grpc.insecure_channel(self.store_endpoints[0]) as channel:
            rpc_pb2_grpc.KVStub(channel).Compact(
                rpc_pb2.CompactionRequest(revision=revision, physical=True), timeout=TIMEOUT
            )

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; error statuses are answers too."""
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, method: str, path: str, doc: Any = None, **headers: str) -> tuple[int, Any]:
        body = None if doc is None else json.dumps(doc).encode()
        hdrs = {"Content-Type": "application/json", **headers} if body else dict(headers)
        code, _, raw = self.request(method, path, body, hdrs)
        return code, json.loads(raw) if raw else None

    def kubectl(self, *args: str, stdin: str = "", check: bool = True) -> str:
        """`kubectl --server URL ARGS` (no kubeconfig); stdout, or AssertionError with
        stderr when it fails and `check`."""
        return self.kubectl_env({}, *args, stdin=stdin, check=check)

    def kubectl_env(
        self, env: dict[str, str], *args: str, stdin: str = "", check: bool = True
    ) -> str:
        """`kubectl` with `env` added to its environment (KUBE_EDITOR for `edit`)."""
        if KUBECTL is None:
            pytest.skip("no kubectl on PATH")
        base = {"KUBECONFIG": "/dev/null", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"}
        proc = subprocess.run(
            [KUBECTL, f"--server={self.url}", "--request-timeout=20s", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={**base, **env},
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.returncode}\n{proc.stderr}")
        return proc.stdout if check else proc.stdout + proc.stderr


def python_client(rest: REST) -> Any:
    """Kubernetes' Python client (PyPI `kubernetes`, skipped without it): the module and an
    ApiClient of `rest`, to use in a with statement."""
    kubernetes = pytest.importorskip("kubernetes")
    config = kubernetes.client.Configuration()
    config.host = rest.url
    return kubernetes, kubernetes.client.ApiClient(config)


@pytest.fixture(scope="package")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[REST]:
    base: Path = tmp_path_factory.mktemp("rest")
    port = free_loopback_ports(1)[0]
    with running(K8semuStoreCluster(base / "store", 1)) as store:
        server = APIServerProcess(
            store, base / "apiserver.log", ["--rest-address", f"127.0.0.1:{port}"]
        )
        try:
            server.wait_serving()
            yield REST(f"http://127.0.0.1:{port}", server.address, tuple(store.endpoints))
        finally:
            server.close()
