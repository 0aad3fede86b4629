"""Durations as people write them in flags and configs: ``500ms``, ``1.5s``, ``1m30s``, ``1h``.

The one parser and formatter for every component (Go's duration syntax, which etcd and
Kubernetes flags use), so a timing reads the same in a flag, a config file and a log line.
"""

from __future__ import annotations

import argparse
import decimal
import re

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def parse_ms(text: str) -> int:
    """Whole milliseconds of `text`; ValueError (saying what is wrong) otherwise."""
    stripped = text.strip()
    total = decimal.Decimal(0)
    pos = 0
    for match in _DURATION_RE.finditer(stripped):
        if match.start() != pos:
            break
        total += decimal.Decimal(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(stripped):
        raise ValueError(
            f"{text!r} is not a duration (use a number and a unit: 500ms, 2s, 1m30s, 1h)"
        )
    if total != total.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of milliseconds")
    return int(total)


def format_ms(ms: int) -> str:
    """Milliseconds as the shortest of ``1500ms``/``2s``/``1m30s`` that says them exactly."""
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    if s < 60 or s % 60:
        return f"{s}s" if s < 60 else f"{s // 60}m{s % 60}s"
    return f"{s // 60}m"


def seconds_flag(text: str) -> float:
    """The argparse type of every duration flag: ``500ms``, ``2s``, ``1m30s`` in seconds.

    A bare number is seconds (``--timeout 30`` as well as ``--timeout 30s``), as kubectl takes
    its ``--request-timeout``; it must not be negative. Raises ArgumentTypeError, whose text
    argparse prints after the flag's name.
    """
    stripped = text.strip()
    try:
        value = float(stripped)
    except ValueError:
        try:
            return parse_ms(stripped) / 1000
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (must be >= 0)")
    return value
