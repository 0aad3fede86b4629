"""The Node authorizer: what a kubelet (user system:node:NAME in group system:nodes) may do.

As Kubernetes' Node authorizer and system:node role with NodeRestriction, simplified: a
kubelet may
- read nodes, services and endpoints (its pods' environment), pods (its informer),
  namespaces and ServiceAccounts (whether to mount a token), PersistentVolumes (its local
  volume cleaner); create the kube-node-lease
  namespace when it is missing;
- create, update, patch and delete only its own Node (and nodes/status);
- do anything to its own Lease in kube-node-lease;
- update and patch the status of pods bound to it, and delete those pods;
- create and patch Events;
- get the Secrets, ConfigMaps and PersistentVolumeClaims the pods bound to it use (and
  their namespaces' kube-root-ca.crt), the
  PersistentVolumes (the local volume plugin records its paths), and request tokens for the
  ServiceAccounts of its pods (serviceaccounts/token).
Anything else gets no opinion here (so RBAC decides, and by default refuses it). Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from k8semu.apiserver.auth.attributes import Attributes
from k8semu.pb.api.v1 import core_pb2

LEASE_NAMESPACE = "kube-node-lease"
READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete")
# persistentvolumes: the kubelet's local-volume cleaner watches them (its node's paths).
_READ_ONLY = {
    "nodes", "services", "endpoints", "pods", "namespaces", "serviceaccounts",
    "persistentvolumes",
}  # fmt: skip
_USED_KINDS = {"secrets", "configmaps", "persistentvolumeclaims"}

PodLookup = Callable[[str, str], core_pb2.Pod | None]


def references(pod: core_pb2.Pod) -> Iterator[tuple[str, str]]:
    """(resource, name) of every Secret, ConfigMap and claim `pod` uses, and its
    ServiceAccount."""
    spec = pod.spec
    yield "serviceaccounts", spec.service_account_name or "default"
    yield "configmaps", "kube-root-ca.crt"  # the token mount's ca.crt
    for vol in spec.volumes:
        if vol.secret.secret_name:
            yield "secrets", vol.secret.secret_name
        if vol.config_map.name:
            yield "configmaps", vol.config_map.name
        if vol.persistent_volume_claim.claim_name:
            yield "persistentvolumeclaims", vol.persistent_volume_claim.claim_name
        for src in vol.projected.sources:
            if src.secret.name:
                yield "secrets", src.secret.name
            if src.config_map.name:
                yield "configmaps", src.config_map.name
    for c in (*spec.init_containers, *spec.containers):
        for env in c.env:
            if env.value_from.secret_key_ref.name:
                yield "secrets", env.value_from.secret_key_ref.name
            if env.value_from.config_map_key_ref.name:
                yield "configmaps", env.value_from.config_map_key_ref.name
        for env_from in c.env_from:
            if env_from.secret_ref.name:
                yield "secrets", env_from.secret_ref.name
            if env_from.config_map_ref.name:
                yield "configmaps", env_from.config_map_ref.name


class Graph:
    """Which objects each node's pods use: built from one snapshot of the pods."""

    def __init__(self, pods: Iterable[core_pb2.Pod]) -> None:
        self.used: dict[str, set[tuple[str, str, str]]] = {}
        for pod in pods:
            node = pod.spec.node_name
            if node:
                ns = pod.metadata.namespace
                self.used.setdefault(node, set()).update(
                    (resource, ns, name) for resource, name in references(pod)
                )

    def uses(self, node: str, resource: str, namespace: str, name: str) -> bool:
        return (resource, namespace, name) in self.used.get(node, set())


def decide(attrs: Attributes, pod: PodLookup, graph: Callable[[], Graph]) -> tuple[bool, str]:
    """(allowed, reason) for a request of a kubelet; (False, "") is "no opinion"."""
    node = attrs.user.node_name
    verb, resource, sub, name = attrs.verb, attrs.resource, attrs.subresource, attrs.name
    if not node or not attrs.resource_request:
        return False, ""
    if resource == "events" and verb in ("create", "update", "patch"):
        return True, ""
    if resource in _READ_ONLY and verb in READ and not sub:
        return True, ""
    if resource == "namespaces" and verb == "create":
        return attrs.name == LEASE_NAMESPACE, ""
    if resource == "nodes" and verb in WRITE:
        return name == node, _no_relationship(node) if name != node else ""
    if resource == "leases" and attrs.namespace == LEASE_NAMESPACE:
        return name == node, _no_relationship(node) if name != node else ""
    if resource == "persistentvolumes" and verb in ("get", "update", "patch"):
        return True, ""
    if resource == "pods" and ((sub == "status" and verb in ("update", "patch")) or
                               (not sub and verb == "delete")):  # fmt: skip
        found = pod(attrs.namespace, name)
        bound = found is not None and found.spec.node_name == node
        return bound, "" if bound else _no_relationship(node)
    wanted = (
        "serviceaccounts" if (resource, sub, verb) == ("serviceaccounts", "token", "create") else ""
    )
    if resource in _USED_KINDS and verb == "get" and not sub:
        wanted = resource
    if wanted:
        used = graph().uses(node, wanted, attrs.namespace, name)
        return used, "" if used else _no_relationship(node)
    return False, ""


def _no_relationship(node: str) -> str:
    return f"no relationship found between node '{node}' and this object"
