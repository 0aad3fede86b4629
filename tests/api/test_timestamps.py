"""Timestamps at Kubernetes' two precisions: metav1.Time (seconds) and MicroTime."""

from __future__ import annotations

import pytest

from k8semu.api import timestamps

# 2024-01-02T03:04:05Z and a fraction
T = 1_704_164_645


def test_time_truncates_to_whole_seconds() -> None:
    ts = timestamps.time_at(T + 0.999)
    assert (ts.seconds, ts.nanos) == (T, 0)
    assert timestamps.format_time(ts) == "2024-01-02T03:04:05Z"
    assert timestamps.to_seconds(ts) == T


def test_micro_time_keeps_microseconds() -> None:
    ts = timestamps.micro_time_at(T + 0.25)
    assert (ts.seconds, ts.nanos) == (T, 250_000_000)
    assert timestamps.format_micro_time(ts) == "2024-01-02T03:04:05.250000Z"
    assert timestamps.format_micro_time(timestamps.time_at(T)) == "2024-01-02T03:04:05.000000Z"
    assert timestamps.to_seconds(ts) == T + 0.25


def test_now_has_its_precision() -> None:
    assert timestamps.now().nanos == 0
    assert timestamps.micro_now().nanos % 1000 == 0


@pytest.mark.parametrize(
    ("text", "seconds", "nanos"),
    [
        ("2024-01-02T03:04:05Z", T, 0),
        ("2024-01-02T03:04:05.123456Z", T, 123_456_000),
        ("2024-01-02T04:04:05+01:00", T, 0),
    ],
)
def test_parse_rfc3339(text: str, seconds: int, nanos: int) -> None:
    ts = timestamps.parse(text)
    assert (ts.seconds, ts.nanos) == (seconds, nanos)


def test_parse_rejects_what_is_not_rfc3339() -> None:
    with pytest.raises(ValueError):
        timestamps.parse("yesterday")


def test_formats_round_trip() -> None:
    ts = timestamps.micro_time_at(T + 0.000001)
    assert timestamps.parse(timestamps.format_micro_time(ts)) == ts
    assert timestamps.parse(timestamps.format_time(timestamps.time_at(T))) == timestamps.time_at(T)
