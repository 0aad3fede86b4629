"""Kubernetes' WebSocket channel protocols between a client and a kubelet's gRPC stream.

Each binary message's first byte is its channel. For exec and attach (`v5.channel.k8s.io`,
and `v4.channel.k8s.io` that kubectl and the Python client fall back to): 0 stdin, 1 stdout,
2 stderr, 3 the end as a metav1.Status (Success, or NonZeroExitCode with the exit code as a
cause, which kubectl turns into `command terminated with exit code N` and its own exit code),
4 terminal resize (JSON Width/Height); v5 adds 255, the close signal ([255, 0]: stdin ended).
For port-forward (`v4.channel.k8s.io`): port i has data channel 2i and error channel 2i+1,
and the first message on each is the port number, 2 bytes little-endian.

Bounded: messages over MAX_MESSAGE are refused by the WebSocket layer, a client that stops
answering pings is dropped, and when either side ends (the client gone, the process exited,
the pod's connection closed) the other is closed, so nothing outlives its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

import grpc
from aiohttp import WSMsgType, web

from k8semu.apiserver.rest.status import HTTPError
from k8semu.log import get_logger
from k8semu.pb.kubelet.v1 import kubelet_pb2

log = get_logger(__name__)

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
EXEC_PROTOCOLS = (V5, V4)
PORTFORWARD_PROTOCOLS = (V4,)
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
MAX_MESSAGE = 1024 * 1024
MAX_PORTS = 16
HEARTBEAT = 30.0  # seconds between pings; a client that misses a pong is gone


def choose(request: web.Request, supported: Sequence[str]) -> str:
    """The subprotocol to answer with (the client's first that is supported); HTTPError 400
    when the request is no WebSocket upgrade or offers none of `supported` (a SPDY upgrade
    is `spdyupgrade.py`'s)."""
    upgrade = request.headers.get("Upgrade", "").lower()
    if upgrade != "websocket":
        raise HTTPError(400, "BadRequest", "Upgrade request required")
    offered = listed(request, "Sec-WebSocket-Protocol")
    for protocol in offered:
        if protocol in supported:
            return protocol
    raise HTTPError(
        400,
        "BadRequest",
        f"unable to upgrade: none of the offered subprotocols [{', '.join(offered)}] is"
        f" supported: {', '.join(supported)}",
    )


def listed(request: web.Request, header: str) -> list[str]:
    """The comma-separated values of every `header` line, in order."""
    return [v.strip() for line in request.headers.getall(header, []) for v in line.split(",")
            if v.strip()]  # fmt: skip


async def open_websocket(request: web.Request, protocol: str) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(
        protocols=(protocol,), heartbeat=HEARTBEAT, max_msg_size=MAX_MESSAGE, compress=False
    )
    await ws.prepare(request)
    return ws


def payload(msg: Any) -> bytes | None:
    """A data message's bytes (with its channel byte); None for control messages."""
    if msg.type == WSMsgType.BINARY:
        return bytes(msg.data)
    if msg.type == WSMsgType.TEXT:
        return str(msg.data).encode()
    return None


def exit_status(code: int, command: Sequence[str]) -> dict[str, Any]:
    """The Status on the error channel that ends an exec, as the kubelet writes it."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command"
        f" [{' '.join(command)}], exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def failure(message: str) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    }


async def first_done(*aws: asyncio.Task[Any]) -> None:
    """Wait for the first task to end, then cancel and reap the others."""
    try:
        await asyncio.wait(aws, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in aws:
            task.cancel()
        await asyncio.gather(*aws, return_exceptions=True)


class Exec:
    """One exec or attach: a kubelet `Interact` call already started (`call`) joined to the
    client's WebSocket."""

    def __init__(self, call: Any, protocol: str, command: Sequence[str]) -> None:
        self.call = call
        self.protocol = protocol
        self.command = list(command)

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = await open_websocket(request, self.protocol)
        try:
            await first_done(
                asyncio.create_task(self._to_client(ws)),
                asyncio.create_task(self._from_client(ws)),
            )
        finally:
            await ws.close()
        return ws

    async def _to_client(self, ws: web.WebSocketResponse) -> None:
        try:
            while True:
                out = await self.call.read()
                if out is grpc.aio.EOF:
                    status = failure("the kubelet ended the stream without an exit code")
                    break
                if out.stdout:
                    await ws.send_bytes(bytes([STDOUT]) + out.stdout)
                if out.stderr:
                    await ws.send_bytes(bytes([STDERR]) + out.stderr)
                if out.HasField("exit_code"):
                    status = exit_status(out.exit_code, self.command)
                    break
        except grpc.aio.AioRpcError as exc:
            status = failure(f"error from the kubelet: {exc.details()}")
        await ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())

    async def _from_client(self, ws: web.WebSocketResponse) -> None:
        """The client's input until it closes (then the call is cancelled: it is gone)."""
        async for msg in ws:
            data = payload(msg)
            if not data:
                continue
            channel, body = data[0], data[1:]
            if channel == STDIN and body:
                await self.call.write(kubelet_pb2.InteractInput(stdin=body))
            elif channel == RESIZE:
                size = terminal_size(body)
                if size is not None:
                    await self.call.write(kubelet_pb2.InteractInput(resize=size))
            elif channel == CLOSE and self.protocol == V5 and body[:1] == bytes([STDIN]):
                await self.call.write(kubelet_pb2.InteractInput(stdin_closed=True))


def terminal_size(body: bytes) -> kubelet_pb2.TerminalSize | None:
    try:
        doc = json.loads(body)
        width, height = int(doc["Width"]), int(doc["Height"])
    except (ValueError, KeyError, TypeError):
        return None  # a malformed resize is ignored, as the kubelet does
    if not (0 <= width < 65536 and 0 <= height < 65536):
        return None
    return kubelet_pb2.TerminalSize(width=width, height=height)


class PortForward:
    """Forwarded ports: one kubelet `PortForward` call per port (started, its first message
    sent), joined to the client's WebSocket."""

    def __init__(self, calls: Sequence[Any], ports: Sequence[int], protocol: str) -> None:
        self.calls = list(calls)
        self.ports = list(ports)
        self.protocol = protocol

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = await open_websocket(request, self.protocol)
        try:
            for i, port in enumerate(self.ports):
                prefix = port.to_bytes(2, "little")
                await ws.send_bytes(bytes([2 * i]) + prefix)
                await ws.send_bytes(bytes([2 * i + 1]) + prefix)
            pods = [asyncio.create_task(self._to_client(ws, i)) for i in range(len(self.ports))]
            await first_done(
                asyncio.create_task(_all(pods)), asyncio.create_task(self._from_client(ws))
            )
        finally:
            await ws.close()
        return ws

    async def _to_client(self, ws: web.WebSocketResponse, i: int) -> None:
        call = self.calls[i]
        try:
            while (msg := await call.read()) is not grpc.aio.EOF:
                if msg.data:
                    await ws.send_bytes(bytes([2 * i]) + msg.data)
        except grpc.aio.AioRpcError as exc:
            await ws.send_bytes(bytes([2 * i + 1]) + (exc.details() or str(exc.code())).encode())

    async def _from_client(self, ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            data = payload(msg)
            if not data or len(data) < 2:
                continue
            channel = data[0]
            if channel % 2 == 0 and channel // 2 < len(self.calls):
                with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    await self.calls[channel // 2].write(kubelet_pb2.PortForwardData(data=data[1:]))


async def _all(tasks: list[asyncio.Task[None]]) -> None:
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
