"""PodDisruptionBudget status (the disruption controller) on a fake cluster, and the API's
checks of budgets."""

from __future__ import annotations

import re

import pytest
from google.protobuf.message import Message

from k8semu.api import timestamps
from k8semu.apiserver import registry
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.errors import Invalid
from k8semu.controllers.disruption import DELETION_TIMEOUT, DisruptionController
from k8semu.pb.api.v1 import policy_pb2
from tests.controllers.conftest import T0, FakeCluster, deployment, int_or_string, pod, rs

ROW = registry.build(DEFAULT_RANGES).resolve("poddisruptionbudgets")
WEB = {"app": "web"}


def budget(
    *, min_available: int | str | None = None, max_unavailable: int | str | None = None
) -> policy_pb2.PodDisruptionBudget:
    pdb = policy_pb2.PodDisruptionBudget(api_version="policy/v1", kind="PodDisruptionBudget")
    pdb.metadata.name = "web"
    pdb.spec.selector.match_labels.update(WEB)
    if min_available is not None:
        pdb.spec.min_available.CopyFrom(int_or_string(min_available))
    if max_unavailable is not None:
        pdb.spec.max_unavailable.CopyFrom(int_or_string(max_unavailable))
    ROW.prepare_for_create(pdb, namespace="default", uid="uid-pdb-web")
    ROW.validate_create(pdb)
    return pdb


def status(cluster: FakeCluster) -> policy_pb2.PodDisruptionBudgetStatus:
    obj = cluster.client.objects[("poddisruptionbudgets", "default", "web")]
    assert isinstance(obj, policy_pb2.PodDisruptionBudget)
    return obj.status


def test_the_api_refuses_contradictory_or_bad_budgets() -> None:
    with pytest.raises(Invalid, match="minAvailable and maxUnavailable cannot be both set"):
        budget(min_available=1, max_unavailable=1)
    with pytest.raises(
        Invalid,
        match=re.escape(
            'spec.maxUnavailable: Invalid value: "120%": must not be greater than 100%'
        ),
    ):
        budget(max_unavailable="120%")
    with pytest.raises(Invalid, match=re.escape("spec.minAvailable: Invalid value: -1")):
        budget(min_available=-1)


async def _settle(
    cluster: FakeCluster, pdb: policy_pb2.PodDisruptionBudget, *objs: Message
) -> policy_pb2.PodDisruptionBudgetStatus:
    ctrl = DisruptionController(cluster.ctx, clock=cluster.clock)
    cluster.add(pdb, *objs)
    await ctrl.reconcile("default/web")
    cluster.sync()
    return status(cluster)


async def test_min_available_counts_ready_pods() -> None:
    owner = rs("web", 3, WEB)
    pods = [pod(f"w{i}", WEB, owner=owner, phase="Running", ready_since=T0 - 60) for i in range(3)]
    pods.append(pod("w3", WEB, owner=owner, phase="Pending"))  # not ready: not healthy
    st = await _settle(FakeCluster(), budget(min_available=2), owner, *pods)
    assert (st.expected_pods, st.desired_healthy, st.current_healthy, st.disruptions_allowed) == (
        4,
        2,
        3,
        1,
    )
    (cond,) = st.conditions
    assert (cond.type, cond.status, cond.reason) == ("DisruptionAllowed", "True", "SufficientPods")


async def test_max_unavailable_uses_the_deployments_scale() -> None:
    d = deployment("web", 4)
    owner = rs("web-abc", 4, WEB)
    owner.metadata.owner_references.add(
        kind="Deployment", name="web", uid=d.metadata.uid, controller=True
    )
    pods = [pod(f"w{i}", WEB, owner=owner, phase="Running", ready_since=T0 - 60) for i in range(3)]
    st = await _settle(FakeCluster(), budget(max_unavailable="25%"), d, owner, *pods)
    # 4 wanted, 1 may be missing: 3 must stay healthy, and 3 are: nothing more may go.
    assert (st.expected_pods, st.desired_healthy, st.current_healthy, st.disruptions_allowed) == (
        4,
        3,
        3,
        0,
    )
    assert st.conditions[0].reason == "InsufficientPods"


async def test_granted_evictions_count_as_gone_until_they_time_out() -> None:
    owner = rs("web", 3, WEB)
    pods = [pod(f"w{i}", WEB, owner=owner, phase="Running", ready_since=T0 - 60) for i in range(3)]
    pdb = budget(min_available=1)
    pdb.status.disrupted_pods["w0"].CopyFrom(timestamps.time_at(T0 - 10))
    pdb.status.disrupted_pods["gone"].CopyFrom(timestamps.time_at(T0 - 10))  # pod deleted
    cluster = FakeCluster()
    st = await _settle(cluster, pdb, owner, *pods)
    assert list(st.disrupted_pods) == ["w0"]
    assert (st.current_healthy, st.disruptions_allowed) == (2, 1)
    cluster.clock.advance(DELETION_TIMEOUT)
    await DisruptionController(cluster.ctx, clock=cluster.clock).reconcile("default/web")
    assert dict(status(cluster).disrupted_pods) == {} and status(cluster).current_healthy == 3
