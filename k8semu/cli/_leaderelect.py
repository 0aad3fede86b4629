"""The leader-election flags every leader-elected component takes (kube-scheduler's and
kube-controller-manager's names): `--leader-elect/--no-leader-elect` and the three
durations, read into a LeaderElectionConfig. Errors name the flag."""

from __future__ import annotations

import argparse
import dataclasses

from k8semu import durations
from k8semu.client import LeaderElectionConfig

_FIELDS = ("lease_duration", "renew_deadline", "retry_period")


def _flag(name: str) -> str:
    return "--leader-elect-" + name.replace("_", "-")


def seconds(text: str, flag: str) -> float:
    """A duration flag (500ms, 2s, 1m30s) in seconds; ValueError naming `flag`."""
    try:
        return durations.parse_ms(text) / 1000
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def add_flags(p: argparse.ArgumentParser, defaults: LeaderElectionConfig, lease: str) -> None:
    """`lease` is what the component competes for, for the help text."""
    p.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"act only while holding the Lease {lease}",
    )
    for name in _FIELDS:
        value = getattr(defaults, name)
        p.add_argument(_flag(name), default=durations.format_ms(round(value * 1000)))


def config_from_args(
    ns: argparse.Namespace, defaults: LeaderElectionConfig
) -> LeaderElectionConfig:
    """The timings the flags give (other fields as in `defaults`); ValueError naming a flag."""
    lease, renew, retry = (
        seconds(getattr(ns, f"leader_elect_{name}"), _flag(name)) for name in _FIELDS
    )
    try:
        return dataclasses.replace(
            defaults, lease_duration=lease, renew_deadline=renew, retry_period=retry
        )
    except ValueError as exc:
        text = str(exc)
        for name in _FIELDS:
            text = text.replace(name, _flag(name))
        raise ValueError(text) from None
