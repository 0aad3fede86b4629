"""The verbs that write objects: apply, create, delete, patch, scale, label, annotate.

Bad arguments and bad manifests are found before the first request is sent, so a failing
`apply` of a multi-document file writes nothing; then each object is written on its own and
one failure does not stop the others.
"""

from __future__ import annotations

import argparse

import yaml
from google.protobuf.message import Message

from k8semu.api.kinds import Kind
from k8semu.cli import _apply
from k8semu.cli import _printers as printers
from k8semu.cli._kubeconfig import Target
from k8semu.cli._resources import (
    Selection,
    UsageError,
    load_manifests,
    parse_map_edits,
    parse_selections,
    split_objects_and_edits,
)
from k8semu.cli.verbs._shared import (
    CONFLICT_RETRIES,
    Errors,
    client_for,
    err,
    label_of,
    named_objects,
    namespace_for,
    no_resources,
    out,
    patch_object,
    place,
)
from k8semu.client import (
    AlreadyExists,
    Client,
    ClientError,
    Conflict,
    NotFound,
)


async def cmd_apply(ns: argparse.Namespace, target: Target) -> None:
    objs = load_manifests(ns.filename, recursive=ns.recursive)
    placed = [(obj, place(obj, target, explicit_namespace=bool(ns.namespace))) for obj in objs]
    for obj, _kind in placed:
        if printers.meta(obj).generate_name and not printers.meta(obj).name:
            raise UsageError("cannot use generate name with apply")
    errors = Errors()
    async with client_for(target, ns) as client:
        for obj, kind in placed:
            try:
                word = await _apply_one(client, obj, kind)
            except ClientError as exc:
                errors.report(exc)
                continue
            out(f"{printers.resource_name(obj)} {word}\n")
    errors.check()


async def _apply_one(client: Client, obj: Message, kind: Kind) -> str:
    m = printers.meta(obj)
    for attempt in range(CONFLICT_RETRIES):
        try:
            live: Message | None = await client.get(kind.resource, m.name, namespace=m.namespace)
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
            if attempt == CONFLICT_RETRIES - 1:
                raise
            continue
        before = printers.meta(live).resource_version
        return "unchanged" if printers.meta(updated).resource_version == before else "configured"
    raise AssertionError("unreachable")


