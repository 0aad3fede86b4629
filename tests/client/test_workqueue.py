"""The workqueue: dedup, one worker per key, delays, rate limiting and shutdown, on fake time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random

import pytest

from k8semu import metrics
from k8semu.client.workqueue import (
    DEFAULT_RATE_LIMITS,
    ItemExponentialBackoff,
    MaxOfRateLimiter,
    RateLimits,
    ShutDown,
    TokenBucket,
    WorkQueue,
    default_rate_limiter,
)


class FakeClock:
    """A clock that moves only when told; `sleep` returns when `advance` passes its deadline."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + delay, next(self._seq), future))
        await future

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        await settle()


async def settle() -> None:
    """Let every runnable task run until it blocks again (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


def make_queue(clock: FakeClock, limits: RateLimits = DEFAULT_RATE_LIMITS) -> WorkQueue[str]:
    return WorkQueue[str](name="test", limits=limits, clock=clock, sleep=clock.sleep)


async def get_now(queue: WorkQueue[str]) -> str:
    """get() that must not block: a key is expected to be ready already."""
    return await asyncio.wait_for(queue.get(), timeout=1.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_add_deduplicates(clock: FakeClock) -> None:
    queue = make_queue(clock)
    for key in ["a", "b", "a", "a", "b", "c"]:
        queue.add(key)
    assert len(queue) == 3
    assert [await get_now(queue) for _ in range(3)] == ["a", "b", "c"]
    assert len(queue) == 0


async def test_fifo_order(clock: FakeClock) -> None:
    queue = make_queue(clock)
    keys = [f"ns/pod-{i}" for i in range(50)]
    for key in keys:
        queue.add(key)
    got = []
    for _ in keys:
        key = await get_now(queue)
        queue.done(key)
        got.append(key)
    assert got == keys


async def test_key_added_while_processing_is_queued_again_after_done(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.add("a")
    assert await get_now(queue) == "a"
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0  # not handed out twice at once
    queue.add("b")
    assert await get_now(queue) == "b"
    queue.done("a")
    assert len(queue) == 1
    assert await get_now(queue) == "a"
    queue.done("a")
    queue.done("b")
    assert len(queue) == 0


async def test_done_without_add_is_not_queued_again(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.add("a")
    assert await get_now(queue) == "a"
    queue.done("a")
    queue.done("a")  # a second done, or done of an unknown key, is ignored
    queue.done("zzz")
    assert len(queue) == 0


async def test_get_waits_for_add(clock: FakeClock) -> None:
    queue = make_queue(clock)
    getter = asyncio.create_task(queue.get())
    await settle()
    assert not getter.done()
    queue.add("a")
    assert await asyncio.wait_for(getter, 1.0) == "a"


async def test_shutdown_wakes_all_waiting_getters(clock: FakeClock) -> None:
    queue = make_queue(clock)
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await settle()
    assert not any(getter.done() for getter in getters)
    queue.shutdown()
    results = await asyncio.wait_for(asyncio.gather(*getters, return_exceptions=True), 1.0)
    assert all(isinstance(result, ShutDown) for result in results)
    assert queue.shutting_down


async def test_shutdown_drains_queued_keys_then_raises(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.add("a")
    queue.add("b")
    queue.add_after("later", 1.0)
    queue.shutdown()
    queue.add("c")  # ignored after shutdown
    queue.add_after("d", 0.5)
    queue.add_rate_limited("e")
    assert queue.num_requeues("e") == 0
    assert await get_now(queue) == "a"
    assert await get_now(queue) == "b"
    await clock.advance(2.0)  # delayed keys were dropped
    with pytest.raises(ShutDown):
        await get_now(queue)


async def test_shutdown_with_drain_waits_for_keys_in_process(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.add("a")
    queue.add("b")
    first = await get_now(queue)
    second = await get_now(queue)
    drain = asyncio.create_task(queue.shutdown_with_drain())
    await settle()
    assert not drain.done()
    queue.done(first)
    await settle()
    assert not drain.done()
    queue.done(second)
    await asyncio.wait_for(drain, 1.0)
    with pytest.raises(ShutDown):
        await get_now(queue)


async def test_add_after_waits_on_the_injected_clock(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.add_after("a", 5.0)
    assert len(queue) == 0
    await clock.advance(4.999)
    assert len(queue) == 0
    await clock.advance(0.001)
    assert len(queue) == 1
    assert await get_now(queue) == "a"


async def test_add_after_wakes_a_waiting_getter(clock: FakeClock) -> None:
    queue = make_queue(clock)
    getter = asyncio.create_task(queue.get())
    await settle()
    queue.add_after("a", 10.0)
    await settle()
    assert clock.sleepers == 1  # the getter now sleeps until "a" is due
    queue.add_after("b", 3.0)  # due sooner: the getter re-arms for 3 s
    await clock.advance(3.0)
    assert await asyncio.wait_for(getter, 1.0) == "b"
    await clock.advance(7.0)
    assert await get_now(queue) == "a"


async def test_add_after_orders_by_due_time_and_keeps_the_earliest(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.add_after("c", 3.0)
    queue.add_after("a", 1.0)
    queue.add_after("b", 2.0)
    queue.add_after("c", 0.5)  # earlier: wins
    queue.add_after("a", 9.0)  # later: ignored
    await clock.advance(10.0)
    assert [await get_now(queue) for _ in range(3)] == ["c", "a", "b"]
    assert len(queue) == 0


async def test_add_after_zero_is_add(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.add_after("a", 0)
    queue.add_after("a", -1)
    assert len(queue) == 1


async def test_delayed_key_already_queued_is_not_duplicated(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.add("a")
    queue.add_after("a", 1.0)
    await clock.advance(1.0)
    assert len(queue) == 1


async def test_rate_limited_back_off_doubles_and_forget_resets(clock: FakeClock) -> None:
    queue = make_queue(clock, RateLimits(base_delay=1.0, max_delay=60.0, qps=1000.0, burst=1000))
    delays = []
    for attempt in range(4):
        queue.add_rate_limited("a")
        assert queue.num_requeues("a") == attempt + 1
        start = clock.now
        while len(queue) == 0:
            await clock.advance(0.25)
        delays.append(clock.now - start)
        assert await get_now(queue) == "a"
        queue.done("a")
    assert delays == [1.0, 2.0, 4.0, 8.0]
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    queue.add_rate_limited("a")
    await clock.advance(1.0)
    assert len(queue) == 1


def test_exponential_back_off_is_capped() -> None:
    backoff = ItemExponentialBackoff[str](0.005, 1000.0)
    delays = [backoff.when("a") for _ in range(2000)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert max(delays) == 1000.0
    assert delays[-1] == 1000.0
    assert backoff.when("b") == 0.005  # per key
    assert backoff.num_requeues("a") == 2000
    backoff.forget("a")
    assert backoff.num_requeues("a") == 0
    assert backoff.when("a") == 0.005


def test_token_bucket_limits_overall_rate(clock: FakeClock) -> None:
    bucket = TokenBucket[str](qps=2.0, burst=3, clock=clock)
    assert [bucket.when(k) for k in "abc"] == [0.0, 0.0, 0.0]  # the burst
    assert [bucket.when(k) for k in "def"] == [0.5, 1.0, 1.5]  # then 1/qps apart
    clock.now += 1.0  # repays two tokens of the debt of three
    assert bucket.when("g") == 1.0
    clock.now += 100.0  # refills up to the burst, no more
    assert [bucket.when(k) for k in "hijk"] == [0.0, 0.0, 0.0, 0.5]
    assert bucket.num_requeues("a") == 0


def test_default_rate_limiter_takes_the_larger_delay(clock: FakeClock) -> None:
    limits = RateLimits(base_delay=0.01, max_delay=100.0, qps=10.0, burst=2)
    limiter: MaxOfRateLimiter[str] = default_rate_limiter(limits, clock)
    assert limiter.when("a") == 0.01  # back-off, bucket has tokens
    assert limiter.when("a") == 0.02
    assert limiter.when("b") == pytest.approx(0.1)  # bucket in debt: 1/qps
    assert limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0


def test_default_limits_are_client_go_controller_defaults() -> None:
    client_go = RateLimits(base_delay=0.005, max_delay=1000.0, qps=10.0, burst=100)
    assert client_go == DEFAULT_RATE_LIMITS
    with pytest.raises(ValueError, match="qps"):
        RateLimits(qps=0)
    with pytest.raises(ValueError, match="max_delay"):
        RateLimits(base_delay=2.0, max_delay=1.0)


async def test_rate_limited_keys_share_the_token_bucket(clock: FakeClock) -> None:
    queue = make_queue(clock, RateLimits(base_delay=0.001, max_delay=1.0, qps=10.0, burst=2))
    for key in ["a", "b", "c", "d"]:
        queue.add_rate_limited(key)
    await clock.advance(0.001)
    assert len(queue) == 2  # the burst
    await clock.advance(0.1)
    assert len(queue) == 3
    await clock.advance(0.1)
    assert len(queue) == 4


async def test_cancelled_getter_does_not_strand_a_key(clock: FakeClock) -> None:
    queue = make_queue(clock)
    cancelled = asyncio.create_task(queue.get())
    waiting = asyncio.create_task(queue.get())
    await settle()
    queue.add("a")
    cancelled.cancel()
    assert await asyncio.wait_for(waiting, 1.0) == "a"
    with pytest.raises(asyncio.CancelledError):
        await cancelled


async def test_concurrent_workers_never_share_a_key_and_miss_no_add() -> None:
    # Real clock (delays are zero) and a seeded random schedule of adds and processing steps.
    rng = random.Random(7)
    queue = WorkQueue[str](name="workers")
    keys = [f"k{i}" for i in range(5)]
    in_flight: set[str] = set()
    step = itertools.count()
    last_add: dict[str, int] = {}
    last_start: dict[str, int] = {}

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            assert key not in in_flight, f"{key} handed to two workers"
            in_flight.add(key)
            last_start[key] = next(step)
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)
            in_flight.discard(key)
            queue.done(key)

    async def producer() -> None:
        for _ in range(2000):
            key = rng.choice(keys)
            last_add[key] = next(step)
            queue.add(key)
            if rng.random() < 0.5:
                await asyncio.sleep(0)

    async with asyncio.timeout(5):
        async with asyncio.TaskGroup() as group:
            for _ in range(4):
                group.create_task(worker())
            await producer()
            await queue.shutdown_with_drain()
    # Level-triggered guarantee: every key was processed after it was last added.
    assert all(last_start[key] > last_add[key] for key in last_add)
    assert len(queue) == 0


async def test_named_queue_reports_client_go_metrics(clock: FakeClock) -> None:
    """workqueue_* {name}: adds (not dedup'd ones), retries, depth read when scraped, and the
    time a key waited queued and was worked on, on the queue's clock."""
    name = "metrics-test"
    queue = WorkQueue[str](name=name, clock=clock, sleep=clock.sleep)

    def sample(metric: str) -> float:
        return metrics.snapshot().get_sample_value(metric, {"name": name}) or 0.0

    queue.add("a")
    queue.add("a")  # deduplicated: not an add
    queue.add("b")
    assert (sample("workqueue_adds_total"), sample("workqueue_depth")) == (2, 2)
    await clock.advance(3)
    key = await queue.get()
    assert sample("workqueue_queue_duration_seconds_sum") == 3
    await clock.advance(2)
    queue.done(key)
    assert sample("workqueue_work_duration_seconds_sum") == 2
    assert sample("workqueue_depth") == 1
    queue.add_rate_limited(key)
    assert sample("workqueue_retries_total") == 1
    # An unnamed queue reports nothing (client-go's rule too).
    WorkQueue[str](clock=clock, sleep=clock.sleep).add("x")
    assert metrics.snapshot().get_sample_value("workqueue_adds_total", {"name": ""}) is None
