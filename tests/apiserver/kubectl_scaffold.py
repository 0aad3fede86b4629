"""Test scaffolding: a small aiohttp server that kubectl 1.32 can talk to, until the REST server
(issue 14) serves the real thing. It serves discovery stubs built from the kinds registry, the
real OpenAPI documents (k8semu.apiserver.openapi), and an in-memory object map for namespaced
kinds that goes through the real patch code (k8semu.apiserver.patch): POST stores, GET reads,
PATCH parses by content type and applies. No defaulting, validation or storage: only what lets
kubectl's own patches be checked against the server's merge rules. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

from k8semu.api import kinds, manifest
from k8semu.apiserver import openapi, patch
from k8semu.apiserver.errors import Invalid


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    content_type: str
    body: bytes


@dataclass
class Scaffold:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    objects: dict[tuple[str, str, str], Message] = field(default_factory=dict)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


def _resources(group: str, version: str) -> dict[str, Any]:
    verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [
            {
                "name": k.plural,
                "singularName": k.singular,
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": verbs if k.stored else ["get", "list"],
                "shortNames": list(k.short_names),
            }
            for k in kinds.all_kinds()
            if (k.group, k.version) == (group, version) and k.list_message is not None
        ],
    }


def _groups() -> dict[str, Any]:
    served: dict[str, list[str]] = {}
    for group, version in openapi.group_versions():
        if group:
            served.setdefault(group, []).append(version)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": g,
                "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
            }
            for g, vs in served.items()
        ],
    }


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
            "code": code, "message": message}  # fmt: skip
    return web.json_response(body, status=code)


def _without_field_validation(document: bytes) -> bytes:
    """A v3 document as a server that does not take fieldValidation would publish it."""
    doc = json.loads(document)
    for item in doc["paths"].values():
        for op in item.values():
            if isinstance(op, dict):
                op["parameters"] = [
                    p for p in op.get("parameters", []) if p["name"] != "fieldValidation"
                ]
    return json.dumps(doc).encode()


def _discovery(path: str, accept: str, field_validation: bool) -> web.StreamResponse | None:
    if path == "/version":
        return web.json_response({"major": "1", "minor": "32", "gitVersion": "v1.32.0"})
    if path == "/api":
        return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
    if path == "/apis":
        return web.json_response(_groups())
    parts = path.strip("/").split("/")
    if parts == ["api", "v1"]:
        return web.json_response(_resources("", "v1"))
    if parts[0] == "apis" and len(parts) == 3:
        return web.json_response(_resources(parts[1], parts[2]))
    if path == "/openapi/v2":
        body, content_type, _ = openapi.openapi_v2_for(accept)
        return web.Response(body=body, content_type=content_type)
    if path == "/openapi/v3":
        return web.json_response(openapi.openapi_v3_index())
    found = openapi.openapi_v3_path(path.removeprefix("/openapi/v3/"))
    if path.startswith("/openapi/v3/") and found is not None:
        body = found[0] if field_validation else _without_field_validation(found[0])
        return web.Response(body=body, content_type="application/json")
    return None


async def _objects(scaffold: Scaffold, request: web.Request, body: bytes) -> web.StreamResponse:
    # /api/v1/namespaces/NS/PLURAL[/NAME] or /apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME]
    parts = request.path.strip("/").split("/")
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if len(rest) not in (3, 4) or rest[0] != "namespaces":
        return _status(404, "NotFound", f"{request.path} not found")
    group = parts[1] if parts[0] == "apis" else ""
    kind = kinds.for_resource(f"{rest[2]}.{group}" if group else rest[2])
    namespace = rest[1]
    if request.method == "POST" and len(rest) == 3:
        obj = manifest.from_dict(json.loads(body))
        meta = getattr(obj, "metadata")  # noqa: B009 - every stored kind has metadata
        meta.namespace, meta.uid, meta.resource_version = namespace, "uid-1", "1"
        scaffold.objects[(kind.plural, namespace, meta.name)] = obj
        return web.json_response(manifest.to_dict(obj), status=201)
    key = (kind.plural, namespace, rest[3] if len(rest) == 4 else "")
    obj = scaffold.objects.get(key)
    if obj is None:
        return _status(404, "NotFound", f'{kind.plural} "{key[2]}" not found')
    if request.method == "PATCH":
        content_type = request.headers.get("Content-Type", "").split(";")[0]
        try:
            new = patch.apply(kind, obj, patch.parse(kind, key[2], content_type, body))
        except Invalid as exc:
            return _status(422, "Invalid", exc.message)
        meta = getattr(new, "metadata")  # noqa: B009
        meta.resource_version = str(int(getattr(obj, "metadata").resource_version) + 1)  # noqa: B009
        scaffold.objects[key] = obj = new
    return web.json_response(manifest.to_dict(obj))


@asynccontextmanager
async def serving(*, field_validation: bool = True) -> AsyncIterator[Scaffold]:
    """The scaffold on a free loopback port, for the duration of the block. Without
    `field_validation` the v3 documents leave that parameter out, so kubectl validates
    manifests itself, with the v2 document."""
    scaffold = Scaffold(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        scaffold.requests.append(
            Recorded(request.method, request.path, request.query_string,
                     request.headers.get("Content-Type", ""), body)
        )  # fmt: skip
        accept = request.headers.get("Accept", "")
        found = (
            _discovery(request.path, accept, field_validation) if request.method == "GET" else None
        )
        return found if found is not None else await _objects(scaffold, request, body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    scaffold.url = f"http://{host}:{port}"
    try:
        yield scaffold
    finally:
        await runner.cleanup()


async def kubectl(
    server: str, home: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run kubectl against `server` with its own HOME and cache; (exit code, stdout+stderr)."""
    environ = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "none"), **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        "kubectl", f"--server={server}", f"--cache-dir={home / 'cache'}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=environ,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()
