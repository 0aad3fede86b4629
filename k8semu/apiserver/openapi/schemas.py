"""OpenAPI definitions of the object model, built from the protobuf descriptors.

Each message becomes a definition under Kubernetes' name (`io.k8s.api.core.v1.Pod`,
`io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`), each field a property under its Kubernetes
JSON name, with Kubernetes' types: int32/int64 integers, Time as a date-time string, intOrString
and Quantity as their own definitions, bytes as base64 strings, maps as objects with
additionalProperties. Lists and unions carry the patch metadata of k8semu.api.patchkeys
(x-kubernetes-patch-strategy, -patch-merge-key, -list-type, -list-map-keys), top-level kinds
their x-kubernetes-group-version-kind. What the descriptors cannot say (which fields are
required, which strings are enums) is in the two tables below.

Everything here is built in OpenAPI v2 form (`#/definitions/...` references); the v3 document
is derived from it (k8semu.apiserver.openapi.v3). Pure: no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from k8semu.api import kinds, manifest, patchkeys
from k8semu.api.kinds import Kind

__all__ = [
    "INT_OR_STRING",
    "META",
    "QUANTITY",
    "TIME",
    "definition_name",
    "definitions",
    "gvk",
    "ref",
]

_F = FieldDescriptor
_PKG = "k8semu.api.v1."
META = "io.k8s.apimachinery.pkg.apis.meta.v1"
TIME = f"{META}.Time"
MICRO_TIME = f"{META}.MicroTime"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
FIELDS_V1 = f"{META}.FieldsV1"

# The proto files whose messages are not named after a group's kinds (see _package).
_PACKAGES = {
    "k8semu/api/v1/meta.proto": META,
    "k8semu/api/v1/metrics.proto": "io.k8s.metrics.pkg.apis.metrics.v1beta1",
}
# meta.proto holds two types Kubernetes keeps elsewhere.
_NAMES = {
    _PKG + "ObjectReference": "io.k8s.api.core.v1.ObjectReference",
    _PKG + "IntOrString": INT_OR_STRING,
    "google.protobuf.Timestamp": TIME,
    "google.protobuf.Struct": FIELDS_V1,  # ManagedFieldsEntry.fieldsV1, free-form JSON
}
_MICRO_TIME_FIELDS = {_PKG + "LeaseSpec.acquire_time", _PKG + "LeaseSpec.renew_time"}

# Kubernetes' required fields (no omitempty and no +optional in its types.go), by message.


def _table(rows: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """Rows of `Message[.field]: "word word"` as full proto names and word tuples."""
    return {_PKG + name: tuple(words.split()) for name, words in rows.items()}


REQUIRED = _table(
    {
        "OwnerReference": "apiVersion kind name uid",
        "LabelSelectorRequirement": "key operator",
        "PodSpec": "containers",
        "Container": "name",
        "ContainerPort": "containerPort",
        "EnvVar": "name",
        "VolumeMount": "name mountPath",
        "Volume": "name",
        "KeyToPath": "key path",
        "ConfigMapKeySelector": "key",
        "SecretKeySelector": "key",
        "ObjectFieldSelector": "fieldPath",
        "HTTPGetAction": "port",
        "TCPSocketAction": "port",
        "HTTPHeader": "name value",
        "SleepAction": "seconds",
        "Taint": "key effect",
        "NodeCondition": "type status",
        "NodeAddress": "type address",
        "PodCondition": "type status",
        "ContainerStatus": "name ready restartCount image imageID",
        "NodeSelector": "nodeSelectorTerms",
        "NodeSelectorRequirement": "key operator",
        "PreferredSchedulingTerm": "weight preference",
        "PodAffinityTerm": "topologyKey",
        "WeightedPodAffinityTerm": "weight podAffinityTerm",
        "ServicePort": "port",
        "EndpointAddress": "ip",
        "EndpointPort": "port",
        "Binding": "target",
        "ReplicaSetSpec": "selector",
        "ReplicaSetStatus": "replicas",
        "ReplicaSetCondition": "type status",
        "DeploymentSpec": "selector template",
        "DeploymentCondition": "type status",
        "DaemonSetSpec": "selector template",
        "DaemonSetStatus": "currentNumberScheduled numberMisscheduled desiredNumberScheduled"
        " numberReady",
        "DaemonSetCondition": "type status",
        "Condition": "type status lastTransitionTime reason message",
        "JobSpec": "template",
        "CronJobSpec": "schedule jobTemplate",
        "JobCondition": "type status",
        "HorizontalPodAutoscalerSpec": "scaleTargetRef maxReplicas",
        "CrossVersionObjectReference": "kind name",
        "MetricSpec": "type",
        "MetricTarget": "type",
        "MetricIdentifier": "name",
        "ResourceMetricSource": "name target",
        "ContainerResourceMetricSource": "name target container",
        "PodsMetricSource": "metric target",
        "ObjectMetricSource": "describedObject target metric",
        "ExternalMetricSource": "metric target",
        "HPAScalingPolicy": "type value periodSeconds",
        "HorizontalPodAutoscalerCondition": "type status",
        "HorizontalPodAutoscalerStatus": "desiredReplicas",
        "ContainerMetrics": "name usage",
        "NodeMetrics": "timestamp window usage",
        "PodMetrics": "timestamp window containers",
        "HTTPIngressRuleValue": "paths",
        "HTTPIngressPath": "pathType backend",
        "IngressServiceBackend": "name",
        "TypedLocalObjectReference": "kind name",
        "IngressClassParametersReference": "kind name",
        "IngressPortStatus": "port protocol",
    }
)

# String fields whose values Kubernetes enumerates (+enum types), as its v3 documents list them.
ENUMS = _table(
    {
        "PodSpec.restart_policy": "Always Never OnFailure",
        "PodSpec.dns_policy": "ClusterFirst ClusterFirstWithHostNet Default None",
        "Container.image_pull_policy": "Always IfNotPresent Never",
        "ContainerPort.protocol": "SCTP TCP UDP",
        "ServicePort.protocol": "SCTP TCP UDP",
        "EndpointPort.protocol": "SCTP TCP UDP",
        "ServiceSpec.type": "ClusterIP ExternalName LoadBalancer NodePort",
        "ServiceSpec.session_affinity": "ClientIP None",
        "ServiceSpec.external_traffic_policy": "Cluster Local",
        "ServiceSpec.internal_traffic_policy": "Cluster Local",
        "Taint.effect": "NoExecute NoSchedule PreferNoSchedule",
        "Toleration.effect": "NoExecute NoSchedule PreferNoSchedule",
        "Toleration.operator": "Equal Exists",
        "NodeSelectorRequirement.operator": "DoesNotExist Exists Gt In Lt NotIn",
        "PodStatus.phase": "Failed Pending Running Succeeded Unknown",
        "NamespaceStatus.phase": "Active Terminating",
        "DeploymentStrategy.type": "Recreate RollingUpdate",
        "DaemonSetUpdateStrategy.type": "OnDelete RollingUpdate",
        "PodDisruptionBudgetSpec.unhealthy_pod_eviction_policy": "AlwaysAllow IfHealthyBudget",
        "JobSpec.completion_mode": "Indexed NonIndexed",
        "CronJobSpec.concurrency_policy": "Allow Forbid Replace",
        "HTTPGetAction.scheme": "HTTP HTTPS",
        "TopologySpreadConstraint.when_unsatisfiable": "DoNotSchedule ScheduleAnyway",
        "TopologySpreadConstraint.node_affinity_policy": "Honor Ignore",
        "TopologySpreadConstraint.node_taints_policy": "Honor Ignore",
        "PodSpec.preemption_policy": "Never PreemptLowerPriority",
        "PriorityClass.preemption_policy": "Never PreemptLowerPriority",
        "HTTPIngressPath.path_type": "Exact ImplementationSpecific Prefix",
    }
)


@functools.cache
def _package(file_name: str) -> str:
    """Kubernetes' Go package of a proto file's messages, from the group of the kinds it
    defines: `io.k8s.api.<first label of the group, or core>.<version>`, as k8s.io/api names
    them (apps, batch, autoscaling, coordination.k8s.io -> coordination)."""
    if (known := _PACKAGES.get(file_name)) is not None:
        return known
    groups = {
        (k.group, k.version)
        for k in kinds.all_kinds()
        if k.message.DESCRIPTOR.file.name == file_name
    }
    if len(groups) != 1:
        raise ValueError(f"{file_name}: no one group-version among its kinds ({groups})")
    group, version = groups.pop()
    return f"io.k8s.api.{group.split('.')[0] or 'core'}.{version}"


def definition_name(desc: Descriptor) -> str:
    """Kubernetes' definition name of a message: `io.k8s.api.apps.v1.Deployment`."""
    known = _NAMES.get(desc.full_name)
    if known is not None:
        return known
    return f"{_package(desc.file.name)}.{desc.name}"


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/definitions/{name}"}


