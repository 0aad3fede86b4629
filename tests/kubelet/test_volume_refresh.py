"""A running pod's configMap/secret/downwardAPI/projected volumes follow their objects
(k8semu/kubelet/refresh.py) with Kubernetes' atomic `..data` layout (kubelet/projection.py):
the layout, the swap, removed keys, refused paths and planted links; subPath copies; the
refresher's reads (immutable objects once, missing objects kept with one event); and a real
pod reading its file in a loop while the ConfigMap changes, through our client and through
`kubectl edit`: the file changes, a removed key's file goes, no read is ever partial."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from k8semu.client import Client
from k8semu.cluster.processes import K8semuStoreCluster, free_loopback_ports
from k8semu.kubelet import projection
from k8semu.kubelet.containerlog import read_plain
from k8semu.kubelet.env import PodFacts
from k8semu.kubelet.process import ProcessRuntime
from k8semu.kubelet.refresh import VolumeRefresh
from k8semu.kubelet.runtime import PodSetup, Projection, RunAs, StartError, VolumeFile
from k8semu.kubelet.volumes import refreshed_mounts, volume_files
from k8semu.pb.api.v1 import core_pb2
from tests.kubelet.conftest import KubeletProcess, eventually
from tests.kubelet.test_e2e_process import make_pod
from tests.support.apiserver import APIServerProcess, serving

KUBECTL = shutil.which("kubectl")


# ---- the layout ----


def _setup(uid: str, *projections: Projection) -> PodSetup:
    return PodSetup(uid=uid, namespace="ns", name="p", pod_ip="", projections=projections)


def _versions(mount: Path) -> list[str]:
    return sorted(p.name for p in mount.iterdir() if p.name.startswith("..2"))


async def test_the_atomic_layout_swaps_versions_and_drops_removed_keys(tmp_path: Path) -> None:
    runtime = ProcessRuntime(tmp_path / "root")
    one = Projection("/etc/config", (VolumeFile("sport", b"football"),
                                     VolumeFile("nested/a", b"1", 0o600)))  # fmt: skip
    await runtime.prepare_pod(_setup("u1", one))
    mount = tmp_path / "root" / "pods" / "u1" / "etc" / "config"
    first = os.readlink(mount / "..data")
    assert first.startswith("..20") and _versions(mount) == [first]
    assert os.readlink(mount / "sport") == "..data/sport" and (mount / "sport").read_bytes() == (
        b"football"
    )
    assert os.readlink(mount / "nested") == "..data/nested"
    assert stat.S_IMODE((mount / "nested" / "a").stat().st_mode) == 0o600
    assert stat.S_IMODE(mount.stat().st_mode) == 0o755 and mount.stat().st_uid == os.geteuid()
    # The same files again: nothing is written.
    await runtime.project("u1", [one], RunAs())
    assert os.readlink(mount / "..data") == first
    # A change: a new version, the key that went is gone, the previous version kept.
    two = Projection("/etc/config", (VolumeFile("sport", b"cricket"),))
    await runtime.project("u1", [two], RunAs())
    second = os.readlink(mount / "..data")
    assert second != first and _versions(mount) == sorted([first, second])
    assert (mount / "sport").read_bytes() == b"cricket"
    assert not os.path.lexists(mount / "nested")
    # The next one removes the oldest: at most two versions on disk.
    await runtime.project("u1", [Projection("/etc/config", ())], RunAs())
    assert len(_versions(mount)) == 2 and first not in _versions(mount)
    assert not os.path.lexists(mount / "sport")


async def test_an_earlier_layouts_files_are_replaced_by_links(tmp_path: Path) -> None:
    runtime = ProcessRuntime(tmp_path / "root")
    mount = tmp_path / "root" / "pods" / "u2" / "etc" / "app"
    (mount / "labels").mkdir(parents=True)
    (mount / "a.conf").write_text("old")
    (mount / "labels" / "app").write_text("old")
    files = (VolumeFile("a.conf", b"new"), VolumeFile("labels/app", b"web"))
    await runtime.prepare_pod(_setup("u2", Projection("/etc/app", files)))
    assert os.readlink(mount / "a.conf") == "..data/a.conf"
    assert (mount / "a.conf").read_text() == "new" and (mount / "labels" / "app").read_text() == (
        "web"
    )


@pytest.mark.parametrize("path", ["", "/abs", "../x", "a/../../x", "..data", "..2026_x/f"])
def test_paths_a_volume_cannot_have(path: str) -> None:
    with pytest.raises(projection.ProjectionError):
        projection.clean_path(path)


async def test_a_link_planted_on_the_way_is_never_followed(tmp_path: Path) -> None:
    runtime = ProcessRuntime(tmp_path / "root")
    pod_dir = tmp_path / "root" / "pods" / "u3"
    outside = tmp_path / "outside"
    outside.mkdir()
    pod_dir.mkdir(parents=True)
    (pod_dir / "etc").symlink_to(outside)  # as a pod could, in its own directory
    with pytest.raises(StartError, match="'etc' is not a directory"):
        await runtime.prepare_pod(_setup("u3", Projection("/etc/config", (VolumeFile("k", b"v"),))))
    assert list(outside.iterdir()) == []
    with pytest.raises(StartError, match="inside the pod dir"):
        await runtime.prepare_pod(_setup("u3", Projection("/", (VolumeFile("k", b"v"),))))


# ---- what is projected, and subPath ----


def _pod() -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace, pod.metadata.uid = "web-0", "ns", "u4"
    pod.metadata.labels["app"] = "web"
    vol = pod.spec.volumes.add(name="cfg")
    vol.config_map.name = "sport"
    down = pod.spec.volumes.add(name="info")
    down.downward_api.items.add(path="labels").field_ref.field_path = "metadata.labels['app']"
    c = pod.spec.containers.add(name="main", image="x")
    c.volume_mounts.add(name="cfg", mount_path="/etc/config")
    c.volume_mounts.add(name="cfg", mount_path="/etc/sport.txt", sub_path="sport")
    c.volume_mounts.add(name="info", mount_path="/etc/info")
    return pod


def test_a_sub_path_mount_is_a_copy_of_its_entry_and_not_refreshed() -> None:
    pod = _pod()
    cm = core_pb2.ConfigMap(data={"sport": "football", "team": "blue"})
    mounts = volume_files(pod, pod.spec.containers[0], config_maps={"sport": cm}, secrets={})
    assert [(f.path, f.data) for f in mounts.files] == [("/etc/sport.txt", b"football")]
    assert [(p.path, [f.path for f in p.files]) for p in mounts.projections] == [
        ("/etc/config", ["sport", "team"]),
        ("/etc/info", ["labels"]),
    ]
    assert refreshed_mounts(pod, pod.spec.containers[0]) == [0, 2]


class _Host:
    """A node agent's part the refresher uses: counted reads, recorded writes."""

    def __init__(self, cms: dict[str, core_pb2.ConfigMap]) -> None:
        self.cms = cms
        self.reads: list[set[str]] = []
        self.written: list[list[Projection]] = []
        self.runtime: Any = self

    async def lookup_refs(
        self, pod: core_pb2.Pod, names: tuple[set[str], set[str]] | None = None
    ) -> tuple[dict[str, core_pb2.ConfigMap], dict[str, core_pb2.Secret]]:
        assert names is not None
        self.reads.append(set(names[0]))
        return {n: self.cms[n] for n in names[0] if n in self.cms}, {}

    async def project(self, uid: str, projections: Sequence[Projection], run_as: RunAs) -> None:
        self.written.append(list(projections))


