"""Toleration matching against Kubernetes' ToleratesTaint cases (k8s.io/api/core/v1
toleration_test.go) and the taint eviction controller's minimum tolerationSeconds."""

from __future__ import annotations

import pytest

from k8semu.api.taints import (
    FOREVER,
    matching_tolerations,
    tolerated,
    tolerates,
    toleration_seconds,
    untolerated_taint,
)
from k8semu.pb.api.v1 import core_pb2

Tol = core_pb2.Toleration
Taint = core_pb2.Taint


def tol_for(seconds: int | None = None, **kw: str) -> core_pb2.Toleration:
    t = Tol(**kw)
    if seconds is not None:
        t.toleration_seconds = seconds
    return t


@pytest.mark.parametrize(
    ("description", "toleration", "taint", "expected"),
    [
        (
            "empty effect tolerates every effect",
            Tol(key="foo", operator="Exists"),
            Taint(key="foo", effect="NoExecute"),
            True,
        ),
        (
            "same key, value and effect with Equal",
            Tol(key="foo", operator="Equal", value="bar", effect="NoExecute"),
            Taint(key="foo", value="bar", effect="NoExecute"),
            True,
        ),
        (
            "the empty operator means Equal",
            Tol(key="foo", value="bar", effect="NoExecute"),
            Taint(key="foo", value="bar", effect="NoExecute"),
            True,
        ),
        (
            "a different effect does not tolerate",
            Tol(key="foo", operator="Equal", value="bar", effect="NoExecute"),
            Taint(key="foo", value="bar", effect="NoSchedule"),
            False,
        ),
        (
            "a different key does not tolerate",
            Tol(key="foo", operator="Equal", value="bar", effect="NoExecute"),
            Taint(key="bar", value="bar", effect="NoExecute"),
            False,
        ),
        (
            "Equal with a different value does not tolerate",
            Tol(key="foo", operator="Equal", value="bar", effect="NoExecute"),
            Taint(key="foo", value="baz", effect="NoExecute"),
            False,
        ),
        (
            "Exists ignores the value",
            Tol(key="foo", operator="Exists", effect="NoExecute"),
            Taint(key="foo", value="bar", effect="NoExecute"),
            True,
        ),
        (
            "an empty key with Exists tolerates every taint",
            Tol(operator="Exists"),
            Taint(key="foo", value="bar", effect="NoExecute"),
            True,
        ),
        (
            "an empty key with Exists and an effect does not tolerate another effect",
            Tol(operator="Exists", effect="NoSchedule"),
            Taint(key="foo", effect="NoExecute"),
            False,
        ),
        (
            "an unknown operator tolerates nothing",
            Tol(key="foo", operator="Bogus"),
            Taint(key="foo", effect="NoExecute"),
            False,
        ),
    ],
)
def test_tolerates(
    description: str, toleration: core_pb2.Toleration, taint: core_pb2.Taint, expected: bool
) -> None:
    assert tolerates(toleration, taint) is expected, description


def test_untolerated_taint_returns_the_first_not_tolerated() -> None:
    a = Taint(key="a", effect="NoSchedule")
    b = Taint(key="b", value="x", effect="NoSchedule")
    assert untolerated_taint([a, b], [Tol(key="a", operator="Exists")]) == b
    assert untolerated_taint([a, b], [Tol(operator="Exists")]) is None
    assert untolerated_taint([a], []) == a
    assert tolerated(a, [Tol(key="b", operator="Exists"), Tol(key="a", operator="Exists")])


def test_toleration_seconds_is_the_smallest_and_clamps_at_zero() -> None:
    taint = Taint(key="k", effect="NoExecute")
    assert toleration_seconds([]) == 0
    assert toleration_seconds([tol_for(key="k", operator="Exists")]) == FOREVER
    both = [tol_for(key="k", operator="Exists"), tol_for(60, key="k", operator="Exists")]
    assert toleration_seconds(both) == 60
    assert toleration_seconds([tol_for(300), tol_for(30)]) == 30
    assert toleration_seconds([tol_for(-5), tol_for(30)]) == 0
    mixed = [tol_for(10, key="other", operator="Exists"), tol_for(key="k", operator="Exists")]
    assert toleration_seconds(matching_tolerations(mixed, taint)) == FOREVER
