"""StatefulSet controller on a fake cluster: ordered creation and scale-down, Parallel, claims
from volumeClaimTemplates that outlive their pods, rolling updates with a partition, OnDelete,
status; and the API's checks of StatefulSets."""

from __future__ import annotations

import pytest

from k8semu.apiserver import registry
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.errors import Invalid
from k8semu.controllers.statefulset import REVISION_HASH, StatefulSetController, update_revision
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from tests.controllers.conftest import FakeCluster, set_ready, template

ROW = registry.build(DEFAULT_RANGES).resolve("statefulsets")
KEY = "default/web"


def stateful_set(replicas: int = 3, *, claims: bool = True, **spec: object) -> apps_pb2.StatefulSet:
    sts = apps_pb2.StatefulSet(api_version="apps/v1", kind="StatefulSet")
    sts.metadata.name = "web"
    sts.metadata.generation = 1
    sts.spec.replicas = replicas
    sts.spec.service_name = "nginx"
    sts.spec.selector.match_labels["app"] = "web"
    sts.spec.template.CopyFrom(template({"app": "web"}))
    if claims:
        claim = sts.spec.volume_claim_templates.add()
        claim.metadata.name = "www"
        claim.spec.access_modes.append("ReadWriteOnce")
        claim.spec.resources.requests["storage"] = "1Mi"
    for key, value in spec.items():
        setattr(sts.spec, key, value)
    ROW.prepare_for_create(sts, namespace="default", uid="uid-sts-web")
    ROW.validate_create(sts)
    return sts


def names(cluster: FakeCluster, kind: type[object] = core_pb2.Pod) -> list[str]:
    return [o.metadata.name for o in cluster.objects(kind)]


def ready(cluster: FakeCluster, name: str) -> None:
    pod = next(p for p in cluster.objects(core_pb2.Pod) if p.metadata.name == name)
    pod.status.phase = "Running"
    set_ready(pod, cluster.clock())
    cluster.add(pod)


async def test_ordered_ready_creates_one_at_a_time_with_identity_and_claims() -> None:
    cluster = FakeCluster()
    ctl = StatefulSetController(cluster.ctx, clock=cluster.clock)
    cluster.add(stateful_set())
    await cluster.drain(ctl)
    assert names(cluster) == ["web-0"]
    assert names(cluster, core_pb2.PersistentVolumeClaim) == ["www-web-0"]
    pod = cluster.objects(core_pb2.Pod)[0]
    assert (pod.spec.hostname, pod.spec.subdomain) == ("web-0", "nginx")
    assert pod.metadata.labels["statefulset.kubernetes.io/pod-name"] == "web-0"
    assert pod.metadata.labels["apps.kubernetes.io/pod-index"] == "0"
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == "www-web-0"
    cluster.kubelet(ready=False)  # Running, not Ready: web-1 waits
    await cluster.drain(ctl)
    assert names(cluster) == ["web-0"]
    for step in range(3):
        ready(cluster, f"web-{step}")
        await cluster.drain(ctl)
    assert names(cluster) == ["web-0", "web-1", "web-2"]
    assert names(cluster, core_pb2.PersistentVolumeClaim) == ["www-web-0", "www-web-1", "www-web-2"]
    status = cluster.objects(apps_pb2.StatefulSet)[0].status
    assert (status.replicas, status.ready_replicas, status.available_replicas) == (3, 3, 3)
    assert status.current_revision == status.update_revision != ""
    assert (status.current_replicas, status.updated_replicas) == (3, 3)


async def bring_up(cluster: FakeCluster, ctl: StatefulSetController, count: int) -> None:
    await cluster.start_pods_one_by_one(ctl, steps=count + 2)
    await cluster.drain(ctl)


async def test_scale_down_highest_first_keeps_claims_and_a_deleted_pod_comes_back() -> None:
    cluster = FakeCluster()
    ctl = StatefulSetController(cluster.ctx, clock=cluster.clock)
    cluster.add(stateful_set())
    await bring_up(cluster, ctl, 3)
    cluster.client.objects.pop(("pods", "default", "web-1"))
    cluster.sync()
    await cluster.drain(ctl)
    assert names(cluster) == ["web-0", "web-1", "web-2"]  # the same name, the same claim
    ready(cluster, "web-1")
    sts = cluster.objects(apps_pb2.StatefulSet)[0]
    sts.spec.replicas = 1
    cluster.add(sts)
    seen: list[list[str]] = []
    await cluster.drain(ctl, check=lambda: seen.append(names(cluster)))
    assert [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]] == [
        ["web-0", "web-1"],  # web-2 first
        ["web-0"],
    ]
    assert names(cluster, core_pb2.PersistentVolumeClaim) == ["www-web-0", "www-web-1", "www-web-2"]


