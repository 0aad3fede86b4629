"""OpenAPI of the versions served by conversion (k8semu/apiserver/rest/versions.py).

Those versions have no message in the object model, so their definitions are written here
in Kubernetes' names and shape; their paths are the stored kind's operations at that
version (`readAutoscalingV1NamespacedHorizontalPodAutoscaler`), naming these definitions.
kubectl reads them for `explain --api-version=autoscaling/v1` and to learn that the server
validates fields. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from k8semu.api import kinds
from k8semu.apiserver.openapi import paths as kind_paths
from k8semu.apiserver.openapi.schemas import META, ref

__all__ = ["DEFINITIONS", "GROUP_VERSIONS", "paths", "roots"]

_V1 = "io.k8s.api.autoscaling.v1"
_HPA = f"{_V1}.HorizontalPodAutoscaler"
_STR = {"type": "string"}
_INT = {"type": "integer", "format": "int32"}
_INT64 = {"type": "integer", "format": "int64"}
_TIME = {"type": "string", "format": "date-time"}
_GVK = {
    "x-kubernetes-group-version-kind": [
        {"group": "autoscaling", "kind": "HorizontalPodAutoscaler", "version": "v1"}
    ]
}


def _obj(description: str, props: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": props, **extra}


DEFINITIONS: dict[str, dict[str, Any]] = {
    _HPA: _obj(
        "configuration of a horizontal pod autoscaler.",
        {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": ref(f"{META}.ObjectMeta"),
            "spec": ref(f"{_HPA}Spec"),
            "status": ref(f"{_HPA}Status"),
        },
        **_GVK,
    ),
    f"{_HPA}List": _obj(
        "list of horizontal pod autoscaler objects.",
        {
            "apiVersion": _STR,
            "items": {"type": "array", "items": ref(_HPA)},
            "kind": _STR,
            "metadata": ref(f"{META}.ListMeta"),
        },
        required=["items"],
        **{
            "x-kubernetes-group-version-kind": [
                {"group": "autoscaling", "kind": "HorizontalPodAutoscalerList", "version": "v1"}
            ]
        },
    ),
    f"{_HPA}Spec": _obj(
        "specification of a horizontal pod autoscaler.",
        {
            "maxReplicas": _INT,
            "minReplicas": _INT,
            "scaleTargetRef": ref(f"{_V1}.CrossVersionObjectReference"),
            "targetCPUUtilizationPercentage": _INT,
        },
        required=["scaleTargetRef", "maxReplicas"],
    ),
    f"{_HPA}Status": _obj(
        "current status of a horizontal pod autoscaler",
        {
            "currentCPUUtilizationPercentage": _INT,
            "currentReplicas": _INT,
            "desiredReplicas": _INT,
            "lastScaleTime": _TIME,
            "observedGeneration": _INT64,
        },
        required=["currentReplicas", "desiredReplicas"],
    ),
    f"{_V1}.CrossVersionObjectReference": _obj(
        "CrossVersionObjectReference contains enough information to let you identify the"
        " referred resource.",
        {"apiVersion": _STR, "kind": _STR, "name": _STR},
        required=["kind", "name"],
        **{"x-kubernetes-map-type": "atomic"},
    ),
}

# (group, version, stored kind's apiVersion, kind) served by conversion, with their model.
_SERVED = (("autoscaling", "v1", "autoscaling/v2", "HorizontalPodAutoscaler", _HPA),)
GROUP_VERSIONS = sorted({(group, version) for group, version, *_ in _SERVED})


def roots(group: str, version: str) -> list[str]:
    """The definitions of the kinds served at `group`/`version` by conversion."""
    return [model for g, v, *_, model in _SERVED if (g, v) == (group, version)]


def paths() -> dict[str, dict[str, Any]]:
    """The paths of each converted version: the stored kind's, at that version."""
    out: dict[str, dict[str, Any]] = {}
    for _, version, stored, kind_name, model in _SERVED:
        kind = dataclasses.replace(kinds.by_type(stored, kind_name), version=version)
        k = kind_paths.KindPaths(kind)
        k.model, k.list_model = model, f"{model}List"
        out[k.collection] = k.collection_ops(True)
        out[k.item] = k.item_ops(True)
        out[f"{k.item}/status"] = k.item_ops(True, "Status")
        if k.all_namespaces:
            out[k.all_namespaces] = k.all_namespaces_ops()
    return out
