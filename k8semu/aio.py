"""Small asyncio helpers that every layer shares (no I/O, nothing k8semu-specific)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any] | None], *, ignore_errors: bool = False
) -> None:
    """Cancel every task (None entries are skipped), then wait until each has ended, so
    nothing it holds outlives the caller's stop. Their cancellation is not raised here; an
    error a task ended with is, unless `ignore_errors` (a stop that must finish anyway)."""
    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    suppressed: tuple[type[BaseException], ...] = (asyncio.CancelledError,)
    if ignore_errors:
        suppressed += (Exception,)
    for task in pending:
        with contextlib.suppress(*suppressed):
            await task
