"""The preStop hook runner (k8semu/kubelet/hooks.py): exec, httpGet and sleep handlers run
for real (a subprocess, an HTTP server on a free loopback port), each cut at the grace."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Sequence

import pytest

from k8semu.kubelet.hooks import MIN_GRACE_AFTER_HOOK, grace_after_hook, has_pre_stop, run_hook
from k8semu.pb.api.v1 import core_pb2, meta_pb2

CONTAINER = core_pb2.Container(name="web", ports=[core_pb2.ContainerPort(name="http")])


class Exec:
    """A real exec function: runs argv as a subprocess, remembers its pid (to check that a
    hook cut at the grace leaves no process behind)."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    async def __call__(self, argv: Sequence[str], timeout: float) -> tuple[int, bytes]:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        self.pids.append(proc.pid)
        try:
            async with asyncio.timeout(timeout):
                out, _ = await proc.communicate()
        except BaseException:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            raise
        return proc.returncode or 0, out


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A tiny HTTP server: /ok answers 200, /slow never answers, anything else 500."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            seen.append(line)
            if b" /slow " in line:
                await reader.read()  # until the client hangs up
                return
            code = b"200 OK" if b" /ok " in line else b"500 Oops"
            writer.write(b"HTTP/1.0 " + code + b"\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, seen
        server.close()


def _exec(*argv: str) -> core_pb2.LifecycleHandler:
    return core_pb2.LifecycleHandler(exec=core_pb2.ExecAction(command=list(argv)))


def _get(path: str, port: int) -> core_pb2.LifecycleHandler:
    return core_pb2.LifecycleHandler(
        http_get=core_pb2.HTTPGetAction(path=path, port=meta_pb2.IntOrString(int_val=port))
    )


def _sleep(seconds: int) -> core_pb2.LifecycleHandler:
    return core_pb2.LifecycleHandler(sleep=core_pb2.SleepAction(seconds=seconds))


async def test_exec_hook_success_failure_and_cut() -> None:
    run = Exec()
    assert await run_hook(_exec("true"), CONTAINER, "127.0.0.1", 5, run) == ""
    message = await run_hook(_exec("sh", "-c", "echo bye; exit 3"), CONTAINER, "", 5, run)
    assert "exited with 3" in message and "bye" in message
    message = await run_hook(_exec("sleep", "30"), CONTAINER, "", 0.3, run)
    assert "grace period" in message
    with pytest.raises(ProcessLookupError):  # the cut hook's process is gone
        os.kill(run.pids[-1], 0)


async def test_http_get_hook(http_server: tuple[int, list[bytes]]) -> None:
    port, seen = http_server
    run = Exec()
    assert await run_hook(_get("/ok", port), CONTAINER, "127.0.0.1", 5, run) == ""
    assert seen[-1].startswith(b"GET /ok ")
    assert "statuscode: 500" in await run_hook(_get("/x", port), CONTAINER, "127.0.0.1", 5, run)
    message = await run_hook(_get("/slow", port), CONTAINER, "127.0.0.1", 0.3, run)
    assert "grace period (0.3s)" in message


async def test_sleep_hook_and_its_cut() -> None:
    run = Exec()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await run_hook(_sleep(1), CONTAINER, "", 5, run) == ""
    assert loop.time() - started >= 1
    assert "grace period (0.2s)" in await run_hook(_sleep(30), CONTAINER, "", 0.2, run)
    assert "non-negative" in await run_hook(_sleep(-1), CONTAINER, "", 5, run)


async def test_handler_needs_exactly_one_action() -> None:
    run = Exec()
    assert "exactly one" in await run_hook(core_pb2.LifecycleHandler(), CONTAINER, "", 5, run)
    both = _sleep(1)
    both.exec.command.append("true")
    assert "exactly one" in await run_hook(both, CONTAINER, "", 5, run)


def test_grace_left_after_the_hook_and_has_pre_stop() -> None:
    assert grace_after_hook(30, 2) == 28
    assert grace_after_hook(3, 3) == MIN_GRACE_AFTER_HOOK  # never SIGKILL on the spot
    assert not has_pre_stop(CONTAINER)
    with_hook = core_pb2.Container(lifecycle=core_pb2.Lifecycle(pre_stop=_sleep(2)))
    assert has_pre_stop(with_hook)
    assert not has_pre_stop(core_pb2.Container(lifecycle=core_pb2.Lifecycle()))
