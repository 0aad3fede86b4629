"""A container's stdin (`spec.stdin: true`): the write end of a pipe the kubelet holds for the
run, which `pods/attach -i` sessions write into.

Writes never block the kubelet: the end is non-blocking and a write waits on the event loop
for room, so a container that stops reading makes only that attach session wait (and the
session's end cancels it). One session writes at a time (a lock), so two attached clients'
chunks are not interleaved mid-write. The pipe belongs to one run: the runtime closes it when
the run ends, and the next run gets a new one, so nothing leaks across restarts.
"""

from __future__ import annotations

import asyncio
import os


class StdinPipe:
    """The kubelet's end of one run's stdin. `once` (`stdinOnce`): closed when the first
    attach session that wrote to it ends, as Kubernetes does."""

    def __init__(self, fd: int, *, once: bool) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self.once = once
        self._lock = asyncio.Lock()
        self._waiting: asyncio.Future[None] | None = None  # a write waiting for room

    @classmethod
    def make(cls, *, once: bool) -> tuple[StdinPipe, int]:
        """A new pipe: the kubelet's end, and the read end for the child (the caller closes
        its copy once the child has it)."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        return cls(write_end, once=once), read_end

    @property
    def closed(self) -> bool:
        return self._fd < 0

    async def write(self, data: bytes) -> bool:
        """Writes all of `data`; False when the pipe is closed (by us, or the container no
        longer reads it: EPIPE)."""
        async with self._lock:
            view = memoryview(data)
            while view:
                if self._fd < 0:
                    return False
                try:
                    view = view[os.write(self._fd, view) :]
                except BlockingIOError:
                    await self._writable()
                except OSError:  # EPIPE: every reader is gone
                    return False
            return True

    async def _writable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self._fd
        loop.add_writer(fd, wake, ready)
        self._waiting = ready
        try:
            await ready
        finally:
            self._waiting = None
            if self._fd == fd:  # else close() unregistered it before closing the fd
                loop.remove_writer(fd)

    def close(self) -> None:
        """The container reads EOF (once what is in the pipe is read). Idempotent."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            if self._waiting is not None:
                asyncio.get_running_loop().remove_writer(fd)
                wake(self._waiting)
            os.close(fd)


def wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)
