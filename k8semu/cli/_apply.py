"""`apply` planning: what to send for one manifest object given the live one. Pure, no I/O.

Like kubectl's client-side apply, it is a three-way merge of plain JSON dicts:

- `desired`: the object in the file (server-owned metadata and `status` dropped);
- `live`: the object on the server (with everything defaulted or set by controllers);
- `last`: what the previous apply sent, kept in the annotation
  `kubectl.kubernetes.io/last-applied-configuration`.

Fields in `desired` win; fields only in `live` (defaults, `status`, a label someone added with
`label`, a scheduler's `nodeName`) stay; fields in `last` but gone from `desired` are removed.
Lists of named items (containers, env, ports with names, volumes) merge item by item by name,
lists of unnamed objects of equal length merge position by position, other lists are replaced.
The result is `unchanged` when it equals `live`, so a second apply of the same file writes
nothing.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf.message import Message

from k8semu.api import manifest

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Set by the server; a file copied from `get -o yaml` carries them but must not send them.
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
)

Action = Literal["create", "update", "unchanged"]


@dataclass(frozen=True)
class Plan:
    """What `apply` does for one object; `obj` is what to send (for "unchanged": the live one)."""

    action: Action
    obj: Message


def desired_dict(obj: Message) -> dict[str, Any]:
    """The object as the user wrote it, minus status and server-owned metadata."""
    data = manifest.to_dict(obj)
    data.pop("status", None)
    meta = data.get("metadata")
    if isinstance(meta, dict):
        for key in SERVER_METADATA:
            meta.pop(key, None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(LAST_APPLIED, None)
            if not annotations:
                meta.pop("annotations")
    return data


def last_applied_text(desired: dict[str, Any]) -> str:
    """The annotation value: compact, key-sorted JSON, so equal inputs give equal text."""
    return json.dumps(desired, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _with_annotation(data: dict[str, Any], value: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    meta = out.setdefault("metadata", {})
    meta.setdefault("annotations", {})[LAST_APPLIED] = value
    return out


def merge(live: dict[str, Any], desired: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """Three-way merge of JSON objects (see the module docstring). Inputs are not modified."""
    out = copy.deepcopy(live)
    for key, prev in last.items():
        if key in desired:
            continue
        have = live.get(key)
        if isinstance(prev, dict) and isinstance(have, dict):
            # Remove only what we applied: a label someone else added stays.
            rest = merge(have, {}, prev)
            if rest:
                out[key] = rest
                continue
        out.pop(key, None)
    for key, want in desired.items():
        have = live.get(key)
        prev = last.get(key)
        if isinstance(want, dict) and isinstance(have, dict):
            out[key] = merge(have, want, prev if isinstance(prev, dict) else {})
        elif isinstance(want, list) and isinstance(have, list):
            out[key] = merge_list(have, want, prev if isinstance(prev, list) else [])
        else:
            out[key] = copy.deepcopy(want)
    return out


def _named(items: list[Any]) -> bool:
    return all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)


def merge_list(live: list[Any], desired: list[Any], last: list[Any]) -> list[Any]:
    if desired and _named(desired) and _named(live):
        by_name = {i["name"]: i for i in live}
        prev_by_name = {i["name"]: i for i in last} if _named(last) else {}
        out = []
        for want in desired:
            have = by_name.get(want["name"])
            prev = prev_by_name.get(want["name"], {})
            out.append(merge(have, want, prev) if have is not None else copy.deepcopy(want))
        return out
    if (
        desired
        and len(desired) == len(live)
        and all(isinstance(i, dict) for i in [*desired, *live])
    ):
        prevs = last if len(last) == len(desired) and all(isinstance(p, dict) for p in last) else []
        return [
            merge(have, want, prevs[i] if prevs else {})
            for i, (have, want) in enumerate(zip(live, desired, strict=True))
        ]
    return copy.deepcopy(desired)


def plan(obj: Message, live: Message | None) -> Plan:
    """Plan applying `obj` (from a manifest, namespace already filled in) over `live`."""
    desired = desired_dict(obj)
    annotation = last_applied_text(desired)
    if live is None:
        return Plan("create", manifest.from_dict(_with_annotation(desired, annotation)))
    live_data = manifest.to_dict(live)
    last: dict[str, Any] = {}
    raw = live_data.get("metadata", {}).get("annotations", {}).get(LAST_APPLIED)
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = {}
        last = parsed if isinstance(parsed, dict) else {}
    merged = merge(live_data, _with_annotation(desired, annotation), last)
    if merged == live_data:
        return Plan("unchanged", live)
    return Plan("update", manifest.from_dict(merged))
