"""Kubernetes resource quantities ("500m", "128Mi", "1e3"): exact parsing and canonical printing.

A quantity is a signed decimal number with an optional suffix: a decimal SI one (n, u, m, k,
M, G, T, P, E), a binary SI one (Ki, Mi, Gi, Ti, Pi, Ei) or a decimal exponent (e3, E-6). The
value is kept exactly as a Fraction; `milli()` and `value()` give the integer milli-units (CPU)
and units (bytes) that schedulers and kubelets compare, rounded away from zero as Kubernetes
does. API objects store quantities as the strings users wrote; this module is how code reads
them, and it never touches protobuf messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from k8semu.api.errors import QuantityError

Format = Literal["DecimalSI", "BinarySI", "DecimalExponent"]

_DECIMAL_SUFFIXES: dict[str, int] = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_DECIMAL_BY_EXPONENT = {exp: suffix for suffix, exp in _DECIMAL_SUFFIXES.items()}
_BINARY_SUFFIXES: dict[str, int] = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_BINARY_BY_POWER = {power: suffix for suffix, power in _BINARY_SUFFIXES.items()}

# [0-9], not \d: \d would accept other scripts' digits.
_QUANTITY_RE = re.compile(
    r"(?P<sign>[+-]?)(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<exp>[eE][+-]?[0-9]+)|(?P<suffix>[KMGTPE]i|[numkMGTPE]))?"
)
# Bounds that keep hostile input from building huge numbers; real quantities are far smaller.
MAX_TEXT_LENGTH = 100
MAX_EXPONENT = 300
_NANO = Fraction(1, 10**9)


@dataclass(frozen=True)
class Quantity:
    """An exact quantity: `amount` is the value in base units, `format` how to print it."""

    amount: Fraction
    format: Format = "DecimalSI"

    def milli(self) -> int:
        """The value in thousandths (CPU millicores), rounded away from zero."""
        return _round_away(self.amount * 1000)

    def value(self) -> int:
        """The value in base units (bytes, cores), rounded away from zero."""
        return _round_away(self.amount)

    def __str__(self) -> str:
        return format_quantity(self)


def parse_quantity(text: str | int, *, field: str = "") -> Quantity:
    """Parse a quantity string (or a bare integer, as YAML gives for `cpu: 2`).

    Raises QuantityError naming `field` and the reason when `text` is not a quantity.
    """
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise QuantityError(repr(text), "expected a string or an integer", field=field)
    if isinstance(text, int):
        return Quantity(Fraction(text))
    if len(text) > MAX_TEXT_LENGTH:
        raise QuantityError(text[:20] + "...", f"over {MAX_TEXT_LENGTH} characters", field=field)
    match = _QUANTITY_RE.fullmatch(text)
    if match is None:
        raise QuantityError(
            text,
            "must be a number with an optional suffix (m, k, M, G, Ki, Mi, Gi, e3, ...)",
            field=field,
        )
    amount = Fraction(match["number"])
    fmt: Format = "DecimalSI"
    if match["exp"] is not None:
        exponent = int(match["exp"][1:])
        if abs(exponent) > MAX_EXPONENT:
            raise QuantityError(text, f"exponent beyond +-{MAX_EXPONENT}", field=field)
        amount *= Fraction(10) ** exponent
        fmt = "DecimalExponent"
    elif match["suffix"] in _BINARY_SUFFIXES:
        amount *= 2 ** _BINARY_SUFFIXES[match["suffix"]]
        fmt = "BinarySI"
    else:
        amount *= Fraction(10) ** _DECIMAL_SUFFIXES[match["suffix"] or ""]
    if match["sign"] == "-":
        amount = -amount
    return Quantity(amount, fmt)


def milli_value(text: str | int, *, field: str = "") -> int:
    """`parse_quantity(text).milli()`: "500m" -> 500, "2" -> 2000, "0.1" -> 100."""
    return parse_quantity(text, field=field).milli()


def int_value(text: str | int, *, field: str = "") -> int:
    """`parse_quantity(text).value()`: "128Mi" -> 134217728, "1G" -> 10**9, "1m" -> 1."""
    return parse_quantity(text, field=field).value()


def canonical(text: str | int, *, field: str = "") -> str:
    """The canonical spelling of a quantity: "1000m" -> "1", "1024Mi" -> "1Gi", "0.5" -> "500m"."""
    return format_quantity(parse_quantity(text, field=field))


def format_quantity(quantity: Quantity) -> str:
    """Print with the largest suffix that keeps an integer mantissa, in the quantity's format.

    Binary values that are not whole or are below 1024 print as decimal SI (so nothing is
    rounded); decimal values below one nano round away from zero to a whole nano.
    """
    amount = quantity.amount
    if amount == 0:
        return "0"
    sign = "-" if amount < 0 else ""
    magnitude = abs(amount)
    if quantity.format == "BinarySI" and magnitude >= 1024 and magnitude.denominator == 1:
        number, power = magnitude.numerator, 0
        while power < 60 and number % 1024 == 0:
            number, power = number // 1024, power + 10
        return f"{sign}{number}{_BINARY_BY_POWER.get(power, '')}"
    # Whole nanos, rounded away from zero, as mantissa * 10**exponent with exponent % 3 == 0.
    nanos = _round_away(magnitude / _NANO)
    exponent = -9
    while nanos % 1000 == 0:
        nanos, exponent = nanos // 1000, exponent + 3
    if quantity.format == "DecimalSI" and exponent in _DECIMAL_BY_EXPONENT:
        return f"{sign}{nanos}{_DECIMAL_BY_EXPONENT[exponent]}"
    if quantity.format == "DecimalSI" and exponent > 18:
        return f"{sign}{nanos * 10 ** (exponent - 18)}E"
    return f"{sign}{nanos}" + (f"e{exponent}" if exponent else "")


def _round_away(value: Fraction) -> int:
    whole = int(value)  # truncates toward zero
    if whole == value:
        return whole
    return whole + 1 if value > 0 else whole - 1
