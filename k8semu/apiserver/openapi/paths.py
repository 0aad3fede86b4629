"""OpenAPI v2 paths of the REST API: every served kind at Kubernetes' paths, with its verbs.

A stored kind gets Kubernetes' operations (list, watch through list's `watch` parameter,
create, deletecollection on the collection; read, replace, patch, delete on the object; list
across namespaces for a namespaced kind), its subresources from the registry row (status,
scale, binding), and Kubernetes' operation ids (`listCoreV1NamespacedPod`,
`patchAppsV1NamespacedDeploymentScale`) and x-kubernetes-action / group-version-kind
extensions, which kubectl reads (it looks for `fieldValidation` among PATCH's parameters to
decide whether the server validates fields). A read-only kind (metrics.k8s.io) gets get and
list. Also the few meta/v1 definitions the operations use (Status, DeleteOptions, Patch,
WatchEvent, autoscaling/v1 Scale). Built in v2 form; pure, no I/O.
"""

from __future__ import annotations

from typing import Any

from k8semu.api import kinds
from k8semu.api.kinds import Kind
from k8semu.apiserver import registry
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.openapi.schemas import META, definition_name, descriptor, ref

__all__ = ["EXTRA_DEFINITIONS", "KindPaths", "group_prefix", "paths"]

STATUS = f"{META}.Status"
DELETE_OPTIONS = f"{META}.DeleteOptions"
PATCH = f"{META}.Patch"
WATCH_EVENT = f"{META}.WatchEvent"
SCALE = "io.k8s.api.autoscaling.v1.Scale"

PATCH_TYPES = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
]
_JSON = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
_WATCH = [
    *_JSON,
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
]

_Q = dict[str, Any]


def _query(name: str, type_: str, description: str, **extra: Any) -> _Q:
    return {
        "name": name,
        "in": "query",
        "type": type_,
        "uniqueItems": True,
        "description": description,
        **extra,
    }


_PRETTY = _query("pretty", "string", "If 'true', the output is pretty printed.")
_DRY_RUN = _query("dryRun", "string", "When present (All), modifications are not persisted.")
_FIELD_MANAGER = _query("fieldManager", "string", "The name of the actor making the change.")
_FIELD_VALIDATION = _query(
    "fieldValidation",
    "string",
    "How the server treats fields the object model lacks: Ignore, Warn or Strict.",
)
_FORCE = _query("force", "boolean", "Force an apply request, taking over conflicting fields.")
_LIST = [
    _query("allowWatchBookmarks", "boolean", "Ask for BOOKMARK watch events."),
    _query("continue", "string", "The continue token of the previous page."),
    _query("fieldSelector", "string", "Restrict the list by the objects' fields."),
    _query("labelSelector", "string", "Restrict the list by the objects' labels."),
    _query("limit", "integer", "The most objects to return in one page."),
    _query("resourceVersion", "string", "Which version of the list to serve."),
    _query("resourceVersionMatch", "string", "How resourceVersion applies: Exact, NotOlderThan."),
    _query("sendInitialEvents", "boolean", "Begin a watch with the current objects."),
    _query("timeoutSeconds", "integer", "Timeout of the list or watch call."),
    _query("watch", "boolean", "Watch for changes instead of listing."),
]
_DELETE = [
    _DRY_RUN,
    _query("gracePeriodSeconds", "integer", "Seconds before the object is deleted."),
    _query("propagationPolicy", "string", "Orphan, Background or Foreground."),
]


def _body(name: str) -> _Q:
    return {"name": "body", "in": "body", "required": True, "schema": ref(name)}


def _path_param(name: str, what: str) -> _Q:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "type": "string",
        "uniqueItems": True,
        "description": what,
    }


_NAME = _path_param("name", "name of the object")
_NAMESPACE = _path_param("namespace", "object name and auth scope, such as for teams and projects")


def group_prefix(group: str, version: str) -> str:
    """`/api/v1` for the core group, `/apis/apps/v1` otherwise."""
    return f"/apis/{group}/{version}" if group else f"/api/{version}"


def _camel(group: str, version: str) -> str:
    """`CoreV1`, `AppsV1`, `CoordinationV1`, `MetricsV1beta1` (Kubernetes' operation ids)."""
    word = (group.split(".")[0] if group else "core").capitalize()
    return word + version.capitalize()