def gvk(kind: Kind) -> list[dict[str, str]]:
    return [{"group": kind.group, "kind": kind.kind, "version": kind.version}]


def _scalar(field: FieldDescriptor, quantity: bool) -> dict[str, Any]:
    t = field.type
    if quantity:
        return ref(QUANTITY)
    if t == _F.TYPE_STRING:
        schema: dict[str, Any] = {"type": "string"}
        if (values := ENUMS.get(field.full_name)) is not None:
            schema["enum"] = list(values)
        return schema
    if t in (_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32, _F.TYPE_UINT32, _F.TYPE_FIXED32):
        return {"type": "integer", "format": "int32"}
    if t in (_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64, _F.TYPE_UINT64, _F.TYPE_FIXED64):
        return {"type": "integer", "format": "int64"}
    if t == _F.TYPE_BOOL:
        return {"type": "boolean"}
    if t == _F.TYPE_BYTES:
        return {"type": "string", "format": "byte"}
    if t in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        return {"type": "number", "format": "double" if t == _F.TYPE_DOUBLE else "float"}
    raise ValueError(f"{field.full_name}: no OpenAPI type for protobuf type {t}")


def _value(field: FieldDescriptor, quantity: bool) -> dict[str, Any]:
    """The schema of one value of `field` (one element, for a list)."""
    desc = field.message_type
    if desc is None:
        return _scalar(field, quantity)
    if field.full_name in _MICRO_TIME_FIELDS:
        return ref(MICRO_TIME)
    return ref(definition_name(desc))