async def test_scale_down_with_when_scaled_delete_removes_the_claims() -> None:
    cluster = FakeCluster()
    ctl = StatefulSetController(cluster.ctx, clock=cluster.clock)
    sts = stateful_set(2)
    sts.spec.persistent_volume_claim_retention_policy.when_scaled = "Delete"
    cluster.add(sts)
    await bring_up(cluster, ctl, 2)
    sts = cluster.objects(apps_pb2.StatefulSet)[0]
    sts.spec.replicas = 1
    cluster.add(sts)
    await cluster.drain(ctl)
    assert names(cluster, core_pb2.PersistentVolumeClaim) == ["www-web-0"]


async def test_ordered_scale_down_waits_for_an_unhealthy_pod() -> None:
    cluster = FakeCluster()
    ctl = StatefulSetController(cluster.ctx, clock=cluster.clock)
    cluster.add(stateful_set())
    await bring_up(cluster, ctl, 3)
    web0 = cluster.objects(core_pb2.Pod)[0]
    del web0.status.conditions[:]
    sts = cluster.objects(apps_pb2.StatefulSet)[0]
    sts.spec.replicas = 2
    cluster.add(web0, sts)
    await cluster.drain(ctl)
    assert names(cluster) == ["web-0", "web-1", "web-2"]


async def test_parallel_creates_every_pod_at_once() -> None:
    cluster = FakeCluster()
    ctl = StatefulSetController(cluster.ctx, clock=cluster.clock)
    cluster.add(stateful_set(4, claims=False, pod_management_policy="Parallel"))
    await cluster.drain(ctl)
    assert names(cluster) == ["web-0", "web-1", "web-2", "web-3"]
    sts = cluster.objects(apps_pb2.StatefulSet)[0]
    sts.spec.replicas = 0
    cluster.add(sts)
    await cluster.drain(ctl)
    assert names(cluster) == []


async def test_rolling_update_goes_down_from_the_highest_ordinal_to_the_partition() -> None:
    cluster = FakeCluster()
    ctl = StatefulSetController(cluster.ctx, clock=cluster.clock)
    cluster.add(stateful_set(claims=False))
    await bring_up(cluster, ctl, 3)
    sts = cluster.objects(apps_pb2.StatefulSet)[0]
    sts.spec.template.spec.containers[0].image = "nginx:2"
    sts.spec.update_strategy.rolling_update.partition = 1
    cluster.add(sts)
    new = update_revision(sts)
    order: list[str] = []

    def check() -> None:
        for p in cluster.objects(core_pb2.Pod):
            if p.metadata.labels[REVISION_HASH] == new and p.metadata.name not in order:
                order.append(p.metadata.name)

    await cluster.start_pods_one_by_one(ctl, steps=8, check=check)
    assert order == ["web-2", "web-1"]
    images = [p.spec.containers[0].image for p in cluster.objects(core_pb2.Pod)]
    assert images == ["nginx:1", "nginx:2", "nginx:2"]
    status = cluster.objects(apps_pb2.StatefulSet)[0].status
    assert (status.updated_replicas, status.current_replicas) == (2, 1)
    assert status.current_revision != status.update_revision == new


async def test_on_delete_replaces_only_deleted_pods() -> None:
    cluster = FakeCluster()
    ctl = StatefulSetController(cluster.ctx, clock=cluster.clock)
    sts = stateful_set(2, claims=False)
    sts.spec.update_strategy.type = "OnDelete"
    sts.spec.update_strategy.ClearField("rolling_update")
    cluster.add(sts)
    await bring_up(cluster, ctl, 2)
    sts = cluster.objects(apps_pb2.StatefulSet)[0]
    sts.spec.template.spec.containers[0].image = "nginx:2"
    cluster.add(sts)
    await cluster.drain(ctl)
    assert [p.spec.containers[0].image for p in cluster.objects(core_pb2.Pod)] == ["nginx:1"] * 2
    cluster.client.objects.pop(("pods", "default", "web-0"))
    cluster.sync()
    await cluster.drain(ctl)
    images = [p.spec.containers[0].image for p in cluster.objects(core_pb2.Pod)]
    assert images == ["nginx:2", "nginx:1"]


