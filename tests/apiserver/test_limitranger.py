"""LimitRange: the kind's defaults and checks, and the LimitRanger admission's defaults and
refusals (Kubernetes' messages), over the registry's rows and the admission chain with an
in-memory copy of the verbs."""

from __future__ import annotations

import pytest

from k8semu.api import kinds
from k8semu.apiserver import admission, registry
from k8semu.apiserver.admission import limitranger
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.errors import Forbidden, Invalid
from k8semu.pb.api.v1 import core_pb2, quota_pb2
from tests.apiserver.test_quota_admission import Verbs

ROWS = registry.build(DEFAULT_RANGES)
LR_ROW = ROWS.resolve("limitranges")
POD_ROW = ROWS.resolve("pods")


def limit_range(kind: str = "Container", **fields: dict[str, str]) -> quota_pb2.LimitRange:
    lr = quota_pb2.LimitRange(api_version="v1", kind="LimitRange")
    lr.metadata.name = "lr"
    item = lr.spec.limits.add(type=kind)
    for name, values in fields.items():
        getattr(item, name).update(values)
    LR_ROW.prepare_for_create(lr, namespace="default", uid="uid-lr")
    LR_ROW.validate_create(lr)
    return lr


def pod(name: str = "p", *, requests: dict[str, str] | None = None,
        limits: dict[str, str] | None = None) -> core_pb2.Pod:  # fmt: skip
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name = name
    c = p.spec.containers.add(name="c", image="nginx")
    c.resources.requests.update(requests or {})
    c.resources.limits.update(limits or {})
    POD_ROW.prepare_for_create(p, namespace="default", uid="")
    return p


def test_container_items_default_as_kubernetes() -> None:
    lr = limit_range(max={"cpu": "2"}, min={"memory": "64Mi"})
    item = lr.spec.limits[0]
    assert dict(item.default) == {"cpu": "2"}  # from max
    assert dict(item.default_request) == {"cpu": "2", "memory": "64Mi"}  # from default, min


def test_bad_limit_ranges_are_refused_with_kubernetes_messages() -> None:
    with pytest.raises(Invalid) as bad:
        limit_range(min={"cpu": "2"}, max={"cpu": "1"}, max_limit_request_ratio={"cpu": "500m"})
    text = str(bad.value)
    assert (
        'spec.limits[0].min[cpu]: Invalid value: "2": min value 2 is greater than max value 1'
        in text
    )
    assert (
        'spec.limits[0].maxLimitRequestRatio[cpu]: Invalid value: "500m": ratio 500m is less than 1'
        in text
    )
    with pytest.raises(Invalid, match="must be greater than or equal to 0"):
        limit_range(max={"memory": "-1Gi"})
    with pytest.raises(Invalid, match="may not be specified when `type` is 'Pod'"):
        limit_range("Pod", default={"cpu": "1"})
    with pytest.raises(Invalid, match='Unsupported value: "Gadget"'):
        limit_range("Gadget")


async def test_defaults_are_filled_in_and_annotated() -> None:
    verbs = Verbs(limit_range(default={"cpu": "1"}, default_request={"cpu": "250m"}))
    p = pod()
    await admission.admit(verbs, POD_ROW, p)
    res = p.spec.containers[0].resources
    assert res.limits["cpu"] == "1" and res.requests["cpu"] == "250m"
    assert p.metadata.annotations[limitranger.ANNOTATION] == (
        "LimitRanger plugin set: cpu limit for container c; cpu request for container c"
    )


async def test_out_of_range_pods_are_forbidden_with_kubernetes_messages() -> None:
    verbs = Verbs(limit_range(max={"cpu": "1"}, min={"cpu": "100m"}))
    with pytest.raises(Forbidden) as refused:
        await admission.admit(verbs, POD_ROW, pod(limits={"cpu": "2"}, requests={"cpu": "2"}))
    assert str(refused.value) == (
        'pods "p" is forbidden: [maximum cpu usage per Container is 1, but limit is 2,'
        " maximum cpu usage per Container is 1, but request is 2]"
    )
    with pytest.raises(Forbidden) as refused:
        await admission.admit(verbs, POD_ROW, pod(requests={"cpu": "50m"}, limits={"cpu": "1"}))
    assert str(refused.value) == (
        'pods "p" is forbidden: minimum cpu usage per Container is 100m, but request is 50m'
    )
    await admission.admit(verbs, POD_ROW, pod(requests={"cpu": "200m"}))  # limit defaulted: 1


async def test_ratio_pod_items_and_claims() -> None:
    ratio = Verbs(limit_range(max_limit_request_ratio={"cpu": "2"}))
    with pytest.raises(
        Forbidden, match=r"ratio per Container is 2, but provided ratio is 4\.000000"
    ):
        await admission.admit(ratio, POD_ROW, pod(requests={"cpu": "250m"}, limits={"cpu": "1"}))
    per_pod = Verbs(limit_range("Pod", max={"memory": "1Gi"}))
    big = pod(limits={"memory": "2Gi"}, requests={"memory": "1Gi"})
    with pytest.raises(Forbidden, match="maximum memory usage per Pod is 1Gi, but limit is 2Gi"):
        await admission.admit(per_pod, POD_ROW, big)
    claims = Verbs(limit_range("PersistentVolumeClaim", min={"storage": "1Gi"}))
    claim = core_pb2.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
    claim.metadata.name, claim.metadata.namespace = "data", "default"
    claim.spec.access_modes.append("ReadWriteOnce")
    claim.spec.resources.requests["storage"] = "500Mi"
    with pytest.raises(Forbidden) as refused:
        await admission.admit(claims, ROWS.strategy(kinds.for_message(claim)), claim)
    assert str(refused.value) == (
        'persistentvolumeclaims "data" is forbidden: minimum storage usage per'
        " PersistentVolumeClaim is 1Gi, but request is 500Mi"
    )
