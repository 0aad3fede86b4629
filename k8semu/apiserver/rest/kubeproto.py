"""Kubernetes' protobuf request bodies (`application/vnd.kubernetes.protobuf`) as JSON data.

kubectl's typed commands (`kubectl create configmap|secret|namespace|deployment|service|job|
cronjob|poddisruptionbudget`, `kubectl autoscale`, `kubectl certificate approve|deny`) always
send their object in Kubernetes' protobuf encoding, whatever the server advertises: the
`k8s\\x00` magic, then a runtime.Unknown (typeMeta 1: apiVersion 1, kind 2; raw 2: the
object). That schema is
Kubernetes' generated.proto, not k8semu's messages (protos/), so the body is read here with
the wire format alone and a table of Kubernetes' field numbers for the types those commands
build, into the same JSON data a JSON body gives; `codec.decode_object` then decodes it as
it decodes JSON.

Kubernetes' Go structs encode zero values of non-pointer fields (`generation: 0`, empty
strings, empty messages): they are dropped, as JSON's omitempty drops them, except the
pointer fields where a zero means something (`replicas: 0`). Fields the table lacks are
skipped (the model has no place for them either). Pure: no I/O.
"""

from __future__ import annotations

import base64
from typing import Any, Union

__all__ = ["MAGIC", "MEDIA_TYPE", "ProtobufError", "UnreadKind", "decode"]

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# A field: (JSON name, type). Types: "str", "bytes" (base64 in JSON), "int", "bool",
# "strs" (repeated string), "map" (map<string,string>), "bmap" (map<string,bytes>),
# "ios" (IntOrString), a schema (a message), or [schema] (a repeated message).
Schema = dict[int, tuple[str, Union[str, "Schema", list["Schema"]]]]

# Pointer fields whose zero Kubernetes keeps (`kubectl create deployment --replicas=0`).
_KEEP_ZERO = frozenset(
    {"replicas", "parallelism", "completions", "backoffLimit", "minAvailable", "maxUnavailable"}
)
_MAX_DEPTH = 32


def _schema(fields: str, /, **messages: Schema | list[Schema]) -> Schema:
    """A message's fields from `"1 name str, 11 labels map, 2 spec"`: number, JSON name and
    type, each; a field without a type is the message (or [message]) `messages` names."""
    out: Schema = {}
    for field in fields.split(","):
        number, name, *kind = field.split()
        out[int(number)] = (name, kind[0] if kind else messages[name])
    return out


_META = _schema(
    "1 name str, 2 generateName str, 3 namespace str, 11 labels map, 12 annotations map,"
    " 13 ownerReferences, 14 finalizers strs",
    # `kubectl create job --from=cronjob/NAME` makes the CronJob the Job's controller.
    ownerReferences=[
        _schema(
            "1 kind str, 3 name str, 4 uid str, 5 apiVersion str, 6 controller bool,"
            " 7 blockOwnerDeletion bool"
        )
    ],
)
_SELECTOR = _schema(
    "1 matchLabels map, 2 matchExpressions",
    matchExpressions=[_schema("1 key str, 2 operator str, 3 values strs")],
)
_CONTAINER = _schema(
    "1 name str, 2 image str, 3 command strs, 4 args strs, 5 workingDir str, 6 ports, 7 env,"
    " 8 resources, 14 imagePullPolicy str, 16 stdin bool, 17 stdinOnce bool, 18 tty bool",
    ports=[
        _schema("1 name str, 2 hostPort int, 3 containerPort int, 4 protocol str, 5 hostIP str")
    ],
    env=[_schema("1 name str, 2 value str")],
    resources=_schema("1 limits map, 2 requests map"),
)
_TEMPLATE = _schema(
    "1 metadata, 2 spec",
    metadata=_META,
    spec=_schema(
        "2 containers, 3 restartPolicy str, 4 terminationGracePeriodSeconds int,"
        " 7 nodeSelector map, 8 serviceAccountName str, 10 nodeName str, 11 hostNetwork bool,"
        " 20 initContainers",
        containers=[_CONTAINER],
        initContainers=[_CONTAINER],
    ),
)
_JOB_SPEC = _schema(
    "1 parallelism int, 2 completions int, 3 activeDeadlineSeconds int, 4 selector,"
    " 6 template, 7 backoffLimit int",
    selector=_SELECTOR,
    template=_TEMPLATE,
)


def _object(fields: str, /, **messages: Schema | list[Schema]) -> Schema:
    """A kind's fields: metadata (1) and those `fields` lists."""
    return _schema(f"1 metadata, {fields}", metadata=_META, **messages)