async def cmd_create(ns: argparse.Namespace, target: Target) -> None:
    objs = load_manifests(ns.filename, recursive=ns.recursive)
    for obj in objs:
        place(obj, target, explicit_namespace=bool(ns.namespace))
    errors = Errors()
    async with client_for(target, ns) as client:
        for obj in objs:
            try:
                created = await client.create(obj)
            except ClientError as exc:
                errors.report(exc)
                continue
            out(f"{printers.resource_name(created)} created\n")
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
            kind = place(obj, target, explicit_namespace=bool(ns.namespace))
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
    errors = Errors()
    async with client_for(target, ns) as client:
        for sel in selections:
            if sel.names:
                space = namespace_for(sel.kind, target) or ""
                by_file += [(sel.kind, space, name) for name in sel.names]
                continue
            page = await client.list_all(
                sel.kind.resource,
                namespace=namespace_for(sel.kind, target, all_namespaces=ns.all_namespaces),
                label_selector=ns.selector,
                field_selector=ns.field_selector,
            )
            if not page.items:
                err(no_resources(target, [sel.kind], ns.all_namespaces))
            for obj in page.items:
                m = printers.meta(obj)
                by_file.append((sel.kind, m.namespace, m.name))
        for kind, space, name in by_file:
            try:
                await client.delete(
                    kind.resource,
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
            out(f'{label_of(kind)} "{name}" deleted\n')
    errors.check()


async def cmd_patch(ns: argparse.Namespace, target: Target) -> None:
    try:
        patch = yaml.safe_load(ns.patch)
    except yaml.YAMLError as exc:
        raise UsageError(f"unable to parse {ns.patch!r}: {exc}") from None
    if ns.type == "json" and not isinstance(patch, list):
        raise UsageError(f"unable to parse {ns.patch!r}: expected a JSON array of operations")
    if ns.type != "json" and not isinstance(patch, dict):
        raise UsageError(f"unable to parse {ns.patch!r}: expected a JSON object")
    errors = Errors()
    async with client_for(target, ns) as client:
        for kind, name in named_objects(ns.resources, "patch"):
            space = namespace_for(kind, target) or ""
            try:
                before = await client.get(kind.resource, name, namespace=space)
                status = ns.subresource == "status"
                if ns.type == "merge":
                    after = await patch_object(client, kind, name, space, patch, status)
                else:  # no client-side fallback: only the server knows these types
                    after = await client.patch(
                        kind.resource, name, patch, namespace=space, status=status,
                        patch_type=ns.type,
                    )  # fmt: skip
            except ClientError as exc:
                errors.report(exc)
                continue
            same = printers.meta(after).resource_version == printers.meta(before).resource_version
            out(f"{label_of(kind)}/{name} patched{' (no change)' if same else ''}\n")
    errors.check()


async def cmd_scale(ns: argparse.Namespace, target: Target) -> None:
    if ns.replicas < 0:
        raise UsageError("--replicas: must be >= 0")
    pairs = named_objects(ns.resources, "scale")
    for kind, _ in pairs:
        if kind.kind not in ("Deployment", "ReplicaSet"):
            raise UsageError(f"cannot scale {kind.plural}: only deployments and replicasets")
    errors = Errors()
    async with client_for(target, ns) as client:
        for kind, name in pairs:
            space = namespace_for(kind, target) or ""
            try:
                await _scale(client, kind, name, space, ns.replicas, ns.current_replicas)
            except (ClientError, UsageError) as exc:
                errors.report(exc)
                continue
            out(f"{label_of(kind)}/{name} scaled\n")
    errors.check()


async def _scale(
    client: Client, kind: Kind, name: str, namespace: str, replicas: int, current: int
) -> None:
    """Through the scale subresource, as kubectl: with a --current-replicas precondition,
    read the Scale, check it and write with its resourceVersion (re-checked on a conflict);
    without one, set the count whatever it is."""
    if current < 0:
        await client.update_scale(kind.resource, name, replicas, namespace=namespace)
        return
    for attempt in range(CONFLICT_RETRIES):
        scale = await client.get_scale(kind.resource, name, namespace=namespace)
        if scale.spec_replicas != current:
            raise UsageError(f"Expected replicas to be {current}, was {scale.spec_replicas}")
        try:
            await client.update_scale(
                kind.resource,
                name,
                replicas,
                namespace=namespace,
                resource_version=scale.resource_version,
            )
            return
        except Conflict:
            if attempt == CONFLICT_RETRIES - 1:
                raise


async def cmd_label(ns: argparse.Namespace, target: Target) -> None:
    await _edit_map(ns, target, field="labels")


async def cmd_annotate(ns: argparse.Namespace, target: Target) -> None:
    await _edit_map(ns, target, field="annotations")


async def _edit_map(ns: argparse.Namespace, target: Target, *, field: str) -> None:
    """`label` (field "labels") and `annotate` (field "annotations")."""
    what = field[:-1]  # "label", "annotation"
    words, edit_args = split_objects_and_edits(ns.args)
    edits = parse_map_edits(edit_args, what=what)
    pairs = named_objects(words, "label" if field == "labels" else "annotate")
    done = "labeled" if field == "labels" else "annotated"
    errors = Errors()
    async with client_for(target, ns) as client:
        for kind, name in pairs:
            space = namespace_for(kind, target) or ""
            try:
                live = await client.get(kind.resource, name, namespace=space)
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
                        err(f'{what} "{key}" not found.')
                if not change:
                    out(f"{label_of(kind)}/{name} not {done}\n")
                    continue
                await patch_object(client, kind, name, space, {"metadata": {field: change}}, False)
            except (ClientError, UsageError) as exc:
                errors.report(exc)
                continue
            out(f"{label_of(kind)}/{name} {done}\n")
    errors.check()