async def test_a_failed_pod_is_made_again() -> None:
    cluster = FakeCluster()
    ctl = StatefulSetController(cluster.ctx, clock=cluster.clock)
    cluster.add(stateful_set(2, claims=False))
    await bring_up(cluster, ctl, 2)
    web0 = cluster.objects(core_pb2.Pod)[0]
    web0.status.phase = "Failed"
    cluster.add(web0)
    await cluster.drain(ctl)
    pods = cluster.objects(core_pb2.Pod)
    assert [p.metadata.name for p in pods] == ["web-0", "web-1"]
    assert pods[0].status.phase != "Failed"  # a new web-0


async def test_a_set_made_again_adopts_its_orphaned_pods() -> None:
    """`kubectl delete sts web --cascade=orphan`, then the set made again with fewer replicas
    (StatefulSet Basics): it adopts web-0 and web-1 and deletes web-2; a pod the selector
    matches under another name stays an orphan."""
    cluster = FakeCluster()
    ctl = StatefulSetController(cluster.ctx, clock=cluster.clock)
    cluster.add(stateful_set(3, claims=False))
    await bring_up(cluster, ctl, 3)
    cluster.client.objects.pop(("statefulsets", "default", "web"))
    # What the garbage collector's orphaning leaves: pods and revisions without owners.
    for orphan in [*cluster.objects(core_pb2.Pod), *cluster.objects(apps_pb2.ControllerRevision)]:
        del orphan.metadata.owner_references[:]
        cluster.add(orphan)
    stray = cluster.objects(core_pb2.Pod)[0]
    stray.metadata.name = "other-0"
    cluster.add(stray)
    again = stateful_set(2, claims=False)
    again.metadata.uid = "uid-sts-web-again"
    cluster.add(again)
    await cluster.drain(ctl)
    owners = {p.metadata.name: [r.uid for r in p.metadata.owner_references]
              for p in cluster.objects(core_pb2.Pod)}  # fmt: skip
    assert owners == {"other-0": [], "web-0": ["uid-sts-web-again"], "web-1": ["uid-sts-web-again"]}
    (revision,) = cluster.objects(apps_pb2.ControllerRevision)
    assert [r.uid for r in revision.metadata.owner_references] == ["uid-sts-web-again"]


def test_defaults() -> None:
    sts = stateful_set()
    assert sts.spec.pod_management_policy == "OrderedReady"
    assert sts.spec.update_strategy.type == "RollingUpdate"
    assert sts.spec.update_strategy.rolling_update.partition == 0
    assert sts.spec.persistent_volume_claim_retention_policy.when_deleted == "Retain"
    assert sts.spec.volume_claim_templates[0].spec.volume_mode == "Filesystem"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s.spec.template.metadata.labels.update(app="other"), "spec.template.metadata"),
        (lambda s: setattr(s.spec, "pod_management_policy", "Random"), "spec.podManagementPolicy"),
        (lambda s: setattr(s.spec.template.spec, "restart_policy", "Never"), "restartPolicy"),
        (lambda s: s.spec.volume_claim_templates[0].spec.ClearField("access_modes"), "accessModes"),
        (
            lambda s: s.spec.volume_claim_templates[0].spec.resources.requests.update(storage="x"),
            "requests[storage]",
        ),
    ],
)
def test_bad_specs_are_refused_naming_the_field(change: object, field: str) -> None:
    sts = stateful_set()
    change(sts)  # type: ignore[operator]
    with pytest.raises(Invalid, match=field.replace("[", r"\[")):
        ROW.validate_create(sts)


def test_only_some_fields_may_change() -> None:
    old = stateful_set()
    new = apps_pb2.StatefulSet()
    new.CopyFrom(old)
    new.spec.replicas = 5
    new.spec.template.spec.containers[0].image = "nginx:2"
    ROW.validate_for_update(new, old)
    new.spec.service_name = "other"
    with pytest.raises(Invalid, match="Forbidden: updates to statefulset spec"):
        ROW.validate_for_update(new, old)


def test_the_benchmark_statefulset_passes_the_api_checks() -> None:
    from k8semu.bench.statefulset import _stateful_set

    for policy in ("OrderedReady", "Parallel"):
        sts = _stateful_set("ns", 3, policy, claims=True)
        ROW.prepare_for_create(sts, namespace="ns", uid="u")
        ROW.validate_create(sts)
