"""The one duration syntax of every flag (k8semu/durations.py): Go's units, as Kubernetes and
etcd flags take them, and a bare number as seconds where kubectl takes that too."""

from __future__ import annotations

import argparse

import pytest

from k8semu import durations
from k8semu.cli import kubelet, proxy


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), ("1m30s", 90.0), ("1h", 3600.0), ("30", 30.0),
     ("0.25", 0.25), ("0", 0.0), (" 4s ", 4.0)],
)  # fmt: skip
def test_seconds_flag_takes_units_and_bare_seconds(text: str, seconds: float) -> None:
    assert durations.seconds_flag(text) == seconds


@pytest.mark.parametrize(
    ("text", "says"),
    [("soon", "not a duration"), ("-1", "must be >= 0"), ("2x", "not a duration"),
     ("nan", "must be >= 0"), ("inf", "must be >= 0"), ("1.5ms", "whole number")],
)  # fmt: skip
def test_seconds_flag_refuses_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        durations.seconds_flag(text)


def test_component_flags_take_durations_and_name_the_flag_when_wrong(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = kubelet._parser().parse_args(["--node-lease-duration", "4s", "--pod-cidr-wait", "1m"])
    assert (ns.node_lease_duration, ns.pod_cidr_wait) == (4.0, 60.0)
    ns = proxy._parser().parse_args(["--connect-timeout", "500ms", "--udp-idle-timeout", "30"])
    assert (ns.connect_timeout, ns.udp_idle_timeout) == (0.5, 30.0)
    with pytest.raises(SystemExit):
        kubelet._parser().parse_args(["--node-lease-duration", "forever"])
    assert "argument --node-lease-duration: 'forever' is not a duration" in capsys.readouterr().err
