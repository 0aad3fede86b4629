"""The ResourceQuota row (v1): checks as kube-apiserver's. Every name of spec.hard is one a
quota may limit (k8semu.api.resourcequota), every value a non-negative quantity (whole for
object counts); status.hard and status.used, written by admission and the resourcequota
controller, are checked alike. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

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
