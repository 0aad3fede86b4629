"""The kubectl-like verbs of `k8semu`: apply, create, get, describe, delete, patch, scale,
label, annotate, rollout, api-resources, version.

    k8semu apply -f app.yaml
    k8semu get pods -n web -o wide
    k8semu delete deploy/web --cascade=foreground

Every verb reaches the cluster only through `k8semu.client` (never the API server's modules).
Bad arguments and bad manifests are found before the first request is sent, so a failing
`apply` of a multi-document file writes nothing. Errors print as kubectl prints them
(`Error from server (NotFound): pods "x" not found`, `error: ...`) and make the exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

import grpc
import yaml
from google.protobuf.message import Message

from k8semu import __version__
from k8semu.api import kinds, manifest, timestamps
from k8semu.api.errors import ManifestError
from k8semu.api.kinds import Kind
from k8semu.cli import _apply, _describe, _kubeconfig, _rollout
from k8semu.cli import _printers as printers
from k8semu.cli._kubeconfig import ConfigError, Target
from k8semu.cli._resources import (
    Selection,
    UsageError,
    load_manifests,
    parse_map_edits,
    parse_selections,
    split_objects_and_edits,
)
from k8semu.client import (
    NO_RETRIES,
    AlreadyExists,
    APIStatusError,
    Client,
    ClientError,
    Conflict,
    NotFound,
    Timeouts,
    Unimplemented,
)
from k8semu.pb.api.v1 import apps_pb2, core_pb2

VERBS = (
    "apply",
    "create",
    "get",
    "describe",
    "delete",
    "patch",
    "scale",
    "label",
    "annotate",
    "rollout",
    "api-resources",
    "version",
)
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_CONFLICT_RETRIES = 5
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
# What gRPC says when no connection could be made at all (as opposed to a server's answer).
_CONNECT_FAILURES = ("failed to connect", "connection refused", "dns resolution failed")


# `deployments "web": spec.replicas: ...` names an object (Invalid); anything else is BadRequest.
_NAMES_OBJECT = re.compile(r'^[a-z0-9.]+ "[^"]*": ')


class Failed(Exception):
    """Some objects failed; each error is already printed. Exit code 1."""


# ---- output and errors ----------------------------------------------------------------------


def _out(text: str, *, flush: bool = False) -> None:
    sys.stdout.write(text)
    if flush:
        sys.stdout.flush()


def _err(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


def format_error(exc: BaseException) -> str:
    """One error as kubectl prints it."""
    if isinstance(exc, APIStatusError):
        lowered = exc.message.lower()
        if exc.code == grpc.StatusCode.UNAVAILABLE and any(s in lowered for s in _CONNECT_FAILURES):
            return f"Unable to connect to the server: {exc.message}"
        reason = _REASONS.get(exc.code, "InternalError")
        if reason == "Invalid" and not _NAMES_OBJECT.match(exc.message):
            reason = "BadRequest"
        return f"Error from server ({reason}): {exc.message}"
    return f"error: {exc}"


class _Errors:
    """Collects per-object failures so one bad object does not stop the others."""

    def __init__(self) -> None:
        self.count = 0

    def report(self, exc: BaseException) -> None:
        self.count += 1
        _err(format_error(exc))

    def check(self) -> None:
        if self.count:
            raise Failed


# ---- argument parsing -----------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("-n", "--namespace", help="the namespace (default: the context's, or default)")
    g.add_argument("-s", "--server", help="API server(s): HOST:PORT[,HOST:PORT]")
    g.add_argument("--kubeconfig", help=f"config file (default: ${_kubeconfig.ENV_VAR} or "
                   f"{_kubeconfig.DEFAULT_PATH})")  # fmt: skip
    g.add_argument("--context", help="the context of the config file to use")
    g.add_argument(
        "--request-timeout", type=float, default=10.0, help="seconds per request (default 10)"
    )
    return p


def _files(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        required=required,
        help="a manifest file, a directory of them, or - for stdin (repeatable)",
    )
    p.add_argument("-R", "--recursive", action="store_true", help="descend into directories")


def _parser(verb: str) -> argparse.ArgumentParser:
    common = _common()
    prog = f"k8semu {verb}"
    if verb == "apply":
        p = argparse.ArgumentParser(
            prog=prog,
            parents=[common],
            description="Create objects from manifests, or update them to match (three-way "
            "merge with the last applied configuration).",
        )
        _files(p, required=True)
    elif verb == "create":
        p = argparse.ArgumentParser(
            prog=prog, parents=[common], description="Create objects from manifests."
        )
        _files(p, required=True)
    elif verb == "get":
        p = argparse.ArgumentParser(
            prog=prog, parents=[common], description="Display one or many objects."
        )
        p.add_argument("resources", nargs="*", metavar="KIND [NAME...] | KIND/NAME...")
        p.add_argument("-A", "--all-namespaces", action="store_true")
        p.add_argument("-l", "--selector", default="", help="label selector")
        p.add_argument("--field-selector", default="")
        p.add_argument("-o", "--output", choices=["wide", "yaml", "json", "name"])
        p.add_argument("-w", "--watch", action="store_true", help="then watch for changes")
        p.add_argument("--show-labels", action="store_true")
        p.add_argument("--no-headers", action="store_true")
    elif verb == "describe":
        p = argparse.ArgumentParser(
            prog=prog, parents=[common], description="Show an object's details and events."
        )
        p.add_argument("resources", nargs="*", metavar="KIND [NAME...] | KIND/NAME...")
        p.add_argument("-A", "--all-namespaces", action="store_true")
        p.add_argument("-l", "--selector", default="")
    elif verb == "delete":
        p = argparse.ArgumentParser(
            prog=prog, parents=[common], description="Delete objects by name, file or selector."
        )
        p.add_argument("resources", nargs="*", metavar="KIND [NAME...] | KIND/NAME...")
        _files(p, required=False)
        p.add_argument("-A", "--all-namespaces", action="store_true")
        p.add_argument("-l", "--selector", default="")
        p.add_argument("--field-selector", default="")
        p.add_argument("--all", action="store_true", help="every object of the kind")
        p.add_argument("--grace-period", type=int, default=-1, help="seconds; -1: the default")
        p.add_argument("--now", action="store_true", help="same as --grace-period=1")
        p.add_argument(
            "--cascade",
            default="background",
            choices=["background", "foreground", "orphan", "true", "false"],
        )
        p.add_argument("--ignore-not-found", action="store_true")
    elif verb == "patch":
        p = argparse.ArgumentParser(
            prog=prog, parents=[common], description="Update fields with a JSON merge patch."
        )
        p.add_argument("resources", nargs="+", metavar="KIND NAME | KIND/NAME")
        p.add_argument("-p", "--patch", required=True, help="the patch, JSON (or YAML)")
        p.add_argument("--type", default="merge", help="merge (the only type served)")
        p.add_argument("--subresource", choices=["status"])
    elif verb == "scale":
        p = argparse.ArgumentParser(
            prog=prog, parents=[common], description="Set a Deployment's or ReplicaSet's replicas."
        )
        p.add_argument("resources", nargs="+", metavar="KIND NAME... | KIND/NAME...")
        p.add_argument("--replicas", type=int, required=True)
        p.add_argument("--current-replicas", type=int, default=-1, help="precondition")
    elif verb in ("label", "annotate"):
        p = argparse.ArgumentParser(
            prog=prog, parents=[common], description=f"Update the {verb}s of objects."
        )
        p.add_argument("args", nargs="+", metavar="KIND NAME KEY=VAL... KEY-...")
        p.add_argument("--overwrite", action="store_true", help="allow replacing values")
    elif verb == "rollout":
        p = argparse.ArgumentParser(
            prog=prog, parents=[common], description="Manage the rollout of a Deployment."
        )
        p.add_argument("action", choices=["status", "restart", "history", "undo"])
        p.add_argument("resources", nargs="+", metavar="KIND NAME | KIND/NAME")
        p.add_argument("--timeout", type=float, default=0, help="status: seconds (0: forever)")
        p.add_argument(
            "--revision", type=int, default=0, help="history: show this revision's template"
        )
        p.add_argument(
            "--to-revision", type=int, default=0, help="undo: the revision (0: the previous)"
        )
    elif verb == "api-resources":
        p = argparse.ArgumentParser(
            prog=prog, parents=[common], description="The resource types the server serves."
        )
        p.add_argument("--namespaced", choices=["true", "false"])
        p.add_argument("-o", "--output", choices=["name", "wide"])
    elif verb == "version":
        p = argparse.ArgumentParser(
            prog=prog, parents=[common], description="Client version; is the server reachable?"
        )
        p.add_argument("--client", action="store_true", help="client version only")
    else:  # pragma: no cover - main() only dispatches VERBS
        raise ValueError(verb)
    return p


# ---- helpers ----------------------------------------------------------------------------------


def _client(target: Target, ns: argparse.Namespace) -> Client:
    if not ns.request_timeout > 0:
        raise UsageError("--request-timeout: must be > 0")
    return Client(list(target.servers), timeouts=Timeouts(call=ns.request_timeout))


def _namespace(kind: Kind, target: Target, *, all_namespaces: bool = False) -> str | None:
    """The namespace to read `kind` in: None for cluster-scoped kinds and -A."""
    if not kind.namespaced or all_namespaces:
        return None
    return target.namespace


def _label(kind: Kind) -> str:
    """`deployment.apps`, `pod`: how kubectl names a kind in messages."""
    return f"{kind.singular}.{kind.group}" if kind.group else kind.singular


def _place(obj: Message, target: Target, *, explicit_namespace: bool) -> Kind:
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


def _no_resources(target: Target, kinds_: Sequence[Kind], all_namespaces: bool) -> str:
    if all_namespaces or not any(k.namespaced for k in kinds_):
        return "No resources found"
    return f"No resources found in {target.namespace} namespace."


async def _select(
    client: Client,
    sel: Selection,
    target: Target,
    errors: _Errors,
    *,
    all_namespaces: bool = False,
    label_selector: str = "",
    field_selector: str = "",
) -> tuple[list[Message], str]:
    """The objects a selection names (each missing name reported), and a resourceVersion."""
    namespace = _namespace(sel.kind, target, all_namespaces=all_namespaces)
    if not sel.names:
        page = await client.list_all(
            sel.kind.plural,
            namespace=namespace,
            label_selector=label_selector,
            field_selector=field_selector,
        )
        return list(page.items), page.resource_version
    found: list[Message] = []
    for name in sel.names:
        try:
            found.append(await client.get(sel.kind.plural, name, namespace=namespace or ""))
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


async def _patch(
    client: Client, kind: Kind, name: str, namespace: str, patch: dict[str, Any], status: bool
) -> Message:
    """client.patch; on a server without Patch, read-merge-update with conflict retries."""
    try:
        return await client.patch(kind.plural, name, patch, namespace=namespace, status=status)
    except Unimplemented:
        pass
    for attempt in range(_CONFLICT_RETRIES):
        live = await client.get(kind.plural, name, namespace=namespace)
        merged = manifest.from_dict(merge_patch(manifest.to_dict(live), patch), source="patch")
        printers.meta(merged).resource_version = printers.meta(live).resource_version
        try:
            if status:
                return await client.update_status(merged)
            return await client.update(merged)
        except Conflict:
            if attempt == _CONFLICT_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


# ---- verbs ------------------------------------------------------------------------------------


async def cmd_apply(ns: argparse.Namespace, target: Target) -> None:
    objs = load_manifests(ns.filename, recursive=ns.recursive)
    placed = [(obj, _place(obj, target, explicit_namespace=bool(ns.namespace))) for obj in objs]
    for obj, _kind in placed:
        if printers.meta(obj).generate_name and not printers.meta(obj).name:
            raise UsageError("cannot use generate name with apply")
    errors = _Errors()
    async with _client(target, ns) as client:
        for obj, kind in placed:
            try:
                word = await _apply_one(client, obj, kind)
            except ClientError as exc:
                errors.report(exc)
                continue
            _out(f"{printers.resource_name(obj)} {word}\n")
    errors.check()


async def _apply_one(client: Client, obj: Message, kind: Kind) -> str:
    m = printers.meta(obj)
    for attempt in range(_CONFLICT_RETRIES):
        try:
            live: Message | None = await client.get(kind.plural, m.name, namespace=m.namespace)
        except NotFound:
            live = None
        plan = _apply.plan(obj, live)
        try:
            if plan.action == "create":
                await client.create(plan.obj)
                return "created"
            if plan.action == "unchanged" or live is None:
                return "unchanged"
            updated = await client.update(plan.obj)
        except (Conflict, AlreadyExists):
            if attempt == _CONFLICT_RETRIES - 1:
                raise
            continue
        before = printers.meta(live).resource_version
        return "unchanged" if printers.meta(updated).resource_version == before else "configured"
    raise AssertionError("unreachable")


async def cmd_create(ns: argparse.Namespace, target: Target) -> None:
    objs = load_manifests(ns.filename, recursive=ns.recursive)
    for obj in objs:
        _place(obj, target, explicit_namespace=bool(ns.namespace))
    errors = _Errors()
    async with _client(target, ns) as client:
        for obj in objs:
            try:
                created = await client.create(obj)
            except ClientError as exc:
                errors.report(exc)
                continue
            _out(f"{printers.resource_name(created)} created\n")
    errors.check()


async def cmd_get(ns: argparse.Namespace, target: Target) -> None:
    selections = parse_selections(ns.resources, verb="get")
    if ns.watch and len(selections) > 1:
        raise UsageError("you may only specify a single resource type with --watch")
    errors = _Errors()
    now = time.time()
    results: list[tuple[Selection, list[Message], str]] = []
    async with _client(target, ns) as client:
        for sel in selections:
            objs, rv = await _select(
                client,
                sel,
                target,
                errors,
                all_namespaces=ns.all_namespaces,
                label_selector=ns.selector,
                field_selector=ns.field_selector,
            )
            if sel.kind.kind == "Event":
                objs.sort(
                    key=lambda e: printers.event_time(cast(core_pb2.Event, e)).ToNanoseconds()
                )
            results.append((sel, objs, rv))
        everything = [o for _, objs, _ in results for o in objs]
        single = len(selections) == 1 and len(selections[0].names) == 1
        printed_header = False
        if ns.output in ("yaml", "json", "name"):
            if everything or not (errors.count or ns.watch):
                _out(printers.render(everything, ns.output, single=single), flush=True)
        else:
            blocks = []
            for sel, objs, _ in results:
                if objs:
                    blocks.append(_table(sel.kind, objs, now, ns, prefix=len(selections) > 1))
            if blocks:
                printed_header = True
                _out("\n".join(blocks), flush=True)
        if not everything and not errors.count and not ns.watch:
            _err(_no_resources(target, [s.kind for s in selections], ns.all_namespaces))
        if ns.watch:
            sel, _, rv = results[0]
            await _watch(client, sel, target, ns, rv, printed_header)
    errors.check()


def _table(
    kind: Kind,
    objs: Sequence[Message],
    now: float,
    ns: argparse.Namespace,
    *,
    prefix: bool = False,
    header: bool = True,
) -> str:
    text = printers.table(
        kind,
        objs,
        now,
        wide=ns.output == "wide",
        with_namespace=ns.all_namespaces,
        with_header=header and not ns.no_headers,
        name_prefix=f"{_label(kind)}/" if prefix else "",
        show_labels=ns.show_labels,
    )
    return text


async def _watch(
    client: Client,
    sel: Selection,
    target: Target,
    ns: argparse.Namespace,
    rv: str,
    printed_header: bool,
) -> None:
    """`get -w`: print every change after `rv` until interrupted (re-watching on stream end)."""
    namespace = _namespace(sel.kind, target, all_namespaces=ns.all_namespaces)
    field_selector = ns.field_selector
    if len(sel.names) == 1:
        field_selector = f"metadata.name={sel.names[0]}"
    names = set(sel.names)
    while True:
        async for event in client.watch(
            sel.kind.plural,
            namespace=namespace,
            resource_version=rv,
            label_selector=ns.selector,
            field_selector=field_selector,
        ):
            obj = event.object
            rv = printers.meta(obj).resource_version or rv
            if event.type == "BOOKMARK" or (names and printers.meta(obj).name not in names):
                continue
            if ns.output in ("yaml", "json"):
                text = printers.render([obj], ns.output, single=True)
                _out(text if ns.output == "json" else "---\n" + text, flush=True)
            elif ns.output == "name":
                _out(printers.render([obj], "name", single=True), flush=True)
            else:
                text = _table(sel.kind, [obj], time.time(), ns, header=not printed_header)
                printed_header = True
                _out(text, flush=True)


async def cmd_describe(ns: argparse.Namespace, target: Target) -> None:
    selections = parse_selections(ns.resources, verb="describe")
    errors = _Errors()
    now = time.time()
    texts: list[str] = []
    async with _client(target, ns) as client:
        events_by_ns: dict[str | None, list[core_pb2.Event]] = {}
        for sel in selections:
            objs, _ = await _select(
                client,
                sel,
                target,
                errors,
                all_namespaces=ns.all_namespaces,
                label_selector=ns.selector,
            )
            for obj in objs:
                space = printers.meta(obj).namespace or None
                if space not in events_by_ns:
                    page = await client.list_all(core_pb2.Event, namespace=space)
                    events_by_ns[space] = list(page.items)
                related = [e for e in events_by_ns[space] if _describe.involves(e, obj)]
                texts.append(_describe.describe(obj, related, now))
        if not texts and not errors.count:
            _err(_no_resources(target, [s.kind for s in selections], ns.all_namespaces))
    _out("\n\n".join(texts))
    errors.check()


def _propagation(cascade: str) -> str:
    return {"background": "Background", "true": "Background", "foreground": "Foreground"}.get(
        cascade, "Orphan"
    )


async def cmd_delete(ns: argparse.Namespace, target: Target) -> None:
    if ns.filename and ns.resources:
        raise UsageError("when paths are given, no resource arguments may be given")
    by_file: list[tuple[Kind, str, str]] = []
    selections: list[Selection] = []
    if ns.filename:
        for obj in load_manifests(ns.filename, recursive=ns.recursive):
            kind = _place(obj, target, explicit_namespace=bool(ns.namespace))
            m = printers.meta(obj)
            by_file.append((kind, m.namespace, m.name))
        # Namespaces last: deleting one takes its contents along, which would turn the
        # deletes of the file's namespaced objects into NotFound errors.
        by_file.sort(key=lambda item: item[0].kind == "Namespace")
    else:
        selections = parse_selections(ns.resources, verb="delete")
        for sel in selections:
            if not sel.names and not (ns.all or ns.selector or ns.field_selector):
                raise UsageError(
                    "resource(s) were provided, but no name was specified "
                    "(use --all or -l to delete many)"
                )
            if sel.names and (ns.all or ns.selector):
                raise UsageError("name cannot be provided when a selector or --all is specified")
    grace = 1 if ns.now else (ns.grace_period if ns.grace_period >= 0 else None)
    policy = _propagation(ns.cascade)
    errors = _Errors()
    async with _client(target, ns) as client:
        for sel in selections:
            if sel.names:
                space = _namespace(sel.kind, target) or ""
                by_file += [(sel.kind, space, name) for name in sel.names]
                continue
            page = await client.list_all(
                sel.kind.plural,
                namespace=_namespace(sel.kind, target, all_namespaces=ns.all_namespaces),
                label_selector=ns.selector,
                field_selector=ns.field_selector,
            )
            if not page.items:
                _err(_no_resources(target, [sel.kind], ns.all_namespaces))
            for obj in page.items:
                m = printers.meta(obj)
                by_file.append((sel.kind, m.namespace, m.name))
        for kind, space, name in by_file:
            try:
                await client.delete(
                    kind.plural,
                    name,
                    namespace=space,
                    grace_period_seconds=grace,
                    propagation_policy=policy,
                )
            except NotFound as exc:
                if not ns.ignore_not_found:
                    errors.report(exc)
                continue
            except ClientError as exc:
                errors.report(exc)
                continue
            _out(f'{_label(kind)} "{name}" deleted\n')
    errors.check()


def _one_object(args: Sequence[str], verb: str) -> list[tuple[Kind, str]]:
    pairs = [(s.kind, n) for s in parse_selections(args, verb=verb) for n in s.names]
    if not pairs:
        raise UsageError(f"resource name may not be empty (k8semu {verb} KIND NAME)")
    return pairs


async def cmd_patch(ns: argparse.Namespace, target: Target) -> None:
    if ns.type != "merge":
        raise UsageError(f'--type {ns.type}: only "merge" (JSON merge patch) is supported')
    try:
        patch = yaml.safe_load(ns.patch)
    except yaml.YAMLError as exc:
        raise UsageError(f"unable to parse {ns.patch!r}: {exc}") from None
    if not isinstance(patch, dict):
        raise UsageError(f"unable to parse {ns.patch!r}: expected a JSON object")
    errors = _Errors()
    async with _client(target, ns) as client:
        for kind, name in _one_object(ns.resources, "patch"):
            space = _namespace(kind, target) or ""
            try:
                before = await client.get(kind.plural, name, namespace=space)
                after = await _patch(client, kind, name, space, patch, ns.subresource == "status")
            except ClientError as exc:
                errors.report(exc)
                continue
            same = printers.meta(after).resource_version == printers.meta(before).resource_version
            _out(f"{_label(kind)}/{name} patched{' (no change)' if same else ''}\n")
    errors.check()


async def cmd_scale(ns: argparse.Namespace, target: Target) -> None:
    if ns.replicas < 0:
        raise UsageError("--replicas: must be >= 0")
    pairs = _one_object(ns.resources, "scale")
    for kind, _ in pairs:
        if kind.kind not in ("Deployment", "ReplicaSet"):
            raise UsageError(f"cannot scale {kind.plural}: only deployments and replicasets")
    errors = _Errors()
    async with _client(target, ns) as client:
        for kind, name in pairs:
            space = _namespace(kind, target) or ""
            try:
                if ns.current_replicas >= 0:
                    live: Any = await client.get(kind.plural, name, namespace=space)
                    current = live.spec.replicas if live.spec.HasField("replicas") else 1
                    if current != ns.current_replicas:
                        raise UsageError(
                            f"Expected replicas to be {ns.current_replicas}, was {current}"
                        )
                patch = {"spec": {"replicas": ns.replicas}}
                await _patch(client, kind, name, space, patch, False)
            except (ClientError, UsageError) as exc:
                errors.report(exc)
                continue
            _out(f"{_label(kind)}/{name} scaled\n")
    errors.check()


async def cmd_label(ns: argparse.Namespace, target: Target, *, field: str) -> None:
    """`label` (field "labels") and `annotate` (field "annotations")."""
    what = field[:-1]  # "label", "annotation"
    words, edit_args = split_objects_and_edits(ns.args)
    edits = parse_map_edits(edit_args, what=what)
    pairs = _one_object(words, "label" if field == "labels" else "annotate")
    done = "labeled" if field == "labels" else "annotated"
    errors = _Errors()
    async with _client(target, ns) as client:
        for kind, name in pairs:
            space = _namespace(kind, target) or ""
            try:
                live = await client.get(kind.plural, name, namespace=space)
                current = dict(getattr(printers.meta(live), field))
                change: dict[str, str | None] = {}
                for key, value in edits.set.items():
                    if key in current and current[key] != value and not ns.overwrite:
                        raise UsageError(
                            f"'{key}' already has a value ({current[key]}), "
                            "and --overwrite is false"
                        )
                    if current.get(key) != value:
                        change[key] = value
                for key in edits.remove:
                    if key in current:
                        change[key] = None
                    else:
                        _err(f'{what} "{key}" not found.')
                if not change:
                    _out(f"{_label(kind)}/{name} not {done}\n")
                    continue
                await _patch(client, kind, name, space, {"metadata": {field: change}}, False)
            except (ClientError, UsageError) as exc:
                errors.report(exc)
                continue
            _out(f"{_label(kind)}/{name} {done}\n")
    errors.check()


def rollout_message(d: apps_pb2.Deployment) -> tuple[str, bool]:
    """kubectl's rollout status text for a Deployment, and whether the rollout is done."""
    name = d.metadata.name
    st = d.status
    if d.metadata.generation > st.observed_generation:
        return "Waiting for deployment spec update to be observed...", False
    want = d.spec.replicas if d.spec.HasField("replicas") else 1
    prefix = f'Waiting for deployment "{name}" rollout to finish: '
    if st.updated_replicas < want:
        return f"{prefix}{st.updated_replicas} out of {want} new replicas have been updated...", (
            False
        )
    if st.replicas > st.updated_replicas:
        old = st.replicas - st.updated_replicas
        return f"{prefix}{old} old replicas are pending termination...", False
    if st.available_replicas < st.updated_replicas:
        return (
            f"{prefix}{st.available_replicas} of {st.updated_replicas} updated replicas are "
            "available...",
            False,
        )
    return f'deployment "{name}" successfully rolled out', True


