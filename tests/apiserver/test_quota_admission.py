"""ResourceQuota: the kind's checks, what objects count (k8semu.api.resourcequota), and the
admission plugin's decisions and charges over an in-memory copy of the verbs it calls
(compare-and-swap on resourceVersion, as the store does)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from google.protobuf.message import Message

from k8semu.api import kinds
from k8semu.api import resourcequota as rq
from k8semu.apiserver import registry
from k8semu.apiserver.admission import quota
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.errors import Conflict, Forbidden, Invalid
from k8semu.apiserver.objects import meta
from k8semu.pb.api.v1 import core_pb2, quota_pb2

ROWS = registry.build(DEFAULT_RANGES)
QUOTA_ROW = ROWS.resolve("resourcequotas")
PODS = kinds.for_resource("pods")


def resource_quota(name: str = "q", **hard: str) -> quota_pb2.ResourceQuota:
    q = quota_pb2.ResourceQuota(api_version="v1", kind="ResourceQuota")
    q.metadata.name = name
    for k, v in hard.items():
        q.spec.hard[k.replace("_", ".")] = v
    QUOTA_ROW.prepare_for_create(q, namespace="default", uid=f"uid-{name}")
    QUOTA_ROW.validate_create(q)
    return q


def pod(name: str, *, cpu: str = "", limit: str = "", phase: str = "") -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name, p.metadata.namespace = name, "default"
    c = p.spec.containers.add(name="c", image="nginx")
    if cpu:
        c.resources.requests["cpu"] = cpu
    if limit:
        c.resources.limits["cpu"] = limit
    p.status.phase = phase
    return p


class Verbs:
    """The admission's view of the API server: objects by (plural, name) with a revision
    each; a status update whose revision is stale is a Conflict."""

    def __init__(self, *objs: Message) -> None:
        self.objects: dict[tuple[str, str], Message] = {}
        self.revision = 0
        self.cache: list[Message] | None = None
        for obj in objs:
            self.put(obj)

    def put(self, obj: Message) -> None:
        self.revision += 1
        meta(obj).resource_version = str(self.revision)
        self.objects[(kinds.for_message(obj).plural, meta(obj).name)] = obj

    @property
    def watch_caches(self) -> Verbs:
        return self

    def snapshot(self, kind: Any, namespace: str) -> list[Message] | None:
        return self.cache

    def confirm_empty(self, kind: Any, namespace: str) -> None:
        pass

    async def list_objects(self, kind: Any, namespace: str, label_selector: str) -> list[Message]:
        await asyncio.sleep(0)  # another create may run here, as with a real store
        return [_copy(o) for (plural, _), o in self.objects.items() if plural == kind.plural]

    async def update_object(
        self, kind: Any, stored: Message, mod_revision: int, obj: Message, *, status: bool = False
    ) -> Message:
        await asyncio.sleep(0)
        current = self.objects[(kind.plural, meta(stored).name)]
        if int(meta(current).resource_version) != mod_revision:
            raise Conflict("the object has been modified")
        new = _copy(obj)
        self.put(new)
        return new

    def quota(self, name: str = "q") -> quota_pb2.ResourceQuota:
        q = self.objects[("resourcequotas", name)]
        assert isinstance(q, quota_pb2.ResourceQuota)
        return q


def _copy(obj: Message) -> Message:
    new = type(obj)()
    new.CopyFrom(obj)
    return new


def test_bad_quotas_are_refused_with_kubernetes_messages() -> None:
    with pytest.raises(Invalid) as bad:
        resource_quota(pods="-1", cpu="abc", foo="1", configmaps="1.5")
    text = str(bad.value)
    assert 'spec.hard[pods]: Invalid value: "-1": must be greater than or equal to 0' in text
    assert 'spec.hard[foo]: Invalid value: "foo": must be a standard resource for quota' in text
    assert 'spec.hard[configmaps]: Invalid value: "1.5": must be an integer' in text
    assert "spec.hard[cpu]" in text
    # Qualified names are accepted, as Kubernetes does.
    resource_quota(**{"count/deployments.apps": "2", "requests.nvidia.com/gpu": "1"})


def test_usage_of_pods_services_and_counts() -> None:
    p = pod("a", cpu="250m", limit="1")
    p.spec.init_containers.add(name="i").resources.requests["cpu"] = "2"
    used = rq.usage(p)
    assert used["pods"] == 1 and used["count/pods"] == 1
    assert used["requests.cpu"] == 2 and used["cpu"] == 2  # the init container is larger
    assert used["limits.cpu"] == 1
    assert rq.usage(pod("done", phase="Succeeded")) == {}
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.spec.type = "NodePort"
    svc.spec.ports.add(port=80, node_port=30080)
    assert rq.usage(svc)["services.nodeports"] == 1
    assert rq.source("count/deployments.apps") == kinds.for_resource("deployments")


async def test_a_create_over_the_quota_is_forbidden_with_kubernetes_wording() -> None:
    verbs = Verbs(resource_quota(pods="2"), pod("a"), pod("b"))
    with pytest.raises(Forbidden) as refused:
        await quota.admit(verbs, PODS, pod("c"))
    assert str(refused.value) == (
        'pods "c" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2'
    )
    assert "used" not in str(verbs.quota().status)  # nothing written


async def test_an_admitted_create_charges_the_quota_status() -> None:
    verbs = Verbs(resource_quota(pods="2", requests_cpu="1"))
    await quota.admit(verbs, PODS, pod("a", cpu="400m"))
    st = verbs.quota().status
    assert dict(st.used) == {"pods": "1", "requests.cpu": "400m"}
    assert dict(st.hard) == {"pods": "2", "requests.cpu": "1"}
    with pytest.raises(Forbidden, match=re.escape("requested: requests.cpu=700m")):
        await quota.admit(verbs, PODS, pod("b", cpu="700m"))
    await quota.admit(verbs, PODS, pod("b", cpu="600m"), dry_run=True)
    assert verbs.quota().status.used["requests.cpu"] == "400m"  # a dry run charges nothing


async def test_a_pod_without_the_limited_requests_is_refused() -> None:
    verbs = Verbs(resource_quota(requests_cpu="1"))
    with pytest.raises(Forbidden) as refused:
        await quota.admit(verbs, PODS, pod("a"))
    assert str(refused.value) == 'pods "a" is forbidden: failed quota: q: must specify requests.cpu'
    # Other kinds are not concerned by a compute-only quota.
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name, cm.metadata.namespace = "c", "default"
    await quota.admit(verbs, kinds.for_resource("configmaps"), cm)


async def test_concurrent_creates_cannot_both_take_the_last_slot() -> None:
    q = resource_quota(pods="3")
    q.status.used["pods"] = "2"
    verbs = Verbs(q)
    verbs.cache = [_copy(q)]  # both start from the same (soon stale) cached copy
    results = await asyncio.gather(
        *(quota.admit(verbs, PODS, pod(f"p{i}")) for i in range(4)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1, results
    assert all(isinstance(r, Forbidden) for r in results if r is not None)
    assert verbs.quota().status.used["pods"] == "3"
