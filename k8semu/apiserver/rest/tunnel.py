"""kubectl's port-forward over SPDY: tunnelled in a WebSocket's binary messages
(`SPDY/3.1+portforward.k8s.io`), or on the connection itself after a plain SPDY/3.1 upgrade
(`spdyupgrade.py`); each forwarded connection a pair of streams (error, data)
joined by their `requestid`, each data stream one kubelet `PortForward` call.

Owns the tunnel's lifetime: every kubelet call ends when its stream is reset, the client
closes the WebSocket, or the framing breaks; nothing outlives the client. The framing itself
is `spdy.py`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web

from k8semu.apiserver.rest import channels, spdy
from k8semu.pb.kubelet.v1 import kubelet_pb2

PROTOCOL = "SPDY/3.1+portforward.k8s.io"
MAX_CONNECTIONS = 64  # forwarded connections open at once in one tunnel

OpenCall = Callable[[int], Awaitable[Any]]


class Tunnel:
    """One kubectl port-forward session; `open_call(port)` starts a kubelet PortForward call
    to the pod's `port` (its first message sent)."""

    def __init__(self, open_call: OpenCall) -> None:
        self.open_call = open_call
        self.spdy = spdy.Connection()
        self.lock = asyncio.Lock()  # frames leave whole and in the order they were made
        self.error_streams: dict[str, int] = {}  # requestid -> its error stream
        self.calls: dict[int, Any] = {}  # data stream -> its kubelet call
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.write: Callable[[bytes], Awaitable[None]] | None = None

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = await channels.open_websocket(request, PROTOCOL)

        async def chunks() -> AsyncIterator[bytes]:
            async for msg in ws:
                if data := channels.payload(msg):
                    yield data

        try:
            await self.run(chunks(), ws.send_bytes)
        finally:
            await ws.close()
        return ws

    async def run(
        self, chunks: AsyncIterator[bytes], write: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """The SPDY byte stream `chunks` from the client, `write` to it, until either ends."""
        self.write = write
        try:
            await spdy.drive(self.spdy, chunks, self._send, self._handle, "port-forward tunnel")
        finally:
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def _send(self, frames: bytes) -> None:
        assert self.write is not None
        with contextlib.suppress(ConnectionError):
            await self.write(frames)

    async def _frame(self, make: Callable[[], bytes]) -> None:
        async with self.lock:
            await self._send(make())

    async def _handle(self, event: spdy.Event) -> None:
        if isinstance(event, spdy.StreamOpened):
            await self._opened(event)
        elif isinstance(event, spdy.Data):
            call = self.calls.get(event.stream_id)
            if call is None:
                return  # the error stream's end, or a stream already gone
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                if event.data:
                    await call.write(kubelet_pb2.PortForwardData(data=event.data))
                if event.fin:
                    await call.done_writing()
        elif isinstance(event, spdy.StreamReset):
            task = self.tasks.pop(event.stream_id, None)
            if task is not None:
                task.cancel()
        elif isinstance(event, spdy.GoAway):
            raise ConnectionError("the client went away")

    async def _opened(self, event: spdy.StreamOpened) -> None:
        sid, headers = event.stream_id, event.headers
        await self._frame(lambda: self.spdy.reply(sid))
        request_id = headers.get("requestid", "")
        if headers.get("streamtype") == "error":
            self.error_streams[request_id] = sid
            return
        error_sid = self.error_streams.pop(request_id, 0)
        port = _port(headers.get("port", ""))
        if headers.get("streamtype") != "data" or port is None or not error_sid:
            why = f"invalid port-forward stream: {headers}"
            await self._fail(sid, error_sid, why)
            return
        if len(self.tasks) >= MAX_CONNECTIONS:
            await self._fail(sid, error_sid, f"over {MAX_CONNECTIONS} connections in one tunnel")
            return
        # Opened before the next frame is read: the connection's first bytes follow at once.
        call = self.calls[sid] = await self.open_call(port)
        self.tasks[sid] = asyncio.create_task(self._forward(sid, error_sid, port, call))

    async def _fail(self, sid: int, error_sid: int, message: str) -> None:
        if error_sid:
            await self._frame(lambda: self.spdy.data(error_sid, message.encode(), fin=True))
        await self._frame(lambda: self.spdy.reset(sid))

    async def _forward(self, sid: int, error_sid: int, port: int, call: Any) -> None:
        try:
            while (msg := await call.read()) is not grpc.aio.EOF:
                if data := msg.data:
                    await self._frame(functools.partial(self.spdy.data, sid, data))
            await self._frame(lambda: self.spdy.data(sid, b"", fin=True))
            await self._frame(lambda: self.spdy.data(error_sid, b"", fin=True))
        except grpc.aio.AioRpcError as exc:
            why = f"error forwarding port {port}: {exc.details() or exc.code()}"
            await self._fail(sid, error_sid, why)
        finally:
            call.cancel()
            self.calls.pop(sid, None)
            self.tasks.pop(sid, None)


def _port(text: str) -> int | None:
    try:
        port = int(text)
    except ValueError:
        return None
    return port if 0 < port < 65536 else None
