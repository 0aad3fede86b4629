"""Preemption's writes, as kube-scheduler makes them once `preemption.select` chose a node:

1. the preemptor's status gets `nominatedNodeName` (with its PodScheduled=False condition,
   one compare-and-swap: scheduler.py), and the scheduler reserves the room there for it:
   pods of lower priority are not placed into it meanwhile (`Nominations`);
2. each victim gets the condition `DisruptionTarget=True`, reason `PreemptionByScheduler`,
   and a `Preempted` Event, then is deleted gracefully (its termination grace period), as
   kube-scheduler deletes victims (it does not go through the eviction subresource; the
   budgets were weighed when choosing);
3. the preemptor waits as unschedulable; the victims' deletion moves it back, and it binds
   where room appeared (normally its nominated node).

A write that fails is logged and left: the next cycle sees the truth and decides again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from k8semu.api import timestamps
from k8semu.client import Client, ClientError, NotFound
from k8semu.client.events import NORMAL, EventRecorder
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2, policy_pb2
from k8semu.scheduler.framework import PodInfo, PodSelector, PodSpecError, compile_selector
from k8semu.scheduler.preemption import Budget

log = get_logger(__name__)

DISRUPTION_TARGET = "DisruptionTarget"
REASON_PREEMPTION = "PreemptionByScheduler"


class Nominations:
    """Pods nominated to a node by preemption and not bound yet: key -> (node, PodInfo)."""

    def __init__(self) -> None:
        self._by_key: dict[str, tuple[str, PodInfo]] = {}

    def nominate(self, info: PodInfo, node: str) -> None:
        self._by_key[info.key] = (node, info)

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)

    def node_of(self, key: str) -> str:
        got = self._by_key.get(key)
        return got[0] if got else ""

    def by_node(self) -> Mapping[str, Sequence[PodInfo]]:
        out: dict[str, list[PodInfo]] = {}
        for node, info in self._by_key.values():
            out.setdefault(node, []).append(info)
        return out

    def __len__(self) -> int:
        return len(self._by_key)


def budgets(pdbs: Sequence[policy_pb2.PodDisruptionBudget]) -> list[Budget]:
    """The budgets as preemption weighs them (an unreadable selector covers nothing)."""
    out = []
    for pdb in pdbs:
        try:
            selector: PodSelector = compile_selector(pdb.spec.selector, "spec.selector")
        except PodSpecError:
            continue
        out.append(
            Budget(
                pdb.metadata.namespace,
                selector,
                pdb.status.disruptions_allowed,
                frozenset(pdb.status.disrupted_pods),
            )
        )
    return out


async def evict_victim(
    client: Client,
    recorder: EventRecorder,
    victim: core_pb2.Pod,
    preemptor: core_pb2.Pod,
    node: str,
    scheduler_name: str,
) -> None:
    """Mark `victim` DisruptionTarget, record `Preempted`, delete it gracefully."""
    name, namespace = victim.metadata.name, victim.metadata.namespace
    marked = core_pb2.Pod()
    marked.CopyFrom(victim)
    cond = next((c for c in marked.status.conditions if c.type == DISRUPTION_TARGET), None)
    if cond is None:
        cond = marked.status.conditions.add(type=DISRUPTION_TARGET)
    cond.status = "True"
    cond.reason = REASON_PREEMPTION
    cond.message = f"{scheduler_name}: preempting to accommodate a higher priority pod"
    cond.last_transition_time.CopyFrom(timestamps.now())
    try:
        await client.update_status(marked)
    except ClientError as exc:  # the delete below matters more than the condition
        log.info("DisruptionTarget not written", pod=f"{namespace}/{name}", error=str(exc))
    recorder.event(
        victim, NORMAL, "Preempted", f"Preempted by pod {preemptor.metadata.uid} on node {node}"
    )
    try:
        await client.delete(core_pb2.Pod, name, namespace=namespace)
    except NotFound:
        pass
    except ClientError as exc:
        log.warning("victim not deleted", pod=f"{namespace}/{name}", error=str(exc))
    else:
        log.info(
            "preempted",
            victim=f"{namespace}/{name}",
            preemptor=f"{preemptor.metadata.namespace}/{preemptor.metadata.name}",
            node=node,
        )