async def cmd_rollout(ns: argparse.Namespace, target: Target) -> None:
    pairs = _one_object(ns.resources, "rollout")
    for kind, _ in pairs:
        if kind.kind != "Deployment":
            raise UsageError(
                f"rollout {ns.action}: only deployments are supported, not {kind.plural}"
            )
    errors = _Errors()
    async with _client(target, ns) as client:
        for kind, name in pairs:
            space = _namespace(kind, target) or ""
            try:
                if ns.action == "restart":
                    now = timestamps.format_time(timestamps.now())
                    patch = {
                        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}
                    }
                    await _patch(client, kind, name, space, patch, False)
                    _out(f"{_label(kind)}/{name} restarted\n")
                elif ns.action == "history":
                    await _rollout_history(client, name, space, ns.revision)
                elif ns.action == "undo":
                    await _rollout_undo(client, name, space, ns.to_revision)
                else:
                    await _rollout_status(client, name, space, ns.timeout)
            except (ClientError, UsageError) as exc:
                errors.report(exc)
    errors.check()


async def _replica_sets(client: Client, namespace: str) -> list[apps_pb2.ReplicaSet]:
    page = await client.list_all(apps_pb2.ReplicaSet, namespace=namespace)
    return list(page.items)


async def _rollout_history(client: Client, name: str, namespace: str, revision: int) -> None:
    d = await client.get(apps_pb2.Deployment, name, namespace=namespace)
    sets = await _replica_sets(client, namespace)
    if revision > 0:
        _out(_rollout.revision_detail(d, sets, revision))
    else:
        _out(_rollout.history_table(d, sets))


