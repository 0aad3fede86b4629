"""The work queue between event handlers and reconcile workers (design decision 5).

This module owns client-go's workqueue semantics for asyncio:

- a key is queued at most once however often it is added (`dirty` set), so a burst of events
  for one object costs one reconcile;
- a key is handed to at most one worker at a time: adding a key that is being processed marks
  it dirty, and `done()` puts it back on the queue, so no event is lost and no two workers
  reconcile one object at once;
- `add_after` delays a key (the earliest pending time wins), `add_rate_limited` delays it by
  the rate limiter (per-key exponential back-off, max'ed with an overall token bucket) and
  `forget` resets its back-off after a success;
- `shutdown()` stops accepting keys and lets workers drain what is queued; `get()` then raises
  ShutDown.

It knows nothing about API objects (keys are any hashable, usually "namespace/name") and runs no
task of its own: due delayed keys are moved to the queue whenever the queue is used, and a
waiting `get()` sleeps until the next one is due. Time is injected (`clock`, `sleep`), so tests
drive it with a fake clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from k8semu.client import metrics

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "ItemExponentialBackoff",
    "MaxOfRateLimiter",
    "RateLimiter",
    "RateLimits",
    "ShutDown",
    "TokenBucket",
    "WorkQueue",
    "default_rate_limiter",
]

K = TypeVar("K", bound=Hashable)
_KC = TypeVar("_KC", bound=Hashable, contravariant=True)

Clock = Callable[[], float]
"""Seconds on a monotonic scale (time.monotonic by default)."""
Sleep = Callable[[float], Awaitable[None]]
"""Sleeps for the given seconds on the same scale as the clock (asyncio.sleep by default)."""

DEFAULT_BASE_DELAY = 0.005
DEFAULT_MAX_DELAY = 1000.0
DEFAULT_QPS = 10.0
DEFAULT_BURST = 100
# 2.0 ** 1024 overflows; any base delay doubled this often is past any sane max_delay.
_MAX_EXPONENT = 1000


class ShutDown(Exception):
    """`get()` on a queue that is shut down and has nothing left to hand out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimits:
    """Retry pacing: per-key back-off `base_delay * 2**failures` capped at `max_delay` seconds,
    and an overall token bucket of `qps` keys per second with bursts of `burst`.

    The delay of a retry is the larger of the two, so one failing key backs off on its own and
    many failing keys together cannot retry faster than `qps`. client-go's controller defaults.
    """

    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    qps: float = DEFAULT_QPS
    burst: int = DEFAULT_BURST

    def __post_init__(self) -> None:
        if not self.base_delay > 0:
            raise ValueError(f"base_delay: must be > 0, got {self.base_delay}")
        if not self.max_delay >= self.base_delay:
            raise ValueError(f"max_delay: must be >= base_delay, got {self.max_delay}")
        if not self.qps > 0:
            raise ValueError(f"qps: must be > 0, got {self.qps}")
        if self.burst < 1:
            raise ValueError(f"burst: must be >= 1, got {self.burst}")


DEFAULT_RATE_LIMITS = RateLimits()


class RateLimiter(Protocol[_KC]):
    """Decides how long a key waits before its next retry."""

    def when(self, key: _KC) -> float:
        """The delay in seconds before retrying `key`; records the retry."""
        ...

    def forget(self, key: _KC) -> None:
        """Stop tracking `key` (it succeeded): its next delay starts from scratch."""
        ...

    def num_requeues(self, key: _KC) -> int:
        """How many retries of `key` were recorded since it was last forgotten."""
        ...


class ItemExponentialBackoff(Generic[K]):
    """Per-key back-off: the n-th retry (from 0) waits `base_delay * 2**n`, at most `max_delay`."""

    def __init__(self, base_delay: float, max_delay: float) -> None:
        self._base = base_delay
        self._max = max_delay
        self._failures: dict[K, int] = {}

    def when(self, key: K) -> float:
        exponent = self._failures.get(key, 0)
        self._failures[key] = exponent + 1
        return min(self._max, self._base * 2.0 ** min(exponent, _MAX_EXPONENT))

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: K) -> int:
        return self._failures.get(key, 0)


