"""What the user names on the command line: kinds and objects (`po`, `deployments.apps`,
`svc/web`, `pods,svc`), manifest files (`-f FILE|DIR|-`, `-R`) and label edits (`k=v`, `k-`).

Pure apart from reading the files the user named; errors are `UsageError` with kubectl's
wording, raised before anything is sent to the server.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from google.protobuf.message import Message

from k8semu.api import kinds, manifest
from k8semu.api.errors import UnknownKindError
from k8semu.api.kinds import Kind

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class UsageError(Exception):
    """A bad argument; printed as `error: <message>`, exit code 1."""


@dataclass
class Selection:
    """One kind and the names asked for (empty: every object of the kind)."""

    kind: Kind
    names: list[str] = field(default_factory=list)


def resolve_kind(text: str) -> Kind:
    """A kind as kubectl accepts it: plural, singular, short name, Kind, `deployments.apps`."""
    try:
        kind = kinds.for_resource(text)
    except UnknownKindError as exc:
        raise UsageError(str(exc)) from None
    if kind.list_message is None:  # Binding: only a subresource, never stored
        raise UsageError(f'the server doesn\'t have a resource type "{text}"')
    return kind


def parse_selections(args: Sequence[str], *, verb: str) -> list[Selection]:
    """`KIND [NAME...]`, `KIND1,KIND2`, or `KIND/NAME...` into selections, in the given order.

    Names for the same kind are grouped together, first appearance first.
    """
    if not args:
        raise UsageError(
            f"You must specify the type of resource to {verb}. "
            'Use "k8semu api-resources" for a complete list of supported resources.'
        )
    if "/" in args[0]:
        out: list[Selection] = []
        for arg in args:
            kind_text, sep, name = arg.partition("/")
            if not sep or not kind_text or not name or "/" in name:
                raise UsageError(
                    f"there is no need to specify a resource type as a separate argument "
                    f"when passing arguments in resource/name form (e.g. 'k8semu {verb} "
                    f"resource/name' instead of 'k8semu {verb} resource resource/name'): "
                    f"{arg!r}"
                )
            kind = resolve_kind(kind_text)
            found = next((s for s in out if s.kind == kind), None)
            if found is None:
                out.append(Selection(kind, [name]))
            elif name not in found.names:
                found.names.append(name)
        return out
    names = list(args[1:])
    if any("/" in n for n in names):
        raise UsageError(
            "there is no need to specify a resource type as a separate argument when passing "
            "arguments in resource/name form"
        )
    kinds_seen: list[Kind] = []
    for text in args[0].split(","):
        for name in kinds.ALL_CATEGORY if text == "all" else (text,) if text else ():
            kind = resolve_kind(name)
            if kind not in kinds_seen:
                kinds_seen.append(kind)
    if not kinds_seen:
        raise UsageError(f"no resource type in {args[0]!r}")
    return [Selection(k, list(dict.fromkeys(names))) for k in kinds_seen]


def manifest_paths(target: str, *, recursive: bool) -> list[str]:
    """The files `-f target` names: the file itself, `-` (stdin), or the manifests in a
    directory (.yaml/.yml/.json, sorted; subdirectories only with -R)."""
    if target == "-":
        return ["-"]
    path = Path(target)
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        found = sorted(
            str(p) for p in path.glob(pattern) if p.is_file() and p.suffix in MANIFEST_SUFFIXES
        )
        if not found:
            raise UsageError(f'error reading "{target}": no manifest files (.yaml, .yml, .json)')
        return found
    if not path.exists():
        raise UsageError(f'the path "{target}" does not exist')
    return [target]


def load_manifests(
    targets: Sequence[str], *, recursive: bool, stdin: IO[str] | None = None
) -> list[Message]:
    """Every object in every file, strictly validated; the first bad document raises
    ManifestError (file, document, path) and nothing is returned."""
    if not targets:
        raise UsageError("must specify one of -f")
    objects: list[Message] = []
    for target in targets:
        for path in manifest_paths(target, recursive=recursive):
            if path == "-":
                stream = stdin if stdin is not None else sys.stdin
                objects.extend(manifest.load_all(stream.read(), source="<stdin>"))
                continue
            try:
                text = Path(path).read_bytes()
            except OSError as exc:
                raise UsageError(f'error reading "{path}": {exc.strerror}') from None
            objects.extend(manifest.load_all(text, source=path))
    if not objects:
        raise UsageError("no objects passed to apply")
    return objects


@dataclass(frozen=True)
class MapEdit:
    """`label`/`annotate` arguments: keys to set (`k=v`) and keys to remove (`k-`)."""

    set: dict[str, str]
    remove: list[str]


def parse_map_edits(args: Sequence[str], *, what: str) -> MapEdit:
    """`k=v k2=v2 k3-`; a key may not be both set and removed."""
    sets: dict[str, str] = {}
    removes: list[str] = []
    for arg in args:
        if "=" in arg:
            key, _, value = arg.partition("=")
            if not key:
                raise UsageError(f"invalid {what} spec: {arg}")
            sets[key] = value
        elif arg.endswith("-") and len(arg) > 1:
            removes.append(arg[:-1])
        else:
            raise UsageError(f"invalid {what} spec: {arg}")
    both = sorted(set(sets) & set(removes))
    if both:
        raise UsageError(f"can not both modify and remove {what}s in the same command: {both[0]}")
    if not sets and not removes:
        raise UsageError(f"at least one {what} update is required")
    return MapEdit(sets, removes)


def split_objects_and_edits(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """`label KIND NAME k=v k-` and `label KIND/NAME k=v`: the object words, then the edits."""
    objs: list[str] = []
    edits: list[str] = []
    for arg in args:
        # As kubectl: names (DNS labels) never contain "=" nor end in "-".
        (edits if "=" in arg or arg.endswith("-") else objs).append(arg)
    return objs, edits
