"""What every verb shares: kubectl's error texts and exit codes, the client a verb uses,
how a verb names objects and namespaces, and merge patches with a read-modify-write fallback.

Errors print as kubectl prints them (`Error from server (NotFound): pods "x" not found`,
`error: ...`); a verb that fails for some objects reports each and raises Failed (exit 1).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from k8semu import transport
from k8semu.api import kinds, manifest
from k8semu.api.kinds import Kind
from k8semu.cli import _printers as printers
from k8semu.cli._kubeconfig import Target
from k8semu.cli._resources import (
    Selection,
    UsageError,
    parse_selections,
)
from k8semu.client import (
    APIStatusError,
    Client,
    Conflict,
    ConnectFailed,
    NotFound,
    OutcomeUnknown,
    Timeouts,
    Unimplemented,
)

CONFLICT_RETRIES = 5


# Kubernetes' reason for each gRPC status code (docs/architecture.md "Errors").
_REASONS = {
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.ABORTED: "Conflict",
    grpc.StatusCode.INVALID_ARGUMENT: "Invalid",
    grpc.StatusCode.OUT_OF_RANGE: "Gone",
    grpc.StatusCode.UNAVAILABLE: "ServiceUnavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "Timeout",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthorized",
    grpc.StatusCode.PERMISSION_DENIED: "Forbidden",
    grpc.StatusCode.UNIMPLEMENTED: "MethodNotAllowed",
}


# `deployments "web": spec.replicas: ...` names an object (Invalid); anything else is BadRequest.
_NAMES_OBJECT = re.compile(r'^[a-z0-9.]+ "[^"]*": ')


class Failed(Exception):
    """Some objects failed; each error is already printed. Exit code 1."""


def out(text: str, *, flush: bool = False) -> None:
    sys.stdout.write(text)
    if flush:
        sys.stdout.flush()


def err(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


def format_error(exc: BaseException) -> str:
    """One error as kubectl prints it."""
    if isinstance(exc, APIStatusError):
        if isinstance(exc, ConnectFailed):
            return f"Unable to connect to the server: {exc.message}"
        if isinstance(exc, OutcomeUnknown):
            return f"error: outcome unknown: {exc.message}"
        reason = _REASONS.get(exc.code, "InternalError")
        if reason == "Invalid" and not _NAMES_OBJECT.match(exc.message):
            reason = "BadRequest"
        return f"Error from server ({reason}): {exc.message}"
    return f"error: {exc}"


class Errors:
    """Collects per-object failures so one bad object does not stop the others."""

    def __init__(self) -> None:
        self.count = 0

    def report(self, exc: BaseException) -> None:
        self.count += 1
        err(format_error(exc))

    def check(self) -> None:
        if self.count:
            raise Failed


def client_for(target: Target, ns: argparse.Namespace) -> Client:
    if not ns.request_timeout > 0:
        raise UsageError("--request-timeout: must be > 0")
    return Client(
        list(target.servers),
        timeouts=Timeouts(call=ns.request_timeout),
        channel_factory=transport.named_channels("k8semu", target.tls()),
    )


def namespace_for(kind: Kind, target: Target, *, all_namespaces: bool = False) -> str | None:
    """The namespace to read `kind` in: None for cluster-scoped kinds and -A."""
    if not kind.namespaced or all_namespaces:
        return None
    return target.namespace


def label_of(kind: Kind) -> str:
    """`deployment.apps`, `pod`: how kubectl names a kind in messages."""
    return f"{kind.singular}.{kind.group}" if kind.group else kind.singular


def place(obj: Message, target: Target, *, explicit_namespace: bool) -> Kind:
    """Fill in a manifest object's namespace as kubectl does; refuse a contradicting -n."""
    kind = kinds.for_message(obj)
    m = printers.meta(obj)
    if not m.name:
        raise UsageError(f"{kind.kind}: metadata.name: Required value (resource name may not "
                         "be empty)")  # fmt: skip
    if not kind.namespaced:
        m.namespace = ""
    elif not m.namespace:
        m.namespace = target.namespace
    elif explicit_namespace and m.namespace != target.namespace:
        raise UsageError(
            f'the namespace from the provided object "{m.namespace}" does not match the '
            f"namespace \"{target.namespace}\". You must pass '--namespace={m.namespace}' to "
            "perform this operation."
        )
    return kind


def no_resources(target: Target, kinds_: Sequence[Kind], all_namespaces: bool) -> str:
    if all_namespaces or not any(k.namespaced for k in kinds_):
        return "No resources found"
    return f"No resources found in {target.namespace} namespace."


async def select(
    client: Client,
    sel: Selection,
    target: Target,
    errors: Errors,
    *,
    all_namespaces: bool = False,
    label_selector: str = "",
    field_selector: str = "",
) -> tuple[list[Message], str]:
    """The objects a selection names (each missing name reported), and a resourceVersion."""
    namespace = namespace_for(sel.kind, target, all_namespaces=all_namespaces)
    if not sel.names:
        page = await client.list_all(
            sel.kind.resource,
            namespace=namespace,
            label_selector=label_selector,
            field_selector=field_selector,
        )
        return list(page.items), page.resource_version
    found: list[Message] = []
    for name in sel.names:
        try:
            found.append(await client.get(sel.kind.resource, name, namespace=namespace or ""))
        except NotFound as exc:
            errors.report(exc)
    rv = max((printers.meta(o).resource_version for o in found), key=_rv_int, default="")
    return found, rv


def _rv_int(rv: str) -> int:
    return int(rv) if rv.isdigit() else 0


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch of plain JSON values (the client-side fallback of `patch`)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


async def patch_object(
    client: Client, kind: Kind, name: str, namespace: str, patch: dict[str, Any], status: bool
) -> Message:
    """client.patch; on a server without Patch, read-merge-update with conflict retries."""
    try:
        return await client.patch(kind.resource, name, patch, namespace=namespace, status=status)
    except Unimplemented:
        pass
    for attempt in range(CONFLICT_RETRIES):
        live = await client.get(kind.resource, name, namespace=namespace)
        merged = manifest.from_dict(merge_patch(manifest.to_dict(live), patch), source="patch")
        printers.meta(merged).resource_version = printers.meta(live).resource_version
        try:
            if status:
                return await client.update_status(merged)
            return await client.update(merged)
        except Conflict:
            if attempt == CONFLICT_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def named_objects(args: Sequence[str], verb: str) -> list[tuple[Kind, str]]:
    pairs = [(s.kind, n) for s in parse_selections(args, verb=verb) for n in s.names]
    if not pairs:
        raise UsageError(f"resource name may not be empty (k8semu {verb} KIND NAME)")
    return pairs
