"""Strategic merge patch: Kubernetes' JSON merge patch that knows which lists merge by key.

A JSON merge patch (RFC 7386) replaces every list; a strategic merge patch looks each field up
in the object model (the protobuf descriptors, by Kubernetes JSON name) and in the patch
metadata table (k8semu.api.patchkeys): a list tagged `merge` with a merge key merges element by
element (`containers` by `name`), one without a key is a set of scalars, and an untagged list is
replaced. The directives of Kubernetes' strategic-merge-patch document:

- `$patch: replace` in an object (replace it, do not merge), in a list element (replace the
  list with the other elements), `$patch: delete` in an object (delete it) or in a keyed list
  element (delete the elements with that key), `$patch: merge` (the default);
- `$retainKeys: [...]` in an object: keys of the live object not listed are cleared;
- `$deleteFromPrimitiveList/<field>: [...]`: remove these values from a merged scalar list;
- `$setElementOrder/<field>: [...]`: the order of the merged list, the live object's other
  elements keeping their places relative to the listed ones.

`null` deletes a field, as in a merge patch. A field the model lacks merges as plain JSON; the
strict decode afterwards names it. Works on plain JSON values (`manifest.to_dict` forms) and
raises StrategicPatchError with the field path; pure, no I/O.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from k8semu.api import patchkeys
from k8semu.api.patchkeys import PatchMeta

__all__ = ["StrategicPatchError", "apply", "field_named", "is_map"]

_PATCH = "$patch"
_RETAIN_KEYS = "$retainKeys"
_ORDER = "$setElementOrder/"
_DELETE_FROM = "$deleteFromPrimitiveList/"


class StrategicPatchError(ValueError):
    """A patch that cannot apply; `path` names the field (`spec.template.spec.containers`)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


class _Deleted:
    """What merging `{"$patch": "delete"}` into an object gives: remove the field."""


_DELETED = _Deleted()


def apply(original: dict[str, Any], patch: dict[str, Any], desc: Descriptor) -> dict[str, Any]:
    """`patch` merged into `original` (neither is modified) for an object of type `desc`."""
    merged = _merge_object(original, patch, desc, "")
    if isinstance(merged, _Deleted):
        raise StrategicPatchError("", "$patch: delete cannot delete the object itself")
    return merged


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _directive(patch: dict[str, Any], path: str) -> str:
    value = patch.get(_PATCH, "merge")
    if value not in ("merge", "replace", "delete"):
        raise StrategicPatchError(
            _join(path, _PATCH), f'unknown directive {value!r} (want "replace", "delete", "merge")'
        )
    return str(value)


def field_named(desc: Descriptor | None, name: str) -> FieldDescriptor | None:
    """The field of `desc` whose Kubernetes JSON name is `name` (None: unknown, or no type)."""
    if desc is None:
        return None
    for field in desc.fields:
        if field.json_name == name:
            return field
    return None


def is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _element_type(field: FieldDescriptor | None) -> Descriptor | None:
    """The message type a field's value (or list element) decodes to, if it is an object."""
    if field is None or field.message_type is None or is_map(field):
        return None
    return field.message_type


def _merge_object(
    original: Any, patch: dict[str, Any], desc: Descriptor | None, path: str
) -> dict[str, Any] | _Deleted:
    directive = _directive(patch, path)
    if directive == "delete":
        return _DELETED
    base: dict[str, Any] = (
        dict(original) if isinstance(original, dict) and directive == "merge" else {}
    )
    retain = patch.get(_RETAIN_KEYS)
    if retain is not None:
        if not isinstance(retain, list) or not all(isinstance(k, str) for k in retain):
            raise StrategicPatchError(_join(path, _RETAIN_KEYS), "must be a list of field names")
        base = {k: v for k, v in base.items() if k in retain}
    for name, value in patch.items():
        if name in (_PATCH, _RETAIN_KEYS) or name.startswith((_ORDER, _DELETE_FROM)):
            continue
        _merge_field(base, name, value, field_named(desc, name), _join(path, name))
    for name, value in patch.items():
        if name.startswith(_DELETE_FROM):
            field_name = name[len(_DELETE_FROM) :]
            _delete_from(base, field_name, value, _join(path, name))
    for name, value in patch.items():
        if name.startswith(_ORDER):
            field_name = name[len(_ORDER) :]
            meta = _meta(desc, field_name)
            if field_name in base:
                base[field_name] = _reorder(
                    base[field_name], value, original, field_name, meta, _join(path, name)
                )
    return base


