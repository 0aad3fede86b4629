"""The scheduling queue on a fake clock: active order, back-off, unschedulable and moves."""

from __future__ import annotations

import asyncio

import pytest

from k8semu.scheduler.queue import QueueClosed, SchedulingQueue
from tests.scheduler.helpers import pod


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> SchedulingQueue:
    return SchedulingQueue(initial_backoff=1.0, max_backoff=4.0, max_unschedulable=60, clock=clock)


async def test_active_is_fifo_by_first_arrival_and_dedups(
    queue: SchedulingQueue, clock: FakeClock
) -> None:
    queue.add(pod("a"))
    clock.now += 1
    queue.add(pod("b"))
    queue.add(pod("a"))  # already queued: no second entry
    assert queue.lengths() == (2, 0, 0)
    assert (await queue.pop()).key == "default/a"
    assert (await queue.pop()).key == "default/b"
    assert queue.where("default/a") == "in flight"


async def test_unschedulable_waits_for_a_cluster_change(
    queue: SchedulingQueue, clock: FakeClock
) -> None:
    queue.add(pod("a"))
    qp = await queue.pop()
    queue.add_unschedulable(qp)
    assert queue.where("default/a") == "unschedulable"
    clock.now += 30
    queue.flush()
    assert queue.where("default/a") == "unschedulable"  # no change: it stays
    assert queue.move_all_to_active("NodeAdd") == 1
    assert queue.where("default/a") == "active"  # its 1 s back-off is long over


async def test_move_during_backoff_goes_to_backoff_then_active(
    queue: SchedulingQueue, clock: FakeClock
) -> None:
    queue.add(pod("a"))
    queue.add_unschedulable(await queue.pop())
    queue.move_all_to_active("NodeAdd")  # within the 1 s back-off
    assert queue.where("default/a") == "backoff"
    clock.now += 0.5
    queue.flush()
    assert queue.where("default/a") == "backoff"
    clock.now += 0.6
    queue.flush()
    assert queue.where("default/a") == "active"


async def test_backoff_doubles_up_to_the_maximum(queue: SchedulingQueue) -> None:
    assert [queue.backoff_duration(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 4.0, 4.0]


async def test_a_change_during_the_cycle_is_not_missed(
    queue: SchedulingQueue, clock: FakeClock
) -> None:
    queue.add(pod("a"))
    qp = await queue.pop()
    queue.move_all_to_active("NodeAdd")  # while "a" was being scheduled
    queue.add_unschedulable(qp)
    assert queue.where("default/a") == "backoff"


async def test_updating_an_unschedulable_pod_retries_it(
    queue: SchedulingQueue, clock: FakeClock
) -> None:
    queue.add(pod("a"))
    queue.add_unschedulable(await queue.pop())
    queue.update(pod("a"))  # same spec: stays
    assert queue.where("default/a") == "unschedulable"
    clock.now += 2
    queue.update(pod("a", cpu="100m"))
    assert queue.where("default/a") == "active"


async def test_long_unschedulable_pods_are_flushed(
    queue: SchedulingQueue, clock: FakeClock
) -> None:
    queue.add(pod("a"))
    queue.add_unschedulable(await queue.pop())
    clock.now += 60
    queue.flush()
    assert queue.where("default/a") == "active"


async def test_delete_removes_and_drops_an_in_flight_failure(queue: SchedulingQueue) -> None:
    queue.add(pod("a"))
    queue.add(pod("b"))
    qp = await queue.pop()
    queue.delete("default/a")
    queue.delete("default/b")
    queue.add_unschedulable(qp)
    assert queue.lengths() == (0, 0, 0)
    assert "default/a" not in queue


async def test_add_backoff_after_a_bind_error(queue: SchedulingQueue, clock: FakeClock) -> None:
    queue.add(pod("a"))
    qp = await queue.pop()
    queue.add_backoff(qp)
    assert queue.where("default/a") == "backoff"
    clock.now += 1
    queue.flush()
    again = await queue.pop()
    assert again.attempts == 2


async def test_pop_waits_for_a_pod_and_close_ends_it() -> None:
    queue = SchedulingQueue()
    waiter = asyncio.create_task(queue.pop())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.add(pod("a"))
    assert (await asyncio.wait_for(waiter, 5)).key == "default/a"
    waiter = asyncio.create_task(queue.pop())
    await asyncio.sleep(0)
    queue.close()
    with pytest.raises(QueueClosed):
        await asyncio.wait_for(waiter, 5)


async def test_pop_wakes_when_a_backoff_ends() -> None:
    queue = SchedulingQueue(initial_backoff=0.05, max_backoff=0.05)
    queue.add(pod("a"))
    queue.add_backoff(await queue.pop())
    assert (await asyncio.wait_for(queue.pop(), 5)).key == "default/a"


async def test_a_status_update_in_flight_does_not_skip_unschedulable(
    queue: SchedulingQueue,
) -> None:
    queue.add(pod("a"))
    qp = await queue.pop()
    status_only = pod("a")
    status_only.status.conditions.add(type="PodScheduled", status="False")
    queue.update(status_only)  # e.g. the scheduler's own condition write
    queue.add_unschedulable(qp)
    assert queue.where("default/a") == "unschedulable"
    queue.add(pod("b"))
    qb = await queue.pop()
    queue.update(pod("b", cpu="1"))  # the spec changed while it was being scheduled
    queue.add_unschedulable(qb)
    assert queue.where("default/b") == "backoff"