# The kinds kubectl's typed commands create, by (apiVersion, kind): their fields.
KINDS: dict[tuple[str, str], Schema] = {
    ("v1", "ConfigMap"): _object("2 data map, 3 binaryData bmap, 4 immutable bool"),
    ("v1", "Secret"): _object("2 data bmap, 3 type str, 4 stringData map, 5 immutable bool"),
    ("v1", "Namespace"): _object("2 spec", spec=_schema("1 finalizers strs")),
    ("v1", "Service"): _object(
        "2 spec",
        spec=_schema(
            "1 ports, 2 selector map, 3 clusterIP str, 4 type str, 7 externalName str",
            ports=[
                _schema("1 name str, 2 protocol str, 3 port int, 4 targetPort ios, 5 nodePort int")
            ],
        ),
    ),
    ("apps/v1", "Deployment"): _object(
        "2 spec",
        spec=_schema(
            "1 replicas int, 2 selector, 3 template, 5 minReadySeconds int,"
            " 6 revisionHistoryLimit int",
            selector=_SELECTOR,
            template=_TEMPLATE,
        ),
    ),
    ("batch/v1", "Job"): _object("2 spec", spec=_JOB_SPEC),
    ("batch/v1", "CronJob"): _object(
        "2 spec",
        spec=_schema(
            "1 schedule str, 3 concurrencyPolicy str, 4 suspend bool, 5 jobTemplate",
            jobTemplate=_object("2 spec", spec=_JOB_SPEC),
        ),
    ),
    ("policy/v1", "PodDisruptionBudget"): _object(
        "2 spec",
        spec=_schema("1 minAvailable ios, 2 selector, 3 maxUnavailable ios", selector=_SELECTOR),
    ),
    # `kubectl autoscale` (served by conversion to autoscaling/v2: rest/versions.py).
    ("autoscaling/v1", "HorizontalPodAutoscaler"): _object(
        "2 spec",
        spec=_schema(
            "1 scaleTargetRef, 2 minReplicas int, 3 maxReplicas int,"
            " 4 targetCPUUtilizationPercentage int",
            scaleTargetRef=_schema("1 kind str, 2 name str, 3 apiVersion str"),
        ),
    ),
    # `kubectl certificate approve|deny` PUTs the whole object to /approval (the conditions'
    # times, 4 and 5, are skipped: the model's are set by whoever writes them).
    ("certificates.k8s.io/v1", "CertificateSigningRequest"): _object(
        "2 spec, 3 status",
        spec=_schema(
            "1 request bytes, 2 username str, 3 uid str, 4 groups strs, 5 usages strs,"
            " 7 signerName str, 8 expirationSeconds int"
        ),
        status=_schema(
            "1 conditions, 2 certificate bytes",
            conditions=[_schema("1 type str, 2 reason str, 3 message str, 6 status str")],
        ),
    ),
}
_TYPE_META = _schema("1 apiVersion str, 2 kind str")


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf object (400)."""


class UnreadKind(ProtobufError):
    """A protobuf object of a kind the table does not read (415: send it as JSON)."""


def decode(body: bytes) -> dict[str, Any]:
    """The object of a `k8s\\x00` + runtime.Unknown body, as Kubernetes JSON data."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the body does not start with Kubernetes' protobuf magic k8s\\x00")
    type_meta: dict[str, Any] = {}
    raw = b""
    for number, value in _fields(memoryview(body)[len(MAGIC) :]):
        if number == 1 and isinstance(value, memoryview):
            type_meta = _message(value, _TYPE_META, 0)
        elif number == 2 and isinstance(value, memoryview):
            raw = bytes(value)
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    schema = KINDS.get((api_version, kind))
    if schema is None:
        served = ", ".join(f"{v} {k}" for v, k in KINDS)
        raise UnreadKind(
            f"{api_version or '?'} {kind or '?'} is not read from protobuf here (send JSON);"
            f" protobuf bodies are read for: {served}"
        )
    return {"apiVersion": api_version, "kind": kind, **_message(memoryview(raw), schema, 0)}


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while shift < 70:
        if i >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7
    raise ProtobufError("varint longer than 10 bytes")


def _fields(data: memoryview) -> list[tuple[int, int | memoryview]]:
    """(field number, value) of each field: an int (varint) or the bytes (length-delimited);
    fixed-width fields are skipped (no field the table reads has one)."""
    out: list[tuple[int, int | memoryview]] = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            out.append((number, value))
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise ProtobufError("truncated field")
            out.append((number, data[i : i + size]))
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return out


def _message(data: memoryview, schema: Schema, depth: int) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        raise ProtobufError(f"nested deeper than {_MAX_DEPTH} levels")
    out: dict[str, Any] = {}
    for number, value in _fields(data):
        found = schema.get(number)
        if found is None:
            continue
        name, kind = found
        decoded = _value(value, kind, depth, name)
        if isinstance(kind, list) or kind in ("strs",):
            out.setdefault(name, []).append(decoded)
        elif kind in ("map", "bmap"):
            key, item = decoded
            out.setdefault(name, {})[key] = item
        else:
            out[name] = decoded
    return {k: v for k, v in out.items() if _kept(k, v)}


def _kept(name: str, value: Any) -> bool:
    if name in _KEEP_ZERO:
        return True
    return value not in ("", 0, {}, [])  # False == 0


def _value(value: int | memoryview, kind: Any, depth: int, name: str) -> Any:
    if kind in ("int", "bool"):
        if not isinstance(value, int):
            raise ProtobufError(f"{name}: expected a varint")
        if kind == "bool":
            return bool(value)
        return value - (1 << 64) if value >= 1 << 63 else value
    if not isinstance(value, memoryview):
        raise ProtobufError(f"{name}: expected a length-delimited field")
    if kind in ("str", "strs"):
        return _text(value, name)
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode()
    if kind in ("map", "bmap"):
        entry = dict(_fields(value))
        key, item = entry.get(1, memoryview(b"")), entry.get(2, memoryview(b""))
        if not isinstance(key, memoryview) or not isinstance(item, memoryview):
            raise ProtobufError(f"{name}: malformed map entry")
        if kind == "bmap":
            return _text(key, name), base64.b64encode(bytes(item)).decode()
        return _text(key, name), _text(item, name)
    if kind == "ios":
        fields = dict(_fields(value))
        if fields.get(1, 0) == 1:
            text = fields.get(3, memoryview(b""))
            return _text(text, name) if isinstance(text, memoryview) else ""
        number = fields.get(2, 0)
        return number if isinstance(number, int) else 0
    schema = kind[0] if isinstance(kind, list) else kind
    return _message(value, schema, depth + 1)


def _text(value: memoryview, name: str) -> str:
    try:
        return bytes(value).decode()
    except UnicodeDecodeError:
        raise ProtobufError(f"{name}: not UTF-8") from None