def _meta(desc: Descriptor | None, name: str) -> PatchMeta:
    field = field_named(desc, name)
    return patchkeys.for_field(field) if field is not None else PatchMeta()


def _merge_field(
    base: dict[str, Any], name: str, value: Any, field: FieldDescriptor | None, path: str
) -> None:
    if value is None:
        base.pop(name, None)
        return
    meta = patchkeys.for_field(field) if field is not None else PatchMeta()
    if isinstance(value, dict):
        merged = _merge_object(base.get(name), value, _element_type(field), path)
        if isinstance(merged, _Deleted):
            base.pop(name, None)
        else:
            base[name] = merged
    elif isinstance(value, list) and meta.merges:
        base[name] = _merge_list(base.get(name), value, meta, _element_type(field), path)
    else:
        base[name] = value


def _merge_list(
    original: Any, patch: list[Any], meta: PatchMeta, desc: Descriptor | None, path: str
) -> list[Any]:
    live = list(original) if isinstance(original, list) else []
    if not meta.merge_key:  # a set of scalars: union, duplicates dropped, live order first
        return live + [v for i, v in enumerate(patch) if v not in live and v not in patch[:i]]
    key = meta.merge_key
    if any(isinstance(item, dict) and item.get(_PATCH) == "replace" for item in patch):
        kept = [item for item in patch if not (isinstance(item, dict) and _PATCH in item)]
        return [_merge_element({}, item, desc, f"{path}[{i}]") for i, item in enumerate(kept)]
    for i, item in enumerate(patch):
        where = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise StrategicPatchError(where, f"expected an object with merge key {key!r}")
        if key not in item:
            raise StrategicPatchError(where, f"does not contain declared merge key: {key}")
        if _directive(item, where) == "delete":
            live = [e for e in live if not (isinstance(e, dict) and e.get(key) == item[key])]
            continue
        found = next(
            (j for j, e in enumerate(live) if isinstance(e, dict) and e.get(key) == item[key]),
            None,
        )
        if found is None:
            live.append(_merge_element({}, item, desc, where))
        else:
            live[found] = _merge_element(live[found], item, desc, where)
    return live


def _merge_element(
    original: dict[str, Any], item: dict[str, Any], desc: Descriptor | None, path: str
) -> dict[str, Any]:
    merged = _merge_object(original, item, desc, path)
    assert not isinstance(merged, _Deleted)  # callers handle "delete" elements first
    return merged


def _delete_from(base: dict[str, Any], name: str, values: Any, path: str) -> None:
    if not isinstance(values, list):
        raise StrategicPatchError(path, "must be a list of the values to remove")
    live = base.get(name)
    if isinstance(live, list):
        base[name] = [v for v in live if v not in values]


def _reorder(merged: Any, order: Any, original: Any, name: str, meta: PatchMeta, path: str) -> Any:
    """`merged` in the order `order` gives: the listed elements in that order, the others at
    their live positions relative to them (Kubernetes' normalizeElementOrder)."""
    if not isinstance(order, list) or not isinstance(merged, list):
        raise StrategicPatchError(path, "must be a list")
    key = meta.merge_key

    def ident(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    wanted = [ident(item) for item in order]
    live = original.get(name) if isinstance(original, dict) else None
    live_ids = [ident(item) for item in live] if isinstance(live, list) else []
    listed = sorted((e for e in merged if ident(e) in wanted), key=lambda e: wanted.index(ident(e)))
    others = [e for e in merged if ident(e) not in wanted]
    out: list[Any] = []
    while listed or others:
        if not listed:
            out.extend(others)
            break
        if not others:
            out.extend(listed)
            break
        a, b = ident(others[0]), ident(listed[0])
        if a in live_ids and b in live_ids and live_ids.index(a) < live_ids.index(b):
            out.append(others.pop(0))
        else:
            out.append(listed.pop(0))
    return out
