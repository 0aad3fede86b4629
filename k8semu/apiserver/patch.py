"""Patches of API objects, on their Kubernetes JSON form: the four types PATCH accepts.

| type        | content type                              | what it is                       |
| ----------- | ----------------------------------------- | -------------------------------- |
| `merge`     | application/merge-patch+json              | RFC 7386 JSON merge patch        |
| `json`      | application/json-patch+json               | RFC 6902 JSON patch (jsonpatch)  |
| `strategic` | application/strategic-merge-patch+json    | Kubernetes' strategic merge patch|
|             |                                           | (k8semu.apiserver.strategicpatch)|
| `apply`     | application/apply-patch+yaml              | server-side apply of a manager's |
|             |                                           | configuration, YAML or JSON      |
|             |                                           | (k8semu.apiserver.fieldmanager)  |

`parse` checks the request's patch type and document, `apply` applies it to an object's
`to_dict` form and decodes the result strictly, as a manifest is decoded (an unknown field is an
error naming its path). What the server then does with the patched object (immutable fields,
status, generation, the conditional write) is the Update path's business, not this module's.
The gRPC Patch verb and the REST PATCH both come through here. Pure: no I/O.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, cast

import yaml
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from k8semu.api import manifest, timestamps
from k8semu.api.errors import ManifestError
from k8semu.api.kinds import Kind
from k8semu.apiserver import fieldmanager, strategicpatch
from k8semu.apiserver.errors import BadRequest, Invalid
from k8semu.apiserver.objects import describe, meta
from k8semu.pb.api.v1 import apiserver_pb2 as api

# The names a request may give each patch type: ours (gRPC) and the HTTP content type (REST).
PATCH_TYPES: dict[str, str] = {
    "merge": "merge",
    "application/merge-patch+json": "merge",
    "json": "json",
    "application/json-patch+json": "json",
    "strategic": "strategic",
    "application/strategic-merge-patch+json": "strategic",
    "apply": "apply",
    "application/apply-patch+yaml": "apply",
}
# A request that names no manager, forces nothing and patches the object itself.
NO_OPTIONS = api.PatchRequest()
# What Kubernetes names in the errors of a patch request's options (fieldManager, force).
_OPTIONS = "PatchOptions.meta.k8s.io"
# Kept for callers that name the merge type's spellings.
MERGE_PATCH_TYPES = ("merge", "application/merge-patch+json")
# Kubernetes' bound on a JSON patch's operations (its apiserver's maxJSONPatchOperations).
MAX_JSON_PATCH_OPERATIONS = 10_000
# What a JSON patch's copy operations may duplicate in all (as JSON): without a bound, each
# copy of a subtree into itself doubles the object. 3 MiB is Kubernetes' largest request body.
MAX_JSON_PATCH_COPY_BYTES = 3 * 1024 * 1024
# API objects nest about 15 deep; a patch far deeper than any object is refused before the
# recursive merges see it.
MAX_DEPTH = 100


@dataclass(frozen=True)
class Patch:
    """A parsed patch: `type` is "merge", "json", "strategic" or "apply"; `doc` the decoded
    JSON (an object, or for "json" a list of operations). `manager` is the field manager
    (required for "apply"), `force` and `subresource` ("" or "status") are apply's."""

    type: str
    doc: Any
    manager: str = ""
    force: bool = False
    subresource: str = ""


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch: objects merge recursively, null deletes a key, anything else
    (lists included) replaces the target's value."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge(result.get(name), value)
    return result


Options = api.PatchRequest


def parse(
    kind: Kind, name: str, patch_type: str, document: bytes, options: Options = NO_OPTIONS
) -> Patch:
    """The patch; INVALID_ARGUMENT for an unknown patch type, bad JSON (or YAML, for apply)
    or a malformed document (a merge patch that is not an object, a JSON patch that is not a
    list of operations, an apply without a manager or of another kind). `options` (a
    PatchRequest's field_manager, force and status) say who patches what."""
    manager, force = options.field_manager, options.force
    what = describe(kind, name)
    canonical = PATCH_TYPES.get(patch_type)
    if canonical is None:
        raise Invalid(
            f"{what}: patchType: Unsupported value: {patch_type!r}: supported values:"
            ' "merge" (application/merge-patch+json), "json" (application/json-patch+json),'
            ' "strategic" (application/strategic-merge-patch+json),'
            ' "apply" (application/apply-patch+yaml)'
        )
    if force and canonical != "apply":
        raise Invalid(
            'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified'
            " for non-apply patch",
            causes=[("force", "Forbidden: may not be specified for non-apply patch")],
            kind=_OPTIONS,
        )
    doc = _load(what, document, canonical)
    if _too_deep(doc):
        raise Invalid(f"{what}: patch: nested deeper than {MAX_DEPTH} levels")
    if canonical == "json":
        _check_operations(what, doc)
    elif not isinstance(doc, dict):
        raise Invalid(f"{what}: patch: must be a JSON object, got {_json_type(doc)}")
    if canonical == "apply":
        _check_configuration(kind, name, manager, doc)
    return Patch(canonical, doc, manager, force, "status" if options.status else "")


