"""The kubelet's streams: a container's log file read (and followed), an interactive exec or
attach, and a TCP connection to a pod's port, each as bytes in and out.

Owns the lifetime of what a stream opens: an exec'd process group is killed and a pod
connection closed when the stream ends for any reason (done, the caller gone, an error), so a
client that goes away leaves nothing running. It validates nothing about the request: the
gRPC servicer (`server.py`) does that before calling here.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import signal
import struct
import termios
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from k8semu.kubelet.podstatus import ContainerRecord
from k8semu.kubelet.podworker import PodWorker
from k8semu.kubelet.runtime import Spawned
from k8semu.kubelet.stdinpipe import StdinPipe, wake
from k8semu.pb.kubelet.v1 import kubelet_pb2

CHUNK = 64 * 1024
FOLLOW_POLL = 0.1  # seconds between looks at a followed log file
CONNECT_TIMEOUT = 10.0  # seconds to reach a pod's port
# Output chunks waiting for a slow caller before the process is made to wait (back-pressure).
_QUEUED_CHUNKS = 16


async def log_bytes(
    worker: PodWorker, rec: ContainerRecord, path: Path, restart: int, offset: int, *, follow: bool
) -> AsyncGenerator[bytes]:
    """The log file from `offset`; with `follow`, then what the run `restart` appends until it
    ends (its last output drained), through its rotations: at the end of a file that was
    rotated away (`path` is another file now), on with the new one from its start."""
    f = path.open("rb")
    try:
        f.seek(offset)
        while True:
            data = await asyncio.to_thread(f.read, CHUNK)
            if data:
                yield data
                continue
            if not follow:
                return
            if _replaced(f, path):
                f.close()
                f = path.open("rb")
                continue
            handle = rec.handle
            if handle is None or handle.restart != restart or worker.terminating:
                rest = await asyncio.to_thread(f.read)
                if rest:
                    yield rest
                return
            await asyncio.sleep(FOLLOW_POLL)
    finally:
        f.close()


def _replaced(f: BinaryIO, path: Path) -> bool:
    """Whether `path` names a file other than the open `f` (it was rotated)."""
    try:
        return path.stat().st_ino != os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False  # between the rename and the new file: look again at the next poll


def _output(**kw: bytes | int) -> kubelet_pb2.InteractOutput:
    return kubelet_pb2.InteractOutput(**kw)  # type: ignore[arg-type]


class Session:
    """One interactive exec: pumps the caller's input to the process and its output to a
    queue the servicer yields from; `close()` kills the process group and frees the pipes."""

    def __init__(self, spawned: Spawned, start: kubelet_pb2.ExecStart) -> None:
        assert spawned.proc is not None
        self.proc = spawned.proc
        self.master = spawned.tty
        self.start = start
        self.out: asyncio.Queue[kubelet_pb2.InteractOutput | None] = asyncio.Queue(_QUEUED_CHUNKS)
        self._tasks: list[asyncio.Task[None]] = []

    def run(self, inputs: AsyncIterator[kubelet_pb2.InteractInput]) -> None:
        readers: list[asyncio.Task[None]] = []
        if self.master is not None:
            os.set_blocking(self.master, False)
            readers.append(asyncio.create_task(self._read_tty(self.master)))
        else:
            assert self.proc.stdout is not None and self.proc.stderr is not None
            readers.append(asyncio.create_task(self._read(self.proc.stdout, "stdout")))
            readers.append(asyncio.create_task(self._read(self.proc.stderr, "stderr")))
        self._tasks = [*readers, asyncio.create_task(self._input(inputs))]
        self._tasks.append(asyncio.create_task(self._finish(readers)))

    async def _read(self, stream: asyncio.StreamReader, which: str) -> None:
        wanted = getattr(self.start, which)
        while data := await stream.read(CHUNK):
            if wanted:
                await self.out.put(_output(**{which: data}))

    async def _read_tty(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            ready = loop.create_future()
            loop.add_reader(fd, wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
            try:
                data = os.read(fd, CHUNK)
            except BlockingIOError:
                continue
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                return
            if not data:
                return
            if self.start.stdout:
                await self.out.put(_output(stdout=data))

    async def _input(self, inputs: AsyncIterator[kubelet_pb2.InteractInput]) -> None:
        stdin = self.proc.stdin
        async for msg in inputs:
            which = msg.WhichOneof("input")
            if which == "stdin" and self.master is not None:
                await asyncio.to_thread(_write_all, self.master, msg.stdin)
            elif which == "stdin" and stdin is not None:
                stdin.write(msg.stdin)
                with contextlib.suppress(ConnectionError):
                    await stdin.drain()
            elif which == "stdin_closed" and self.master is not None:
                await asyncio.to_thread(_write_all, self.master, b"\x04")  # ^D: the line's EOF
            elif which == "stdin_closed" and stdin is not None:
                stdin.close()
            elif which == "resize" and self.master is not None:
                size = struct.pack("HHHH", msg.resize.height, msg.resize.width, 0, 0)
                with contextlib.suppress(OSError):
                    fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)

    async def _finish(self, readers: list[asyncio.Task[None]]) -> None:
        code = await self.proc.wait()
        # The process is gone; what it (or a child holding its pipes) wrote is still read,
        # but a child keeping them open does not keep the exec open.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await asyncio.gather(*readers, return_exceptions=True)
        await self.out.put(_output(exit_code=128 - code if code < 0 else code))
        await self.out.put(None)

    async def outputs(self) -> AsyncIterator[kubelet_pb2.InteractOutput]:
        while (msg := await self.out.get()) is not None:
            yield msg

    async def close(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(ProcessLookupError):
            await self.proc.wait()
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)


async def feed_stdin(pipe: StdinPipe, inputs: AsyncIterator[kubelet_pb2.InteractInput]) -> None:
    """An attach session's input into a container's stdin until the caller's stdin ends
    (then a `stdinOnce` pipe is closed: the container reads EOF) or the pipe is closed."""
    async for msg in inputs:
        which = msg.WhichOneof("input")
        if which == "stdin" and not await pipe.write(msg.stdin):
            return
        if which == "stdin_closed":
            if pipe.once:
                pipe.close()
            return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]


async def forward(
    address: str, port: int, first: bytes, inputs: AsyncIterator[kubelet_pb2.PortForwardData]
) -> AsyncGenerator[kubelet_pb2.PortForwardData]:
    """Bytes between the caller and `address:port`: the caller's half-close (its stream's end)
    is the connection's, and the pod's end ends the stream."""
    async with asyncio.timeout(CONNECT_TIMEOUT):
        reader, writer = await asyncio.open_connection(address, port)

    async def upstream() -> None:
        if first:
            writer.write(first)
        async for msg in inputs:
            writer.write(msg.data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    pump = asyncio.create_task(upstream())
    try:
        while data := await reader.read(CHUNK):
            yield kubelet_pb2.PortForwardData(data=data)
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
