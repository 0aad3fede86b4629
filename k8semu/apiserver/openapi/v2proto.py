"""The OpenAPI v2 document in the protobuf form kubectl asks for.

kubectl fetches `/openapi/v2` only to validate manifests itself (when a server does not take
`fieldValidation`), and then only as protobuf: `Accept:
application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, the `openapi.v2.Document` message
of the gnostic project. This module writes that message's wire format directly from the v2
JSON form (field numbers from gnostic's OpenAPIv2.proto; no generated code, since nothing here
ever reads it back): the document's version and info, its definitions (what validation and
`kubectl explain --output plaintext-openapiv2` read) with their types, formats, properties,
items, additionalProperties, required fields, enums, references and vendor extensions (as
gnostic keeps them: YAML text, here JSON, which is YAML), and its paths with their operations
and parameters (kubectl looks for the `fieldValidation` query parameter there). Pure, no I/O.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["ACCEPT", "CONTENT_TYPE", "encode_document"]

# What clients ask for (kubectl: the older "@" spelling) and what the answer is labelled with:
# Go's media type parser refuses the "@", so kube-apiserver answers with the dotted form.
ACCEPT = ("application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
          "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")  # fmt: skip
CONTENT_TYPE = ACCEPT[1]

_VARINT, _BYTES = 0, 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:  # seven bits a byte, low first, the high bit says "more"
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _bytes(field: int, payload: bytes) -> bytes:
    return _tag(field, _BYTES) + _varint(len(payload)) + payload


def _str(field: int, text: str) -> bytes:
    return _bytes(field, text.encode()) if text else b""


def _bool(field: int, value: bool) -> bytes:
    return _tag(field, _VARINT) + _varint(1) if value else b""


def _strs(field: int, texts: list[str]) -> bytes:
    return b"".join(_bytes(field, t.encode()) for t in texts)


def _any(value: Any) -> bytes:
    """gnostic's Any: the value as YAML text (field 2)."""
    return _str(2, json.dumps(value))


def _named(field: int, name: str, value: bytes) -> bytes:
    """One NamedX pair (name 1, value 2) of a repeated field."""
    return _bytes(field, _str(1, name) + _bytes(2, value))


def _extensions(field: int, obj: dict[str, Any]) -> bytes:
    return b"".join(_named(field, k, _any(v)) for k, v in obj.items() if k.startswith("x-"))


def _schema(s: dict[str, Any]) -> bytes:
    out = _str(1, s.get("$ref", "")) + _str(2, s.get("format", ""))
    out += _str(4, s.get("description", ""))
    out += _bool(16, bool(s.get("uniqueItems")))
    out += _strs(19, s.get("required", []))
    out += b"".join(_bytes(20, _any(v)) for v in s.get("enum", []))
    extra = s.get("additionalProperties")
    if isinstance(extra, dict):
        out += _bytes(21, _bytes(1, _schema(extra)))
    if "type" in s:
        out += _bytes(22, _strs(1, [s["type"]]))
    if "items" in s:
        out += _bytes(23, _bytes(1, _schema(s["items"])))
    out += b"".join(_bytes(24, _schema(sub)) for sub in s.get("allOf", []))
    if "properties" in s:
        props = b"".join(_named(1, k, _schema(v)) for k, v in s["properties"].items())
        out += _bytes(25, props)
    return out + _extensions(31, s)


def _parameter(p: dict[str, Any]) -> bytes:
    """A ParametersItem: a body parameter, or a query/path one (NonBodyParameter)."""
    if p["in"] == "body":
        body = _str(1, p.get("description", "")) + _str(2, p["name"]) + _str(3, "body")
        body += _bool(4, bool(p.get("required"))) + _bytes(5, _schema(p["schema"]))
        return _bytes(1, _bytes(1, body))
    # Query and path sub-schemas number these fields alike up to `name`; then they differ.
    sub = _bool(1, bool(p.get("required"))) + _str(2, p["in"])
    sub += _str(3, p.get("description", "")) + _str(4, p["name"])
    if p["in"] == "query":
        sub += _str(6, p.get("type", "")) + _bool(20, bool(p.get("uniqueItems")))
        which = 3
    else:
        sub += _str(5, p.get("type", "")) + _bool(19, bool(p.get("uniqueItems")))
        which = 4
    return _bytes(1, _bytes(2, _bytes(which, sub)))


def _operation(op: dict[str, Any]) -> bytes:
    out = _strs(1, op.get("tags", [])) + _str(3, op.get("description", ""))
    out += _str(5, op.get("operationId", ""))
    out += _strs(6, op.get("produces", [])) + _strs(7, op.get("consumes", []))
    out += b"".join(_bytes(8, _parameter(p)) for p in op.get("parameters", []))
    codes = b""
    for code, response in op.get("responses", {}).items():
        body = _str(1, response.get("description", ""))
        if "schema" in response:
            body += _bytes(2, _bytes(1, _schema(response["schema"])))
        codes += _named(1, code, _bytes(1, body))
    out += _bytes(9, codes) + _strs(10, op.get("schemes", []))
    return out + _extensions(13, op)


_METHODS = {"get": 2, "put": 3, "post": 4, "delete": 5, "patch": 8}


def _path_item(item: dict[str, Any]) -> bytes:
    out = b"".join(
        _bytes(_METHODS[method], _operation(op))
        for method, op in item.items()
        if method in _METHODS
    )
    return out + b"".join(_bytes(9, _parameter(p)) for p in item.get("parameters", []))


def encode_document(doc: dict[str, Any]) -> bytes:
    """The gnostic `openapi.v2.Document` bytes of a Swagger 2.0 document (a dict)."""
    info = _str(1, doc["info"]["title"]) + _str(2, doc["info"]["version"])
    paths = b"".join(_named(2, p, _path_item(item)) for p, item in doc["paths"].items())
    definitions = b"".join(_named(1, n, _schema(s)) for n, s in doc["definitions"].items())
    return (
        _str(1, doc["swagger"])
        + _bytes(2, info)
        + _bytes(8, paths)
        + _bytes(9, definitions)
        + _extensions(16, doc)
    )
