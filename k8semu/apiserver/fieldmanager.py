"""Server-side apply and field ownership: metadata.managedFields, as Kubernetes keeps it.

Every field an object has may be owned by managers (kubectl, a controller, a script), one
entry per (manager, operation, subresource) in `metadata.managedFields`, each a FieldsV1 set:

    {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
        'k:{"name":"web"}': {".": {}, "f:image": {}}}}}}}

`f:<name>` is a field, `k:{"<merge key>":<value>}` an element of a list that merges by key
(k8semu.api.patchkeys), `v:<json>` an element of a set of scalars, `.` the element itself.
A path is a tuple of these keys, a set of paths a manager's claim.

- **apply** (`Operation: Apply`): the manager's configuration is merged into the live object
  (objects by field, keyed lists by key, sets by value, everything else replaced); a field
  whose value changes and that another manager owns is a conflict (409, naming field and
  manager) unless forced, when the other manager loses it; what the manager applied last time
  and no longer applies is removed, unless another manager owns it too. Its set becomes what
  it applied.
- **update** (`Operation: Update`, any other write that names a manager): the manager takes
  the fields it changed from the others; a removed field leaves every set.

Fields that are the server's (apiVersion, kind, metadata other than labels, annotations,
finalizers and ownerReferences) are owned by nobody; `status` belongs to the status
subresource's entries, everything else to the object's. Pure: works on `manifest.to_dict`
forms and descriptors, no I/O; `now` is the caller's.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from k8semu.api import patchkeys, timestamps
from k8semu.apiserver.errors import Conflict
from k8semu.apiserver.objects import meta
from k8semu.apiserver.strategicpatch import field_named, is_map
from k8semu.pb.api.v1 import meta_pb2

__all__ = [
    "APPLY",
    "UPDATE",
    "ApplyConflict",
    "apply",
    "fields",
    "from_fields_v1",
    "record_update",
    "render",
    "to_fields_v1",
]

APPLY, UPDATE = "Apply", "Update"
Path = tuple[str, ...]
# The metadata fields a manager can own; the rest of metadata is the server's.
_OWNED_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")
_INT_OR_STRING = "k8semu.api.v1.IntOrString"
_ITEM = object()  # the value of a list element's own path (`.`) in a leaves map


@dataclass(frozen=True)
class Conflicting:
    manager: str
    api_version: str
    path: Path
    subresource: str = ""

    def owner(self) -> str:
        """The other manager as Kubernetes names it in a conflict: `"kubectl" with
        subresource "scale" using apps/v1`."""
        via = f' with subresource "{self.subresource}"' if self.subresource else ""
        return f'"{self.manager}"{via} using {self.api_version}'


class ApplyConflict(Conflict):
    """An apply that would change fields other managers own (409 Conflict). `causes` are
    (field, message) pairs: `.spec.replicas`, `conflict with "kubectl" using apps/v1`."""

    def __init__(self, conflicts: list[Conflicting]) -> None:
        n = len(conflicts)
        by_manager: dict[str, list[str]] = {}
        for c in conflicts:
            by_manager.setdefault(c.owner(), []).append(render(c.path))
        if n == 1:
            c = conflicts[0]
            text = f"conflict with {c.owner()}: {render(c.path)}"
        else:
            parts = []
            for owner, paths in by_manager.items():
                one = "conflict" if len(paths) == 1 else "conflicts"
                listed = "".join(f"\n- {p}" for p in paths)
                parts.append(f"{one} with {owner}:{listed}")
            text = "\n".join(parts)
        super().__init__(f"Apply failed with {n} conflict{'s' if n > 1 else ''}: {text}")
        self.causes = tuple((render(c.path), f"conflict with {c.owner()}") for c in conflicts)


# ---- paths --------------------------------------------------------------------------------


def _is_map(field: FieldDescriptor | None) -> bool:
    return field is not None and is_map(field)


def _message(field: FieldDescriptor | None) -> Descriptor | None:
    if field is None or field.message_type is None or _is_map(field):
        return None
    if field.message_type.full_name.startswith("google.protobuf."):
        return None  # Timestamp, Struct: values, not objects with fields
    return field.message_type


def _list_key(field: FieldDescriptor | None) -> tuple[bool, str]:
    """(whether the list merges, its merge key: "" a set of scalars)."""
    if field is None:
        return False, ""
    pm = patchkeys.for_field(field)
    return pm.merges, pm.merge_key


def _item_key(key: str, item: Any) -> str | None:
    if not isinstance(item, dict) or key not in item:
        return None
    return "k:" + json.dumps({key: item[key]}, separators=(",", ":"), sort_keys=True)


def _value_key(item: Any) -> str:
    return "v:" + json.dumps(item, separators=(",", ":"), sort_keys=True)


def _scoped(obj: dict[str, Any], subresource: str) -> dict[str, Any]:
    """The part of an object managers own: `status` for the status subresource, the rest
    (labels, annotations, finalizers, ownerReferences of metadata) for the object."""
    if subresource == "status":
        return {"status": obj["status"]} if "status" in obj else {}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        owned = {k: v for k, v in metadata.items() if k in _OWNED_METADATA}
        if owned:
            out["metadata"] = owned
    return out


def leaves(obj: dict[str, Any], desc: Descriptor, subresource: str = "") -> dict[Path, Any]:
    """Every owned path of `obj` with its value: scalars, atomic lists and empty objects are
    leaves; keyed-list and set elements have their own paths (value `_ITEM`) too."""
    out: dict[Path, Any] = {}
    _walk(_scoped(obj, subresource), desc, (), out)
    return out


def fields(obj: dict[str, Any], desc: Descriptor, subresource: str = "") -> set[Path]:
    return set(leaves(obj, desc, subresource))


def _walk(obj: dict[str, Any], desc: Descriptor | None, prefix: Path, out: dict[Path, Any]) -> None:
    for name, value in obj.items():
        if value is None:
            continue
        field = field_named(desc, name)
        path = (*prefix, f"f:{name}")
        if isinstance(value, dict) and value and not _is_map(field):
            _walk(value, _message(field), path, out)
        elif isinstance(value, dict) and value:  # a map: each key its own field
            for key, item in value.items():
                out[(*path, f"f:{key}")] = item
        elif isinstance(value, list) and value and _walk_list(value, field, path, out):
            pass
        else:
            out[path] = value


def _walk_list(
    value: list[Any], field: FieldDescriptor | None, path: Path, out: dict[Path, Any]
) -> bool:
    """A merging list's elements as paths; False (then the list is a leaf) for an atomic
    one, or one whose elements lack the merge key."""
    key = _keyed(field, value, path, out)
    if not key:
        return key is not None
    ids = [_item_key(key, item) for item in value]
    if any(i is None for i in ids):
        return False
    for ident, item in zip(ids, value, strict=True):
        assert ident is not None
        item_path = (*path, ident)
        out[item_path] = _ITEM
        _walk({k: v for k, v in item.items() if k != key}, _message(field), item_path, out)
        if key in item:
            out[(*item_path, f"f:{key}")] = item[key]
    return True


def message_leaves(obj: Message, subresource: str = "") -> dict[Path, Any]:
    """`leaves` read from the message itself (the same paths; values comparable only with
    each other's): an Update's before and after, without two JSON conversions."""
    out: dict[Path, Any] = {}
    for field, value in obj.ListFields():
        name = field.json_name
        if (name == "status") != (subresource == "status") or name in ("apiVersion", "kind"):
            continue
        if name != "metadata":
            _walk_field(field, value, ("f:" + name,), out)
            continue
        for sub, item in value.ListFields():
            if sub.json_name in _OWNED_METADATA:
                _walk_field(sub, item, ("f:metadata", "f:" + sub.json_name), out)
    return out


def changes(before: Message, after: Message, subresource: str = "") -> tuple[set[Path], set[Path]]:
    """(changed, removed): the `message_leaves` paths whose value `after` changes or adds,
    and those it removes, found by descending only into what differs (a write that changes
    one label compares the spec with one `==`, it does not walk it)."""
    changed: set[Path] = set()
    removed: set[Path] = set()
    for field in _union(before, after):
        name = field.json_name
        if (name == "status") != (subresource == "status") or name in ("apiVersion", "kind"):
            continue
        if name != "metadata":
            _diff_field(field, before, after, ("f:" + name,), changed, removed)
            continue
        for sub in _union(meta_of(before), meta_of(after)):
            if sub.json_name in _OWNED_METADATA:
                path = ("f:metadata", "f:" + sub.json_name)
                _diff_field(sub, meta_of(before), meta_of(after), path, changed, removed)
    return changed, removed


def meta_of(obj: Message) -> Message:
    return cast(Message, getattr(obj, "metadata"))  # noqa: B009 - every stored kind has one


def _union(a: Message, b: Message) -> list[FieldDescriptor]:
    seen = {f.number: f for f, _ in a.ListFields()}
    seen.update((f.number, f) for f, _ in b.ListFields())
    return list(seen.values())


def _diff_field(
    field: FieldDescriptor,
    a: Message,
    b: Message,
    path: Path,
    changed: set[Path],
    removed: set[Path],
) -> None:
    """The changes of one field of `a` -> `b` (its parents), at `path`."""
    present_a = _present(a, field)
    present_b = _present(b, field)
    va, vb = getattr(a, field.name), getattr(b, field.name)
    if present_a == present_b and (not present_a or va == vb):
        return
    desc = _message(field)
    if (
        present_a and present_b and not field.is_repeated and desc is not None
        and desc.full_name != _INT_OR_STRING and va.ListFields() and vb.ListFields()
    ):  # fmt: skip
        for sub in _union(va, vb):
            _diff_field(sub, va, vb, (*path, "f:" + sub.json_name), changed, removed)
        return
    old: dict[Path, Any] = {}
    new: dict[Path, Any] = {}
    if present_a:
        _walk_field(field, va, path, old)
    if present_b:
        _walk_field(field, vb, path, new)
    changed.update(p for p, v in new.items() if p not in old or old[p] != v)
    removed.update(set(old) - set(new))


def _present(msg: Message, field: FieldDescriptor) -> bool:
    """As ListFields tells it (a repeated field: not empty; a scalar: not its default)."""
    if field.is_repeated:
        return len(getattr(msg, field.name)) > 0
    if field.has_presence:
        return msg.HasField(field.name)
    return bool(getattr(msg, field.name) != field.default_value)


def _walk_message(msg: Message, prefix: Path, out: dict[Path, Any], skip: str = "") -> None:
    for field, value in msg.ListFields():
        if field.json_name != skip:
            _walk_field(field, value, (*prefix, "f:" + field.json_name), out)


def _walk_field(field: FieldDescriptor, value: Any, path: Path, out: dict[Path, Any]) -> None:
    if _is_map(field):
        for key, item in value.items():
            out[(*path, f"f:{key}")] = _comparable(item)
    elif field.is_repeated:
        if not _walk_repeated(field, value, path, out):
            out[path] = tuple(_comparable(v) for v in value)
    elif (desc := _message(field)) is None or desc.full_name == _INT_OR_STRING:
        out[path] = _comparable(value)
    elif value.ListFields():
        _walk_message(value, path, out)
    else:
        out[path] = {}  # an empty object, set


def _walk_repeated(field: FieldDescriptor, value: Any, path: Path, out: dict[Path, Any]) -> bool:
    key = _keyed(field, value, path, out)
    if not key:
        return key is not None
    desc = _message(field)
    key_field = desc.fields_by_camelcase_name.get(key) if desc is not None else None
    # An element without its key (proto3: the default) makes the list atomic, as in `leaves`.
    if key_field is None or any(getattr(item, key_field.name) in ("", 0) for item in value):
        return False
    for item in value:
        ident = getattr(item, key_field.name)
        item_path = (*path, _item_key(key, {key: ident}) or "")
        out[item_path] = _ITEM
        _walk_message(item, item_path, out, skip=key)
        out[(*item_path, f"f:{key}")] = ident
    return True


def _comparable(value: Any) -> Any:
    return value.SerializeToString(deterministic=True) if isinstance(value, Message) else value


def _keyed(
    field: FieldDescriptor | None, value: Any, path: Path, out: dict[Path, Any]
) -> str | None:
    """The merge key of a list that merges by key; "" for a set, whose elements this records;
    None for an atomic list."""
    merges, key = _list_key(field)
    if merges and not key:
        for item in value:
            out[(*path, _value_key(item))] = _ITEM
    return key if merges else None


def render(path: Path) -> str:
    """`.spec.template.spec.containers[name="web"].image`, as Kubernetes prints a path."""
    out = ""
    for part in path:
        kind, _, rest = part.partition(":")
        if kind == "f":
            out += f".{rest}"
        elif kind == "k":
            pairs = json.loads(rest)
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in pairs.items()) + "]"
        else:
            out += f"[={rest}]"
    return out


# ---- FieldsV1 -----------------------------------------------------------------------------


def to_fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    """The nested FieldsV1 form; a path that has owned paths below it gets a `.` entry."""
    root: dict[str, Any] = {}
    ordered = sorted(paths, key=len)
    for path in ordered:
        node = root
        for part in path:
            node = node.setdefault(part, {})
    for path in ordered:
        node = root
        for part in path:
            node = node[part]
        if node and "." not in node:
            node["."] = {}
    return root


def from_fields_v1(doc: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    stack: list[tuple[dict[str, Any], Path]] = [(doc, prefix)]
    while stack:
        node, path = stack.pop()
        for part, child in node.items():
            if part == ".":
                out.add(path)
            elif isinstance(child, dict) and child:
                stack.append((child, (*path, part)))
            else:
                out.add((*path, part))
    return out


@dataclass
class _Entry:
    manager: str
    operation: str
    subresource: str
    api_version: str
    paths: set[Path]
    time: Timestamp
    changed: bool = False
    source: meta_pb2.ManagedFieldsEntry | None = None  # as stored, while unchanged


def _entries(m: meta_pb2.ObjectMeta) -> list[_Entry]:
    return [
        _Entry(
            e.manager,
            e.operation,
            e.subresource,
            e.api_version,
            set(_stored_paths(e.fields_v1.SerializeToString(deterministic=True))),
            e.time,
            source=e,
        )
        for e in m.managed_fields
    ]


@functools.lru_cache(maxsize=4096)
def _stored_paths(fields_v1: bytes) -> frozenset[Path]:
    """The paths of a stored FieldsV1, by its bytes: the same sets come back write after
    write (an object's managers rarely change what they own), and reading a Struct's map
    in Python costs more than the rest of recording an update."""
    struct = struct_pb2.Struct()
    struct.ParseFromString(fields_v1)
    return frozenset(_struct_paths(struct, ()))


def _struct_paths(struct: struct_pb2.Struct, prefix: Path) -> set[Path]:
    """from_fields_v1 of the stored Struct, read directly (json_format is slower by far)."""
    out: set[Path] = set()
    for part, value in struct.fields.items():
        if part == ".":
            out.add(prefix)
        elif value.struct_value.fields:
            out |= _struct_paths(value.struct_value, (*prefix, part))
        else:
            out.add((*prefix, part))
    return out


def _fill(struct: struct_pb2.Struct, doc: dict[str, Any]) -> None:
    for part, child in doc.items():
        value = struct.fields[part].struct_value
        value.SetInParent()
        _fill(value, child)


def _store(m: meta_pb2.ObjectMeta, entries: list[_Entry], now: Timestamp) -> None:
    kept: list[meta_pb2.ManagedFieldsEntry] = []
    for e in entries:
        if not e.paths:
            continue
        entry = meta_pb2.ManagedFieldsEntry()
        if e.source is not None and not e.changed:
            entry.CopyFrom(e.source)
        else:
            entry.manager, entry.operation, entry.api_version = (
                e.manager,
                e.operation,
                e.api_version,
            )
            entry.fields_type, entry.subresource = "FieldsV1", e.subresource
            entry.time.CopyFrom(now)
            _fill(entry.fields_v1, to_fields_v1(e.paths))
        kept.append(entry)
    m.ClearField("managed_fields")
    m.managed_fields.extend(kept)


def _own(entries: list[_Entry], manager: str, operation: str, subresource: str) -> _Entry:
    for e in entries:
        if (e.manager, e.operation, e.subresource) == (manager, operation, subresource):
            return e
    e = _Entry(manager, operation, subresource, "", set(), Timestamp(), changed=True)
    entries.append(e)
    return e


# ---- update -------------------------------------------------------------------------------


def record_update(
    stored: Message | None,
    sent: Message,
    new: Message,
    manager: str,
    api_version: str,
    subresource: str = "",
) -> None:
    """Record in `new`'s managedFields that `manager` wrote it over `stored` (None: created)
    from the request's object `sent`: the fields it changed become its own and nobody
    else's, removed ones nobody's. The managedFields `sent` carries replace the stored
    ones; without any the stored ones are kept (as Kubernetes, for a client that did not
    send them)."""
    m = meta(new)
    if sent is not new:
        m.ClearField("managed_fields")
        m.managed_fields.extend(meta(sent).managed_fields)
    if stored is not None and not m.managed_fields:
        m.managed_fields.extend(meta(stored).managed_fields)
    if not manager:
        return
    scope = "status" if subresource == "status" else ""
    removed: set[Path] = set()
    if stored is None:
        changed = set(message_leaves(new, scope))
    else:
        changed, removed = changes(stored, new, scope)
    if not changed and not removed:
        return
    entries = _entries(m)
    mine = _own(entries, manager, UPDATE, subresource)
    for e in entries:
        lost = e.paths & (removed if e is mine else changed | removed)
        if lost:
            e.paths -= lost
            e.changed = True
    if not changed <= mine.paths or mine.api_version != api_version:
        mine.paths |= changed
        mine.api_version, mine.changed = api_version, True
    # A manager changing fields it already owns alone rewrites nothing (the common
    # controller write: one status field again and again).
    if any(e.changed for e in entries):
        _store(m, entries, timestamps.now())


# ---- apply --------------------------------------------------------------------------------


def apply(
    live: dict[str, Any],
    config: dict[str, Any],
    live_meta: meta_pb2.ObjectMeta,
    desc: Descriptor,
    *,
    manager: str,
    api_version: str,
    force: bool,
    now: Timestamp,
    subresource: str = "",
) -> tuple[dict[str, Any], list[meta_pb2.ManagedFieldsEntry]]:
    """`config` (an apply configuration, `to_dict`-shaped) applied by `manager` to `live`
    (whose metadata is `live_meta`): the merged object and its new managedFields.
    ApplyConflict when it changes fields others own, unless `force`."""
    applied = leaves(config, desc, subresource)
    current = leaves(live, desc, subresource)
    entries = _entries(live_meta)
    conflicts = [
        Conflicting(e.manager, e.api_version, p, e.subresource)
        for e in entries
        if (e.manager, e.operation, e.subresource) != (manager, APPLY, subresource)
        and (e.subresource == "status") == (subresource == "status")
        for p in sorted(e.paths & set(applied))
        if applied[p] is not _ITEM and p in current and current[p] != applied[p]
    ]
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    for c in conflicts:
        for e in entries:
            if e.manager == c.manager and c.path in e.paths:
                e.paths.discard(c.path)
                e.changed = True
    mine = _own(entries, manager, APPLY, subresource)
    others = set().union(*(e.paths for e in entries if e is not mine))
    dropped = mine.paths - set(applied)
    merged = _merge(live, _scoped(config, subresource), desc)
    removed: list[Path] = []
    for path in sorted(dropped, key=len):  # a list element before its fields, which name it
        if any(path[: len(r)] == r for r in removed):
            continue
        if not any(o[: len(path)] == path for o in others):
            _remove(merged, path)
            removed.append(path)
    if mine.paths != set(applied):
        mine.paths, mine.changed = set(applied), True
    mine.api_version = api_version
    out = meta_pb2.ObjectMeta()
    _store(out, entries, now)
    return merged, list(out.managed_fields)


def _merge(live: Any, config: dict[str, Any], desc: Descriptor | None) -> dict[str, Any]:
    out = dict(live) if isinstance(live, dict) else {}
    for name, value in config.items():
        if value is None:
            continue
        field = field_named(desc, name)
        if isinstance(value, dict) and not _is_map(field) and _message(field) is not None:
            out[name] = _merge(out.get(name), value, _message(field))
        elif isinstance(value, dict) and _is_map(field):
            base = out.get(name)
            out[name] = {**(base if isinstance(base, dict) else {}), **value}
        elif isinstance(value, list):
            out[name] = _merge_list(out.get(name), value, field)
        else:
            out[name] = value
    return out


def _merge_list(live: Any, config: list[Any], field: FieldDescriptor | None) -> list[Any]:
    merges, key = _list_key(field)
    base = list(live) if isinstance(live, list) else []
    if not merges:
        return config
    if not key:
        return base + [v for i, v in enumerate(config) if v not in base and v not in config[:i]]
    if any(_item_key(key, item) is None for item in config):
        return config
    for item in config:
        found = next(
            (i for i, e in enumerate(base) if isinstance(e, dict) and e.get(key) == item[key]),
            None,
        )
        if found is None:
            base.append(item)
        else:
            base[found] = _merge(base[found], item, _message(field))
    return base


def _remove(obj: dict[str, Any], path: Path) -> None:
    """Remove what `path` names from `obj` (in place); nothing when it is not there."""
    node: Any = obj
    for part in path[:-1]:
        node = _child(node, part)
        if node is None:
            return
    last = path[-1]
    kind, _, rest = last.partition(":")
    if kind == "f" and isinstance(node, dict):
        node.pop(rest, None)
    elif kind in ("k", "v") and isinstance(node, list):
        node[:] = [e for e in node if not _matches(e, kind, rest)]


def _child(node: Any, part: str) -> Any:
    kind, _, rest = part.partition(":")
    if kind == "f":
        return node.get(rest) if isinstance(node, dict) else None
    if isinstance(node, list):
        return next((e for e in node if _matches(e, kind, rest)), None)
    return None


def _matches(item: Any, kind: str, rest: str) -> bool:
    if kind == "v":
        return _value_key(item) == f"v:{rest}"
    want = json.loads(rest)
    return isinstance(item, dict) and all(item.get(k) == v for k, v in want.items())
