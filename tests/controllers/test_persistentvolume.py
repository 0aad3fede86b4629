"""The persistentvolume controller's decisions (`decide`), and binding, provisioning and
release on a fake cluster; the storage kinds' API checks."""

from __future__ import annotations

import pytest

from k8semu.apiserver import registry
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.errors import Invalid
from k8semu.controllers.persistentvolume import (
    CLEANUP_FINALIZER,
    STORAGE_DIR_ANNOTATION,
    PersistentVolumeController,
    decide,
    volume_node,
)
from k8semu.pb.api.v1 import core_pb2, storage_pb2
from tests.controllers.conftest import FakeCluster

REG = registry.build(DEFAULT_RANGES)
CLAIMS, VOLUMES, CLASSES = (
    REG.resolve("persistentvolumeclaims"),
    REG.resolve("persistentvolumes"),
    REG.resolve("storageclasses"),
)


def claim(
    name: str = "data", size: str = "1Gi", cls: str | None = None
) -> core_pb2.PersistentVolumeClaim:
    c = core_pb2.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
    c.metadata.name = name
    c.spec.access_modes.append("ReadWriteOnce")
    c.spec.resources.requests["storage"] = size
    if cls is not None:
        c.spec.storage_class_name = cls
    CLAIMS.prepare_for_create(c, namespace="default", uid=f"uid-{name}")
    CLAIMS.validate_create(c)
    return c


def volume(name: str, size: str, cls: str = "") -> core_pb2.PersistentVolume:
    pv = core_pb2.PersistentVolume(api_version="v1", kind="PersistentVolume")
    pv.metadata.name = name
    pv.spec.capacity["storage"] = size
    pv.spec.access_modes.append("ReadWriteOnce")
    pv.spec.host_path.path = f"/tmp/{name}"
    pv.spec.storage_class_name = cls
    VOLUMES.prepare_for_create(pv, namespace="", uid=f"uid-{name}")
    VOLUMES.validate_create(pv)
    pv.status.phase = "Available"
    return pv


def klass(name: str, *, default: bool = False, mode: str = "Immediate", reclaim: str = "Delete",
          provisioner: str = "k8semu.io/local") -> storage_pb2.StorageClass:  # fmt: skip
    sc = storage_pb2.StorageClass(api_version="storage.k8s.io/v1", kind="StorageClass")
    sc.metadata.name = name
    if default:
        sc.metadata.annotations["storageclass.kubernetes.io/is-default-class"] = "true"
    sc.provisioner = provisioner
    sc.volume_binding_mode = mode
    sc.reclaim_policy = reclaim
    CLASSES.prepare_for_create(sc, namespace="", uid=f"uid-{name}")
    CLASSES.validate_create(sc)
    return sc


def node(name: str, ready: bool = True) -> core_pb2.Node:
    n = core_pb2.Node(api_version="v1", kind="Node")
    n.metadata.name = name
    n.metadata.annotations[STORAGE_DIR_ANNOTATION] = f"/srv/{name}"
    n.status.conditions.add(type="Ready", status="True" if ready else "False")
    return n


def test_the_smallest_matching_volume_of_the_class_is_chosen() -> None:
    vols = [volume("big", "10Gi"), volume("small", "2Gi"), volume("tiny", "512Mi"),
            volume("other", "1Gi", cls="fast")]  # fmt: skip
    assert decide(claim(cls=""), vols, [], "", []).volume == "small"
    assert decide(claim(cls="fast"), vols, [], "", []).volume == "other"


def test_the_default_class_provisions_and_missing_classes_warn() -> None:
    classes = [klass("standard", default=True), klass("late", mode="WaitForFirstConsumer")]
    nodes = [node("n2"), node("n1"), node("down", ready=False)]
    assert decide(claim(), [], classes, "", nodes).node == "n1"  # Immediate: least loaded
    waiting = decide(claim(cls="late"), [], classes, "", nodes)
    assert (waiting.node, waiting.reason) == ("", "WaitForFirstConsumer")
    assert decide(claim(cls="late"), [], classes, "n2", nodes).node == "n2"
    missing = decide(claim(cls="gone"), [], classes, "", nodes)
    assert missing.warn and missing.message == 'storageclass.storage.k8s.io "gone" not found'
    other = decide(claim(cls="ext"), [], [klass("ext", provisioner="x.io/y")], "", nodes)
    assert other.reason == "ExternalProvisioning"
    assert decide(claim(), [], [], "", nodes).reason == "FailedBinding"  # no class, no volume


