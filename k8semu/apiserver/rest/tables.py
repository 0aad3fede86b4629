"""meta.k8s.io/v1 Tables: the server-side columns `kubectl get` prints.

The columns are k8semu.api.columns' (what `k8semu get` prints), so kubectl and k8semu show
the same table; the `-o wide` ones have priority 1 (kubectl shows them only with -o wide).
Each row carries its object as PartialObjectMetadata (kubectl reads the namespace and labels
there), or the whole object with includeObject=Object. Pure: no I/O.
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.message import Message

from k8semu.api import manifest
from k8semu.api.columns import COLUMNS, GENERIC, Columns
from k8semu.api.kinds import Kind
from k8semu.apiserver.rest.status import HTTPError

TABLE_MEDIA = "application/json;as=Table;v=v1;g=meta.k8s.io"
INCLUDE_OBJECT = ("None", "Metadata", "Object")
_NAME_HEADERS = ("NAME",)


def includes(value: str) -> str:
    """The includeObject query parameter, checked (default Metadata, as Kubernetes)."""
    value = value or "Metadata"
    if value not in INCLUDE_OBJECT:
        raise HTTPError(
            400,
            "BadRequest",
            f'includeObject: Unsupported value: "{value}": supported values: "None",'
            ' "Metadata", "Object"',
        )
    return value


def _definition(header: str, priority: int) -> dict[str, Any]:
    title = header.title() if header != "AGE" else "Age"
    definition: dict[str, Any] = {
        "name": title,
        "type": "string",
        "format": "name" if header in _NAME_HEADERS else "",
        "description": title,
        "priority": priority,
    }
    return definition


def _columns(kind: Kind) -> Columns:
    return COLUMNS.get(kind.kind, GENERIC)


def definitions(kind: Kind) -> list[dict[str, Any]]:
    cols = _columns(kind)
    wide = cols.wide_header if cols.wide_row is not None else ()
    return [_definition(h, 0) for h in cols.header] + [_definition(h, 1) for h in wide]


def partial_metadata(obj: Message) -> dict[str, Any]:
    """PartialObjectMetadata of `obj`: its type and metadata only."""
    data = manifest.to_dict(obj)
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": data.get("metadata", {}),
    }


def row(kind: Kind, obj: Message, include: str, now: float) -> dict[str, Any]:
    cols = _columns(kind)
    cells: list[Any] = cols.row(obj, now)
    if cols.wide_row is not None:
        cells += cols.wide_row(obj, now)
    out: dict[str, Any] = {"cells": cells}
    if include == "Metadata":
        out["object"] = partial_metadata(obj)
    elif include == "Object":
        out["object"] = manifest.to_dict(obj)
    return out


def table(
    kind: Kind,
    objs: list[Message],
    *,
    include: str,
    resource_version: str = "",
    continue_token: str = "",
    headers: bool = True,
) -> dict[str, Any]:
    """The Table of `objs` (all of `kind`); `headers` False leaves the column definitions
    out (the watch events after the first, as Kubernetes does)."""
    now = time.time()
    metadata: dict[str, Any] = {}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions(kind) if headers else [],
        "rows": [row(kind, obj, include, now) for obj in objs],
    }