def _property(field: FieldDescriptor) -> dict[str, Any]:
    quantity = field.full_name in manifest.QUANTITY_FIELDS
    desc = field.message_type
    if desc is not None and desc.GetOptions().map_entry:
        value = desc.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _value(value, quantity)}
    schema = _value(field, quantity)
    if field.is_repeated:
        schema = {"type": "array", "items": schema}
    meta = patchkeys.for_field(field)
    if meta.strategy:
        schema["x-kubernetes-patch-strategy"] = meta.strategy
    if meta.merge_key:
        schema["x-kubernetes-patch-merge-key"] = meta.merge_key
    if meta.list_type:
        schema["x-kubernetes-list-type"] = meta.list_type
    if meta.map_keys:
        schema["x-kubernetes-list-map-keys"] = list(meta.map_keys)
    return schema


# What the top-level fields of every kind and list mean (the descriptors carry no comments).
_TOP_FIELDS = {
    "metadata": "Standard object metadata (for a list: resourceVersion and continue).",
    "spec": "The desired state of the {kind}, written by its users.",
    "status": "The observed state of the {kind}, written by the system (read-only to users).",
    "items": "The {kind} objects.",
}


def _type_meta(kind: Kind | None) -> dict[str, dict[str, Any]]:
    what = f" ({kind.api_version})" if kind is not None else ""
    return {
        "apiVersion": {
            "type": "string",
            "description": "APIVersion defines the versioned schema of this representation of"
            f" an object{what}.",
        },
        "kind": {
            "type": "string",
            "description": "Kind is a string value representing the REST resource this object"
            " represents.",
        },
    }


