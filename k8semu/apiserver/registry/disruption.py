"""The PodDisruptionBudget row (policy/v1): checks as kube-apiserver's.

Exactly one of minAvailable and maxUnavailable, each a non-negative integer or a percentage
of at most 100%; a well-formed selector (an empty one selects every pod of the namespace, as
in policy/v1); unhealthyPodEvictionPolicy IfHealthyBudget (the default when unset) or
AlwaysAllow. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from k8semu.api.errors import SelectorError
from k8semu.api.selectors import LabelSelector
from k8semu.apiserver.validation import FieldError
from k8semu.pb.api.v1 import meta_pb2, policy_pb2

POLICIES = ("IfHealthyBudget", "AlwaysAllow")


def _int_or_percent(value: meta_pb2.IntOrString, path: str) -> Iterator[FieldError]:
    which = value.WhichOneof("value")
    if which == "int_val" and value.int_val < 0:
        yield FieldError(
            path, f"Invalid value: {value.int_val}: must be greater than or equal to 0"
        )
    elif which == "str_val":
        text = value.str_val
        number = text[:-1]
        if not text.endswith("%") or not number.isdigit():
            yield FieldError(path, f'Invalid value: "{text}": a valid percent string must be a'
                             ' numeric string followed by an ending \'%\'')  # fmt: skip
        elif int(number) > 100:
            yield FieldError(path, f'Invalid value: "{text}": must not be greater than 100%')


def validate(pdb: policy_pb2.PodDisruptionBudget) -> Iterator[FieldError]:
    spec = pdb.spec
    has_min, has_max = spec.HasField("min_available"), spec.HasField("max_unavailable")
    if has_min and has_max:
        yield FieldError(
            "spec", "Invalid value: minAvailable and maxUnavailable cannot be both set"
        )
    if has_min:
        yield from _int_or_percent(spec.min_available, "spec.minAvailable")
    if has_max:
        yield from _int_or_percent(spec.max_unavailable, "spec.maxUnavailable")
    sel = spec.selector
    try:
        LabelSelector.from_match(
            dict(sel.match_labels),
            [(e.key, e.operator, list(e.values)) for e in sel.match_expressions],
        )
    except SelectorError as exc:
        yield FieldError("spec.selector", str(exc))
    policy = spec.unhealthy_pod_eviction_policy
    if policy and policy not in POLICIES:
        yield FieldError(
            "spec.unhealthyPodEvictionPolicy",
            f'Unsupported value: "{policy}": supported values: "AlwaysAllow", "IfHealthyBudget"',
        )
