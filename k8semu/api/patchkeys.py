"""How each list and union field of the object model merges: Kubernetes' patch metadata.

Kubernetes keeps this in Go struct tags (`patchStrategy:"merge" patchMergeKey:"name"`,
`+listType=map`, `+listMapKey=name`); the object model here is protobuf, which has no place
for it, so this module is the one table of it. Two readers: the strategic merge patch
(k8semu.apiserver.patch: containers merge by name, volumes by name with retainKeys, ...) and the
OpenAPI documents (k8semu.apiserver.openapi: x-kubernetes-patch-strategy,
x-kubernetes-patch-merge-key, x-kubernetes-list-type, x-kubernetes-list-map-keys), so what
kubectl computes a patch from and what the server merges it with cannot disagree.

A field missing from the table is atomic for a strategic merge patch: a list is replaced whole,
an object merges key by key (as in a JSON merge patch). Keys are protobuf field full names
(`k8semu.api.v1.PodSpec.containers`); `for_field` takes a descriptor. Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor

__all__ = ["FIELDS", "PatchMeta", "for_field"]

_PACKAGE = "k8semu.api.v1."


@dataclass(frozen=True)
class PatchMeta:
    """One field's patch metadata, as Kubernetes tags it.

    `strategy` is the patchStrategy tag: "merge" (a list of objects merges by `merge_key`, a
    list of scalars is an unordered set), "retainKeys" (an object clears the keys a patch's
    `$retainKeys` leaves out), both ("merge,retainKeys"), or "" (replace: no tag). `list_type`
    and `map_keys` are the +listType/+listMapKey markers the OpenAPI documents publish.
    """

    strategy: str = ""
    merge_key: str = ""
    list_type: str = ""
    map_keys: tuple[str, ...] = ()

    @property
    def merges(self) -> bool:
        return "merge" in self.strategy.split(",")

    @property
    def retains_keys(self) -> bool:
        return "retainKeys" in self.strategy.split(",")


def _by_key(key: str, *map_keys: str, strategy: str = "merge") -> PatchMeta:
    return PatchMeta(strategy, key, "map", map_keys or (key,))


_SET = PatchMeta("merge", "", "set")
_ATOMIC = PatchMeta(list_type="atomic")
_CONDITIONS = _by_key("type")

# Kubernetes' tags on the fields the object model has (k8s.io/api core/v1, apps/v1,
# batch/v1, policy/v1, autoscaling/v2 and apimachinery meta/v1 types.go, Kubernetes 1.32).
FIELDS: dict[str, PatchMeta] = {
    _PACKAGE + name: meta
    for name, meta in {
        # meta/v1
        "ObjectMeta.finalizers": _SET,
        "ObjectMeta.owner_references": _by_key("uid"),
        "LabelSelector.match_expressions": _ATOMIC,
        # core/v1 Pod
        "PodSpec.containers": _by_key("name"),
        "PodSpec.init_containers": _by_key("name"),
        "PodSpec.volumes": _by_key("name", strategy="merge,retainKeys"),
        "PodSpec.tolerations": _ATOMIC,
        "Container.ports": _by_key("containerPort", "containerPort", "protocol"),
        "Container.env": PatchMeta("merge", "name"),
        "Container.env_from": _ATOMIC,
        "Container.volume_mounts": PatchMeta("merge", "mountPath"),
        "Container.command": _ATOMIC,
        "Container.args": _ATOMIC,
        "PodStatus.conditions": PatchMeta("merge", "type"),
        "PodStatus.pod_ips": PatchMeta("merge", "ip"),
        "PodStatus.container_statuses": _ATOMIC,
        "PodStatus.init_container_statuses": _ATOMIC,
        # core/v1 Node
        "NodeSpec.pod_cidrs": _SET,
        "NodeSpec.taints": _ATOMIC,
        "NodeStatus.conditions": PatchMeta("merge", "type"),
        "NodeStatus.addresses": PatchMeta("merge", "type"),
        # core/v1 Service and Endpoints
        "ServiceSpec.ports": _by_key("port", "port", "protocol"),
        "ServiceSpec.cluster_ips": _ATOMIC,
        "ServiceSpec.external_ips": _ATOMIC,
        "EndpointSubset.addresses": _ATOMIC,
        "Endpoints.subsets": _ATOMIC,
        # apps/v1
        "DeploymentSpec.strategy": PatchMeta("retainKeys"),
        "DeploymentStatus.conditions": PatchMeta("merge", "type"),
        "ReplicaSetStatus.conditions": PatchMeta("merge", "type"),
        "DaemonSetStatus.conditions": PatchMeta("merge", "type"),
        "StatefulSetStatus.conditions": PatchMeta("merge", "type"),
        # policy/v1
        "PodDisruptionBudgetStatus.conditions": _CONDITIONS,
        # batch/v1
        "JobStatus.conditions": PatchMeta("merge", "type", "atomic"),
        "CronJobStatus.active": _ATOMIC,
        # autoscaling/v2
        "HorizontalPodAutoscalerSpec.metrics": _ATOMIC,
        "HorizontalPodAutoscalerStatus.conditions": _CONDITIONS,
        "HorizontalPodAutoscalerStatus.current_metrics": _ATOMIC,
        # certificates/v1: a map by type for server-side apply, but no patchStrategy (a
        # strategic merge patch replaces the list)
        "CertificateSigningRequestStatus.conditions": PatchMeta(
            list_type="map", map_keys=("type",)
        ),
    }.items()
}

_NONE = PatchMeta()


def for_field(field: FieldDescriptor) -> PatchMeta:
    """The field's metadata; a field Kubernetes does not tag gets the empty (replace) one."""
    return FIELDS.get(field.full_name, _NONE)
