"""Other versions of a stored kind, served by converting on the way in and out.

Kubernetes serves one stored object at several versions of its group (HorizontalPodAutoscaler
at autoscaling/v1 and v2, v2 preferred). The object model holds one message per kind (the
stored version), so the REST layer converts: a request of another version names the stored
kind (`Target.kind`) and its `Conversion` (`Target.served_as`); bodies coming in go through
`to_stored`, documents going out (objects, lists, Tables with their objects, watch events)
through `from_stored`. Everything the verbs see is the stored version; the gRPC face serves
the stored version only. Pure: no I/O.

autoscaling/v1 HorizontalPodAutoscaler <-> v2, as Kubernetes converts it
(pkg/apis/autoscaling/v1/conversion.go): v1 has one target, targetCPUUtilizationPercentage,
which is v2's Resource cpu Utilization metric; the v2 fields v1 cannot express ride in the v1
object's annotations (`autoscaling.alpha.kubernetes.io/metrics`, `current-metrics`,
`conditions`, `behavior`), so a v1 client that reads, changes and writes an object back
keeps them. k8semu writes those annotations' values in the v2 JSON form (Kubernetes writes
its older v1 MetricSpec form there); only k8semu reads them back.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from k8semu.api import kinds
from k8semu.api.kinds import Kind
from k8semu.apiserver.rest.status import HTTPError

Doc = dict[str, Any]
_PREFIX = "autoscaling.alpha.kubernetes.io/"
METRICS = _PREFIX + "metrics"
CURRENT_METRICS = _PREFIX + "current-metrics"
CONDITIONS = _PREFIX + "conditions"
BEHAVIOR = _PREFIX + "behavior"
DEFAULT_CPU_UTILIZATION = 80


@dataclass(frozen=True)
class Conversion:
    """`stored` served at `group`/`version` too: `to_stored` and `from_stored` convert a
    whole object's JSON (apiVersion included) between the two."""

    group: str
    version: str
    stored: Kind
    to_stored: Callable[[Doc], Doc]
    from_stored: Callable[[Doc], Doc]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def incoming(self, body: Any) -> Any:
        """A request body of this version as the stored version's (a body of another
        apiVersion or kind is left for the decoder to refuse)."""
        if not isinstance(body, dict):
            return body
        api_version = body.get("apiVersion", self.api_version)
        if (api_version, body.get("kind", self.stored.kind)) != (
            self.api_version,
            self.stored.kind,
        ):
            raise HTTPError(
                400,
                "BadRequest",
                f"the API version in the data ({api_version}) and kind ({body.get('kind')}) do"
                f" not match the expected ones ({self.api_version}, {self.stored.kind})",
            )
        return self.to_stored(body)

    def outgoing(self, doc: Any) -> Any:
        """A response document (object, list, Table, watch event) in this version; any other
        document (a Status, PartialObjectMetadata) as it is."""
        if not isinstance(doc, dict):
            return doc
        kind = doc.get("kind")
        if kind == self.stored.kind and doc.get("apiVersion") == self.stored.api_version:
            return self.from_stored(doc)
        if kind == f"{self.stored.kind}List":
            items = [self.outgoing(i) for i in doc.get("items") or []]
            return {**doc, "apiVersion": self.api_version, "items": items}
        if kind == "Table":
            rows = [{**r, "object": self.outgoing(r.get("object"))} for r in doc.get("rows", [])]
            return {**doc, "rows": rows}
        if "type" in doc and "object" in doc and "kind" not in doc:  # a watch event
            return {**doc, "object": self.outgoing(doc["object"])}
        return doc

    def outgoing_json(self, body: Any) -> Any:
        """`outgoing` of a document or of its JSON encoding (bytes in, bytes out)."""
        if not isinstance(body, bytes):
            return self.outgoing(body)
        return _dumps(self.outgoing(json.loads(body)))

    def outgoing_lines(self, lines: bytes) -> bytes:
        """`outgoing` of each JSON line of a watch stream's chunk; each line converted once
        for every watcher of this version (the lines are shared: watch.EventCodec)."""
        return b"".join(_outgoing_line(self, line) for line in lines.splitlines() if line)


@functools.lru_cache(maxsize=4096)
def _outgoing_line(conversion: Conversion, line: bytes) -> bytes:
    return _dumps(conversion.outgoing(json.loads(line))) + b"\n"


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# ---- autoscaling/v1 HorizontalPodAutoscaler ---------------------------------------------------


def _is_cpu_utilization(metric: Any) -> bool:
    if not isinstance(metric, dict) or metric.get("type") != "Resource":
        return False
    resource = metric.get("resource") or {}
    target = resource.get("target") or {}
    return bool(resource.get("name") == "cpu" and target.get("type") == "Utilization")


def _object(doc: Doc, path: str) -> Doc:
    """A copy of the object at `path` (`spec`, `metadata.annotations`) of `doc`, {} when it
    is absent; 400 naming it when it is no object (a client's body)."""
    value: Any = doc
    for name in path.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HTTPError(400, "BadRequest", f"{path}: Invalid value: must be an object")
    return dict(value)


