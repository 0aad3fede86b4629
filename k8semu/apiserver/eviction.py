"""The pods/eviction subresource's decision, as kube-apiserver's eviction REST: may this pod
be deleted now without breaking its PodDisruptionBudget, and what does the budget's status
become. Pure: the verb (`service.Evict`) reads the pod and the budgets, writes the budget's
status (compare-and-swap) and then deletes the pod.

- A pod that is already being deleted, or finished (Succeeded/Failed), is evicted at once.
- No budget selects it: evicted at once. More than one: refused (Kubernetes does not
  support it).
- A budget whose status is older than its spec (the disruption controller has not seen the
  latest change): refused for now, 429.
- A pod that is not Ready, under `unhealthyPodEvictionPolicy: AlwaysAllow`, or
  IfHealthyBudget (the default) while the budget has its desired healthy pods: evicted
  without using the budget.
- Otherwise one disruption must be allowed: the status gets disruptionsAllowed - 1 and the
  pod in `disruptedPods` (so a second eviction cannot use the same allowance before the
  controller recounts), and the pod is deleted. None allowed: 429 TooManyRequests, with
  Kubernetes' message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from google.protobuf.message import Message

from k8semu.api import kinds, timestamps
from k8semu.api.errors import SelectorError
from k8semu.api.kinds import Kind
from k8semu.api.selectors import LabelSelector
from k8semu.apiserver.errors import Conflict, NotFound, StatusError, TooManyRequests
from k8semu.apiserver.objects import describe, meta
from k8semu.apiserver.registry.strategy import Strategy
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import core_pb2, policy_pb2

_ATTEMPTS = 16  # budgets changed under us (other evictions, the controller): decide again

VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."


@dataclass(frozen=True, slots=True)
class Decision:
    """`budget`: the budget whose status must be written first (None: delete at once)."""

    budget: policy_pb2.PodDisruptionBudget | None = None


def _selects(pdb: policy_pb2.PodDisruptionBudget, pod: core_pb2.Pod) -> bool:
    sel = pdb.spec.selector
    try:
        selector = LabelSelector.from_match(
            dict(sel.match_labels),
            [(e.key, e.operator, list(e.values)) for e in sel.match_expressions],
        )
    except SelectorError:
        return False
    return selector.matches(pod.metadata.labels)


def _ready(pod: core_pb2.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def decide(
    pod: core_pb2.Pod, budgets: Sequence[policy_pb2.PodDisruptionBudget], now: float
) -> Decision:
    """What evicting `pod` takes; raises TooManyRequests (or another StatusError) when it
    may not be evicted now."""
    if pod.metadata.HasField("deletion_timestamp") or pod.status.phase in ("Succeeded", "Failed"):
        return Decision()
    mine = [b for b in budgets if _selects(b, pod)]
    if not mine:
        return Decision()
    if len(mine) > 1:
        raise StatusError(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource"
            " does not support."
        )
    pdb = mine[0]
    st = pdb.status
    if st.observed_generation < pdb.metadata.generation:
        raise TooManyRequests(
            f"{VIOLATION} The disruption budget {pdb.metadata.name} is still being processed"
            " by the server."
        )
    if not _ready(pod) and (
        pdb.spec.unhealthy_pod_eviction_policy == "AlwaysAllow"
        or st.current_healthy >= st.desired_healthy > 0
    ):
        return Decision()
    if st.disruptions_allowed <= 0:
        raise TooManyRequests(
            f"{VIOLATION} The disruption budget {pdb.metadata.name} needs {st.desired_healthy}"
            f" healthy pods and has {st.current_healthy} currently"
        )
    updated = policy_pb2.PodDisruptionBudget()
    updated.CopyFrom(pdb)
    updated.status.disruptions_allowed -= 1
    updated.status.disrupted_pods[pod.metadata.name].CopyFrom(timestamps.time_at(now))
    return Decision(budget=updated)


class Verbs(Protocol):
    """What `evict` needs of the API server's verbs (service.APIServicer)."""

    async def get_object(self, kind: Kind, namespace: str, name: str) -> tuple[Message, int]: ...

    async def list_objects(
        self, kind: Kind, namespace: str, label_selector: str
    ) -> list[Message]: ...

    async def update_object(
        self, kind: Kind, stored: Message, mod_revision: int, obj: Message, *, status: bool = False
    ) -> Message: ...

    async def Delete(self, request: api.DeleteRequest) -> api.ObjectResponse: ...


async def evict(verbs: Verbs, strategy: Strategy, request: api.EvictRequest) -> api.ObjectResponse:
    """The eviction: decide on fresh reads, write the budget's status compare-and-swap (a
    lost race decides again), then delete the pod with the eviction's options."""
    pods = strategy.kind
    if not strategy.eviction:
        raise NotFound(f"{pods.plural} have no eviction subresource")
    budget_kind = kinds.for_message(policy_pb2.PodDisruptionBudget)
    for _ in range(_ATTEMPTS):
        pod, _rev = await verbs.get_object(pods, request.namespace, request.name)
        budgets = cast(
            list[policy_pb2.PodDisruptionBudget],
            await verbs.list_objects(budget_kind, request.namespace, ""),
        )
        decision = decide(cast(core_pb2.Pod, pod), budgets, time.time())
        if decision.budget is not None:
            uid = decision.budget.metadata.uid
            stored = next(b for b in budgets if b.metadata.uid == uid)
            rv = int(meta(stored).resource_version)
            try:
                await verbs.update_object(budget_kind, stored, rv, decision.budget, status=True)
            except Conflict:
                continue
        delete = api.DeleteRequest(
            resource=pods.plural,
            namespace=request.namespace,
            name=request.name,
            preconditions=request.preconditions,
        )
        if request.HasField("grace_period_seconds"):
            delete.grace_period_seconds = request.grace_period_seconds
        return await verbs.Delete(delete)
    raise Conflict(
        f"{describe(pods, request.name)}: its disruption budget kept changing; try again"
    )
