"""Manifests: YAML/JSON text to typed API objects and back, with strict validation.

The protobuf messages in k8semu/pb/api/v1 are the schema (decision 1): their proto3 JSON names
are Kubernetes' camelCase names, so this module only adds what proto3 JSON does differently:

- strict checking before decoding, with the field path in every error
  (`spec.template.spec.containers[0].imagePullPolicyy: unknown field`), like
  kubectl --validate=strict; nulls mean "unset", as in Kubernetes;
- intOrString fields (IntOrString messages) are a bare 8080 or "http" on the wire;
- int64 fields print as JSON numbers, as Kubernetes does (proto3 JSON prints them as strings);
- quantity fields are checked with k8semu.api.quantity, and a bare number is accepted for them.

Everything else (timestamps as RFC 3339, bytes as base64, omitted defaults) is
google.protobuf.json_format's own behaviour. Nothing here does I/O beyond reading a stream the
caller passes; errors are k8semu.api.errors.ManifestError subclasses, never yaml or protobuf ones.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import IO, Any, Literal, cast

import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from k8semu.api import kinds
from k8semu.api.errors import (
    FieldTypeError,
    InvalidValueError,
    ManifestError,
    ManifestKindError,
    ManifestSyntaxError,
    QuantityError,
    UnknownFieldError,
    UnknownKindError,
)
from k8semu.api.quantity import parse_quantity

__all__ = [
    "QUANTITY_FIELDS",
    "decode",
    "dump",
    "dump_all",
    "from_dict",
    "load",
    "load_all",
    "to_dict",
]

_F = FieldDescriptor
_TIMESTAMP = "google.protobuf.Timestamp"
_STRUCT = "google.protobuf.Struct"
_INT_OR_STRING = "k8semu.api.v1.IntOrString"
_INT_RANGES = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _F.TYPE_UINT32: (0, 2**32 - 1),
    _F.TYPE_FIXED32: (0, 2**32 - 1),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _F.TYPE_UINT64: (0, 2**64 - 1),
    _F.TYPE_FIXED64: (0, 2**64 - 1),
}
# proto3 JSON prints these as strings; Kubernetes prints them as numbers.
_INT64_TYPES = {_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64, _F.TYPE_UINT64, _F.TYPE_FIXED64}
# String fields (or string-valued maps) that hold Kubernetes quantities.
QUANTITY_FIELDS = frozenset(
    "k8semu.api.v1." + name
    for name in (
        "ResourceRequirements.limits",
        "ResourceRequirements.requests",
        "NodeStatus.capacity",
        "NodeStatus.allocatable",
        "EmptyDirVolumeSource.size_limit",
        "PersistentVolumeSpec.capacity",
        "PersistentVolumeClaimStatus.capacity",
        "MetricTarget.value",
        "MetricTarget.average_value",
        "MetricValueStatus.value",
        "MetricValueStatus.average_value",
    )
)

Format = Literal["yaml", "json"]
Source = str | bytes | IO[str] | IO[bytes]


# ---- public API -------------------------------------------------------------------------


def load_all(text_or_stream: Source, *, source: str) -> list[Message]:
    """Decode every non-empty document of a YAML stream (or one JSON object) into API objects.

    `source` names the input in errors ("web.yaml", "<stdin>"). Documents are numbered from 1,
    empty ones included, so an error's document number matches what the user sees. The first
    bad document raises a ManifestError; nothing is returned partially.
    """
    text = text_or_stream.read() if hasattr(text_or_stream, "read") else text_or_stream
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ManifestSyntaxError("", f"not UTF-8: {exc}", source=source) from None
    if text.lstrip().startswith("{"):
        return [from_dict(_load_json(text, source), source=source, document=1)]
    objects: list[Message] = []
    document = 0
    try:
        for data in yaml.load_all(text, Loader=_Loader):  # a safe loader (see _Loader)
            document += 1
            if data is not None:
                objects.append(from_dict(data, source=source, document=document))
    except yaml.YAMLError as exc:
        raise _yaml_error(exc).with_context(source=source, document=document + 1) from exc
    except ManifestError as exc:
        raise exc.with_context(source=source, document=document + 1) from None
    return objects


def load(text_or_stream: Source, *, source: str) -> Message:
    """Decode a stream that must hold exactly one object."""
    objects = load_all(text_or_stream, source=source)
    if len(objects) != 1:
        raise ManifestSyntaxError(
            "", f"expected exactly one object, found {len(objects)}", source=source
        )
    return objects[0]


def from_dict(data: object, *, source: str = "<object>", document: int = 0) -> Message:
    """Decode one parsed document (a dict from YAML or JSON), dispatching on apiVersion/kind."""
    if not isinstance(data, dict):
        raise ManifestSyntaxError(
            "",
            f"expected an object (a mapping), got {_describe(data)}",
            source=source,
            document=document,
        )
    kind_name = data.get("kind")
    name = _best_effort_name(data)
    try:
        for key in ("apiVersion", "kind"):
            if key not in data or data[key] in (None, ""):
                raise ManifestKindError(key, "missing (every object needs apiVersion and kind)")
            if not isinstance(data[key], str):
                raise ManifestKindError(key, f"expected string, got {_describe(data[key])}")
        try:
            kind = kinds.by_type(data["apiVersion"], data["kind"])
        except UnknownKindError as exc:
            raise ManifestKindError("", str(exc)) from None
        return decode(data, kind.message)
    except ManifestError as exc:
        kind_label = kind_name if isinstance(kind_name, str) else ""
        raise exc.with_context(
            source=source, document=document, kind=kind_label, name=name
        ) from None


def decode(data: object, message_class: type[Message]) -> Message:
    """Strictly decode `data` into a new `message_class`; errors carry the field path only."""
    normalized = _decode_message(data, _descriptor(message_class), "")
    try:
        return json_format.ParseDict(normalized, message_class())
    except json_format.ParseError as exc:  # the checks above should leave nothing for this
        raise InvalidValueError("", str(exc)) from exc


def to_dict(obj: Message) -> dict[str, Any]:
    """The Kubernetes JSON form of `obj`: camelCase names, defaults omitted, int64 as numbers.

    Registered kinds always start with apiVersion and kind (filled in from the registry when
    the message leaves them empty), then metadata, spec, status in field order.
    """
    out = _encode_message(json_format.MessageToDict(obj), _descriptor(obj))
    try:
        kind = kinds.for_message(obj)
    except UnknownKindError:
        return out
    return {"apiVersion": kind.api_version, "kind": kind.kind} | out


def dump(obj: Message, fmt: Format = "yaml") -> str:
    """Print `obj` as YAML (block style, kubectl's key order) or as JSON (4-space indent)."""
    data = to_dict(obj)
    if fmt == "json":
        return json.dumps(data, indent=4, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        return _dump_yaml(data)
    raise ValueError(f"unknown output format {fmt!r} (want 'yaml' or 'json')")


def dump_all(objs: Iterable[Message]) -> str:
    """Print several objects as one multi-document YAML stream."""
    return "---\n".join(_dump_yaml(to_dict(obj)) for obj in objs)


# ---- YAML -------------------------------------------------------------------------------

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """A safe loader that keeps timestamps as strings and rejects duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    line = key_node.start_mark.line + 1
                    raise ManifestSyntaxError("", f"line {line}: duplicate key {key_node.value!r}")
                seen.add(key_node.value)
        result: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return result


# Times stay strings: the schema decides what a field is, not YAML's implicit typing.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _dump_yaml(data: dict[str, Any]) -> str:
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def _load_json(text: str, source: str) -> Any:
    """One JSON document. JSON is parsed as JSON, not as YAML: YAML 1.1 refuses characters
    (DEL, C1 controls) that JSON strings may carry unescaped."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise ManifestSyntaxError("", f"duplicate key {key!r}")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise ManifestSyntaxError(
            "", f"invalid JSON: {where}: {exc.msg}", source=source, document=1
        ) from exc
    except ManifestSyntaxError as exc:
        raise exc.with_context(source=source, document=1) from None


def _yaml_error(exc: yaml.YAMLError) -> ManifestSyntaxError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return ManifestSyntaxError("", f"invalid YAML: {where}{problem}")


# ---- decoding (wire dict -> proto3 JSON dict) --------------------------------------------

_FIELDS: dict[str, dict[str, FieldDescriptor]] = {}


def _descriptor(obj: Message | type[Message]) -> Descriptor:
    return cast(Descriptor, obj.DESCRIPTOR)


def _message_type(field: FieldDescriptor) -> Descriptor:
    desc = field.message_type
    assert desc is not None, field.full_name
    return desc


def _fields(desc: Descriptor) -> dict[str, FieldDescriptor]:
    found = _FIELDS.get(desc.full_name)
    if found is None:
        found = _FIELDS[desc.full_name] = {f.json_name: f for f in desc.fields}
    return found


def _decode_message(value: object, desc: Descriptor, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FieldTypeError(path, f"expected object, got {_describe(value)}")
    fields = _fields(desc)
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise FieldTypeError(path, f"field names must be strings, got {_describe(key)}")
        sub = f"{path}.{key}" if path else key
        field = fields.get(key)
        if field is None:
            raise UnknownFieldError(sub, "unknown field")
        if item is not None:  # null means unset, as in Kubernetes
            out[key] = _decode_field(item, field, sub)
    return out


def _decode_field(value: object, field: FieldDescriptor, path: str) -> Any:
    quantity = field.full_name in QUANTITY_FIELDS
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        if not isinstance(value, dict):
            raise FieldTypeError(path, f"expected object, got {_describe(value)}")
        value_field = field.message_type.fields_by_name["value"]
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise FieldTypeError(path, f"keys must be strings, got {_describe(key)}")
            out[key] = _decode_single(item, value_field, f"{path}[{key}]", quantity)
        return out
    if field.is_repeated:
        if not isinstance(value, list):
            raise FieldTypeError(path, f"expected array, got {_describe(value)}")
        return [_decode_single(v, field, f"{path}[{i}]", quantity) for i, v in enumerate(value)]
    return _decode_single(value, field, path, quantity)


def _decode_single(value: object, field: FieldDescriptor, path: str, quantity: bool) -> Any:
    kind = field.type
    if kind == _F.TYPE_MESSAGE:
        name = _message_type(field).full_name
        if name == _TIMESTAMP:
            return _decode_time(value, path)
        if name == _STRUCT:  # free-form JSON (managedFields' fieldsV1): proto3 JSON's own
            if not isinstance(value, dict):
                raise FieldTypeError(path, f"expected object, got {_describe(value)}")
            return value
        if name == _INT_OR_STRING:
            if isinstance(value, str):
                return {"strVal": value}
            if isinstance(value, int) and not isinstance(value, bool):
                return {"intVal": _check_range(value, _F.TYPE_INT32, path)}
            raise FieldTypeError(path, f"expected integer or string, got {_describe(value)}")
        return _decode_message(value, _message_type(field), path)
    if kind == _F.TYPE_STRING:
        if quantity:
            return _decode_quantity(value, path)
        if not isinstance(value, str):
            raise FieldTypeError(path, f"expected string, got {_describe(value)}")
        return value
    if kind in _INT_RANGES:
        if not isinstance(value, int) or isinstance(value, bool):
            raise FieldTypeError(path, f"expected integer, got {_describe(value)}")
        return _check_range(value, kind, path)
    if kind == _F.TYPE_BOOL:
        if not isinstance(value, bool):
            raise FieldTypeError(path, f"expected boolean, got {_describe(value)}")
        return value
    if kind == _F.TYPE_BYTES:
        if not isinstance(value, str):
            raise FieldTypeError(path, f"expected base64 string, got {_describe(value)}")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidValueError(path, "illegal base64 data") from None
        return value
    if kind in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise FieldTypeError(path, f"expected number, got {_describe(value)}")
        return value
    raise InvalidValueError(path, f"unsupported field type {kind}")  # no enums in the schema


def _decode_time(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise FieldTypeError(path, f"expected RFC 3339 time string, got {_describe(value)}")
    try:
        Timestamp().FromJsonString(value)
    except ValueError:
        raise InvalidValueError(
            path, f'invalid time {json.dumps(value)} (want RFC 3339, "2024-01-01T00:00:00Z")'
        ) from None
    return value


def _decode_quantity(value: object, path: str) -> str:
    if isinstance(value, float) and not isinstance(value, bool):
        value = repr(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FieldTypeError(path, f"expected quantity string, got {_describe(value)}")
    try:
        parse_quantity(value)
    except QuantityError as exc:
        raise InvalidValueError(
            path, f"invalid quantity {json.dumps(value)}: {exc.reason}"
        ) from None
    return str(value)


def _check_range(value: int, kind: int, path: str) -> int:
    low, high = _INT_RANGES[kind]
    if not low <= value <= high:
        raise InvalidValueError(path, f"{value} is out of range [{low}, {high}]")
    return value


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 40 else value[:40] + "...")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _best_effort_name(data: dict[Any, Any]) -> str:
    metadata = data.get("metadata")
    if isinstance(metadata, dict):
        for key in ("name", "generateName"):
            if isinstance(metadata.get(key), str) and metadata[key]:
                return str(metadata[key])
    return ""


# ---- encoding (proto3 JSON dict -> wire dict) --------------------------------------------


def _encode_message(data: dict[str, Any], desc: Descriptor) -> dict[str, Any]:
    fields = _fields(desc)
    return {key: _encode_field(value, fields[key]) for key, value in data.items()}


def _encode_field(value: Any, field: FieldDescriptor) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {k: _encode_single(v, value_field) for k, v in value.items()}
    if field.is_repeated:
        return [_encode_single(v, field) for v in value]
    return _encode_single(value, field)


def _whole_numbers(value: Any) -> Any:
    """Free-form JSON with whole floats as ints: a Struct keeps every number as a double,
    but JSON has one number type and the objects it embeds (a ControllerRevision's template)
    want `30`, not `30.0`, where their schema has an integer."""
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _encode_single(value: Any, field: FieldDescriptor) -> Any:
    if field.type == _F.TYPE_MESSAGE:
        name = _message_type(field).full_name
        if name == _TIMESTAMP:
            return value
        if name == _STRUCT:
            return _whole_numbers(value)
        if name == _INT_OR_STRING:
            return value.get("intVal", value.get("strVal", 0))
        return _encode_message(value, _message_type(field))
    if field.type in _INT64_TYPES:
        return int(value)
    return value
