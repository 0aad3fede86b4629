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
from pathlib import Path

import pytest

from k8semu.client import Client
from k8semu.cluster.processes import K8semuStoreCluster, free_loopback_ports
from k8semu.controllers.history import REVISION_HASH, template_of
from k8semu.controllers.manager import ControllerManager
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


@pytest.fixture
async def manager(client: Client) -> AsyncIterator[ControllerManager]:
    async with controller_manager(client, "daemonset", "statefulset") as cm:
        yield cm


async def kubectl(port: int, namespace: str, *args: str) -> str:
    if KUBECTL is None:
        pytest.skip("no kubectl on PATH")
    env = {"KUBECONFIG": "/dev/null", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"}
    proc = await asyncio.to_thread(
        subprocess.run,
        [KUBECTL, f"--server=http://127.0.0.1:{port}", "--request-timeout=20s", "-n", namespace,
         *args],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


async def k8semu(apiserver: APIServerProcess, tmp_path: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "K8SEMU_CONFIG"}
    env["HOME"] = str(tmp_path)
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "k8semu", *args, "--server", apiserver.address],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"k8semu {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def images(obj: apps_pb2.DaemonSet | apps_pb2.StatefulSet) -> str:
    return obj.spec.template.spec.containers[0].image


async def revisions(client: Client, namespace: str, want: dict[int, str]) -> None:
    """Wait for the namespace's revisions to be `want` ({revision: image})."""

    async def listed() -> bool:
        items = (await client.list(apps_pb2.ControllerRevision, namespace=namespace)).items
        got = {}
        for cr in items:
            template = template_of(cr)
            assert template is not None
            got[cr.revision] = template.spec.containers[0].image
        return got == want

    await eventually(listed, 30, f"revisions {want}")


async def test_daemon_set_history_undo_and_status(
    client: Client,
    namespace: str,
    manager: ControllerManager,
    scheduler: SchedulerProcess,
    kubelets: Callable[..., KubeletProcess],  # noqa: F811
    apiserver: APIServerProcess,
    rest_port: int,
    tmp_path: Path,
) -> None:
    kubelets("--runtime", "simulated", "--listen-address", "127.0.0.1:0")
    ds = apps_pb2.DaemonSet(api_version="apps/v1", kind="DaemonSet")
    ds.metadata.name, ds.metadata.namespace = "agent", namespace
    ds.spec.selector.match_labels["app"] = "agent"
    ds.spec.template.metadata.labels["app"] = "agent"
    ds.spec.template.spec.containers.add(name="agent", image="agent:1", command=["sleep", "inf"])
    await client.create(ds)
    await revisions(client, namespace, {1: "agent:1"})
    out = await kubectl(rest_port, namespace, "set", "image", "daemonset/agent", "agent=agent:2")
    assert "image updated" in out
    await revisions(client, namespace, {1: "agent:1", 2: "agent:2"})
    out = await kubectl(
        rest_port, namespace, "rollout", "status", "daemonset/agent", "--timeout=60s"
    )
    assert 'daemon set "agent" successfully rolled out' in out

    out = await kubectl(rest_port, namespace, "rollout", "history", "daemonset/agent")
    assert out.split("\n")[0].strip() == "daemonset.apps/agent"
    assert [line.split()[0] for line in out.strip().split("\n")[2:]] == ["1", "2"]
    out = await kubectl(
        rest_port, namespace, "rollout", "history", "daemonset/agent", "--revision=1"
    )
    assert "agent:1" in out and "agent:2" not in out
    assert "rolled back" in await kubectl(
        rest_port, namespace, "rollout", "undo", "daemonset/agent"
    )
    # The old revision is renumbered, not copied.
    await revisions(client, namespace, {3: "agent:1", 2: "agent:2"})
    got = await client.get(apps_pb2.DaemonSet, "agent", namespace=namespace)
    assert images(got) == "agent:1"

    async def pod_on(image: str) -> bool:
        pods = (await client.list(core_pb2.Pod, namespace=namespace)).items
        live = [p for p in pods if not p.metadata.HasField("deletion_timestamp")]
        return [p.spec.containers[0].image for p in live] == [image] and all(
            p.status.phase == "Running" for p in live
        )

    await eventually(lambda: pod_on("agent:1"), 60, "the daemon pod back on agent:1")

    # k8semu's own rollout commands read the same revisions.
    out = await k8semu(apiserver, tmp_path, "rollout", "history", "ds/agent", "-n", namespace)
    assert [line.split()[0] for line in out.strip().split("\n")[2:]] == ["2", "3"]
    out = await k8semu(
        apiserver, tmp_path, "rollout", "undo", "ds/agent", "--to-revision", "2", "-n", namespace
    )
    assert out == "daemonset.apps/agent rolled back\n"
    await revisions(client, namespace, {3: "agent:1", 4: "agent:2"})
    out = await k8semu(
        apiserver, tmp_path, "rollout", "status", "ds/agent", "--timeout", "60s", "-n", namespace
    )
    assert out.endswith('daemon set "agent" successfully rolled out\n')
    await eventually(lambda: pod_on("agent:2"), 60, "the daemon pod on agent:2")


async def test_stateful_set_history_undo_and_status(
    client: Client,
    namespace: str,
    manager: ControllerManager,
    scheduler: SchedulerProcess,
    kubelets: Callable[..., KubeletProcess],  # noqa: F811
    apiserver: APIServerProcess,
    rest_port: int,
    tmp_path: Path,
) -> None:
    node = kubelets("--runtime", "simulated", "--listen-address", "127.0.0.1:0").name
    sts = apps_pb2.StatefulSet(api_version="apps/v1", kind="StatefulSet")
    sts.metadata.name, sts.metadata.namespace = "web", namespace
    sts.spec.replicas = 2
    sts.spec.service_name = "web"
    sts.spec.selector.match_labels["app"] = "web"
    sts.spec.template.metadata.labels["app"] = "web"
    # Not the node of the module's earlier test, whose kubelet is gone.
    sts.spec.template.spec.node_selector["kubernetes.io/hostname"] = node
    sts.spec.template.spec.containers.add(name="web", image="web:1", command=["sleep", "inf"])
    await client.create(sts)
    out = await kubectl(
        rest_port, namespace, "rollout", "status", "statefulset/web", "--timeout=60s"
    )
    assert "partitioned roll out complete: 2 new pods have been updated..." in out
    await kubectl(rest_port, namespace, "set", "image", "statefulset/web", "web=web:2")
    out = await kubectl(
        rest_port, namespace, "rollout", "status", "statefulset/web", "--timeout=60s"
    )
    assert "partitioned roll out complete: 2 new pods have been updated..." in out
    await revisions(client, namespace, {1: "web:1", 2: "web:2"})
    got = await client.get(apps_pb2.StatefulSet, "web", namespace=namespace)
    assert got.status.current_revision == got.status.update_revision
    assert got.status.update_revision.startswith("web-")
    pods = (await client.list(core_pb2.Pod, namespace=namespace)).items
    assert {p.metadata.labels[REVISION_HASH] for p in pods} == {got.status.update_revision}

    out = await kubectl(rest_port, namespace, "rollout", "history", "statefulset/web")
    assert [line.split()[0] for line in out.strip().split("\n")[2:]] == ["1", "2"]
    out = await kubectl(
        rest_port, namespace, "rollout", "undo", "statefulset/web", "--to-revision=1"
    )
    assert "statefulset.apps/web rolled back" in out
    await revisions(client, namespace, {3: "web:1", 2: "web:2"})
    out = await k8semu(
        apiserver, tmp_path, "rollout", "status", "sts/web", "--timeout", "60s", "-n", namespace
    )
    assert out.endswith("partitioned roll out complete: 2 new pods have been updated...\n")
    pods = (await client.list(core_pb2.Pod, namespace=namespace)).items
    assert sorted(p.spec.containers[0].image for p in pods) == ["web:1", "web:1"]
    out = await k8semu(apiserver, tmp_path, "rollout", "undo", "sts/web", "--to-revision", "3",
                 "-n", namespace)  # fmt: skip
    assert out == "statefulset.apps/web skipped rollback (current template already matches" \
        " revision 3)\n"  # fmt: skip
