"""The disruption controller (policy/v1 PodDisruptionBudget status), as Kubernetes':
how many of the selected pods may be disrupted now, which the eviction subresource reads.

Per budget, from the pods of its namespace its selector matches (an empty selector matches
them all):

- `expectedPods`: the pods themselves for an integer minAvailable; otherwise (a percentage,
  or maxUnavailable) the scale of their controllers: a ReplicaSet's replicas, or its
  Deployment's when a Deployment owns it; a DaemonSet's desiredNumberScheduled; pods of any
  other owner (or none) count one each;
- `desiredHealthy`: minAvailable (a percentage of expectedPods rounded up), or expectedPods
  minus maxUnavailable (a percentage rounded up);
- `currentHealthy`: selected pods that are Ready, not being deleted, and not in
  `disruptedPods` (an eviction was granted for them; an entry older than 2 minutes whose pod
  still exists is dropped, as Kubernetes' DeletionTimeout);
- `disruptionsAllowed` = max(currentHealthy - desiredHealthy, 0), and the condition
  `DisruptionAllowed` (SufficientPods / InsufficientPods).

Owns the budgets' status only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from k8semu.api import timestamps
from k8semu.api.errors import SelectorError
from k8semu.client import NAMESPACE_INDEX, Informer
from k8semu.controllers import _pods
from k8semu.controllers.context import ControllerContext, KeyedController
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apps_pb2, core_pb2, meta_pb2, policy_pb2

log = get_logger(__name__)

DELETION_TIMEOUT = 120.0  # seconds an eviction's pod may take to be deleted
Lookup = Callable[[str, str, str], int | None]  # (kind, name, namespace) -> scale


def _count(value: meta_pb2.IntOrString, total: int, *, round_up: bool) -> int:
    if value.WhichOneof("value") == "int_val":
        return value.int_val
    share = int(value.str_val.rstrip("%") or 0) * total / 100
    return math.ceil(share) if round_up else math.floor(share)


def expected_pods(pods: Iterable[core_pb2.Pod], scale: Lookup) -> int:
    """The sum of the scales of the pods' controllers (a pod without a known one counts 1)."""
    total = 0
    seen: set[str] = set()
    for pod in pods:
        ref = _pods.controller_ref(pod)
        if ref is None:
            total += 1
            continue
        if ref.uid in seen:
            continue
        found = scale(ref.kind, ref.name, pod.metadata.namespace)
        if found is None:
            total += 1
            continue
        seen.add(ref.uid)
        total += found
    return total


def status(
    pdb: policy_pb2.PodDisruptionBudget, pods: list[core_pb2.Pod], scale: Lookup, now: float
) -> policy_pb2.PodDisruptionBudgetStatus:
    spec = pdb.spec
    st = policy_pb2.PodDisruptionBudgetStatus()
    st.CopyFrom(pdb.status)
    if spec.HasField("min_available") and spec.min_available.WhichOneof("value") == "int_val":
        expected, desired = len(pods), spec.min_available.int_val
    elif spec.HasField("min_available"):
        expected = expected_pods(pods, scale)
        desired = _count(spec.min_available, expected, round_up=True)
    elif spec.HasField("max_unavailable"):
        expected = expected_pods(pods, scale)
        desired = max(expected - _count(spec.max_unavailable, expected, round_up=True), 0)
    else:
        expected, desired = len(pods), 0
    live = {p.metadata.name: p for p in pods if not _pods.is_pod_terminating(p)}
    disrupted = {
        name: ts
        for name, ts in st.disrupted_pods.items()
        if name in live and now - timestamps.to_seconds(ts) < DELETION_TIMEOUT
    }
    st.disrupted_pods.clear()
    for name, ts in disrupted.items():
        st.disrupted_pods[name].CopyFrom(ts)
    healthy = sum(1 for name, p in live.items() if _pods.is_pod_ready(p) and name not in disrupted)
    st.expected_pods, st.desired_healthy, st.current_healthy = expected, desired, healthy
    st.disruptions_allowed = max(healthy - desired, 0)
    st.observed_generation = pdb.metadata.generation
    allowed = st.disruptions_allowed > 0
    state, reason = ("True", "SufficientPods") if allowed else ("False", "InsufficientPods")
    for c in st.conditions:
        if c.type == "DisruptionAllowed":
            break
    else:
        c = st.conditions.add(type="DisruptionAllowed")
    if c.status != state:
        c.last_transition_time.CopyFrom(timestamps.time_at(now))
    c.status, c.reason, c.observed_generation = state, reason, pdb.metadata.generation
    return st


class DisruptionController(KeyedController):
    """One instance per process; `run()` after the context's informers are started."""

    name = "disruption"

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx, clock=clock)
        self.pdbs = self.informer(policy_pb2.PodDisruptionBudget)
        self.pod_informer = self.informer(core_pb2.Pod)
        self.replica_sets = self.informer(apps_pb2.ReplicaSet)
        self.deployments = self.informer(apps_pb2.Deployment)
        self.daemon_sets = self.informer(apps_pb2.DaemonSet)
        self.watch(self.pdbs, self._enqueue)
        related: tuple[Informer[Any], ...] = (
            self.pod_informer, self.replica_sets, self.deployments, self.daemon_sets
        )  # fmt: skip
        for informer in related:
            self.watch(informer, self._namespace_changed, deleted=self._namespace_changed)

    def _namespace_changed(self, obj: object) -> None:
        namespace = getattr(obj, "metadata").namespace  # noqa: B009
        for pdb in self.pdbs.cache.by_index(NAMESPACE_INDEX, namespace):
            self._enqueue(pdb)

    def scale(self, kind: str, name: str, namespace: str) -> int | None:
        if kind == "ReplicaSet":
            rs = self.replica_sets.cache.get_by_name(name, namespace)
            if rs is None:
                return None
            owner = _pods.controller_ref(rs)
            if owner is not None and owner.kind == "Deployment":
                d = self.deployments.cache.get_by_name(owner.name, namespace)
                if d is not None:
                    return d.spec.replicas if d.spec.HasField("replicas") else 1
            return rs.spec.replicas if rs.spec.HasField("replicas") else 1
        if kind == "DaemonSet":
            ds = self.daemon_sets.cache.get_by_name(name, namespace)
            return None if ds is None else ds.status.desired_number_scheduled
        return None

    async def reconcile(self, key: str) -> None:
        pdb = self.pdbs.cache.get(key)
        if pdb is None:
            return
        try:
            selector = _pods.selector_of(pdb.spec.selector)
        except SelectorError as exc:
            log.warning("budget with a bad selector ignored", pdb=key, error=str(exc))
            return
        pods = [
            p
            for p in self.pod_informer.cache.by_index(NAMESPACE_INDEX, pdb.metadata.namespace)
            if selector.matches(p.metadata.labels)
        ]
        now = self.clock()
        new_status = status(pdb, pods, self.scale, now)
        if new_status.disrupted_pods:  # look again when the oldest grant times out
            oldest = min(timestamps.to_seconds(t) for t in new_status.disrupted_pods.values())
            self.queue.add_after(key, max(oldest + DELETION_TIMEOUT - now, 0.0) + 0.1)
        await self.write_status(pdb, new_status)