def _load(what: str, document: bytes, canonical: str) -> Any:
    try:
        if canonical == "apply":  # YAML, of which JSON is a subset (kubectl sends either)
            return yaml.safe_load(document.decode())
        return json.loads(document)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(f"{what}: patch: invalid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        raise BadRequest(f"error decoding YAML: {exc}") from None
    except RecursionError:
        raise Invalid(f"{what}: patch: nested deeper than {MAX_DEPTH} levels") from None


def _check_configuration(kind: Kind, name: str, manager: str, doc: dict[str, Any]) -> None:
    """An apply configuration names its manager and is of the request's kind and object."""
    if not manager:
        raise Invalid(
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required'
            " for apply patch",
            causes=[("fieldManager", "Required value: is required for apply patch")],
            kind=_OPTIONS,
        )
    what = describe(kind, name)
    for field, want in (("apiVersion", kind.api_version), ("kind", kind.kind)):
        if doc.get(field) != want:
            raise Invalid(
                f"{what}: {field}: Invalid value: {doc.get(field)!r}: the apply configuration"
                f" must be of {kind.api_version} {kind.kind}"
            )
    metadata = doc.get("metadata")
    got = metadata.get("name") if isinstance(metadata, dict) else None
    if got != name:
        raise Invalid(
            f"{what}: metadata.name: Invalid value: {got!r}: the name of the object does not"
            " match the name of the request"
        )


def _too_deep(doc: Any) -> bool:
    """Whether `doc` nests objects and arrays more than MAX_DEPTH deep (no recursion)."""
    level = [doc]
    for _ in range(MAX_DEPTH + 1):
        level = [
            child
            for value in level
            if isinstance(value, dict | list)
            for child in (value.values() if isinstance(value, dict) else value)
        ]
        if not level:
            return False
    return True


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else type(value).__name__


def _check_operations(what: str, doc: Any) -> None:
    # Imported here, not at the top: an environment installed before jsonpatch became a
    # dependency then fails JSON patches only, not the whole API server at start.
    import jsonpatch
    import jsonpointer

    if not isinstance(doc, list):
        raise Invalid(
            f"{what}: patch: a JSON patch must be an array of operations, got {_json_type(doc)}"
        )
    if len(doc) > MAX_JSON_PATCH_OPERATIONS:
        raise Invalid(
            f"{what}: patch: the JSON patch has {len(doc)} operations, more than the"
            f" {MAX_JSON_PATCH_OPERATIONS} allowed"
        )
    for i, op in enumerate(doc):
        if not isinstance(op, dict):
            raise Invalid(f"{what}: patch: operation {i}: must be an object, got {_json_type(op)}")
        try:
            jsonpatch.JsonPatch([op])  # checks the op's name and path
        except (jsonpatch.InvalidJsonPatch, jsonpointer.JsonPointerException) as exc:
            raise Invalid(f"{what}: patch: operation {i} {_op_name(op)}: {exc}") from None


def _op_name(op: dict[str, Any]) -> str:
    return f"({op.get('op')!r} {op.get('path')!r})"


def resource_version_precondition(parsed: Patch) -> str | None:
    """metadata.resourceVersion when the patch sets it: then it is a precondition."""
    if parsed.type == "json":
        rv: Any = None
        for op in parsed.doc:
            if op.get("op") in ("add", "replace") and op.get("path") == "/metadata/resourceVersion":
                rv = op.get("value")
        return rv if isinstance(rv, str) and rv else None
    metadata = parsed.doc.get("metadata")
    if isinstance(metadata, dict):
        rv = metadata.get("resourceVersion")
        if isinstance(rv, str) and rv:
            return rv
    return None


def _patched(kind: Kind, what: str, obj: Message, current: dict[str, Any], parsed: Patch) -> Any:
    if parsed.type == "apply":
        merged, entries = fieldmanager.apply(
            current,
            parsed.doc,
            meta(obj),
            cast(Descriptor, kind.message.DESCRIPTOR),
            manager=parsed.manager,
            api_version=kind.api_version,
            force=parsed.force,
            now=timestamps.now(),
            subresource=parsed.subresource,
        )
        metadata = merged.setdefault("metadata", {})
        metadata["managedFields"] = [manifest.to_dict(e) for e in entries]
        return merged
    if parsed.type == "merge":
        return merge(current, parsed.doc)
    if parsed.type == "strategic":
        try:
            return strategicpatch.apply(
                current, parsed.doc, cast(Descriptor, kind.message.DESCRIPTOR)
            )
        except strategicpatch.StrategicPatchError as exc:
            raise Invalid(f"{what}: {exc}") from None
    import jsonpatch  # see _check_operations
    import jsonpointer

    doc: Any = copy.deepcopy(current)  # one copy, then each operation in place
    copied = 0
    for i, op in enumerate(parsed.doc):
        try:
            if op.get("op") == "copy":
                copied += len(json.dumps(jsonpointer.resolve_pointer(doc, op.get("from", ""))))
                if copied > MAX_JSON_PATCH_COPY_BYTES:
                    raise Invalid(
                        f"{what}: patch: operation {i} {_op_name(op)}: the copies exceed"
                        f" {MAX_JSON_PATCH_COPY_BYTES} bytes"
                    )
            doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, jsonpatch.JsonPatchTestFailed):
                reason = f"test failed: {reason}"
            raise Invalid(f"{what}: patch: operation {i} {_op_name(op)}: {reason}") from None
    return doc


