"""How the CLI prints objects: kubectl's tables per kind, ages, and -o yaml|json|name.

The columns of each kind are k8semu.api.columns' (the API server's Tables use the same ones);
they are re-exported here for the CLI's modules. Pure: every function takes the objects and
a fixed `now` (seconds since the epoch) and returns text, so tests pin the clock. Nothing
here talks to the API server or reads files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import yaml
from google.protobuf.message import Message

from k8semu.api import kinds, manifest
from k8semu.api.columns import (
    COLUMNS,
    GENERIC,
    NONE,
    UNKNOWN,
    Columns,
    MetricView,
    age,
    endpoints_text,
    event_time,
    hpa_metrics,
    hpa_targets,
    human_duration,
    meta,
    metric_view,
    node_status,
    pod_status,
    selector_text,
    service_ports,
)
from k8semu.api.kinds import Kind

__all__ = [
    "COLUMNS",
    "GENERIC",
    "NONE",
    "UNKNOWN",
    "Columns",
    "MetricView",
    "age",
    "as_list",
    "dump_yaml",
    "endpoints_text",
    "event_time",
    "hpa_metrics",
    "hpa_targets",
    "human_duration",
    "meta",
    "metric_view",
    "node_status",
    "pod_status",
    "render",
    "render_table",
    "resource_name",
    "selector_text",
    "service_ports",
    "table",
]

# kubectl's tabwriter: columns padded to the widest cell plus three spaces.
_PADDING = 3


def render_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, pad_last: bool = False
) -> str:
    """Columns aligned like kubectl's tabwriter; the last column is padded only when
    `pad_last` (`kubectl top` ends every cell with a tab, so its lines end in spaces)."""
    table = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for row in table:
        cells = [c.ljust(widths[i] + _PADDING) for i, c in enumerate(row[:-1])]
        last = row[-1].ljust(widths[-1] + _PADDING) if pad_last else row[-1]
        line = "".join(cells) + last
        lines.append(line if pad_last else line.rstrip())
    return "\n".join(lines) + "\n"


def table(
    kind: Kind,
    objs: Sequence[Message],
    now: float,
    *,
    wide: bool = False,
    with_namespace: bool = False,
    with_header: bool = True,
    name_prefix: str = "",
    show_labels: bool = False,
) -> str:
    """The kubectl table of `objs` (all of `kind`); NAMESPACE first when listing everywhere,
    names as `pod/web` when several kinds are printed (`name_prefix`)."""
    cols = COLUMNS.get(kind.kind, GENERIC)
    header = list(cols.header)
    if wide and cols.wide_row is not None:
        header += cols.wide_header
    if show_labels:
        header.append("LABELS")
    rows = []
    for obj in objs:
        row = cols.row(obj, now)
        if wide and cols.wide_row is not None:
            row += cols.wide_row(obj, now)
        if show_labels:
            labels = sorted(meta(obj).labels.items())
            row.append(",".join(f"{k}={v}" for k, v in labels) or NONE)
        if name_prefix and kind.kind != "Event":
            row[0] = name_prefix + row[0]
        if with_namespace:
            row.insert(0, meta(obj).namespace)
        rows.append(row)
    if with_namespace:
        header.insert(0, "NAMESPACE")
    text = render_table(header, rows)
    return text if with_header else text.split("\n", 1)[1]


def resource_name(obj: Message) -> str:
    """`deployment.apps/web`, `pod/web-1`: what `-o name` and apply print."""
    kind = kinds.for_message(obj)
    group = f".{kind.group}" if kind.group else ""
    return f"{kind.singular}{group}/{meta(obj).name}"


def dump_yaml(data: Any) -> str:
    dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(
        data, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def as_list(objs: Sequence[Message], resource_version: str = "") -> dict[str, Any]:
    """kubectl's `kind: List` wrapper for -o yaml/json of several objects."""
    return {
        "apiVersion": "v1",
        "items": [manifest.to_dict(o) for o in objs],
        "kind": "List",
        "metadata": {"resourceVersion": resource_version},
    }


def render(objs: Sequence[Message], fmt: str, *, single: bool, managed_fields: bool = False) -> str:
    """-o yaml|json|name output; `single` prints one object bare instead of a List.
    metadata.managedFields is left out unless `managed_fields`, as kubectl does without
    --show-managed-fields."""
    if fmt == "name":
        return "".join(resource_name(o) + "\n" for o in objs)
    data: Any = manifest.to_dict(objs[0]) if single and len(objs) == 1 else as_list(objs)
    if not managed_fields:
        for item in data["items"] if data.get("kind") == "List" else [data]:
            item.get("metadata", {}).pop("managedFields", None)
    if fmt == "json":
        return json.dumps(data, indent=4, ensure_ascii=False) + "\n"
    return dump_yaml(data)
