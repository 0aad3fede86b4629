"""The checks a config's field values share: names, ports, addresses, durations.

Each check raises ClusterConfigError naming the field path it is given, so every section words
the same mistake the same way (``hosts[0].name: 'A' must be 1-63 lowercase letters, ...``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from k8semu import durations
from k8semu.api.names import is_dns1123_label
from k8semu.cluster.errors import ClusterConfigError

__all__ = [
    "bracketed",
    "check_choice",
    "check_dns_label",
    "check_host_port",
    "check_port",
    "describe",
    "format_duration",
    "is_ip",
    "is_unspecified",
    "parse_duration_ms",
]

format_duration = durations.format_ms


def check_dns_label(name: str, path: str) -> None:
    """``name`` is a DNS label (what names a cluster, a host, a node, a store member)."""
    if not is_dns1123_label(name):
        raise ClusterConfigError(
            path,
            f"{name!r} must be 1-63 lowercase letters, digits and '-', starting and ending "
            "with a letter or digit",
        )


def check_choice(value: str, choices: Sequence[str], path: str) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise ClusterConfigError(path, f"must be one of {', '.join(choices)}, got {value!r}")


def check_port(port: int, path: str) -> None:
    if not 0 < port <= 65535:
        raise ClusterConfigError(path, f"must be 1-65535, got {port}")


def check_optional_port(port: int, path: str) -> None:
    """A port that may be 0 (off), as the metrics ports."""
    if not 0 <= port <= 65535:
        raise ClusterConfigError(path, f"must be 0 (off) or 1-65535, got {port}")


def check_host_port(value: str, path: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ClusterConfigError(path, f"{value!r} must be HOST:PORT with a port 1-65535")


def bracketed(host: str) -> str:
    """``host`` as it goes before ``:PORT`` (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_unspecified(host: str) -> bool:
    """0.0.0.0 or ::, which nobody can reach a process at."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def parse_duration_ms(value: object, path: str) -> int:
    """``"500ms"``, ``"1.5s"``, ``"1m30s"`` -> whole milliseconds; errors name ``path``."""
    if not isinstance(value, str):
        raise ClusterConfigError(
            path, f"expected a duration such as 500ms or 2s, got {describe(value)}"
        )
    try:
        return durations.parse_ms(value)
    except ValueError as exc:
        raise ClusterConfigError(path, str(exc)) from None


def describe(value: object) -> str:
    """What a YAML value is, for "expected X, got Y" messages."""
    if value is None:
        return "nothing"
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value)
    )
    if kind is not None:
        return f"{kind} ({value!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