class TokenBucket(Generic[K]):
    """An overall limit of `qps` retries per second, `burst` at once, shared by every key.

    Each `when()` takes a token, going into debt when there are none; the delay is the time
    the debt takes to be repaid, so granted retries are spaced 1/qps apart. It tracks no key.
    """

    def __init__(self, qps: float, burst: int, clock: Clock = time.monotonic) -> None:
        self._qps = qps
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def when(self, key: K) -> float:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
        self._last = now
        self._tokens -= 1.0
        return max(0.0, -self._tokens / self._qps)

    def forget(self, key: K) -> None:
        pass

    def num_requeues(self, key: K) -> int:
        return 0


class MaxOfRateLimiter(Generic[K]):
    """Asks every limiter (each records the retry) and waits for the longest delay."""

    def __init__(self, *limiters: RateLimiter[K]) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self._limiters = limiters

    def when(self, key: K) -> float:
        return max([limiter.when(key) for limiter in self._limiters])

    def forget(self, key: K) -> None:
        for limiter in self._limiters:
            limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return max(limiter.num_requeues(key) for limiter in self._limiters)


def default_rate_limiter(
    limits: RateLimits = DEFAULT_RATE_LIMITS, clock: Clock = time.monotonic
) -> MaxOfRateLimiter[K]:
    """Per-key exponential back-off max'ed with the overall token bucket, as `limits` says."""
    return MaxOfRateLimiter(
        ItemExponentialBackoff[K](limits.base_delay, limits.max_delay),
        TokenBucket[K](limits.qps, limits.burst, clock),
    )


