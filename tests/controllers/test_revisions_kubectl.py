"""ControllerRevisions on real processes, driven by kubectl 1.32 and `k8semu rollout`: a
store, an API server with its REST face, a `k8semu scheduler`, one hollow kubelet, and the
daemonset and statefulset controllers. Each template change makes a revision; `rollout
history` lists them, `rollout undo` puts an older template back (the controller renumbers
that revision rather than copying it), `rollout status` waits for the pods."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from k8semu.client import Client
from k8semu.cluster.processes import K8semuStoreCluster, free_loopback_ports
from k8semu.controllers.history import REVISION_HASH, template_of
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from tests.controllers.conftest import controller_manager
from tests.kubelet.conftest import KubeletProcess, kubelets  # noqa: F401
from tests.scheduler.conftest import SchedulerProcess
from tests.support.apiserver import APIServerProcess, serving
from tests.support.poll import eventually

pytestmark = pytest.mark.slow

KUBECTL = shutil.which("kubectl")


@pytest.fixture(scope="module")
def rest_port() -> int:
    return free_loopback_ports(1)[0]


@pytest.fixture(scope="module")
def apiserver(
    store: K8semuStoreCluster, tmp_path_factory: pytest.TempPathFactory, rest_port: int
) -> Iterator[APIServerProcess]:
    log = tmp_path_factory.mktemp("apiserver") / "apiserver.log"
    with serving(store, log, ["--rest-address", f"127.0.0.1:{rest_port}"]) as server:
        yield server


@dataclass
class Env:
    client: Client
    namespace: str
    node: str  # this test's kubelet (a module's earlier kubelets are gone)
    rest_port: int
    apiserver: APIServerProcess
    home: Path

    async def kubectl(self, *args: str, stdin: str = "") -> str:
        if KUBECTL is None:
            pytest.skip("no kubectl on PATH")
        env = {"KUBECONFIG": "/dev/null", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"}
        server = f"--server=http://127.0.0.1:{self.rest_port}"
        cmd = [KUBECTL, server, "--request-timeout=20s", "-n", self.namespace, *args]
        return await _run(cmd, env, stdin)

    async def k8semu(self, *args: str) -> str:
        env = dict(os.environ)  # with tests/conftest.py's empty K8SEMU_CONFIG
        env["HOME"] = str(self.home)
        cmd = [sys.executable, "-m", "k8semu", *args, "-n", self.namespace]
        return await _run([*cmd, "--server", self.apiserver.address], env, "")


async def _run(cmd: list[str], env: dict[str, str], stdin: str) -> str:
    # In a thread: the controllers run on this test's event loop.
    proc = await asyncio.to_thread(
        subprocess.run, cmd, input=stdin, capture_output=True, text=True, timeout=60, env=env,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{' '.join(cmd[2:])}: {proc.stderr}"
    return proc.stdout


@pytest.fixture
async def env(
    client: Client,
    namespace: str,
    scheduler: SchedulerProcess,
    kubelets: Callable[..., KubeletProcess],  # noqa: F811
    apiserver: APIServerProcess,
    rest_port: int,
    tmp_path: Path,
) -> AsyncIterator[Env]:
    node = kubelets("--runtime", "simulated", "--listen-address", "127.0.0.1:0").name
    async with controller_manager(client, "daemonset", "statefulset"):
        yield Env(client, namespace, node, rest_port, apiserver, tmp_path)


def manifest(kind: str, name: str, node: str) -> str:
    """A DaemonSet or StatefulSet of one sleeping container `name:1` on `node`."""
    extra = f"replicas: 2\n  serviceName: {name}\n  " if kind == "StatefulSet" else ""
    return f"""apiVersion: apps/v1
kind: {kind}
metadata: {{name: {name}}}
spec:
  {extra}selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      containers: [{{name: {name}, image: "{name}:1", command: [sleep, inf]}}]
"""


def images(obj: apps_pb2.DaemonSet | apps_pb2.StatefulSet) -> str:
    return obj.spec.template.spec.containers[0].image


async def revisions(env: Env, want: dict[int, str]) -> None:
    """Wait for the namespace's revisions to be `want` ({revision: image})."""

    async def listed() -> bool:
        listed = await env.client.list(apps_pb2.ControllerRevision, namespace=env.namespace)
        items = listed.items
        got = {}
        for cr in items:
            template = template_of(cr)
            assert template is not None
            got[cr.revision] = template.spec.containers[0].image
        return got == want

    await eventually(listed, what=f"revisions {want}")