async def test_provision_bind_and_delete_on_release() -> None:
    cluster = FakeCluster()
    ctl = PersistentVolumeController(cluster.ctx, clock=cluster.clock)
    cluster.add(klass("standard", default=True), node("n1"), claim())
    await cluster.drain(ctl)
    [pv] = cluster.objects(core_pb2.PersistentVolume)
    [c] = cluster.objects(core_pb2.PersistentVolumeClaim)
    assert (c.status.phase, c.spec.volume_name, pv.status.phase) == (
        "Bound",
        pv.metadata.name,
        "Bound",
    )
    assert pv.spec.local.path == f"/srv/n1/{pv.metadata.name}"
    assert volume_node(pv) == "n1" and CLEANUP_FINALIZER in pv.metadata.finalizers
    assert c.status.capacity["storage"] == "1Gi"
    assert cluster.recorder.messages("ProvisioningSucceeded")
    cluster.client.objects.pop(("persistentvolumeclaims", "default", "data"))
    cluster.sync()
    await cluster.drain(ctl)
    assert cluster.objects(core_pb2.PersistentVolume) == []  # Delete: the object goes


async def test_retain_keeps_a_released_volume() -> None:
    cluster = FakeCluster()
    ctl = PersistentVolumeController(cluster.ctx, clock=cluster.clock)
    cluster.add(klass("keep", reclaim="Retain"), node("n1"), claim(cls="keep"))
    await cluster.drain(ctl)
    cluster.client.objects.pop(("persistentvolumeclaims", "default", "data"))
    cluster.sync()
    await cluster.drain(ctl)
    [pv] = cluster.objects(core_pb2.PersistentVolume)
    assert pv.status.phase == "Released"


async def test_a_static_volume_binds_and_a_lost_volume_shows() -> None:
    cluster = FakeCluster()
    ctl = PersistentVolumeController(cluster.ctx, clock=cluster.clock)
    cluster.add(volume("pv1", "5Gi"), claim(cls=""))
    await cluster.drain(ctl)
    [c] = cluster.objects(core_pb2.PersistentVolumeClaim)
    assert (c.spec.volume_name, c.status.phase) == ("pv1", "Bound")
    [pv] = cluster.objects(core_pb2.PersistentVolume)
    assert (pv.spec.claim_ref.name, pv.spec.claim_ref.uid) == ("data", "uid-data")
    cluster.client.objects.pop(("persistentvolumes", "", "pv1"))
    cluster.sync()
    ctl.queue.add("claim:default/data")
    await cluster.drain(ctl)
    assert cluster.objects(core_pb2.PersistentVolumeClaim)[0].status.phase == "Lost"


def test_storage_checks_name_the_field() -> None:
    with pytest.raises(Invalid, match=r"resources\.requests\[storage\]"):
        claim(size="lots")
    bad = volume("v", "1Gi")
    bad.spec.ClearField("host_path")
    with pytest.raises(Invalid, match="exactly 1 volume type"):
        VOLUMES.validate_create(bad)
    with pytest.raises(Invalid, match="volumeBindingMode"):
        klass("x", mode="Later")
    old = claim()
    new = core_pb2.PersistentVolumeClaim()
    new.CopyFrom(old)
    new.spec.volume_name = "pv1"  # the binder may set it once
    CLAIMS.validate_for_update(new, old)
    new.spec.access_modes.append("ReadOnlyMany")
    with pytest.raises(Invalid, match="spec is immutable"):
        CLAIMS.validate_for_update(new, old)


def test_the_scheduler_sends_a_pod_where_its_bound_volume_is() -> None:
    """framework.with_volume_nodes: the pod's own terms AND the volume's node affinity."""
    from k8semu.scheduler.framework import NodeInfo, pod_info, with_volume_nodes
    from k8semu.scheduler.plugins import filter_node_affinity

    def labelled(name: str, zone: str) -> NodeInfo:
        n = node(name)
        n.metadata.labels.update({"kubernetes.io/hostname": name, "zone": zone})
        return NodeInfo(name, n)

    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace = "web-0", "default"
    pod.spec.containers.add(name="c", image="x")
    pod.spec.node_selector["zone"] = "a"
    pv = core_pb2.PersistentVolume()
    term = pv.spec.node_affinity.required.node_selector_terms.add()
    term.match_expressions.add(key="kubernetes.io/hostname", operator="In", values=["n2"])
    info = with_volume_nodes(pod_info(pod), [pv.spec.node_affinity], "volumes")
    fits = {
        n.name: filter_node_affinity(info, n) is None
        for n in (labelled("n1", "a"), labelled("n2", "a"), labelled("n3", "b"))
    }
    assert fits == {"n1": False, "n2": True, "n3": False}