async def test_the_refresher_reads_when_due_an_immutable_object_once_and_keeps_missing_ones(
) -> None:  # fmt: skip
    pod = _pod()
    host = _Host({"sport": core_pb2.ConfigMap(data={"sport": "football"})})
    warnings: list[tuple[str, str]] = []
    refresh = VolumeRefresh(10.0, "u4", now=100.0)
    assert 100.0 <= refresh.next_due < 110.0 and refresh.due(pod, 110.0)
    facts = PodFacts(pod_ip="", host_ip="", node_name="n1")
    containers = [(pod.spec.containers[0], "spec.containers[0]")]

    async def run(now: float) -> None:
        await refresh.run(host, pod, containers, facts, lambda *w: warnings.append(w), now)

    await run(110.0)
    assert refresh.next_due == 120.0 and not refresh.due(pod, 119.0)
    assert [p.path for p in host.written[-1]] == ["/etc/config", "/etc/info"]
    pod.metadata.labels["app"] = "api"  # downwardAPI: at once, not at the next period
    assert refresh.due(pod, 111.0)
    await run(111.0)
    assert host.written[-1][1].files[0].data == b"api"
    host.cms["sport"].immutable = True
    await run(121.0)
    await run(131.0)
    assert host.reads == [{"sport"}] * 3  # not read again once immutable (no call at all)
    # A missing non-optional ConfigMap: its files stay, one event for many periods.
    refresh = VolumeRefresh(10.0, "u4", now=0.0)
    host.cms.clear()
    for now in (10.0, 20.0, 30.0):
        await run(now)
    assert [p.path for p in host.written[-1]] == ["/etc/info"]
    assert warnings == [("FailedMount", 'MountVolume.SetUp failed for volume "cfg" : '
                         "spec.containers[0].volumeMounts[0]: volume 'cfg': configmap "
                         '"sport" not found')]  # fmt: skip
    pod.spec.volumes[0].config_map.optional = True  # optional: its files go
    await run(40.0)
    assert host.written[-1][0] == Projection("/etc/config", ())


