"""Taints and tolerations: which toleration tolerates which taint, and for how long.

The scheduler (which nodes may take a pod) and the node lifecycle controller (when a pod on a
NoExecute-tainted node is evicted) both ask these questions; they must get one answer, the
one Kubernetes gives (`Toleration.ToleratesTaint` in k8s.io/api/core/v1, the taint eviction
controller's minimum tolerationSeconds). Pure functions of protobuf messages: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from k8semu.pb.api.v1 import core_pb2

NO_SCHEDULE = "NoSchedule"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
NO_EXECUTE = "NoExecute"
EFFECTS = (NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE)

OP_EQUAL = "Equal"
OP_EXISTS = "Exists"

FOREVER = math.inf
"""What `toleration_seconds` returns when a matching toleration has no tolerationSeconds."""


def tolerates(toleration: core_pb2.Toleration, taint: core_pb2.Taint) -> bool:
    """Kubernetes' ToleratesTaint. An empty effect matches every effect; an empty key matches
    every key (API validation only admits it with Exists); then Exists matches any value and
    Equal (also the empty operator) the same value. Any other operator tolerates nothing."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator == OP_EXISTS:
        return True
    if toleration.operator in ("", OP_EQUAL):
        return toleration.value == taint.value
    return False


def tolerated(taint: core_pb2.Taint, tolerations: Iterable[core_pb2.Toleration]) -> bool:
    """Whether any of `tolerations` tolerates `taint`."""
    return any(tolerates(t, taint) for t in tolerations)


def untolerated_taint(
    taints: Iterable[core_pb2.Taint], tolerations: Iterable[core_pb2.Toleration]
) -> core_pb2.Taint | None:
    """The first of `taints` none of `tolerations` tolerates (Kubernetes'
    FindMatchingUntoleratedTaint, the caller choosing which effects count), or None."""
    tols = list(tolerations)
    for taint in taints:
        if not tolerated(taint, tols):
            return taint
    return None


def matching_tolerations(
    tolerations: Iterable[core_pb2.Toleration], taint: core_pb2.Taint
) -> list[core_pb2.Toleration]:
    """The tolerations that tolerate `taint`, in order."""
    return [t for t in tolerations if tolerates(t, taint)]


def toleration_seconds(tolerations: Iterable[core_pb2.Toleration]) -> float:
    """How long a pod may stay with a NoExecute taint its `tolerations` (the matching ones)
    tolerate, as Kubernetes' taint eviction computes it: the smallest tolerationSeconds, a
    zero or negative one meaning at once (0); FOREVER when none of them sets it. With no
    tolerations at all the taint is not tolerated: 0."""
    tols = list(tolerations)
    if not tols:
        return 0.0
    timed = [max(0, t.toleration_seconds) for t in tols if t.HasField("toleration_seconds")]
    return float(min(timed)) if timed else FOREVER
