"""Plain SPDY/3.1 upgrades of pods/exec, pods/attach and pods/portforward: what kubectl uses
when WebSockets are off (`KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`,
`KUBECTL_PORT_FORWARD_WEBSOCKETS=false`) or fail, and what kubectl before 1.30 always used.

The version is negotiated from the client's `X-Stream-Protocol-Version` headers
(`v4.channel.k8s.io` for exec and attach, `portforward.k8s.io`), the answer is `101 Switching
Protocols`, and the connection's bytes from then on are SPDY frames (`spdy.py`): aiohttp hands
them to `_Bytes` (a payload parser that queues them, pausing the socket when the queue is
long), frames go out through the 101 response. For exec the client opens one stream per
channel (`streamtype`: error, stdin, stdout, stderr, resize); once the expected ones are open
the kubelet's Interact call is joined to them and the end is a metav1.Status on the error
stream, as over WebSocket (`channels.exit_status`). Port-forward runs `tunnel.Tunnel` on the
connection itself. Nothing outlives the client: its end, a broken frame or GOAWAY cancels the
kubelet call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import grpc
from aiohttp import web

from k8semu.apiserver.rest import channels, spdy
from k8semu.apiserver.rest.status import HTTPError
from k8semu.log import get_logger
from k8semu.pb.kubelet.v1 import kubelet_pb2

log = get_logger(__name__)

EXEC_VERSIONS = ("v4.channel.k8s.io",)
PORTFORWARD_VERSIONS = ("portforward.k8s.io",)
STREAMS_TIMEOUT = 30.0  # seconds for the client to open the streams it asked for
_QUEUED = 64  # chunks queued before the socket stops being read


def is_spdy(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower().startswith("spdy/")


def negotiate(request: web.Request, supported: Sequence[str]) -> str:
    """The client's first offered version that is supported; 400 as Kubernetes words it."""
    offered = channels.listed(request, "X-Stream-Protocol-Version")
    for version in offered:
        if version in supported:
            return version
    raise HTTPError(
        400,
        "BadRequest",
        f"unable to upgrade: unable to negotiate protocol: client supports {offered}, server"
        f" supports {list(supported)}",
    )


class _Bytes:
    """aiohttp's payload parser for an upgraded connection: the bytes, queued for `chunks`."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.paused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.queue.put_nowait(bytes(data))
        if self.queue.qsize() > _QUEUED and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(b"")

    async def chunks(self) -> AsyncIterator[bytes]:
        while data := await self.queue.get():
            if self.paused and self.queue.qsize() < _QUEUED // 2:
                self.paused = False
                with contextlib.suppress(AttributeError, RuntimeError):
                    self.transport.resume_reading()
            yield data


class _Switched(web.StreamResponse):
    """A 101 whose body is the new protocol's bytes (no length, no chunking)."""

    _length_check = False


async def upgrade(request: web.Request, version: str) -> tuple[web.StreamResponse, _Bytes]:
    headers = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
    headers["X-Stream-Protocol-Version"] = version
    response = _Switched(status=101, headers=headers)
    response.force_close()
    await response.prepare(request)
    reader = _Bytes(request.transport)
    cast(Any, request.protocol).set_parser(reader)
    return response, reader


async def portforward(request: web.Request, tunnel: Any) -> web.StreamResponse:
    """kubectl port-forward over plain SPDY: `tunnel` (a tunnel.Tunnel) on the connection."""
    version = negotiate(request, PORTFORWARD_VERSIONS)
    response, reader = await upgrade(request, version)
    await tunnel.run(reader.chunks(), response.write)
    return response


class Exec:
    """One exec or attach over plain SPDY: the kubelet `Interact` call (started) joined to the
    client's streams once those `start` asks for are open."""

    def __init__(self, call: Any, start: kubelet_pb2.ExecStart, command: Sequence[str]) -> None:
        self.call = call
        self.command = list(command)
        self.expected = {"error"}
        self.expected |= {name for name in ("stdin", "stdout") if getattr(start, name)}
        self.expected |= {"stderr"} if start.stderr and not start.tty else set()
        self.expected |= {"resize"} if start.tty else set()
        self.spdy = spdy.Connection()
        self.lock = asyncio.Lock()
        self.streams: dict[str, int] = {}  # streamtype -> stream id
        self.ready = asyncio.Event()
        self.response: web.StreamResponse | None = None

    async def serve(self, request: web.Request) -> web.StreamResponse:
        version = negotiate(request, EXEC_VERSIONS)
        self.response, reader = await upgrade(request, version)
        await channels.first_done(
            asyncio.create_task(self._to_client()),
            asyncio.create_task(self._from_client(reader)),
        )
        return self.response

    async def _send(self, frames: bytes) -> None:
        assert self.response is not None
        async with self.lock:
            with contextlib.suppress(ConnectionError):
                await self.response.write(frames)

    async def _to_client(self) -> None:
        try:
            async with asyncio.timeout(STREAMS_TIMEOUT):
                await self.ready.wait()
        except TimeoutError:
            log.info("exec over SPDY: the client did not open its streams", have=self.streams)
            return
        status = await self._outputs()
        error = self.streams["error"]
        await self._send(self.spdy.data(error, json.dumps(status).encode(), fin=True))
        for name, sid in self.streams.items():
            if name not in ("error", "stdin", "resize"):
                await self._send(self.spdy.data(sid, b"", fin=True))

    async def _outputs(self) -> dict[str, Any]:
        """The process's output to its streams; the Status that ends the exec."""
        try:
            while (out := await self.call.read()) is not grpc.aio.EOF:
                for name in ("stdout", "stderr"):
                    data = getattr(out, name)
                    if data and name in self.streams:
                        await self._send(self.spdy.data(self.streams[name], data))
                if out.HasField("exit_code"):
                    return channels.exit_status(out.exit_code, self.command)
        except grpc.aio.AioRpcError as exc:
            return channels.failure(f"error from the kubelet: {exc.details()}")
        return channels.failure("the kubelet ended the stream without an exit code")

    async def _from_client(self, reader: _Bytes) -> None:
        await spdy.drive(self.spdy, reader.chunks(), self._send, self._handle, "exec over SPDY")

    async def _handle(self, event: spdy.Event) -> None:
        if isinstance(event, spdy.StreamOpened):
            await self._send(self.spdy.reply(event.stream_id))
            self.streams[event.headers.get("streamtype", "")] = event.stream_id
            if self.expected <= set(self.streams):
                self.ready.set()
        elif isinstance(event, spdy.Data):
            await self._data(event)
        elif isinstance(event, spdy.GoAway):
            raise ConnectionError("the client went away")

    async def _data(self, event: spdy.Data) -> None:
        kind = next((k for k, sid in self.streams.items() if sid == event.stream_id), "")
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            if kind == "stdin":
                if event.data:
                    await self.call.write(kubelet_pb2.InteractInput(stdin=event.data))
                if event.fin:
                    await self.call.write(kubelet_pb2.InteractInput(stdin_closed=True))
            elif kind == "resize":
                for line in event.data.splitlines():
                    size = channels.terminal_size(line)
                    if size is not None:
                        await self.call.write(kubelet_pb2.InteractInput(resize=size))