def _annotations(doc: Doc) -> dict[str, str]:
    found = _object(doc, "metadata.annotations")
    if not all(isinstance(v, str) for v in found.values()):
        raise HTTPError(400, "BadRequest", "metadata.annotations: values must be strings")
    return found


def _loaded(annotations: dict[str, str], key: str) -> Any:
    """An annotation's JSON; 400 naming it when it is not JSON (a v1 client's edit)."""
    text = annotations.pop(key, "")
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise HTTPError(
            400, "BadRequest", f"metadata.annotations[{key}]: Invalid value: not JSON: {exc}"
        ) from None


def hpa_v1_to_v2(doc: Doc) -> Doc:
    """An autoscaling/v1 HorizontalPodAutoscaler as v2."""
    annotations = _annotations(doc)
    spec, status = _object(doc, "spec"), _object(doc, "status")
    metrics = _loaded(annotations, METRICS) or []
    if not isinstance(metrics, list):
        raise HTTPError(400, "BadRequest", f"metadata.annotations[{METRICS}]: must be a list")
    metrics = [m for m in metrics if not _is_cpu_utilization(m)]
    cpu = spec.pop("targetCPUUtilizationPercentage", None)
    if cpu is None and not metrics:
        cpu = DEFAULT_CPU_UTILIZATION  # Kubernetes' v1 conversion: no target at all is 80 %
    if cpu is not None:
        target = {"type": "Utilization", "averageUtilization": cpu}
        metrics.insert(0, {"type": "Resource", "resource": {"name": "cpu", "target": target}})
    if metrics:
        spec["metrics"] = metrics
    if (behavior := _loaded(annotations, BEHAVIOR)) is not None:
        spec["behavior"] = behavior
    current = _loaded(annotations, CURRENT_METRICS) or []
    current = [m for m in current if not _is_cpu_current(m)] if isinstance(current, list) else []
    cpu_now = status.pop("currentCPUUtilizationPercentage", None)
    if cpu_now is not None:
        reading = {"name": "cpu", "current": {"averageUtilization": cpu_now}}
        current.insert(0, {"type": "Resource", "resource": reading})
    if current:
        status["currentMetrics"] = current
    if (conditions := _loaded(annotations, CONDITIONS)) is not None:
        status["conditions"] = conditions
    metadata = _object(doc, "metadata")
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    out = {**doc, "apiVersion": "autoscaling/v2", "metadata": metadata, "spec": spec}
    if status:
        out["status"] = status
    return out


def _is_cpu_current(metric: Any) -> bool:
    if not isinstance(metric, dict) or metric.get("type") != "Resource":
        return False
    resource = metric.get("resource") or {}
    current = resource.get("current") or {}
    return bool(resource.get("name") == "cpu" and "averageUtilization" in current)


def hpa_v2_to_v1(doc: Doc) -> Doc:
    """An autoscaling/v2 HorizontalPodAutoscaler as v1."""
    annotations = _annotations(doc)
    spec = _object(doc, "spec")
    metrics = spec.pop("metrics", None) or []
    cpu = next((m for m in metrics if _is_cpu_utilization(m)), None)
    if cpu is not None:
        spec["targetCPUUtilizationPercentage"] = cpu["resource"]["target"].get(
            "averageUtilization", 0
        )
    if others := [m for m in metrics if m is not cpu]:
        annotations[METRICS] = _dumps(others).decode()
    if (behavior := spec.pop("behavior", None)) is not None:
        annotations[BEHAVIOR] = _dumps(behavior).decode()
    status = _object(doc, "status")
    current = status.pop("currentMetrics", None) or []
    cpu_now = next((m for m in current if _is_cpu_current(m)), None)
    if cpu_now is not None:
        reading = cpu_now["resource"]["current"]["averageUtilization"]
        status["currentCPUUtilizationPercentage"] = reading
    if others := [m for m in current if m is not cpu_now]:
        annotations[CURRENT_METRICS] = _dumps(others).decode()
    if conditions := status.pop("conditions", None):
        annotations[CONDITIONS] = _dumps(conditions).decode()
    metadata = _object(doc, "metadata")
    if annotations:
        metadata["annotations"] = annotations
    out = {**doc, "apiVersion": "autoscaling/v1", "metadata": metadata, "spec": spec}
    if "status" in doc:
        status.setdefault("currentReplicas", 0)
        status.setdefault("desiredReplicas", 0)
        out["status"] = status
    return out


# (group, version, plural) -> the conversion serving the stored kind there.
CONVERSIONS: dict[tuple[str, str, str], Conversion] = {
    ("autoscaling", "v1", "horizontalpodautoscalers"): Conversion(
        "autoscaling",
        "v1",
        kinds.by_type("autoscaling/v2", "HorizontalPodAutoscaler"),
        hpa_v1_to_v2,
        hpa_v2_to_v1,
    ),
}


def conversions_of(group: str, version: str) -> list[Conversion]:
    """The converted kinds served at `group`/`version`."""
    return [c for (g, v, _), c in CONVERSIONS.items() if (g, v) == (group, version)]
