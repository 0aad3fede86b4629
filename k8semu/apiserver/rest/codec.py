"""Bodies in and out: Kubernetes JSON (or YAML) to typed objects, media types, Accept.

A body is decoded with the manifest loader (k8semu.api.manifest: the object model's own
Kubernetes-JSON round trip). `fieldValidation` decides what an unknown field does: Strict
refuses the request (400, nothing written), Warn (Kubernetes' default) drops it and says so
in a `Warning` header, Ignore drops it silently. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf import any_pb2
from google.protobuf.message import Message

from k8semu.api import manifest
from k8semu.api.errors import ManifestError, UnknownFieldError
from k8semu.api.kinds import Kind
from k8semu.apiserver.rest import kubeproto
from k8semu.apiserver.rest.status import HTTPError

JSON = "application/json"
YAML = "application/yaml"
FIELD_VALIDATION = ("Strict", "Warn", "Ignore")
# The patch media types and the patch type each names (patch.py decides which it applies).
PATCH_TYPES = {
    "application/merge-patch+json": "application/merge-patch+json",
    "application/json-patch+json": "application/json-patch+json",
    "application/strategic-merge-patch+json": "application/strategic-merge-patch+json",
    "application/apply-patch+yaml": "application/apply-patch+yaml",
}
# Unknown fields dropped from one body at most (then the request is refused).
_MAX_UNKNOWN = 100
_PATH_PART = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")


def bad_request(message: str) -> HTTPError:
    return HTTPError(400, "BadRequest", message)


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_body(raw: bytes, content_type: str) -> Any:
    """The body as data: JSON, YAML for application/yaml, Kubernetes' protobuf for the kinds
    kubeproto reads (what kubectl's typed `create` commands send); 415 for any other media
    type or a protobuf object of another kind."""
    media = media_type(content_type) or JSON
    try:
        if media == JSON:
            return json.loads(raw)
        if media == YAML:
            return yaml.safe_load(raw.decode())
        if media == kubeproto.MEDIA_TYPE:
            return kubeproto.decode(raw)
    except kubeproto.UnreadKind as exc:
        raise HTTPError(415, "UnsupportedMediaType", str(exc)) from None
    except (ValueError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise bad_request(f"the body of the request was in an unknown format: {exc}") from None
    raise HTTPError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include:"
        f' application/json, application/yaml, {kubeproto.MEDIA_TYPE} (got "{media}")',
    )


def field_manager(query: Any, user_agent: str, *, apply: bool = False) -> str:
    """The request's field manager: `fieldManager`, else (not for apply, which must name
    one) the user agent's product (`kubectl/v1.32.0 (linux/amd64) ...` -> `kubectl`), as
    Kubernetes names the writers of managedFields. 422 for one over 128 characters."""
    manager = str(query.get("fieldManager", ""))
    if not manager and not apply:
        manager = user_agent.split("/", 1)[0].strip()[:128]
    if len(manager) > 128:
        raise HTTPError(
            422,
            "Invalid",
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Too long: may not be more'
            " than 128 bytes",
        )
    return manager


def force(query: Any) -> bool:
    """`force` (apply only): true or false; 400 for anything else."""
    text = str(query.get("force", "")).lower()
    if text not in ("", "true", "false", "1", "0"):
        raise bad_request(f"force: invalid value {text!r}: must be true or false")
    return text in ("true", "1")


def field_validation(value: str) -> str:
    value = value or "Warn"
    if value not in FIELD_VALIDATION:
        raise bad_request(
            f'fieldValidation: Unsupported value: "{value}": supported values: "Ignore",'
            ' "Strict", "Warn"'
        )
    return value


@dataclass(frozen=True, slots=True)
class Decoded:
    obj: Message
    warnings: tuple[str, ...]  # unknown fields dropped (Warn), for the Warning header


def decode_object(data: Any, kind: Kind, validation: str) -> Decoded:
    """A request body's object of `kind` (apiVersion and kind filled in when absent; 400
    when they name another kind)."""
    if not isinstance(data, dict):
        raise bad_request(
            f"the body must be a JSON object ({kind.kind}), got {type(data).__name__}"
        )
    data = dict(data)
    api_version = data.setdefault("apiVersion", kind.api_version)
    kind_name = data.setdefault("kind", kind.kind)
    if (api_version, kind_name) != (kind.api_version, kind.kind):
        raise bad_request(
            f"the API version in the data ({api_version}) and kind ({kind_name}) do not match"
            f" the expected ones ({kind.api_version}, {kind.kind})"
        )
    dropped: list[str] = []
    for _ in range(_MAX_UNKNOWN):
        try:
            obj = manifest.decode(data, kind.message)
        except UnknownFieldError as exc:
            if validation == "Strict" or not _drop(data, exc.path):
                raise bad_request(f'strict decoding error: unknown field "{exc.path}"') from None
            dropped.append(exc.path)
            continue
        except ManifestError as exc:
            raise bad_request(
                f"{kind.kind} in version {kind.version!r} cannot be decoded: {exc}"
            ) from None
        warnings = () if validation == "Ignore" else tuple(f'unknown field "{p}"' for p in dropped)
        return Decoded(obj, warnings)
    raise bad_request(f"more than {_MAX_UNKNOWN} unknown fields")


def _drop(data: Any, path: str) -> bool:
    """Remove the field at `path` (`spec.containers[0].foo`) from `data` (copying the
    containers on the way, so the caller's data is not changed); whether it was there."""
    parts: list[str | int] = []
    for name, index in _PATH_PART.findall(path):
        parts.append(name if name else index)
    node = data
    for part in parts[:-1]:
        if isinstance(node, list):
            if not isinstance(part, str) or not part.isdigit() or int(part) >= len(node):
                return False
            node[int(part)] = _copied(node[int(part)])
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node[part] = _copied(node[part])
            node = node[part]
        else:
            return False
    last = parts[-1] if parts else None
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    return False


def _copied(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


class EncodedObjects:
    """Each object's JSON, made once: keyed by its serialized bytes (which hold its
    resourceVersion, so a changed object is a new key), the `capacity` most recent kept.
    A list of unchanged objects, asked again and again, costs no decoding or encoding."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._json: OrderedDict[bytes, bytes] = OrderedDict()

    def json(self, kind: Kind, packed: any_pb2.Any) -> bytes:
        found = self._json.get(packed.value)
        if found is not None:
            self._json.move_to_end(packed.value)
            return found
        obj = kind.message()
        packed.Unpack(obj)
        made = dumps(manifest.to_dict(obj))
        self._json[packed.value] = made
        if len(self._json) > self.capacity:
            self._json.popitem(last=False)
        return made


def list_json(head: dict[str, Any], items: list[bytes]) -> bytes:
    """A list document: `head` (kind, apiVersion, metadata) and the encoded `items`."""
    return dumps(head)[:-1] + b',"items":[' + b",".join(items) + b"]}"


@dataclass(frozen=True, slots=True)
class Wanted:
    """What the client's Accept header asks for."""

    table: bool = False
    partial: bool = False  # PartialObjectMetadata(List)


def accepts(header: str) -> Wanted:
    """Table when a Table of meta.k8s.io v1 (or v1beta1) is acceptable (kubectl get),
    PartialObjectMetadata likewise; plain JSON otherwise. 406 when only types we cannot
    encode (protobuf, CBOR) are acceptable."""
    if not header:
        return Wanted()
    plain = False
    for clause in header.split(","):
        media, *params = (p.strip() for p in clause.split(";"))
        opts = dict(p.partition("=")[::2] for p in params)
        if media.lower() not in (JSON, "*/*", "application/*"):
            continue
        wanted_as = opts.get("as", "")
        if not wanted_as:
            plain = True
        elif opts.get("g") == "meta.k8s.io" and opts.get("v") in ("v1", "v1beta1"):
            if wanted_as == "Table":
                return Wanted(table=True)
            if wanted_as in ("PartialObjectMetadata", "PartialObjectMetadataList"):
                return Wanted(partial=True)
    if plain:
        return Wanted()
    raise HTTPError(
        406,
        "NotAcceptable",
        f"only the following media types are accepted: application/json, {JSON};as=Table;"
        f"v=v1;g=meta.k8s.io (asked for {header!r})",
    )