# ---- a real pod ----

N = 200_000  # bytes per value: many pages, so a torn read would show
READER = r"""
import os, sys, time
n = int(sys.argv[1])
good = {b"A" * n: "A", b"B" * n: "B", b"C" * n: "C"}
seen, extra, end = None, None, time.time() + 240
while time.time() < end:
    try:
        with open("etc/config/sport", "rb") as f:
            data = f.read()
    except OSError as exc:
        print("MISSING", exc, flush=True)
        data = None
    if data is not None and data not in good:
        print("TORN", len(data), data[:1], flush=True)
    value = good.get(data, "?")
    if value != seen:
        print("SAW", value, flush=True)
        seen = value
    now = os.path.exists("etc/config/extra")
    if now != extra:
        print("EXTRA", now, flush=True)
        extra = now
    time.sleep(0.01)
"""


@pytest.fixture(scope="module")
def apiserver(
    store: K8semuStoreCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[APIServerProcess]:
    """This module's API server also serves REST, for the `kubectl edit` step."""
    log = tmp_path_factory.mktemp("apiserver") / "apiserver.log"
    port = free_loopback_ports(1)[0]
    with serving(store, log, ["--rest-address", f"127.0.0.1:{port}"]) as server:
        server.rest_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        yield server


def _kubectl_edit(url: str, namespace: str, sed: str, what: str) -> None:
    env = {"KUBECONFIG": "/dev/null", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin",
           "KUBE_EDITOR": f"sed -i {sed}"}  # fmt: skip
    assert KUBECTL is not None
    proc = subprocess.run([KUBECTL, f"--server={url}", "--request-timeout=20s", "-n", namespace,
                           "edit", what],
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


async def test_a_running_pod_sees_its_config_map_change_atomically(
    client: Client,
    namespace: str,
    apiserver: APIServerProcess,
    kubelets: Callable[..., KubeletProcess],
) -> None:
    k = kubelets("--sync-frequency", "1s")
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name, cm.metadata.namespace = "sport", namespace
    cm.data.update({"sport": "A" * N, "extra": "x", "mode": "one"})
    await client.create(cm)
    pod = make_pod(namespace, "reader", k.name, [sys.executable, "-c", READER, str(N)])
    pod.spec.volumes.add(name="config-volume").config_map.name = "sport"
    mounts = pod.spec.containers[0].volume_mounts
    mounts.add(name="config-volume", mount_path="/etc/config")
    mounts.add(name="config-volume", mount_path="/etc/mode", sub_path="mode")
    await client.create(pod)

    def log_text() -> str:
        pods = list((k.root / "pods").glob("*/main/0.log"))
        return read_plain(pods[0]).decode() if pods else ""

    await eventually(lambda: "SAW A" in log_text(), what="the pod reads the first value")
    base = next((k.root / "pods").glob("*/main")).parent
    config = base / "etc" / "config"
    assert os.readlink(config / "sport") == "..data/sport"
    # Our client's update: a new value, a key removed, another changed.
    cm = await client.get(core_pb2.ConfigMap, "sport", namespace=namespace)
    cm.data["sport"] = "B" * N
    cm.data["mode"] = "two"
    del cm.data["extra"]
    await client.update(cm)
    changed = time.monotonic()
    await eventually(lambda: (config / "mode").read_text() == "two", what="the new files")
    print(f"the files changed {time.monotonic() - changed:.2f} s after the update")
    await eventually(lambda: "SAW B" in log_text() and "EXTRA False" in log_text(),
                     what="the pod reads the new value and the removed key is gone")  # fmt: skip
    assert not os.path.lexists(config / "extra")
    assert (base / "etc" / "mode").read_text() == "one"  # subPath: as the container started
    if KUBECTL is not None:  # the tutorial's way: kubectl edit configmap sport
        url = apiserver.rest_url  # type: ignore[attr-defined]
        _kubectl_edit(url, namespace, "-e '/^  sport:/y/B/C/'", "configmap/sport")
        await eventually(lambda: "SAW C" in log_text(), what="kubectl's edit reaches the pod")
    text = log_text()
    assert "TORN" not in text and "MISSING" not in text and "SAW ?" not in text, text[-2000:]


async def test_a_secret_volume_follows_its_secret_across_a_kubelet_restart(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    """An adopted pod's refresh writes its Secret's files as its own user's again (0400):
    the kubelet takes the pod's user from pod.json, not from a container start."""
    k = kubelets("--sync-frequency", "1s")
    secret = core_pb2.Secret(api_version="v1", kind="Secret")
    secret.metadata.name, secret.metadata.namespace = "creds", namespace
    secret.data["password"] = b"one"
    await client.create(secret)
    loop = "while :; do cat etc/creds/password; echo; sleep 0.1; done"
    pod = make_pod(namespace, "holder", k.name, ["sh", "-c", loop])
    pod.spec.volumes.add(name="creds").secret.secret_name = "creds"
    pod.spec.containers[0].volume_mounts.add(name="creds", mount_path="/etc/creds")
    await client.create(pod)

    def log_text() -> str:
        logs = list((k.root / "pods").glob("*/main/0.log"))
        return read_plain(logs[0]).decode() if logs else ""

    await eventually(lambda: "one\n" in log_text(), what="the pod reads its secret")
    k.kill()
    k.start()
    secret = await client.get(core_pb2.Secret, "creds", namespace=namespace)
    secret.data["password"] = b"two"
    await client.update(secret)
    await eventually(lambda: "two\n" in log_text(), what="the adopted pod reads the new secret")
    path = next((k.root / "pods").glob("*/etc/creds/password"))
    pod_dir = path.parent.parent.parent  # root's, with the pod user's group (its uid's number)
    st = path.stat()
    owner = pod_dir.stat().st_gid if os.geteuid() == 0 else os.geteuid()
    assert stat.S_IMODE(st.st_mode) == 0o400 and st.st_uid == owner
    assert "Permission denied" not in log_text()
