"""The one serve loop of every component command (k8semu/cli/_serving.py), on small real
components in this process and real signals sent to it."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from k8semu.cli import _serving


class Recorder:
    """A component that records its calls; `start` does what the test asks."""

    def __init__(self, *, wait: bool = False, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.wait = wait
        self.error = error
        self.failed: asyncio.Future[BaseException] | None = None

    async def start(self) -> None:
        self.calls.append("start")
        self.failed = asyncio.get_running_loop().create_future()
        if self.error is not None:
            raise self.error
        if self.wait:  # as a scheduler waiting for its API server
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                self.calls.append("start cancelled")
                raise
        self.calls.append("started")

    async def stop(self, grace: float) -> None:
        self.calls.append(f"stop {grace:g}")

    async def wait_failed(self) -> BaseException:
        assert self.failed is not None
        return await self.failed


def _sigterm_soon() -> None:
    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)


async def test_a_signal_stops_it_with_the_grace() -> None:
    component = Recorder()
    _sigterm_soon()
    await _serving.serve(component, grace=7)
    assert component.calls == ["start", "started", "stop 7"]


async def test_a_signal_while_it_starts_cancels_the_start_and_stops_at_once() -> None:
    component = Recorder(wait=True)
    _sigterm_soon()
    await _serving.serve(component, grace=7)
    assert component.calls == ["start", "start cancelled", "stop 0"]


async def test_a_failed_start_is_stopped_at_once_and_raised() -> None:
    component = Recorder(error=OSError("cannot listen"))
    with pytest.raises(OSError, match="cannot listen"):
        await _serving.serve(component, grace=7)
    assert component.calls == ["start", "stop 0"]


async def test_a_failure_while_serving_stops_it_at_once() -> None:
    component = Recorder()

    def fail_soon() -> None:
        assert component.failed is not None
        component.failed.set_result(RuntimeError("disk gone"))

    asyncio.get_running_loop().call_later(0.05, fail_soon)
    with pytest.raises(_serving.ComponentFailed, match="disk gone") as caught:
        await _serving.serve(component, grace=7, failure=component.wait_failed)
    assert isinstance(caught.value.cause, RuntimeError)
    assert component.calls == ["start", "started", "stop 0"]


async def test_a_signal_before_any_failure_is_a_graceful_stop() -> None:
    component = Recorder()
    _sigterm_soon()
    await _serving.serve(component, grace=3, failure=component.wait_failed)
    assert component.calls == ["start", "started", "stop 3"]


def test_run_gives_the_exit_code_and_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    async def ok() -> None:
        pass

    async def refused() -> None:
        raise OSError("--listen-address: cannot listen on 192.0.2.1:0")

    async def failed() -> None:
        raise _serving.ComponentFailed(RuntimeError("raft loop ended"))

    assert _serving.run("demo", ok, uvloop=False) == 0
    assert _serving.run("demo", refused, uvloop=False) == 1
    assert (
        capsys.readouterr().err == "k8semu demo: --listen-address: cannot listen on 192.0.2.1:0\n"
    )
    assert _serving.run("demo", failed, uvloop=False) == 1
    assert "k8semu demo: stopped: RuntimeError('raft loop ended')" in capsys.readouterr().err
