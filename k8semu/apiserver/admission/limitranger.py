"""The LimitRanger admission plugin, as kube-apiserver's, for creates of pods and
persistentvolumeclaims in a namespace with LimitRanges.

- Mutating: each container without a limit (request) of a resource a Container item gives a
  `default` (`defaultRequest`) for gets it, and the pod the annotation
  `kubernetes.io/limit-ranger` saying what was set, as Kubernetes writes it.
- Validating, after the kind's own checks: per Container item each container, per Pod item
  the pod's sums, per PersistentVolumeClaim item the claim's requested storage, must meet
  min, max and maxLimitRequestRatio; a refusal is 403 Forbidden with Kubernetes' messages
  (`maximum cpu usage per Container is 1, but limit is 2`), several as `[a, b]`.

The LimitRanges come from the API server's watch cache when it has them, else the store.
Pure but for `ranges`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from fractions import Fraction
from typing import cast

from google.protobuf.message import Message

from k8semu.api import kinds
from k8semu.api.kinds import Kind
from k8semu.api.quantity import Quantity, canonical, format_quantity, parse_quantity
from k8semu.apiserver.admission.quota import Verbs, live
from k8semu.apiserver.errors import Forbidden
from k8semu.apiserver.objects import describe, meta
from k8semu.pb.api.v1 import core_pb2, quota_pb2

ANNOTATION = "kubernetes.io/limit-ranger"
CLAIM = "PersistentVolumeClaim"
Values = Mapping[str, str]


async def ranges(verbs: Verbs, kind: Kind, obj: Message) -> list[quota_pb2.LimitRange]:
    """The LimitRanges of `obj`'s namespace ([] for a kind they do not concern)."""
    if not isinstance(obj, core_pb2.Pod | core_pb2.PersistentVolumeClaim):
        return []
    lr_kind = kinds.for_message(quota_pb2.LimitRange)
    namespace = meta(obj).namespace
    found = verbs.watch_caches.snapshot(lr_kind, namespace)
    if found is None:
        found = await live(verbs, lr_kind, namespace)
    return cast(list[quota_pb2.LimitRange], found)


def default(obj: Message, limit_ranges: list[quota_pb2.LimitRange]) -> None:
    """Fill in the Container items' default limits and requests (in place)."""
    if not isinstance(obj, core_pb2.Pod):
        return
    items = [i for lr in limit_ranges for i in lr.spec.limits if i.type == "Container"]
    done: list[str] = []
    for c in (*obj.spec.init_containers, *obj.spec.containers):
        for item in items:
            for which, values, target in (
                ("limit", item.default, c.resources.limits),
                ("request", item.default_request, c.resources.requests),
            ):
                for name, text in sorted(values.items()):
                    if name not in target:
                        target[name] = text
                        done.append(f"{name} {which} for container {c.name}")
    if done:
        obj.metadata.annotations[ANNOTATION] = "LimitRanger plugin set: " + "; ".join(done)


def _amount(values: Values, name: str) -> Quantity | None:
    text = values.get(name)
    return None if text is None else parse_quantity(text)


def _bounds(
    item: quota_pb2.LimitRangeItem, what: str, requests: Values, limits: Values
) -> Iterator[str]:
    for name, text in sorted(item.min.items()):
        low, req, lim = parse_quantity(text).amount, _amount(requests, name), _amount(limits, name)
        head = f"minimum {name} usage per {what} is {canonical(text)}"
        if req is None:
            yield f"{head}.  No request is specified"
        elif req.amount < low:
            yield f"{head}, but request is {req}"
        if lim is not None and lim.amount < low:
            yield f"{head}, but limit is {lim}"
    for name, text in sorted(item.max.items()):
        high, req, lim = parse_quantity(text).amount, _amount(requests, name), _amount(limits, name)
        head = f"maximum {name} usage per {what} is {canonical(text)}"
        if lim is None and what != CLAIM:
            yield f"{head}.  No limit is specified"
        elif lim is not None and lim.amount > high:
            yield f"{head}, but limit is {lim}"
        if req is not None and req.amount > high:
            yield f"{head}, but request is {req}"
    for name, text in sorted(item.max_limit_request_ratio.items()):
        req, lim = _amount(requests, name), _amount(limits, name)
        head = f"{name} max limit to request ratio per {what} is {canonical(text)}"
        if lim is None:
            yield f"{head}, but no limit is specified"
        elif req is None or not req.amount:
            yield f"{head}, but no request is specified or request is 0"
        elif lim.amount / req.amount > parse_quantity(text).amount:
            yield f"{head}, but provided ratio is {float(lim.amount / req.amount):f}"


def _pod_sums(pod: core_pb2.Pod, which: str) -> dict[str, str]:
    """A pod's total request (limit) per resource; a resource some container leaves out is
    not specified for the pod."""
    containers = list(pod.spec.containers)
    maps = [c.resources.requests if which == "requests" else c.resources.limits for c in containers]
    names = set.intersection(*(set(m) for m in maps)) if maps else set()
    out = {}
    for n in names:
        parts = [parse_quantity(m[n]) for m in maps]
        total = sum((q.amount for q in parts), Fraction(0))
        out[n] = format_quantity(Quantity(total, parts[0].format))
    return out


def _problems(obj: Message, limit_ranges: list[quota_pb2.LimitRange]) -> Iterator[str]:
    for item in (i for lr in limit_ranges for i in lr.spec.limits):
        if isinstance(obj, core_pb2.Pod) and item.type == "Container":
            for c in obj.spec.containers:
                yield from _bounds(item, "Container", c.resources.requests, c.resources.limits)
        elif isinstance(obj, core_pb2.Pod) and item.type == "Pod":
            requests, limits = _pod_sums(obj, "requests"), _pod_sums(obj, "limits")
            yield from _bounds(item, "Pod", requests, limits)
        elif isinstance(obj, core_pb2.PersistentVolumeClaim) and item.type == CLAIM:
            yield from _bounds(item, CLAIM, obj.spec.resources.requests, {})


def check(kind: Kind, obj: Message, limit_ranges: list[quota_pb2.LimitRange]) -> None:
    """Refuse `obj` (403 Forbidden) when it is outside a LimitRange of its namespace."""
    if not limit_ranges:
        return
    problems = list(_problems(obj, limit_ranges))
    if problems:
        why = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
        raise Forbidden(f"{describe(kind, meta(obj).name)} is forbidden: {why}")
