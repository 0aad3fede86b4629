"""The verbs that only read: get (tables, -o yaml/json/name, -w), describe, api-resources,
version."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import cast

from google.protobuf.message import Message

from k8semu import __version__
from k8semu.api.kinds import Kind
from k8semu.cli import _describe
from k8semu.cli import _printers as printers
from k8semu.cli._kubeconfig import Target
from k8semu.cli._resources import (
    Selection,
    UsageError,
    parse_selections,
)
from k8semu.cli.verbs._shared import (
    Errors,
    Failed,
    client_for,
    err,
    label_of,
    namespace_for,
    no_resources,
    out,
    select,
)
from k8semu.client import (
    NO_RETRIES,
    APIStatusError,
    Client,
    ClientError,
    Timeouts,
)
from k8semu.pb.api.v1 import core_pb2


async def cmd_get(ns: argparse.Namespace, target: Target) -> None:
    selections = parse_selections(ns.resources, verb="get")
    if ns.watch and len(selections) > 1:
        raise UsageError("you may only specify a single resource type with --watch")
    errors = Errors()
    now = time.time()
    results: list[tuple[Selection, list[Message], str]] = []
    async with client_for(target, ns) as client:
        for sel in selections:
            objs, rv = await select(
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
                out(
                    printers.render(
                        everything,
                        ns.output,
                        single=single,
                        managed_fields=ns.show_managed_fields,
                    ),
                    flush=True,
                )
        else:
            blocks = []
            for sel, objs, _ in results:
                if objs:
                    blocks.append(_table(sel.kind, objs, now, ns, prefix=len(selections) > 1))
            if blocks:
                printed_header = True
                out("\n".join(blocks), flush=True)
        if not everything and not errors.count and not ns.watch:
            err(no_resources(target, [s.kind for s in selections], ns.all_namespaces))
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
        name_prefix=f"{label_of(kind)}/" if prefix else "",
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
    namespace = namespace_for(sel.kind, target, all_namespaces=ns.all_namespaces)
    field_selector = ns.field_selector
    if len(sel.names) == 1:
        field_selector = f"metadata.name={sel.names[0]}"
    names = set(sel.names)
    while True:
        async for event in client.watch(
            sel.kind.resource,
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
                text = printers.render(
                    [obj], ns.output, single=True, managed_fields=ns.show_managed_fields
                )
                out(text if ns.output == "json" else "---\n" + text, flush=True)
            elif ns.output == "name":
                out(printers.render([obj], "name", single=True), flush=True)
            else:
                text = _table(sel.kind, [obj], time.time(), ns, header=not printed_header)
                printed_header = True
                out(text, flush=True)


async def cmd_describe(ns: argparse.Namespace, target: Target) -> None:
    selections = parse_selections(ns.resources, verb="describe")
    errors = Errors()
    now = time.time()
    texts: list[str] = []
    async with client_for(target, ns) as client:
        events_by_ns: dict[str | None, list[core_pb2.Event]] = {}
        for sel in selections:
            objs, _ = await select(
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
            err(no_resources(target, [s.kind for s in selections], ns.all_namespaces))
    out("\n\n".join(texts))
    errors.check()


async def cmd_api_resources(ns: argparse.Namespace, target: Target) -> None:
    async with client_for(target, ns) as client:
        resources = await client.discovery()
    if ns.namespaced is not None:
        want = ns.namespaced == "true"
        resources = [r for r in resources if r.namespaced == want]
    resources.sort(key=lambda r: ("/" in r.api_version, r.api_version.split("/")[0], r.name))
    if ns.output == "name":
        for r in resources:
            group = r.api_version.rpartition("/")[0]
            out(f"{r.name}.{group}\n" if group else f"{r.name}\n")
        return
    rows = [
        [r.name, ",".join(r.short_names), r.api_version, str(r.namespaced).lower(), r.kind]
        for r in resources
    ]
    out(printers.render_table(["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"], rows))


async def cmd_version(ns: argparse.Namespace, target: Target) -> None:
    out(f"Client Version: v{__version__} (k8semu)\n")
    if ns.client:
        return
    failures = 0
    for server in target.servers:
        client = Client(
            [server],
            timeouts=Timeouts(call=ns.request_timeout),
            retries=NO_RETRIES,
            tls=target.tls(),
        )
        async with client:
            try:
                resources = await client.discovery()
            except ClientError as exc:
                failures += 1
                message = exc.message if isinstance(exc, APIStatusError) else str(exc)
                out(f"Server {server}: not reachable ({message})\n")
                continue
        out(f"Server {server}: reachable, serving {len(resources)} resource types\n")
    if failures:
        raise Failed