def _message(desc: Descriptor) -> dict[str, Any]:
    kind = _kind_of(desc)
    props: dict[str, Any] = {}
    subject = kind or _list_kind_of(desc)
    for field in desc.fields:
        if field.name in ("api_version", "kind") and _is_top_level(desc):
            props.update({k: v for k, v in _type_meta(kind).items() if k == field.json_name})
        else:
            props[field.json_name] = _property(field)
        if subject is not None and field.name in _TOP_FIELDS:
            what = _TOP_FIELDS[field.name].format(kind=subject.kind)
            props[field.json_name]["description"] = what
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if (required := REQUIRED.get(desc.full_name)) is not None:
        schema["required"] = list(required)
    if kind is not None:
        schema["description"] = f"{kind.kind} ({kind.api_version}), as k8semu serves it."
        schema["x-kubernetes-group-version-kind"] = gvk(kind)
    elif (listed := _list_kind_of(desc)) is not None:
        schema["description"] = f"{listed.kind}List is a list of {listed.kind} objects."
        schema["required"] = ["items"]
        schema["x-kubernetes-group-version-kind"] = [
            {"group": listed.group, "kind": f"{listed.kind}List", "version": listed.version}
        ]
    return schema


def _is_top_level(desc: Descriptor) -> bool:
    return "api_version" in desc.fields_by_name and "kind" in desc.fields_by_name


def _kind_of(desc: Descriptor) -> Kind | None:
    return next((k for k in kinds.all_kinds() if k.message.DESCRIPTOR is desc), None)


def _list_kind_of(desc: Descriptor) -> Kind | None:
    return next(
        (
            k
            for k in kinds.all_kinds()
            if k.list_message is not None and k.list_message.DESCRIPTOR is desc
        ),
        None,
    )


def _special() -> dict[str, dict[str, Any]]:
    """The definitions that are not messages: Kubernetes' own scalar types."""
    return {
        TIME: {
            "type": "string",
            "format": "date-time",
            "description": "Time is an RFC 3339 date and time in UTC, whole seconds"
            " (2024-01-01T00:00:00Z).",
        },
        MICRO_TIME: {
            "type": "string",
            "format": "date-time",
            "description": "MicroTime is an RFC 3339 date and time with microseconds.",
        },
        INT_OR_STRING: {
            "type": "string",
            "format": "int-or-string",
            "description": "IntOrString holds an int32 (8080) or a string (http, 25%).",
        },
        FIELDS_V1: {
            "type": "object",
            "description": "FieldsV1 is a set of fields in JSON: f:<name>, k:<key>, v:<value>.",
        },
        QUANTITY: {
            "type": "string",
            "description": "Quantity is a fixed-point number with an optional suffix: 500m,"
            " 128Mi, 2, 1e3.",
        },
    }


def definitions(roots: Iterable[Descriptor]) -> dict[str, dict[str, Any]]:
    """The definitions of `roots` and every message they reach, by Kubernetes name, sorted."""
    out: dict[str, dict[str, Any]] = {}
    special = _special()
    todo = list(roots)
    while todo:
        desc = todo.pop()
        name = definition_name(desc)
        if name in out:
            continue
        if name in special:
            out[name] = special[name]
            continue
        out[name] = _message(desc)
        for field in desc.fields:
            sub = field.message_type
            if sub is None:
                continue
            if sub.GetOptions().map_entry:
                sub = sub.fields_by_name["value"].message_type
            if sub is not None:
                todo.append(sub)
            if field.full_name in _MICRO_TIME_FIELDS:
                out[MICRO_TIME] = special[MICRO_TIME]
        if any(f.full_name in manifest.QUANTITY_FIELDS for f in desc.fields):
            out[QUANTITY] = special[QUANTITY]
    return dict(sorted(out.items()))


def descriptor(kind: Kind) -> Descriptor:
    return cast(Descriptor, kind.message.DESCRIPTOR)


def list_descriptor(kind: Kind) -> Descriptor | None:
    return None if kind.list_message is None else cast(Descriptor, kind.list_message.DESCRIPTOR)