class KindPaths:
    """The operations of one kind, built in Kubernetes' shape."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.gv = _camel(kind.group, kind.version)
        self.scope = "Namespaced" if kind.namespaced else ""
        self.model = definition_name(descriptor(kind))
        self.list_model = f"{self.model}List"
        prefix = group_prefix(kind.group, kind.version)
        ns = "/namespaces/{namespace}" if kind.namespaced else ""
        self.collection = f"{prefix}{ns}/{kind.plural}"
        self.item = f"{self.collection}/{{name}}"
        self.all_namespaces = f"{prefix}/{kind.plural}" if kind.namespaced else ""
        self.path_params = [_NAMESPACE] if kind.namespaced else []

    def op(
        self, verb: str, action: str, subject: str, response: str, params: list[_Q], **kw: Any
    ) -> dict[str, Any]:
        """One operation: `verb` + CoreV1 + Namespaced + `subject` is its id."""
        scope = "" if subject.endswith("ForAllNamespaces") else self.scope
        responses: dict[str, Any] = {"200": {"description": "OK", "schema": ref(response)}}
        if action == "post":
            responses["201"] = {"description": "Created", "schema": ref(response)}
            responses["202"] = {"description": "Accepted", "schema": ref(response)}
        responses["401"] = {"description": "Unauthorized"}
        gvk_kind = kw.pop("gvk_kind", self.kind.kind)
        group = kw.pop("gvk_group", self.kind.group)
        version = kw.pop("gvk_version", self.kind.version)
        return {
            "description": kw.pop("description", f"{verb} {subject}"),
            "consumes": kw.pop("consumes", ["*/*"]),
            "produces": kw.pop("produces", _JSON),
            "schemes": ["https"],
            "tags": [f"{self.gv[0].lower()}{self.gv[1:]}".replace("V", "_v", 1)],
            "operationId": f"{verb}{self.gv}{scope}{subject}",
            "parameters": params,
            "responses": responses,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": {
                "group": group,
                "kind": gvk_kind,
                "version": version,
            },
        }

    def collection_ops(self, writable: bool) -> dict[str, Any]:
        k = self.kind.kind
        ops: dict[str, Any] = {
            "get": self.op("list", "list", k, self.list_model, [*_LIST], produces=_WATCH),
            "parameters": [*self.path_params, _PRETTY],
        }
        if writable:
            ops["post"] = self.op(
                "create",
                "post",
                k,
                self.model,
                [_body(self.model), _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
            )
            ops["delete"] = self.op(
                "deleteCollection", "deletecollection", k, STATUS, [*_LIST, *_DELETE]
            )
        return ops

    def all_namespaces_ops(self) -> dict[str, Any]:
        """The list across namespaces of a namespaced kind."""
        subject = f"{self.kind.kind}ForAllNamespaces"
        return {
            "get": self.op("list", "list", subject, self.list_model, [*_LIST], produces=_WATCH),
            "parameters": [_PRETTY],
        }

    def item_ops(self, writable: bool, suffix: str = "", model: str = "") -> dict[str, Any]:
        model = model or self.model
        subject = self.kind.kind + suffix
        # The scale subresource's body is autoscaling/v1 Scale, whatever the parent's kind.
        scale = {"gvk_kind": "Scale", "gvk_group": "autoscaling", "gvk_version": "v1"}
        extra: dict[str, Any] = scale if suffix == "Scale" else {}
        ops: dict[str, Any] = {
            "get": self.op("read", "get", subject, model, [], **extra),
            "parameters": [_NAME, *self.path_params, _PRETTY],
        }
        if not writable:
            return ops
        ops["put"] = self.op(
            "replace",
            "put",
            subject,
            model,
            [_body(model), _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
            **extra,
        )
        ops["patch"] = self.op(
            "patch",
            "patch",
            subject,
            model,
            [_body(PATCH), _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION, _FORCE],
            consumes=PATCH_TYPES,
            **extra,
        )
        if not suffix:
            options = {**_body(DELETE_OPTIONS), "required": False}
            ops["delete"] = self.op("delete", "delete", subject, STATUS, [options, *_DELETE])
        return ops


def paths() -> dict[str, dict[str, Any]]:
    """Every served kind's paths, keyed by path, sorted."""
    rows = registry.build(DEFAULT_RANGES)
    out: dict[str, dict[str, Any]] = {}
    for kind in kinds.all_kinds():
        if kind.list_message is None:
            continue  # Binding: only pods/{name}/binding, below
        k = KindPaths(kind)
        out[k.collection] = k.collection_ops(kind.stored)
        out[k.item] = k.item_ops(kind.stored)
        if k.all_namespaces:
            out[k.all_namespaces] = k.all_namespaces_ops()
        if not kind.stored:
            continue
        row = rows.strategy(kind)
        if row.status:
            out[f"{k.item}/status"] = k.item_ops(True, "Status")
        if row.scale:
            out[f"{k.item}/scale"] = k.item_ops(True, "Scale", SCALE)
        if row.bind is not None:
            binding = definition_name(descriptor(kinds.by_type("v1", "Binding")))
            out[f"{k.item}/binding"] = {
                "post": k.op(
                    "create",
                    "post",
                    f"{kind.kind}Binding",
                    binding,
                    [_body(binding), _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
                    gvk_kind="Binding",
                ),
                "parameters": [_NAME, *k.path_params, _PRETTY],
            }
    return dict(sorted(out.items()))


def _obj(description: str, props: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": props, **extra}


_STR = {"type": "string"}
_INT = {"type": "integer", "format": "int32"}
_INT64 = {"type": "integer", "format": "int64"}
_TYPE_META = {"apiVersion": _STR, "kind": _STR}

# The meta/v1 and autoscaling/v1 types the operations name, which are not stored kinds.
EXTRA_DEFINITIONS: dict[str, dict[str, Any]] = {
    STATUS: _obj(
        "Status is the result of an operation that returns no object, and every error.",
        {
            **_TYPE_META,
            "code": _INT,
            "details": ref(f"{META}.StatusDetails"),
            "message": _STR,
            "metadata": ref(f"{META}.ListMeta"),
            "reason": _STR,
            "status": _STR,
        },
        **{"x-kubernetes-group-version-kind": [{"group": "", "kind": "Status", "version": "v1"}]},
    ),
    f"{META}.StatusDetails": _obj(
        "StatusDetails names the object of a Status and the fields at fault.",
        {
            "causes": {
                "type": "array",
                "items": ref(f"{META}.StatusCause"),
                "x-kubernetes-list-type": "atomic",
            },
            "group": _STR,
            "kind": _STR,
            "name": _STR,
            "retryAfterSeconds": _INT,
            "uid": _STR,
        },
    ),
    f"{META}.StatusCause": _obj(
        "StatusCause is one field error of a Status.",
        {"field": _STR, "message": _STR, "reason": _STR},
    ),
    DELETE_OPTIONS: _obj(
        "DeleteOptions may be provided when deleting an API object.",
        {
            **_TYPE_META,
            "dryRun": {"type": "array", "items": _STR},
            "gracePeriodSeconds": _INT64,
            "preconditions": ref(f"{META}.Preconditions"),
            "propagationPolicy": _STR,
        },
        **{
            "x-kubernetes-group-version-kind": [
                {"group": g, "kind": "DeleteOptions", "version": v}
                for g, v in sorted({(k.group, k.version) for k in kinds.all_kinds()})
            ]
        },
    ),
    f"{META}.Preconditions": _obj(
        "Preconditions must be fulfilled before an operation is carried out.",
        {"resourceVersion": _STR, "uid": _STR},
    ),
    PATCH: {
        "type": "object",
        "description": "Patch is the body of a PATCH request: a JSON patch, a JSON merge"
        " patch or a strategic merge patch.",
    },
    WATCH_EVENT: _obj(
        "Event represents a single event to a watched resource.",
        {
            "object": {"type": "object", "description": "The object (or a Status for ERROR)."},
            "type": _STR,
        },
        required=["type", "object"],
    ),
    SCALE: _obj(
        "Scale represents a scaling request for a resource.",
        {
            **_TYPE_META,
            "metadata": ref(f"{META}.ObjectMeta"),
            "spec": ref("io.k8s.api.autoscaling.v1.ScaleSpec"),
            "status": ref("io.k8s.api.autoscaling.v1.ScaleStatus"),
        },
        **{
            "x-kubernetes-group-version-kind": [
                {"group": "autoscaling", "kind": "Scale", "version": "v1"}
            ]
        },
    ),
    "io.k8s.api.autoscaling.v1.ScaleSpec": _obj(
        "ScaleSpec describes the attributes of a scale subresource.", {"replicas": _INT}
    ),
    "io.k8s.api.autoscaling.v1.ScaleStatus": _obj(
        "ScaleStatus represents the current status of a scale subresource.",
        {"replicas": _INT, "selector": _STR},
        required=["replicas"],
    ),
}
