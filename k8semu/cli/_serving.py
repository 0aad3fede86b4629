"""What every long-running component's entry point shares: the event loop it runs on and
how it waits for SIGTERM/SIGINT (or for a failure that must end the process)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable
from typing import Any


def install_event_loop() -> None:
    """uvloop where it is installed (design decision 7), unless K8SEMU_NO_UVLOOP is set."""
    if os.environ.get("K8SEMU_NO_UVLOOP"):
        return
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


async def wait_for_signal(
    failure: Awaitable[BaseException] | None = None,
) -> BaseException | None:
    """Return None on SIGTERM/SIGINT, or the error `failure` yields if it comes first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopped: asyncio.Future[Any] = loop.create_task(stop.wait())
    failed: asyncio.Future[BaseException] | None = None
    waits: set[asyncio.Future[Any]] = {stopped}
    if failure is not None:
        failed = asyncio.ensure_future(failure)
        waits.add(failed)
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if failed is not None and failed.done() and not stopped.done():
        return failed.result()
    if failed is not None:
        failed.cancel()
    return None
