"""A StatefulSet with storage on real processes: store, API server, a `k8semu scheduler`, a
kubelet with the process runtime, and the statefulset, persistentvolume, endpoints and
garbage-collector controllers. Its pods come up in order, each claim gets a provisioned
local volume, data written by web-1 survives web-1's deletion, the headless Service's names
answer through the DNS add-on's zone code, and a claim for a missing class stays Pending
with an Event."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from k8semu.client import Client, Informer, Invalid
from k8semu.controllers.manager import ControllerManager
from k8semu.images import _dnswire as w
from k8semu.images._kubezone import KubernetesZone
from k8semu.pb.api.v1 import apps_pb2, core_pb2, storage_pb2
from tests.controllers.conftest import controller_manager
from tests.kubelet.conftest import KubeletProcess, kubelets  # noqa: F401
from tests.scheduler.conftest import SchedulerProcess
from tests.support.poll import eventually

pytestmark = pytest.mark.slow

# Writes the pod's name into its volume once: a replacement finds its predecessor's file.
SCRIPT = (
    'test -f "$K8SEMU_ROOT/data/first" || echo "$HOSTNAME" > "$K8SEMU_ROOT/data/first";'
    " exec sleep 300"
)


@pytest.fixture
async def manager(client: Client) -> AsyncIterator[ControllerManager]:
    names = ("statefulset", "persistentvolume", "endpoints", "garbagecollector")
    async with controller_manager(client, *names) as cm:
        yield cm


def storage_class(name: str) -> storage_pb2.StorageClass:
    sc = storage_pb2.StorageClass(api_version="storage.k8s.io/v1", kind="StorageClass")
    sc.metadata.name = name
    sc.metadata.annotations["storageclass.kubernetes.io/is-default-class"] = "true"
    sc.provisioner = "k8semu.io/local"
    sc.volume_binding_mode = "WaitForFirstConsumer"
    return sc


def web(namespace: str) -> apps_pb2.StatefulSet:
    sts = apps_pb2.StatefulSet(api_version="apps/v1", kind="StatefulSet")
    sts.metadata.name, sts.metadata.namespace = "web", namespace
    sts.spec.replicas = 3
    sts.spec.service_name = "nginx"
    sts.spec.selector.match_labels["app"] = "web"
    sts.spec.template.metadata.labels["app"] = "web"
    c = sts.spec.template.spec.containers.add(name="main", image="k8semu-test/python")
    c.command.extend(["sh", "-c", SCRIPT])
    c.env.add(name="HOSTNAME").value_from.field_ref.field_path = "metadata.name"
    c.volume_mounts.add(name="www", mount_path="/data")
    sts.spec.template.spec.termination_grace_period_seconds = 1
    claim = sts.spec.volume_claim_templates.add()
    claim.metadata.name = "www"
    claim.spec.access_modes.append("ReadWriteOnce")
    claim.spec.resources.requests["storage"] = "1Mi"
    return sts


def headless(namespace: str) -> core_pb2.Service:
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = "nginx", namespace
    svc.spec.cluster_ip = "None"
    svc.spec.selector["app"] = "web"
    svc.spec.ports.add(name="web", port=80)
    return svc


async def test_pods_come_up_in_order_keep_their_data_and_resolve(
    client: Client,
    namespace: str,
    manager: ControllerManager,
    scheduler: SchedulerProcess,
    kubelets: Callable[..., KubeletProcess],  # noqa: F811
) -> None:
    k = kubelets("--runtime", "process", "--listen-address", "127.0.0.1:0")
    await client.create(storage_class(f"local-{namespace}"))
    await client.create(headless(namespace))
    await client.create(web(namespace))

    async def pods() -> dict[str, core_pb2.Pod]:
        items = (await client.list(core_pb2.Pod, namespace=namespace)).items
        return {p.metadata.name: p for p in items if not p.metadata.HasField("deletion_timestamp")}

    async def all_ready() -> dict[str, core_pb2.Pod] | None:
        found = await pods()
        ok = len(found) == 3 and all(
            any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)
            for p in found.values()
        )
        return found if ok else None

    first = await eventually(all_ready, what="web-0..2 Running and Ready")
    # OrderedReady: each pod was created after the one before it became Ready.
    for i in (1, 2):
        before = next(c for c in first[f"web-{i - 1}"].status.conditions if c.type == "Ready")
        created = first[f"web-{i}"].metadata.creation_timestamp.ToNanoseconds()
        assert created >= before.last_transition_time.ToNanoseconds() - 1_000_000_000
    claims = (await client.list(core_pb2.PersistentVolumeClaim, namespace=namespace)).items
    assert sorted(c.metadata.name for c in claims) == ["www-web-0", "www-web-1", "www-web-2"]
    assert {c.status.phase for c in claims} == {"Bound"}
    pv = await client.get(core_pb2.PersistentVolume, claims[1].spec.volume_name)
    data = Path(pv.spec.local.path) / "first"
    assert Path(pv.spec.local.path).is_relative_to(k.root)
    await eventually(data.is_file, what="web-1 wrote into its volume")
    assert data.read_text().strip() == "web-1"

    old_uid = first["web-1"].metadata.uid
    await client.delete(core_pb2.Pod, "web-1", namespace=namespace)

    async def replaced() -> bool:
        again = await all_ready()
        return again is not None and again["web-1"].metadata.uid != old_uid

    await eventually(replaced, what="a new web-1, Ready")
    again = await pods()
    mount = k.root / "pods" / again["web-1"].metadata.uid / "data"
    assert os.readlink(mount) == pv.spec.local.path  # the same volume, mounted again
    assert (mount / "first").read_text().strip() == "web-1"

    services = Informer(client, core_pb2.Service, namespace=namespace)
    endpoints = Informer(client, core_pb2.Endpoints, namespace=namespace)
    services.start()
    endpoints.start()
    try:
        zone = KubernetesZone("cluster.local", services, endpoints)
        name = w.normalize(f"web-0.nginx.{namespace}.svc.cluster.local")

        def resolves() -> list[object]:
            return [rr.data for rr in zone.answer(w.Question(name, w.A)).answers]

        got = await eventually(resolves, what="web-0.nginx resolves")
        assert got == [again["web-0"].status.pod_ip]
    finally:
        await services.stop()
        await endpoints.stop()

    await client.delete(apps_pb2.StatefulSet, "web", namespace=namespace)

    async def no_pods() -> bool:
        return not await pods()

    await eventually(no_pods, what="the garbage collector removes the StatefulSet's pods")
    claims = (await client.list(core_pb2.PersistentVolumeClaim, namespace=namespace)).items
    assert len(claims) == 3  # whenDeleted Retain: the data stays


async def test_bad_statefulsets_are_refused_naming_the_field(
    client: Client, namespace: str
) -> None:
    sts = web(namespace)
    sts.spec.template.metadata.labels["app"] = "other"
    with pytest.raises(Invalid, match=r"spec\.template\.metadata\.labels"):
        await client.create(sts)
    await client.create(web(namespace))
    # Patches: an update carrying the read's resourceVersion met the controller's status
    # write first on a busy host, a Conflict instead of the refusal under test.
    storage = "/spec/volumeClaimTemplates/0/spec/resources/requests/storage"
    for change, patch_type in (
        ({"spec": {"serviceName": "elsewhere"}}, "merge"),
        ([{"op": "replace", "path": storage, "value": "2Mi"}], "json"),
    ):
        with pytest.raises(Invalid, match="Forbidden: updates to statefulset spec"):
            await client.patch(
                apps_pb2.StatefulSet, "web", change, namespace=namespace, patch_type=patch_type
            )


async def test_a_claim_for_a_missing_class_stays_pending_with_an_event(
    client: Client, namespace: str, manager: ControllerManager
) -> None:
    claim = core_pb2.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
    claim.metadata.name, claim.metadata.namespace = "orphan", namespace
    claim.spec.access_modes.append("ReadWriteOnce")
    claim.spec.resources.requests["storage"] = "1Mi"
    claim.spec.storage_class_name = "no-such-class"
    await client.create(claim)

    async def warned() -> bool:
        events = (await client.list(core_pb2.Event, namespace=namespace)).items
        return any(
            e.reason == "ProvisioningFailed" and "no-such-class" in e.message for e in events
        )

    await eventually(warned, what="a ProvisioningFailed event naming the class")
    got = await client.get(core_pb2.PersistentVolumeClaim, "orphan", namespace=namespace)
    assert got.status.phase == "Pending" and not got.spec.volume_name
