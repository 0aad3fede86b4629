"""Random objects, built through the proto messages, survive dump -> load unchanged."""

from __future__ import annotations

from typing import Any, cast

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k8semu.api import kinds, manifest

_F = FieldDescriptor
MAX_DEPTH = 7
# Strings YAML would otherwise read as something else, plus arbitrary text.
TRICKY = ["", "8080", "true", "no", "null", "~", "1e3", "2024-01-01", "2024-01-01T00:00:00Z",
          "- a", "a: b", "#x", " lead", "trail ", "multi\nline", "tab\there", "'q'", '"dq"',
          "ünï", "emoji 😀", "@at", "*star", "&amp", "!bang", "%pct", "{x}", "[y]"]  # fmt: skip
strings = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))
quantities = st.one_of(
    st.sampled_from(["0", "100m", "1", "1.5", "128Mi", "1Gi", "1e3", "-2", "500u"]),
    st.integers(min_value=0, max_value=10**12).map(str),
)
INT_BOUNDS = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1),
}


def scalars(field: FieldDescriptor, quantity: bool) -> st.SearchStrategy[Any]:
    if field.type == _F.TYPE_STRING:
        return quantities if quantity else strings
    if field.type in INT_BOUNDS:
        low, high = INT_BOUNDS[field.type]
        return st.integers(min_value=low, max_value=high)
    if field.type == _F.TYPE_BOOL:
        return st.booleans()
    if field.type == _F.TYPE_BYTES:
        return st.binary(max_size=8)
    raise AssertionError(f"no strategy for {field.full_name}")


def fill(draw: st.DrawFn, msg: Message, depth: int) -> None:
    desc = cast(Descriptor, msg.DESCRIPTOR)
    if desc.full_name == "google.protobuf.Timestamp":
        msg.seconds = draw(st.integers(min_value=-62135596800, max_value=253402300799))  # type: ignore[attr-defined]
        msg.nanos = draw(st.integers(min_value=0, max_value=999_999_999))  # type: ignore[attr-defined]
        return
    if desc.full_name == "google.protobuf.Struct":  # managedFields' fieldsV1: nested objects
        keys = draw(st.lists(strings, max_size=2, unique=True))
        msg.update({f"f:{k}": {"f:x": {}} if i else {} for i, k in enumerate(keys)})  # type: ignore[attr-defined]
        return
    if desc.full_name == "k8semu.api.v1.IntOrString":
        if draw(st.booleans()):
            msg.int_val = draw(st.integers(min_value=-(2**31), max_value=2**31 - 1))  # type: ignore[attr-defined]
        else:
            msg.str_val = draw(strings)  # type: ignore[attr-defined]
        return
    for field in desc.fields:
        if field.message_type is not None and depth >= MAX_DEPTH:
            continue
        # Near the top most fields are set, deeper down fewer, so objects stay a few KB.
        if draw(st.integers(min_value=0, max_value=2)) < (1 if depth < 3 else 2):
            continue
        quantity = field.full_name in manifest.QUANTITY_FIELDS
        target = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key in draw(st.lists(strings, max_size=2, unique=True)):
                if value_field.message_type is not None:  # disruptedPods: name -> time
                    fill(draw, target[key], depth + 1)
                else:
                    target[key] = draw(scalars(value_field, quantity))
        elif field.is_repeated and field.message_type is not None:
            for _ in range(draw(st.integers(min_value=0, max_value=2))):
                fill(draw, target.add(), depth + 1)
        elif field.is_repeated:
            target.extend(draw(st.lists(scalars(field, quantity), max_size=2)))
        elif field.message_type is not None:
            target.SetInParent()
            fill(draw, target, depth + 1)
        else:
            setattr(msg, field.name, draw(scalars(field, quantity)))


@st.composite
def objects(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(kinds.KINDS))
    obj = kind.message()
    fill(draw, obj, 0)
    kinds.stamp(obj)
    return obj


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=objects())
def test_dump_then_load_is_identity(fmt: manifest.Format, obj: Message) -> None:
    text = manifest.dump(obj, fmt)
    assert manifest.load(text, source="generated") == obj


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objs=st.lists(objects(), min_size=1, max_size=3))
def test_dump_all_then_load_all_is_identity(objs: list[Message]) -> None:
    assert manifest.load_all(manifest.dump_all(objs), source="generated") == objs
