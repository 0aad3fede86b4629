"""Builders for the Nodes and Pods the scheduler tests use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from k8semu.pb.api.v1 import core_pb2


def node(
    name: str,
    *,
    cpu: str = "4",
    memory: str = "8Gi",
    pods: str = "110",
    labels: Mapping[str, str] | None = None,
    taints: Sequence[tuple[str, str, str]] = (),
    ready: bool = True,
    unschedulable: bool = False,
) -> core_pb2.Node:
    n = core_pb2.Node(api_version="v1", kind="Node")
    n.metadata.name = name
    n.metadata.labels.update({"kubernetes.io/hostname": name, **(labels or {})})
    n.status.allocatable.update({"cpu": cpu, "memory": memory, "pods": pods})
    n.status.capacity.update({"cpu": cpu, "memory": memory, "pods": pods})
    n.status.conditions.add(type="Ready", status="True" if ready else "False")
    n.spec.unschedulable = unschedulable
    for key, value, effect in taints:
        n.spec.taints.add(key=key, value=value, effect=effect)
    return n


def pod(
    name: str,
    *,
    namespace: str = "default",
    cpu: str | None = None,
    memory: str | None = None,
    labels: Mapping[str, str] | None = None,
    node_name: str = "",
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[core_pb2.Toleration] = (),
    host_port: int = 0,
    owner_uid: str = "",
    scheduler_name: str = "",
    uid: str = "",
) -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name = name
    p.metadata.namespace = namespace
    p.metadata.uid = uid or f"uid-{namespace}-{name}"
    p.metadata.labels.update(labels or {})
    c = p.spec.containers.add(name="c", image="pause")
    if cpu is not None:
        c.resources.requests["cpu"] = cpu
    if memory is not None:
        c.resources.requests["memory"] = memory
    if host_port:
        c.ports.add(container_port=host_port, host_port=host_port, protocol="TCP")
    p.spec.node_name = node_name
    p.spec.node_selector.update(node_selector or {})
    p.spec.tolerations.extend(tolerations)
    p.spec.scheduler_name = scheduler_name
    if owner_uid:
        p.metadata.owner_references.add(
            api_version="apps/v1", kind="ReplicaSet", name="rs", uid=owner_uid, controller=True
        )
    p.status.phase = "Pending"
    return p


def anti_affinity(
    p: core_pb2.Pod, match_labels: Mapping[str, str], topology_key: str
) -> core_pb2.Pod:
    term = (
        p.spec.affinity.pod_anti_affinity.required_during_scheduling_ignored_during_execution.add()
    )
    term.label_selector.match_labels.update(match_labels)
    term.topology_key = topology_key
    return p


def required_node_affinity(
    p: core_pb2.Pod, *terms: Sequence[tuple[str, str, Sequence[str]]]
) -> core_pb2.Pod:
    req = p.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    for exprs in terms:
        term = req.node_selector_terms.add()
        for key, op, values in exprs:
            term.match_expressions.add(key=key, operator=op, values=list(values))
    return p


def preferred_node_affinity(
    p: core_pb2.Pod, weight: int, exprs: Sequence[tuple[str, str, Sequence[str]]]
) -> core_pb2.Pod:
    pref = p.spec.affinity.node_affinity.preferred_during_scheduling_ignored_during_execution.add()
    pref.weight = weight
    for key, op, values in exprs:
        pref.preference.match_expressions.add(key=key, operator=op, values=list(values))
    return p
