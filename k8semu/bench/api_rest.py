"""``k8semu bench api --protocol rest``: the same calls and watches over the REST API.

The workload, pacing and figures are ``api.py``'s; this module owns only the transport: the
calls as Kubernetes JSON over HTTP/1.1 (aiohttp, one keep-alive connection pool as a client
library has) and the watches as chunked JSON-line streams, one connection each. Requests are
encoded up front, as the gRPC side serializes them up front; responses are parsed only where
a figure needs them (a create's resourceVersion).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from k8semu.api import manifest
from k8semu.pb.api.v1 import core_pb2

_JSON = {"Content-Type": "application/json"}


def phase_op(calls: Any, phase: str) -> Callable[[int], Awaitable[None]]:
    """The method of `calls` (either protocol's) that makes call i of `phase`."""
    name = "list_" if phase == "list" else phase
    op: Callable[[int], Awaitable[None]] = getattr(calls, name)
    return op


class RESTError(Exception):
    """A call answered with an error Status (or not at all)."""


def session(connections: int) -> aiohttp.ClientSession:
    """A client session of at most `connections` keep-alive connections, no proxy."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, force_close=False),
        trust_env=False,
    )


async def watch_events(
    client: aiohttp.ClientSession, url: str, namespace: str
) -> AsyncIterator[tuple[str, bytes]]:
    """The watch stream of pods in `namespace` from now: (event type, the event's line)."""
    path = f"{url}/api/v1/namespaces/{namespace}/pods?watch=1&resourceVersion=0"
    path += "&timeoutSeconds=3600"
    async with client.get(path, timeout=aiohttp.ClientTimeout(total=None)) as resp:
        if resp.status != 200:
            raise RESTError(f"watch: {resp.status} {await resp.text()}")
        async for line in resp.content:
            # {"type":"ADDED",...: the server writes the type first.
            yield line[9 : line.index(b'"', 9)].decode(), line


@dataclass(eq=False, kw_only=True)
class RESTCalls:
    """The phases' calls on pod i over REST (``api._Calls``' interface); `acked` the arrays
    the mutating calls stamp (created, updated, deleted) for the watch figures."""

    url: str
    namespace: str
    names: Sequence[str]
    prefix: str
    pod: Callable[[str], core_pb2.Pod]
    list_limit: int
    timeout: aiohttp.ClientTimeout
    writers: int
    stamp: Callable[[int, int], None]
    versions: list[str] = field(init=False)
    creates: list[bytes] = field(init=False, default_factory=list)
    sentinels: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.client = session(self.writers)
        self.pods = f"{self.url}/api/v1/namespaces/{self.namespace}/pods"
        self.versions = [""] * len(self.names)

    async def _call(self, method: str, url: str, body: bytes | None, headers: Any) -> bytes:
        try:
            async with self.client.request(
                method, url, data=body, headers=headers, timeout=self.timeout
            ) as resp:
                data = await resp.read()
                if resp.status >= 300:
                    raise RESTError(f"{resp.status}: {data[:200].decode(errors='replace')}")
                return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RESTError(f"{method} {url}: {exc!r}") from exc

    def _body(self, name: str) -> bytes:
        return json.dumps(manifest.to_dict(self.pod(name))).encode()

    async def create_namespace(self) -> None:
        doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        with contextlib.suppress(RESTError):  # AlreadyExists on a reused server
            await self._call(
                "POST", f"{self.url}/api/v1/namespaces", json.dumps(doc).encode(), _JSON
            )

    async def poke(self) -> None:
        """Create one more sentinel pod (see ``api._Watchers.wait_ready``)."""
        self.sentinels.append(f"{self.prefix}-ready-{len(self.sentinels)}")
        await self._call("POST", self.pods, self._body(self.sentinels[-1]), _JSON)

    def prepare(self) -> None:
        self.creates = [self._body(name) for name in self.names]

    async def create(self, i: int) -> None:
        data = await self._call("POST", self.pods, self.creates[i], _JSON)
        self.stamp(0, i)
        self.versions[i] = json.loads(data)["metadata"]["resourceVersion"]

    async def get(self, i: int) -> None:
        await self._call("GET", f"{self.pods}/{self.names[i]}", None, None)

    async def list_(self, i: int) -> None:
        await self._call("GET", f"{self.pods}?limit={self.list_limit}", None, None)

    async def update(self, i: int) -> None:
        doc = manifest.to_dict(self.pod(self.names[i]))
        doc["metadata"]["resourceVersion"] = self.versions[i]
        doc["metadata"]["labels"]["updated"] = "true"
        url = f"{self.pods}/{self.names[i]}"
        await self._call("PUT", url, json.dumps(doc).encode(), _JSON)
        self.stamp(1, i)

    async def delete(self, i: int) -> None:
        await self._call("DELETE", f"{self.pods}/{self.names[i]}?gracePeriodSeconds=0", None, None)
        self.stamp(2, i)

    def op(self, phase: str) -> Callable[[int], Awaitable[None]]:
        return phase_op(self, phase)

    async def delete_sentinels(self) -> None:
        for name in self.sentinels:
            with contextlib.suppress(RESTError):
                await self._call("DELETE", f"{self.pods}/{name}?gracePeriodSeconds=0", None, None)

    async def close(self) -> None:
        await self.client.close()
