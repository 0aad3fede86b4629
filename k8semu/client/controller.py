"""The worker loop every level-triggered loop shares (sample-controller's runWorker /
processNextWorkItem): take a key, reconcile it, retry it with back-off when that fails.

Owns only that loop. What a key means, and what reconciling it does, belong to the caller;
event handlers feeding the queue live with the caller too (they only `queue.add(key)`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from k8semu.client._errors import NotFound
from k8semu.client.workqueue import ShutDown, WorkQueue
from k8semu.log import get_logger

log = get_logger(__name__)

K = TypeVar("K")

DEFAULT_MAX_RETRIES = 15
"""client-go's controllers drop a key after this many failed tries in a row (the next event
or resync brings it back)."""


async def run_worker(
    queue: WorkQueue[K],
    reconcile: Callable[[K], Awaitable[None]],
    *,
    name: str = "",
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> None:
    """Reconcile keys from `queue` until it shuts down.

    A NotFound from `reconcile` means the object is gone: done. Any other exception is logged
    and the key is retried with the queue's rate limiter, at most `max_retries` times in a row.
    Success forgets the key's back-off. Cancellation propagates (the key is marked done).
    """
    while True:
        try:
            key = await queue.get()
        except ShutDown:
            return
        try:
            await reconcile(key)
        except asyncio.CancelledError:
            raise
        except NotFound:
            queue.forget(key)
        except Exception as exc:
            if queue.num_requeues(key) < max_retries:
                log.info("reconcile failed; retrying", loop=name, key=str(key), error=str(exc))
                queue.add_rate_limited(key)
            else:
                log.warning(
                    "reconcile failed; dropping key", loop=name, key=str(key), error=str(exc)
                )
                queue.forget(key)
        else:
            queue.forget(key)
        finally:
            queue.done(key)


async def run_workers(
    queue: WorkQueue[K],
    reconcile: Callable[[K], Awaitable[None]],
    workers: int,
    *,
    name: str = "",
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> None:
    """`workers` concurrent `run_worker` loops on one queue, until it shuts down."""
    async with asyncio.TaskGroup() as tg:
        for _ in range(workers):
            tg.create_task(run_worker(queue, reconcile, name=name, max_retries=max_retries))
