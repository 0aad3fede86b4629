"""Volume files and links (k8semu/kubelet/volumes.py) and how the process runtime lays them
out: persistentVolumeClaim/hostPath/memory emptyDir as links, downwardAPI and projected
files, an unbound claim as a clear error."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from k8semu.client import Client
from k8semu.kubelet.env import EnvError, PodFacts
from k8semu.kubelet.process import ProcessRuntime
from k8semu.kubelet.runtime import PodSetup, VolumeFile
from k8semu.kubelet.volumes import memory_dir_of, volume_files
from k8semu.pb.api.v1 import core_pb2
from tests.kubelet.conftest import KubeletProcess, eventually, flat_mounts
from tests.kubelet.test_e2e_process import make_pod


def pod_with(*volumes: core_pb2.Volume, mounts: dict[str, str]) -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace, pod.metadata.uid = "web-0", "ns", "u1"
    pod.metadata.labels["app"] = "web"
    pod.spec.volumes.extend(volumes)
    c = pod.spec.containers.add(name="main", image="x")
    for name, path in mounts.items():
        c.volume_mounts.add(name=name, mount_path=path)
    return pod


def files_of(pod: core_pb2.Pod, **kw: object) -> list[VolumeFile]:
    facts = PodFacts(pod_ip="127.244.0.5", host_ip="127.0.0.1", node_name="n1")
    return flat_mounts(volume_files(pod, pod.spec.containers[0], config_maps={}, secrets={},
                                    facts=facts, **kw))  # type: ignore[arg-type]  # fmt: skip


def test_claims_host_paths_and_memory_dirs_are_links() -> None:
    claim = core_pb2.Volume(name="www")
    claim.persistent_volume_claim.claim_name = "www-web-0"
    host = core_pb2.Volume(name="logs")
    host.host_path.path = "/var/log/app"
    mem = core_pb2.Volume(name="cache")
    mem.empty_dir.medium = "Memory"
    pod = pod_with(claim, host, mem, mounts={"www": "/data", "logs": "/logs", "cache": "/c"})
    got = files_of(pod, claims={"www-web-0": "/srv/pv1"}, memory_dir="/dev/shm")
    assert [(f.path, f.link) for f in got] == [
        ("/data", "/srv/pv1"),
        ("/logs", "/var/log/app"),
        ("/c", "/dev/shm/k8semu-u1/cache"),
    ]
    with pytest.raises(EnvError, match="'www': claim not bound"):
        files_of(pod, claims={})


def test_downward_api_and_projected_files() -> None:
    down = core_pb2.Volume(name="info")
    down.downward_api.items.add(path="name").field_ref.field_path = "metadata.name"
    down.downward_api.items.add(path="labels/app").field_ref.field_path = "metadata.labels['app']"
    proj = core_pb2.Volume(name="all")
    proj.projected.sources.add().downward_api.items.add(
        path="ip"
    ).field_ref.field_path = "status.podIP"
    opt = proj.projected.sources.add().config_map
    opt.name, opt.optional = "absent", True
    pod = pod_with(down, proj, mounts={"info": "/etc/info", "all": "/etc/all"})
    got = {f.path: f.data for f in files_of(pod)}
    assert got == {
        "/etc/info/": b"",
        "/etc/info/name": b"web-0",
        "/etc/info/labels/app": b"web",
        "/etc/all/": b"",
        "/etc/all/ip": b"127.244.0.5",
    }


async def test_the_process_runtime_links_mount_paths_and_replaces_an_empty_dir(
    tmp_path: Path,
) -> None:
    runtime = ProcessRuntime(tmp_path / "root")
    volume = tmp_path / "pv1"
    (tmp_path / "root" / "pods" / "u1" / "data").mkdir(parents=True)  # an earlier run's dir
    link = VolumeFile("/data", b"", link=str(volume))
    await runtime.prepare_pod(
        PodSetup(uid="u1", namespace="ns", name="web-0", pod_ip="", files=[link])
    )
    mount = tmp_path / "root" / "pods" / "u1" / "data"
    assert os.readlink(mount) == str(volume) and volume.is_dir()
    (mount / "f").write_text("kept")
    await runtime.prepare_pod(
        PodSetup(uid="u1", namespace="ns", name="web-0", pod_ip="", files=[link])
    )
    assert (volume / "f").read_text() == "kept"


async def test_removing_a_pod_keeps_its_volumes_data_and_drops_its_memory_dir(
    tmp_path: Path,
) -> None:
    runtime = ProcessRuntime(tmp_path / "root")
    volume = tmp_path / "pv1"
    memory = Path(memory_dir_of("u2")) / "cache"
    files = [VolumeFile("/data", b"", link=str(volume)), VolumeFile("/c", b"", link=str(memory))]
    await runtime.prepare_pod(
        PodSetup(uid="u2", namespace="ns", name="web-0", pod_ip="", files=files)
    )
    (volume / "f").write_text("kept")
    assert memory.is_dir()
    await runtime.remove_pod("u2")
    assert (volume / "f").read_text() == "kept"
    assert not memory.parent.exists() and not (tmp_path / "root" / "pods" / "u2").exists()


@pytest.mark.slow
async def test_a_pod_whose_empty_dir_outgrows_its_size_limit_is_evicted(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets()
    fill = 'head -c 8192 /dev/zero > "$K8SEMU_ROOT/scratch/blob"; exec sleep 300'
    pod = make_pod(namespace, "filler", k.name, ["sh", "-c", fill])
    pod.spec.containers[0].volume_mounts.add(name="scratch", mount_path="/scratch")
    pod.spec.volumes.add(name="scratch").empty_dir.size_limit = "4Ki"
    pod.spec.termination_grace_period_seconds = 1
    await client.create(pod)

    async def evicted() -> core_pb2.Pod | None:
        p = await client.get(core_pb2.Pod, "filler", namespace=namespace)
        return p if p.status.phase == "Failed" else None

    got = await eventually(evicted, what="the pod Failed")
    assert got.status.reason == "Evicted"
    assert got.status.message == 'Usage of EmptyDir volume "scratch" exceeds the limit "4Ki". '
    assert all(s.state.HasField("terminated") for s in got.status.container_statuses)
