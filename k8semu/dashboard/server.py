"""Dashboard: serves the page's files and `/dashboard/api/store` from the API server's REST port.

Same origin as the REST API, so the page needs no CORS and fails over by opening another API
server. It owns only what the Kubernetes API does not carry: each store member's etcd
Maintenance Status (leader, Raft term and index, database size, alarms and errors), read-only.
Everything else the page reads through the REST API like any other client.

Every answer is total: an unknown file is 404, a method other than GET/HEAD is 405, a body
over the REST face's limit is 413 (all as metav1.Status, raised as HTTPError for the REST
server's boundary to encode); nothing here writes anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import mimetypes
from collections.abc import Sequence
from typing import Any

import grpc
from aiohttp import web

from k8semu import transport
from k8semu.apiserver.rest import codec
from k8semu.apiserver.rest.status import HTTPError
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

PREFIX = "/dashboard"
STORE_PATH = f"{PREFIX}/api/store"
# A member that does not answer this fast is shown as unreachable; the page polls.
_STATUS_DEADLINE = 1.0
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}


def _load_static() -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, content type, etag) of every file shipped under static/, read once."""
    files: dict[str, tuple[bytes, str, str]] = {}
    root = importlib.resources.files("k8semu.dashboard") / "static"
    for item in root.iterdir():
        if not item.is_file():
            continue
        data = item.read_bytes()
        suffix = "." + item.name.rpartition(".")[2]
        ctype = (
            _TYPES.get(suffix) or mimetypes.guess_type(item.name)[0] or "application/octet-stream"
        )
        files[item.name] = (data, ctype, hashlib.sha256(data).hexdigest()[:16])
    return files


class Dashboard:
    """The /dashboard/ routes of one API server; `store_endpoints` are its store's members."""

    def __init__(
        self,
        store_endpoints: Sequence[str],
        max_body: int,
        store_tls: transport.ClientTLS | None = None,
    ) -> None:
        self.store_endpoints = list(store_endpoints)
        self.store_tls = store_tls
        self.max_body = max_body
        self.files = _load_static()
        self._channels: dict[str, grpc.aio.Channel] = {}

    @staticmethod
    def owns(path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if (request.content_length or 0) > self.max_body:
            raise HTTPError(
                413, "RequestEntityTooLarge", f"the request body is over {self.max_body} bytes"
            )
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(
                405, "MethodNotAllowed", f"{request.method} {path}: the dashboard is read-only"
            )
        if path == PREFIX:
            raise web.HTTPPermanentRedirect(PREFIX + "/")
        if path == STORE_PATH:
            return web.Response(
                body=codec.dumps(await self.store_status()),
                content_type=codec.JSON,
                headers={"Cache-Control": "no-store"},
            )
        name = path[len(PREFIX) + 1 :] or "index.html"
        found = self.files.get(name)
        if found is None:
            raise HTTPError(404, "NotFound", f"the dashboard has no file {path}")
        data, ctype, etag = found
        tag = f'"{etag}"'
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers={"ETag": tag})
        # no-cache: the browser revalidates (304), so an upgraded package shows at once. The
        # page itself is no-store, which keeps it out of Chromium's back/forward cache: a
        # cached page kept its watches open there, and with the origin's six connections
        # taken the next page load waited ~40 s (measured, Chromium 156).
        cache = "no-store" if name == "index.html" else "no-cache"
        return web.Response(
            body=data, headers={"Content-Type": ctype, "ETag": tag, "Cache-Control": cache}
        )

    async def store_status(self) -> dict[str, Any]:
        """Every member's etcd Maintenance Status, asked concurrently with a short deadline."""
        members = await asyncio.gather(*(self._member(e) for e in self.store_endpoints))
        return {"kind": "StoreStatus", "members": members}

    async def _member(self, endpoint: str) -> dict[str, Any]:
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = self._channels[endpoint] = transport.channel(endpoint, self.store_tls)
        stub = rpc_pb2_grpc.MaintenanceStub(channel)
        try:
            st = await stub.Status(rpc_pb2.StatusRequest(), timeout=_STATUS_DEADLINE)
        except grpc.aio.AioRpcError as exc:
            return {
                "endpoint": endpoint,
                "healthy": False,
                "error": f"{exc.code().name}: {exc.details()}",
            }
        return {
            "endpoint": endpoint,
            "healthy": not st.errors,
            "memberID": str(st.header.member_id),
            "leader": str(st.leader),
            "isLeader": st.leader != 0 and st.leader == st.header.member_id,
            "raftTerm": st.raftTerm,
            "raftIndex": st.raftIndex,
            "raftAppliedIndex": st.raftAppliedIndex,
            "dbSize": st.dbSize,
            "dbSizeInUse": st.dbSizeInUse,
            "version": st.version,
            "errors": list(st.errors),
        }

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()
