"""The ResourceQuota and LimitRange rows (v1).

ResourceQuota: checks as kube-apiserver's. Every name of spec.hard is one a
quota may limit (k8semu.api.resourcequota), every value a non-negative quantity (whole for
object counts); status.hard and status.used, written by admission and the resourcequota
controller, are checked alike.

LimitRange: Kubernetes' defaults of a Container item (default from max, defaultRequest from
default then min) and its checks: a known type, no default/defaultRequest on a Pod item,
non-negative quantities, min <= defaultRequest <= default <= max and ratios >= 1, with
kube-apiserver's messages (`min value 2 is greater than max value 1`). Pure: no I/O.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping
from fractions import Fraction

from k8semu.api import resourcequota as rq
from k8semu.api.errors import QuantityError
from k8semu.api.quantity import parse_quantity
from k8semu.apiserver.validation import FieldError
from k8semu.pb.api.v1 import quota_pb2


def quantities(values: Mapping[str, str], path: str) -> Iterator[FieldError]:
    """Non-negative quantities in a map of resource names (LimitRange's maps too)."""
    for name, text in sorted(values.items()):
        at = f"{path}[{name}]"
        try:
            amount = parse_quantity(text, field=at).amount
        except QuantityError as exc:
            yield FieldError(at, str(exc))
            continue
        if amount < 0:
            yield FieldError(at, f'Invalid value: "{text}": must be greater than or equal to 0')
        elif (name in rq.COUNTED or name.startswith("count/")) and amount.denominator != 1:
            yield FieldError(at, f'Invalid value: "{text}": must be an integer')


def _names(values: Mapping[str, str], path: str) -> Iterator[FieldError]:
    for name in sorted(values):
        if not rq.is_quota_resource(name):
            yield FieldError(
                f"{path}[{name}]", f'Invalid value: "{name}": must be a standard resource for quota'
            )


def validate(quota: quota_pb2.ResourceQuota) -> Iterator[FieldError]:
    for values, path in (
        (quota.spec.hard, "spec.hard"),
        (quota.status.hard, "status.hard"),
        (quota.status.used, "status.used"),
    ):
        yield from _names(values, path)
        yield from quantities(values, path)


LIMIT_TYPES = ("Container", "Pod", "PersistentVolumeClaim")


def _fill(target: MutableMapping[str, str], source: Mapping[str, str]) -> None:
    for name, text in source.items():
        target.setdefault(name, text)


def limit_range_defaults(lr: quota_pb2.LimitRange) -> None:
    """Kubernetes' defaults of a Container item: default (limit) from max, defaultRequest
    from default, then from min."""
    for item in lr.spec.limits:
        if item.type == "Container":
            _fill(item.default, item.max)
            _fill(item.default_request, item.default)
            _fill(item.default_request, item.min)


def _amounts(values: Mapping[str, str]) -> dict[str, Fraction]:
    out = {}
    for name, text in values.items():
        with contextlib.suppress(QuantityError):
            out[name] = parse_quantity(text).amount
    return out


# (field, its words, bound field, its words, +1: must not exceed / -1: must not be below)
_ORDER = (
    ("min", "min", "max", "max", 1),
    ("default_request", "default request", "default", "default limit", 1),
    ("default_request", "default request", "max", "max", 1),
    ("default", "default", "max", "max", 1),
    ("default_request", "default request", "min", "min", -1),
    ("default", "default", "min", "min", -1),
)
_JSON = {"default_request": "defaultRequest"}


def _item_order(item: quota_pb2.LimitRangeItem, path: str) -> Iterator[FieldError]:
    """min <= defaultRequest <= default <= max, each with Kubernetes' message."""
    for field, words, bound_field, bound_words, sign in _ORDER:
        texts, bound_texts = getattr(item, field), getattr(item, bound_field)
        bound = _amounts(bound_texts)
        for name, value in sorted(_amounts(texts).items()):
            if name in bound and (value - bound[name]) * sign > 0:
                relation = "greater" if sign > 0 else "less"
                yield FieldError(
                    f"{path}.{_JSON.get(field, field)}[{name}]",
                    f'Invalid value: "{texts[name]}": {words} value {texts[name]} is {relation}'
                    f" than {bound_words} value {bound_texts[name]}",
                )
    for name, value in sorted(_amounts(item.max_limit_request_ratio).items()):
        if value < 1:
            text = item.max_limit_request_ratio[name]
            yield FieldError(
                f"{path}.maxLimitRequestRatio[{name}]",
                f'Invalid value: "{text}": ratio {text} is less than 1',
            )


def validate_limit_range(lr: quota_pb2.LimitRange) -> Iterator[FieldError]:
    for i, item in enumerate(lr.spec.limits):
        path = f"spec.limits[{i}]"
        if item.type not in LIMIT_TYPES:
            yield FieldError(f"{path}.type", f'Unsupported value: "{item.type}": supported'
                             ' values: "Container", "PersistentVolumeClaim", "Pod"')  # fmt: skip
        if item.type == "Pod":
            for values, field in (
                (item.default, "default"),
                (item.default_request, "defaultRequest"),
            ):
                if values:
                    why = "Forbidden: may not be specified when `type` is 'Pod'"
                    yield FieldError(f"{path}.{field}", why)
        for values, field in (
            (item.max, "max"), (item.min, "min"), (item.default, "default"),
            (item.default_request, "defaultRequest"),
            (item.max_limit_request_ratio, "maxLimitRequestRatio"),
        ):  # fmt: skip
            yield from quantities(values, f"{path}.{field}")
        yield from _item_order(item, path)