def patch_document(kind: Kind, name: str, current: dict[str, Any], parsed: Patch) -> Any:
    """`current` (a JSON document of `kind`, perhaps of another version of it: the REST
    layer's conversions) with a merge, JSON or strategic patch applied; not for apply."""
    return _patched(kind, describe(kind, name), kind.message(), current, parsed)


def apply(kind: Kind, obj: Message, parsed: Patch) -> Message:
    """A new object: `obj` with the patch applied, strictly decoded.

    apiVersion, kind, metadata.name and metadata.namespace cannot change through a patch
    (they name the object the request is about); the patched resourceVersion is dropped
    (the caller checks it as a precondition).
    """
    m = meta(obj)
    what = describe(kind, m.name)
    current = manifest.to_dict(obj)
    patched = _patched(kind, what, obj, current, parsed)
    if not isinstance(patched, dict):
        raise Invalid(f"{what}: patch: the result must be a JSON object, got {_json_type(patched)}")
    if _too_deep(patched):  # JSON patch moves can nest what the document did not
        raise Invalid(f"{what}: patch: the result is nested deeper than {MAX_DEPTH} levels")
    for field in ("apiVersion", "kind"):
        if patched.get(field) != current[field]:
            raise Invalid(
                f"{what}: {field}: Invalid value: {patched.get(field)!r}: must stay"
                f" {current[field]!r}"
            )
    try:
        new = manifest.decode(patched, kind.message)
    except ManifestError as exc:
        raise Invalid(f"{what}: {exc}") from None  # "spec.replicass: unknown field"
    nm = meta(new)
    if nm.name != m.name:
        raise Invalid(
            f"{what}: metadata.name: Invalid value: {nm.name!r}: the name of the object does not"
            " match the name of the request"
        )
    if nm.namespace != m.namespace:
        raise Invalid(
            f"{what}: metadata.namespace: Invalid value: {nm.namespace!r}: the namespace of the"
            " object does not match the namespace of the request"
        )
    nm.resource_version = ""
    return new


def new_object(kind: Kind, namespace: str, parsed: Patch) -> Message:
    """The object an apply creates when there is none yet (create-on-apply)."""
    metadata = {"name": parsed.doc["metadata"]["name"]}
    if kind.namespaced:
        metadata["namespace"] = namespace
    empty = manifest.decode(
        {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": metadata}, kind.message
    )
    return apply(kind, empty, parsed)
