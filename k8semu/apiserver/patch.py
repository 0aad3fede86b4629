"""JSON merge patch (RFC 7386) of API objects, on their Kubernetes JSON form.

`parse` checks the request's patch document, `apply` merges it into an object's `to_dict` form
and decodes the result strictly, as a manifest is decoded (an unknown field is an error naming
its path). What the server then does with the patched object (immutable fields, status,
generation, the conditional write) is the Update path's business, not this module's.
Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.message import Message

from k8semu.api import manifest
from k8semu.api.errors import ManifestError
from k8semu.api.kinds import Kind
from k8semu.apiserver.errors import Invalid
from k8semu.apiserver.objects import describe, meta

# The names a request may give the one patch type we support.
MERGE_PATCH_TYPES = ("merge", "application/merge-patch+json")


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


def parse(kind: Kind, name: str, patch_type: str, document: bytes) -> dict[str, Any]:
    """The patch document as a dict; INVALID_ARGUMENT for another patch type or bad JSON."""
    what = describe(kind, name)
    if patch_type not in MERGE_PATCH_TYPES:
        raise Invalid(
            f"{what}: patchType: Unsupported value: {patch_type!r}: supported values:"
            ' "merge" (application/merge-patch+json)'
        )
    try:
        doc = json.loads(document)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(f"{what}: patch: invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Invalid(f"{what}: patch: must be a JSON object, got {type(doc).__name__}")
    return doc


def resource_version_precondition(doc: dict[str, Any]) -> str | None:
    """metadata.resourceVersion when the patch sets it: then it is a precondition."""
    metadata = doc.get("metadata")
    if isinstance(metadata, dict):
        rv = metadata.get("resourceVersion")
        if isinstance(rv, str) and rv:
            return rv
    return None


def apply(kind: Kind, obj: Message, doc: dict[str, Any]) -> Message:
    """A new object: `obj` with `doc` merged in, strictly decoded.

    apiVersion, kind, metadata.name and metadata.namespace cannot change through a patch
    (they name the object the request is about); the patched resourceVersion is dropped
    (the caller checks it as a precondition).
    """
    m = meta(obj)
    what = describe(kind, m.name)
    current = manifest.to_dict(obj)
    merged = merge(current, doc)
    for field in ("apiVersion", "kind"):
        if merged.get(field) != current[field]:
            raise Invalid(
                f"{what}: {field}: Invalid value: {merged.get(field)!r}: must stay"
                f" {current[field]!r}"
            )
    try:
        new = manifest.decode(merged, kind.message)
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