async def _rollout_undo(client: Client, name: str, namespace: str, to_revision: int) -> None:
    """kubectl's client-side rollback: the chosen revision's template into the Deployment,
    written with the resourceVersion read (re-read and retried on Conflict)."""
    for attempt in range(_CONFLICT_RETRIES):
        d = await client.get(apps_pb2.Deployment, name, namespace=namespace)
        if d.spec.paused:
            raise UsageError(
                "you cannot rollback a paused deployment; resume it first with "
                f'\'k8semu patch deployment/{name} -p {{"spec":{{"paused":false}}}}\' and '
                "try again"
            )
        source = _rollout.rollback_source(d, await _replica_sets(client, namespace), to_revision)
        new = _rollout.rolled_back(d, source)
        if new is None:
            revision = source.metadata.annotations.get(_rollout.REVISION, "")
            _out(
                f"deployment.apps/{name} skipped rollback (current template already matches "
                f"revision {revision})\n"
            )
            return
        try:
            await client.update(new)
        except Conflict:
            if attempt == _CONFLICT_RETRIES - 1:
                raise
            continue
        _out(f"deployment.apps/{name} rolled back\n")
        return


async def _rollout_status(client: Client, name: str, namespace: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout if timeout > 0 else None
    last = ""
    while True:
        d = await client.get(apps_pb2.Deployment, name, namespace=namespace)
        text, done = rollout_message(d)
        if text != last:
            _out(text + "\n", flush=True)
            last = text
        if done:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise UsageError("timed out waiting for the condition")
        await asyncio.sleep(0.5)


async def cmd_api_resources(ns: argparse.Namespace, target: Target) -> None:
    async with _client(target, ns) as client:
        resources = await client.discovery()
    if ns.namespaced is not None:
        want = ns.namespaced == "true"
        resources = [r for r in resources if r.namespaced == want]
    resources.sort(key=lambda r: ("/" in r.api_version, r.api_version.split("/")[0], r.name))
    if ns.output == "name":
        for r in resources:
            group = r.api_version.rpartition("/")[0]
            _out(f"{r.name}.{group}\n" if group else f"{r.name}\n")
        return
    rows = [
        [r.name, ",".join(r.short_names), r.api_version, str(r.namespaced).lower(), r.kind]
        for r in resources
    ]
    _out(printers.render_table(["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"], rows))


async def cmd_version(ns: argparse.Namespace, target: Target) -> None:
    _out(f"Client Version: v{__version__} (k8semu)\n")
    if ns.client:
        return
    failures = 0
    for server in target.servers:
        client = Client([server], timeouts=Timeouts(call=ns.request_timeout), retries=NO_RETRIES)
        async with client:
            try:
                resources = await client.discovery()
            except ClientError as exc:
                failures += 1
                message = exc.message if isinstance(exc, APIStatusError) else str(exc)
                _out(f"Server {server}: not reachable ({message})\n")
                continue
        _out(f"Server {server}: reachable, serving {len(resources)} resource types\n")
    if failures:
        raise Failed


_HANDLERS: dict[str, Callable[[argparse.Namespace, Target], Coroutine[Any, Any, None]]] = {
    "apply": cmd_apply,
    "create": cmd_create,
    "get": cmd_get,
    "describe": cmd_describe,
    "delete": cmd_delete,
    "patch": cmd_patch,
    "scale": cmd_scale,
    "label": lambda ns, t: cmd_label(ns, t, field="labels"),
    "annotate": lambda ns, t: cmd_label(ns, t, field="annotations"),
    "rollout": cmd_rollout,
    "api-resources": cmd_api_resources,
    "version": cmd_version,
}


def main(argv: Sequence[str]) -> int:
    """Run one verb: `argv` is `[verb, args...]`. Returns the exit code."""
    verb, rest = argv[0], list(argv[1:])
    ns = _parser(verb).parse_intermixed_args(rest)
    try:
        target = _kubeconfig.resolve(
            server=ns.server,
            namespace=ns.namespace,
            kubeconfig=ns.kubeconfig,
            context=ns.context,
        )
        asyncio.run(_HANDLERS[verb](ns, target))
    except Failed:
        return 1
    except (UsageError, ConfigError, ManifestError, ClientError) as exc:
        _err(format_error(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