class WorkQueue(Generic[K]):
    """A FIFO of keys to reconcile, with dedup, delays and rate-limited retries.

    Invariants: a key is at most once in the ready queue; a key handed out by `get()` is not
    handed out again before `done(key)`; a key added while handed out (`dirty`) is queued again
    by `done(key)`. The worker loop that drives it (get, reconcile, then forget on success or
    add_rate_limited on failure, and always done) is `k8semu.client.controller.run_worker`.

    Single event loop only (not thread-safe); `get()` must be awaited on that loop.
    """

    def __init__(
        self,
        *,
        name: str = "",
        limits: RateLimits = DEFAULT_RATE_LIMITS,
        rate_limiter: RateLimiter[K] | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """`rate_limiter`, when given, replaces the default one built from `limits`."""
        self.name = name
        self._clock = clock
        self._sleep = sleep
        self._limiter: RateLimiter[K] = (
            rate_limiter if rate_limiter is not None else default_rate_limiter(limits, clock)
        )
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()  # queued or waiting to be queued again after done()
        self._processing: set[K] = set()
        self._waiting: dict[K, float] = {}  # delayed key -> when it is due
        self._heap: list[tuple[float, int, K]] = []  # (due, tie-breaker, key); may be stale
        self._seq = itertools.count()
        self._waiters: list[asyncio.Future[None]] = []
        self._shutting_down = False
        self._draining = False
        # Named queues report (k8semu.client.metrics): when each queued key was queued and
        # each handed-out key handed out, for the queue and work durations.
        self._metrics = metrics.QueueMetrics(name) if name else None
        self._since: dict[K, float] = {}
        if name:
            metrics.DEPTHS.queues.add(self)

    # --- queue ---------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Queue `key` unless it is already queued; ignored after shutdown."""
        if self._shutting_down:
            return
        self._promote_due()  # keys that came due earlier go first
        self._insert(key)

    def __len__(self) -> int:
        """Keys ready to be handed out (not those delayed or being processed)."""
        self._promote_due()
        return len(self._queue)

    @property
    def depth(self) -> int:
        """Keys queued now, as last promoted (workqueue_depth: no clock read per scrape)."""
        return len(self._queue)

    async def get(self) -> K:
        """The next key, waiting for one; ShutDown once shut down and nothing is queued.

        The key counts as being processed until `done(key)`.
        """
        while True:
            self._promote_due()
            if self._queue:
                key = self._queue.popleft()
                self._processing.add(key)
                self._dirty.discard(key)
                if self._metrics is not None:
                    now = self._clock()
                    self._metrics.queue_duration.observe(now - self._since.pop(key, now))
                    self._since[key] = now
                return key
            if self._shutting_down:
                raise ShutDown(self.name or "work queue")
            await self._wait(self._next_due_in())

    def done(self, key: K) -> None:
        """Mark `key` processed; queue it again if it was added meanwhile."""
        if key not in self._processing:
            return
        self._processing.discard(key)
        if self._metrics is not None:
            now = self._clock()
            self._metrics.work_duration.observe(now - self._since.pop(key, now))
            if key in self._dirty:
                self._since[key] = now
        if key in self._dirty:
            self._queue.append(key)
            self._notify()
        elif self._draining and not self._processing:
            self._notify()

    # --- delays and retries ----------------------------------------------------------------

    def add_after(self, key: K, delay: float) -> None:
        """Queue `key` after `delay` seconds; a key already waiting keeps the earlier time."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        due = self._clock() + delay
        current = self._waiting.get(key)
        if current is not None and current <= due:
            return
        self._waiting[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))
        self._notify()  # a sleeping get() may now have to wake up sooner

    def add_rate_limited(self, key: K) -> None:
        """Queue `key` once the rate limiter allows (its retry back-off grows each time)."""
        if self._shutting_down:
            return
        if self._metrics is not None:
            self._metrics.retries.inc()
        self.add_after(key, self._limiter.when(key))

    def forget(self, key: K) -> None:
        """Reset the back-off of `key` (call it when `key` was reconciled successfully)."""
        self._limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        """Rate-limited retries of `key` since it was last forgotten."""
        return self._limiter.num_requeues(key)

    # --- shutdown ------------------------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def shutdown(self) -> None:
        """Stop accepting keys and drop delayed ones; waiting getters raise ShutDown once the
        keys already queued are handed out."""
        self._shutting_down = True
        self._waiting.clear()
        self._heap.clear()
        self._notify()

    async def shutdown_with_drain(self) -> None:
        """`shutdown()`, then wait until every key handed out is `done()`."""
        self.shutdown()
        self._draining = True
        try:
            while self._processing:
                await self._wait(None)
        finally:
            self._draining = False

    # --- internals -----------------------------------------------------------------------

    def _insert(self, key: K) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if self._metrics is not None:
            self._metrics.adds.inc()
        if key in self._processing:
            return  # done() queues it again, so one worker at a time has it
        if self._metrics is not None:
            self._since[key] = self._clock()
        self._queue.append(key)
        self._notify()

    def _live_head(self) -> tuple[float, K] | None:
        """The earliest delayed key, dropping heap entries superseded by an earlier time."""
        while self._heap:
            due, _, key = self._heap[0]
            if self._waiting.get(key) == due:
                return due, key
            heapq.heappop(self._heap)
        return None

    def _promote_due(self) -> None:
        now = self._clock()
        while (head := self._live_head()) is not None and head[0] <= now:
            heapq.heappop(self._heap)
            del self._waiting[head[1]]
            self._insert(head[1])

    def _next_due_in(self) -> float | None:
        head = self._live_head()
        return None if head is None else max(0.0, head[0] - self._clock())

    async def _wait(self, timeout: float | None) -> None:
        """Until the queue changes or `timeout` seconds pass (on the injected clock)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            if timeout is None:
                await waiter
                return
            sleeper = asyncio.ensure_future(self._sleep(timeout))
            try:
                await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            waiter.cancel()

    def _notify(self) -> None:
        # Wake every waiter: each re-checks the queue, so a waiter cancelled after being woken
        # can never strand a key while the others sleep.
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
