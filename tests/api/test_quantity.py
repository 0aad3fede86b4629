"""Kubernetes quantities: exact values, canonical spelling, rejects."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k8semu.api.errors import QuantityError
from k8semu.api.quantity import (
    Quantity,
    canonical,
    format_quantity,
    int_value,
    milli_value,
    parse_quantity,
)

# text, milli-units, units (rounded away from zero), canonical spelling
TABLE = [
    ("0", 0, 0, "0"),
    ("1", 1000, 1, "1"),
    ("500m", 500, 1, "500m"),
    ("1000m", 1000, 1, "1"),
    ("1500m", 1500, 2, "1500m"),
    ("0.5", 500, 1, "500m"),
    ("0.1", 100, 1, "100m"),
    (".5", 500, 1, "500m"),
    ("5.", 5000, 5, "5"),
    ("+1", 1000, 1, "1"),
    ("-1", -1000, -1, "-1"),
    ("-0.5", -500, -1, "-500m"),
    ("1k", 10**6, 1000, "1k"),
    ("1000", 10**6, 1000, "1k"),
    ("100M", 10**11, 10**8, "100M"),
    ("1G", 10**12, 10**9, "1G"),
    ("2T", 2 * 10**15, 2 * 10**12, "2T"),
    ("1P", 10**18, 10**15, "1P"),
    ("1E", 10**21, 10**18, "1E"),
    ("250u", 1, 1, "250u"),
    ("10n", 1, 1, "10n"),
    ("0.1n", 1, 1, "1n"),
    ("1Ki", 1024000, 1024, "1Ki"),
    ("128Mi", 128 * 2**20 * 1000, 128 * 2**20, "128Mi"),
    ("1024Mi", 2**30 * 1000, 2**30, "1Gi"),
    ("1.5Gi", 1536 * 2**20 * 1000, 1536 * 2**20, "1536Mi"),
    ("1Ti", 2**40 * 1000, 2**40, "1Ti"),
    ("1Pi", 2**50 * 1000, 2**50, "1Pi"),
    ("1Ei", 2**60 * 1000, 2**60, "1Ei"),
    ("0.5Ki", 512000, 512, "512"),
    ("1e3", 10**6, 1000, "1e3"),
    ("1E3", 10**6, 1000, "1e3"),
    ("12e4", 12 * 10**7, 12 * 10**4, "120e3"),
    ("1.5e3", 15 * 10**5, 1500, "1500"),
    ("5e-3", 5, 1, "5e-3"),
    ("1e+6", 10**9, 10**6, "1e6"),
    ("128974848", 128974848000, 128974848, "128974848"),
    ("129e6", 129 * 10**9, 129 * 10**6, "129e6"),
]


@pytest.mark.parametrize(("text", "milli", "units", "canon"), TABLE)
def test_parse_table(text: str, milli: int, units: int, canon: str) -> None:
    assert milli_value(text) == milli
    assert int_value(text) == units
    assert canonical(text) == canon
    if text != "0.1n":  # below one nano: printing rounds away from zero, as Kubernetes does
        assert parse_quantity(canon).amount == parse_quantity(text).amount


@pytest.mark.parametrize(
    "text", ["1.5.5", "12Qi", "-", "", " 1", "1 ", "1Ki ", "m", "1mi", "1KI", "1e", "e3", "1.2.3m",
             "0x10", "\uff11", "1_000", "--1", "1e301", "9" * 101],
)  # fmt: skip
def test_rejects(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_error_names_the_field() -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity("12Qi", field="spec.containers[0].resources.limits[memory]")
    assert str(info.value) == (
        "spec.containers[0].resources.limits[memory]: quantity '12Qi': must be a number with an "
        "optional suffix (m, k, M, G, Ki, Mi, Gi, e3, ...)"
    )
    assert isinstance(info.value, ValueError)


def test_integers_and_non_strings() -> None:
    assert milli_value(2) == 2000
    with pytest.raises(QuantityError):
        parse_quantity(True)
    with pytest.raises(QuantityError):
        parse_quantity(1.5)  # type: ignore[arg-type]


def test_str_is_canonical() -> None:
    assert str(Quantity(Fraction(3, 2))) == "1500m"
    assert str(Quantity(Fraction(3 * 2**30), "BinarySI")) == "3Gi"
    assert str(Quantity(Fraction(10**21))) == "1000E"


@given(
    nanos=st.integers(min_value=-(10**30), max_value=10**30),
    fmt=st.sampled_from(["DecimalSI", "BinarySI", "DecimalExponent"]),
)
def test_canonical_form_parses_back_exactly(nanos: int, fmt: str) -> None:
    quantity = Quantity(Fraction(nanos, 10**9), fmt)  # type: ignore[arg-type]
    text = format_quantity(quantity)
    assert parse_quantity(text).amount == quantity.amount
    # Text has no format tag beyond its suffix: a binary 25000 prints "25000", which reads
    # back as decimal and canonicalizes to "25k" (as in Kubernetes); after that it is stable.
    assert canonical(canonical(text)) == canonical(text)