def revision_rows(out: str) -> list[str]:
    """The REVISION column of `rollout history`'s table."""
    return [line.split()[0] for line in out.strip().split("\n")[2:]]


async def live_images(env: Env) -> list[str] | None:
    """The images of the namespace's pods, once all are Running and none is going."""
    pods = (await env.client.list(core_pb2.Pod, namespace=env.namespace)).items
    if any(p.metadata.HasField("deletion_timestamp") or p.status.phase != "Running" for p in pods):
        return None
    return sorted(p.spec.containers[0].image for p in pods)


async def test_daemon_set_history_undo_and_status(env: Env) -> None:
    await env.kubectl("apply", "-f", "-", stdin=manifest("DaemonSet", "agent", env.node))
    await revisions(env, {1: "agent:1"})
    assert "image updated" in await env.kubectl("set", "image", "daemonset/agent", "agent=agent:2")
    await revisions(env, {1: "agent:1", 2: "agent:2"})
    out = await env.kubectl("rollout", "status", "daemonset/agent", "--timeout=60s")
    assert 'daemon set "agent" successfully rolled out' in out

    out = await env.kubectl("rollout", "history", "daemonset/agent")
    assert out.split("\n")[0].strip() == "daemonset.apps/agent"
    assert revision_rows(out) == ["1", "2"]
    out = await env.kubectl("rollout", "history", "daemonset/agent", "--revision=1")
    assert "agent:1" in out and "agent:2" not in out
    assert "rolled back" in await env.kubectl("rollout", "undo", "daemonset/agent")
    # The old revision is renumbered, not copied.
    await revisions(env, {3: "agent:1", 2: "agent:2"})
    got = await env.client.get(apps_pb2.DaemonSet, "agent", namespace=env.namespace)
    assert images(got) == "agent:1"
    await eventually(lambda: live_images(env), 60, "the daemon pod back on agent:1")

    # k8semu's own rollout commands read the same revisions.
    assert revision_rows(await env.k8semu("rollout", "history", "ds/agent")) == ["2", "3"]
    out = await env.k8semu("rollout", "undo", "ds/agent", "--to-revision", "2")
    assert out == "daemonset.apps/agent rolled back\n"
    await revisions(env, {3: "agent:1", 4: "agent:2"})
    out = await env.k8semu("rollout", "status", "ds/agent", "--timeout", "60s")
    assert out.endswith('daemon set "agent" successfully rolled out\n')
    assert await eventually(lambda: live_images(env), 60, "a pod") == ["agent:2"]


async def test_stateful_set_history_undo_and_status(env: Env) -> None:
    done = "partitioned roll out complete: 2 new pods have been updated..."
    await env.kubectl("apply", "-f", "-", stdin=manifest("StatefulSet", "web", env.node))
    assert done in await env.kubectl("rollout", "status", "statefulset/web", "--timeout=60s")
    await env.kubectl("set", "image", "statefulset/web", "web=web:2")
    assert done in await env.kubectl("rollout", "status", "statefulset/web", "--timeout=60s")
    await revisions(env, {1: "web:1", 2: "web:2"})
    got = await env.client.get(apps_pb2.StatefulSet, "web", namespace=env.namespace)
    assert got.status.current_revision == got.status.update_revision
    assert got.status.update_revision.startswith("web-")
    pods = (await env.client.list(core_pb2.Pod, namespace=env.namespace)).items
    assert {p.metadata.labels[REVISION_HASH] for p in pods} == {got.status.update_revision}

    out = await env.kubectl("rollout", "history", "statefulset/web")
    assert revision_rows(out) == ["1", "2"]
    out = await env.kubectl("rollout", "undo", "statefulset/web", "--to-revision=1")
    assert "statefulset.apps/web rolled back" in out
    await revisions(env, {3: "web:1", 2: "web:2"})
    out = await env.k8semu("rollout", "status", "sts/web", "--timeout", "60s")
    assert out.endswith(done + "\n")
    assert await eventually(lambda: live_images(env), 60, "pods") == ["web:1", "web:1"]
    out = await env.k8semu("rollout", "undo", "sts/web", "--to-revision", "3")
    assert out == "statefulset.apps/web skipped rollback (current template already matches" \
        " revision 3)\n"  # fmt: skip
