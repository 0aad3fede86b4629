"""The OpenAPI documents of the REST API, generated from the object model and the kinds registry.

    schemas.py  definitions of the protobuf messages under Kubernetes' names, with types,
                required fields, enums and the patch metadata (k8semu.api.patchkeys)
    paths.py    every served kind's paths and verbs, Kubernetes' operation ids
    v2proto.py  the v2 document as gnostic protobuf (what kubectl asks /openapi/v2 for)
    (here)      the documents: v2 (`/openapi/v2`, one document, JSON or protobuf) and v3
                (`/openapi/v3`, an index of one document per group-version,
                `/openapi/v3/apis/apps/v1`)

kubectl 1.32 reads v3 for `explain` and to learn whether the server validates fields (the
`fieldValidation` parameter of PATCH), and v2 (as protobuf) for client-side validation when
it has to. Both
are built once per process from the same v2-form definitions and cached with their JSON bytes
and hash; the REST server serves the bytes (and answers `?hash=` requests as immutable).
The returned dicts are shared: callers must not modify them. Pure: no I/O.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import Descriptor

from k8semu.api import kinds
from k8semu.apiserver.openapi import converted, paths, schemas, v2proto

__all__ = [
    "group_versions",
    "openapi_v2",
    "openapi_v2_for",
    "openapi_v2_json",
    "openapi_v2_protobuf",
    "openapi_v3",
    "openapi_v3_index",
    "openapi_v3_json",
    "openapi_v3_path",
]

# The Kubernetes API version whose documents these imitate (kubectl reads none of it).
KUBERNETES_VERSION = "v1.32.0"
_V3_REF = "#/components/schemas/"
# The media type of openapi_v2_protobuf(), and the Accept values that ask for it.
V2_PROTOBUF = v2proto.CONTENT_TYPE
V2_PROTOBUF_ACCEPT = v2proto.ACCEPT
# Kubernetes' documents declare bearer tokens (the security issue brings them to k8semu).
_SECURITY = {
    "BearerToken": {
        "type": "apiKey",
        "name": "authorization",
        "in": "header",
        "description": "Bearer Token authentication",
    }
}


def group_versions() -> list[tuple[str, str]]:
    """Every served (group, version), core ("", "v1") first."""
    own = {(k.group, k.version) for k in kinds.all_kinds()}
    return sorted(own | set(converted.GROUP_VERSIONS))


def _roots() -> Iterable[Descriptor]:
    for kind in kinds.all_kinds():
        yield schemas.descriptor(kind)
        if (listed := schemas.list_descriptor(kind)) is not None:
            yield listed


@functools.cache
def _definitions() -> dict[str, dict[str, Any]]:
    found = schemas.definitions(_roots()) | paths.EXTRA_DEFINITIONS | converted.DEFINITIONS
    return dict(sorted(found.items()))


@functools.cache
def _paths() -> dict[str, dict[str, Any]]:
    return dict(sorted((paths.paths() | converted.paths()).items()))


@functools.cache
def openapi_v2() -> dict[str, Any]:
    """The Swagger 2.0 document of every served kind (`GET /openapi/v2`)."""
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": _paths(),
        "definitions": _definitions(),
        "securityDefinitions": _SECURITY,
        "security": [{"BearerToken": []}],
    }


@functools.cache
def openapi_v2_json() -> bytes:
    return _encode(openapi_v2())


@functools.cache
def openapi_v2_protobuf() -> bytes:
    """The v2 document as gnostic's protobuf (`Accept: V2_PROTOBUF`), which kubectl asks for
    when it validates manifests itself."""
    return v2proto.encode_document(openapi_v2())


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=False).encode()


def _hash(data: bytes) -> str:
    """The ETag of a document, and the `hash` of its v3 URL (Kubernetes: sha512, hex)."""
    return hashlib.sha512(data).hexdigest().upper()


def openapi_v2_for(accept: str) -> tuple[bytes, str, str]:
    """`GET /openapi/v2` for a request's Accept header: (body, Content-Type, ETag). Protobuf
    when the client asks for it and not for JSON (as kube-apiserver decides), else JSON."""
    if "application/json" not in accept and any(t in accept for t in V2_PROTOBUF_ACCEPT):
        body = openapi_v2_protobuf()
        return body, V2_PROTOBUF, _hash(body)
    body = openapi_v2_json()
    return body, "application/json", _hash(body)


# ---- v3 -------------------------------------------------------------------------------------


def _v3_schema(schema: Any) -> Any:
    """A v2 schema in v3 form: references to components, a reference with siblings wrapped in
    allOf (v3 ignores a $ref's siblings), intOrString and Quantity as their oneOf forms."""
    if isinstance(schema, list):
        return [_v3_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _v3_schema(v) for k, v in schema.items() if k != "$ref"}
    if "$ref" in schema:
        target = {"$ref": _V3_REF + schema["$ref"].rsplit("/", 1)[1]}
        if not out:
            return target
        out["allOf"] = [target]
    return out


def _v3_special(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    if name == schemas.INT_OR_STRING:
        return {
            "description": schema["description"],
            "format": "int-or-string",
            "oneOf": [{"type": "integer"}, {"type": "string"}],
        }
    if name == schemas.QUANTITY:
        return {
            "description": schema["description"],
            "oneOf": [{"type": "string"}, {"type": "number"}],
        }
    return schema


def _v3_parameter(param: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: param[k] for k in ("name", "in", "description", "required") if k in param
    }
    out["schema"] = {k: param[k] for k in ("type", "uniqueItems") if k in param}
    return out


def _v3_operation(op: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: v
        for k, v in op.items()
        if k not in ("consumes", "produces", "schemes", "parameters", "responses")
    }
    params = [p for p in op["parameters"] if p["in"] != "body"]
    if params:
        out["parameters"] = [_v3_parameter(p) for p in params]
    for body in (p for p in op["parameters"] if p["in"] == "body"):
        schema = _v3_schema(body["schema"])
        out["requestBody"] = {
            "content": {mt: {"schema": schema} for mt in op["consumes"]},
            "required": body.get("required", False),
        }
    out["responses"] = {
        code: {"description": r["description"]}
        | (
            {"content": {mt: {"schema": _v3_schema(r["schema"])} for mt in op["produces"]}}
            if "schema" in r
            else {}
        )
        for code, r in op["responses"].items()
    }
    return out


def _v3_path(item: dict[str, Any]) -> dict[str, Any]:
    return {
        key: [_v3_parameter(p) for p in value] if key == "parameters" else _v3_operation(value)
        for key, value in item.items()
    }


def _references(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        target = value.get("$ref")
        if isinstance(target, str):
            found.add(target.rsplit("/", 1)[1])
        for v in value.values():
            _references(v, found)
    elif isinstance(value, list):
        for v in value:
            _references(v, found)


def _closure(start: Any, definitions: dict[str, dict[str, Any]]) -> list[str]:
    """The names of the definitions `start` references, directly or through others."""
    found: set[str] = set()
    _references(start, found)
    todo = list(found)
    while todo:
        more: set[str] = set()
        _references(definitions[todo.pop()], more)
        for name in more - found:
            found.add(name)
            todo.append(name)
    return sorted(found)


def _v3_doc_path(group: str, version: str) -> str:
    return paths.group_prefix(group, version).lstrip("/")


@functools.cache
def openapi_v3(group: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document of one group-version (`/openapi/v3/apis/apps/v1`; the core
    group is ""): its paths and every schema they reach, the schemas of the group-version's
    own kinds included. KeyError for a group-version not served."""
    if (group, version) not in group_versions():
        raise KeyError(f"no group-version {group}/{version}".replace(" /", " "))
    prefix = paths.group_prefix(group, version) + "/"
    own = {p: item for p, item in _paths().items() if p.startswith(prefix)}
    definitions = _definitions()
    served = [k for k in kinds.all_kinds() if (k.group, k.version) == (group, version)]
    roots = [schemas.definition_name(schemas.descriptor(k)) for k in served]
    roots += converted.roots(group, version)
    wanted = _closure([own, [schemas.ref(r) for r in roots]], definitions)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": {p: _v3_path(item) for p, item in own.items()},
        "components": {
            "schemas": {name: _v3_special(name, _v3_schema(definitions[name])) for name in wanted},
            "securitySchemes": _SECURITY,
        },
        "security": [{"BearerToken": []}],
    }


@functools.cache
def openapi_v3_json(group: str, version: str) -> bytes:
    return _encode(openapi_v3(group, version))


@functools.cache
def openapi_v3_index() -> dict[str, Any]:
    """`GET /openapi/v3`: each group-version's document path and its immutable URL (the
    `hash` query is the document's hash, so clients cache it until it changes)."""
    return {
        "paths": {
            _v3_doc_path(g, v): {
                "serverRelativeURL": f"/openapi/v3/{_v3_doc_path(g, v)}"
                f"?hash={_hash(openapi_v3_json(g, v))}"
            }
            for g, v in group_versions()
        }
    }


def openapi_v3_path(path: str) -> tuple[bytes, str] | None:
    """The JSON and hash of the v3 document at `path` below /openapi/v3/ (`api/v1`,
    `apis/apps/v1`), or None for a path that names no served group-version."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) == 2:
        group, version = "", parts[1]
    elif parts[:1] == ["apis"] and len(parts) == 3:
        group, version = parts[1], parts[2]
    else:
        return None
    if (group, version) not in group_versions():
        return None
    data = openapi_v3_json(group, version)
    return data, _hash(data)
