"""LaneQueue: FIFO slots, bounded line, timeouts, run-time limits, and cancellation races."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from classifier.lane_queue import LaneFullError, LaneQueue, Ticket
from torchrouter_core.queue_policy import GroupSnapshot

T = TypeVar("T")


async def tick(steps: int = 3) -> None:
    for _ in range(steps):
        await asyncio.sleep(0)


async def settle(awaitable: Awaitable[T]) -> T:
    """Await with a deadline, so a leaked slot fails the test instead of hanging it."""
    async with asyncio.timeout(5.0):
        return await awaitable


async def test_grants_up_to_the_limit_then_queues() -> None:
    lane = LaneQueue("balanced", limit=2, max_depth=5)
    first, second = await lane.acquire(), await lane.acquire()
    waiter = asyncio.create_task(lane.acquire())
    await tick()
    assert (lane.active, lane.depth, waiter.done()) == (2, 1, False)
    lane.release(first)
    assert (lane.active, lane.depth) == (2, 0)  # the slot went straight to the waiter
    lane.release(await settle(waiter))
    lane.release(second)
    assert (lane.active, lane.depth) == (0, 0)


async def test_waiters_are_served_first_come_first_served() -> None:
    lane = LaneQueue("code", limit=1, max_depth=20)
    holder = await lane.acquire()
    order: list[int] = []

    async def worker(index: int) -> None:
        async with lane.slot():
            order.append(index)
            await tick(1)

    tasks = []
    for index in range(10):
        tasks.append(asyncio.create_task(worker(index)))
        await tick(1)
    lane.release(holder)
    await settle(asyncio.gather(*tasks))
    assert order == list(range(10))
    assert lane.active == 0


async def test_a_newcomer_cannot_overtake_a_woken_waiter() -> None:
    lane = LaneQueue("fast-chat", limit=1, max_depth=5)
    holder = await lane.acquire()
    waiter = asyncio.create_task(lane.acquire())
    await tick()
    lane.release(holder)
    newcomer = asyncio.create_task(lane.acquire())
    await tick()
    assert waiter.done() and not newcomer.done()
    lane.release(waiter.result())
    lane.release(await settle(newcomer))
    assert lane.active == 0


async def test_a_full_line_is_refused() -> None:
    lane = LaneQueue("balanced", limit=1, max_depth=2)
    holder = await lane.acquire()
    waiters = [asyncio.create_task(lane.acquire()) for _ in range(2)]
    await tick()
    with pytest.raises(LaneFullError, match="balanced: 2 requests already waiting"):
        await lane.acquire()
    lane.release(holder)
    for waiter in waiters:
        lane.release(await settle(waiter))
    no_line = LaneQueue("code", limit=1, max_depth=0)
    held = await no_line.acquire()
    with pytest.raises(LaneFullError):
        await no_line.acquire()
    no_line.release(held)


async def test_timeout_leaves_the_line() -> None:
    lane = LaneQueue("balanced", limit=1, max_depth=5)
    holder = await lane.acquire()
    with pytest.raises(TimeoutError):
        await lane.acquire(timeout_s=0.01)
    assert (lane.active, lane.depth) == (1, 0)
    lane.release(holder)
    assert lane.active == 0
    lane.release(await lane.acquire(timeout_s=0.0))  # a free slot needs no time


async def test_expired_then_cancelled_in_the_same_step_leaks_nothing() -> None:
    """The timer fails the waiter and the client goes away before its task runs again."""
    lane = LaneQueue("balanced", limit=1, max_depth=5)
    holder = await lane.acquire()
    waiter = asyncio.create_task(lane.acquire(timeout_s=0.01))
    await tick()
    await asyncio.sleep(0.03)  # the timer has fired: the waiter is out of the line, its future failed
    assert lane.depth == 0
    waiter.cancel()
    with pytest.raises((asyncio.CancelledError, TimeoutError)):
        await settle(waiter)
    lane.release(holder)
    assert (lane.active, lane.depth) == (0, 0)
    lane.release(await lane.acquire(timeout_s=0.0))


async def test_a_grant_that_beats_the_timer_is_kept() -> None:
    """A grant before the timer's moment is the waiter's to keep: the timer must not fail it later."""
    lane = LaneQueue("balanced", limit=1, max_depth=5)
    holder = await lane.acquire()
    waiter = asyncio.create_task(lane.acquire(timeout_s=0.02))
    await tick()
    lane.release(holder)  # grants the slot to the waiter, whose task has not run yet
    await asyncio.sleep(0.05)  # the timer's moment passes too
    ticket = await settle(waiter)
    assert (lane.active, lane.depth) == (1, 0)
    lane.release(ticket)
    assert lane.active == 0


async def test_a_cancelled_waiter_leaves_the_line_at_once() -> None:
    lane = LaneQueue("balanced", limit=1, max_depth=5)
    holder = await lane.acquire()
    waiter = asyncio.create_task(lane.acquire())
    await tick()
    assert lane.depth == 1
    waiter.cancel()
    assert lane.depth == 0  # before the waiter's task has even run again
    with pytest.raises(asyncio.CancelledError):
        await settle(waiter)
    lane.release(holder)
    assert (lane.active, lane.depth) == (0, 0)


async def test_cancelled_at_the_moment_of_the_grant_passes_the_slot_on() -> None:
    lane = LaneQueue("balanced", limit=1, max_depth=5)
    holder = await lane.acquire()
    first = asyncio.create_task(lane.acquire())
    second = asyncio.create_task(lane.acquire())
    await tick()
    lane.release(holder)  # grants the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs again
    assert lane.active == 1
    with pytest.raises(asyncio.CancelledError):
        await settle(first)
    ticket = await settle(second)
    assert lane.active == 1
    lane.release(ticket)
    assert (lane.active, lane.depth) == (0, 0)


async def test_raising_the_limit_and_cancelling_in_the_same_step() -> None:
    lane = LaneQueue("code", limit=1, max_depth=5)
    holder = await lane.acquire()
    waiter = asyncio.create_task(lane.acquire())
    await tick()
    lane.limit = 2
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await settle(waiter)
    assert lane.active == 1
    lane.release(holder)
    assert lane.active == 0


async def test_limit_changes_at_run_time() -> None:
    lane = LaneQueue("balanced", limit=2, max_depth=10)
    held = [await lane.acquire(), await lane.acquire()]
    lane.limit = 1  # the fleet shrank: running requests keep their slots
    waiter = asyncio.create_task(lane.acquire())
    lane.release(held.pop())
    await tick()
    assert (lane.active, waiter.done()) == (1, False)
    lane.release(held.pop())
    held.append(await settle(waiter))
    waiters = [asyncio.create_task(lane.acquire()) for _ in range(3)]
    await tick()
    lane.limit = 3  # the fleet grew: the first two in line get slots
    await tick()
    assert [w.done() for w in waiters] == [True, True, False]
    assert (lane.active, lane.depth) == (3, 1)
    for waiter in waiters[:2]:
        lane.release(waiter.result())
    lane.release(held.pop())
    lane.release(await settle(waiters[2]))
    assert lane.active == 0
    with pytest.raises(ValueError, match="limit must be >= 0"):
        lane.limit = -1


async def test_max_depth_changes_at_run_time() -> None:
    lane = LaneQueue("code", limit=1, max_depth=2)
    holder = await lane.acquire()
    waiters = [asyncio.create_task(lane.acquire()) for _ in range(2)]
    await tick()
    lane.max_depth = 1  # nobody already in line is evicted
    assert lane.depth == 2
    with pytest.raises(LaneFullError, match="max 1"):
        await lane.acquire()
    lane.release(holder)
    for waiter in waiters:
        lane.release(await settle(waiter))
    assert lane.active == 0
    with pytest.raises(ValueError, match="code: max_depth must be >= 0"):
        LaneQueue("code", limit=1, max_depth=-1)


async def test_release_rejects_unknown_and_double_release() -> None:
    lane = LaneQueue("balanced", limit=1, max_depth=1)
    ticket = await lane.acquire()
    lane.release(ticket)
    with pytest.raises(ValueError, match="released twice"):
        lane.release(ticket)
    with pytest.raises(ValueError, match="not held"):
        lane.release(Ticket("code", 1))


async def test_slot_releases_when_the_block_raises() -> None:
    lane = LaneQueue("balanced", limit=1, max_depth=1)
    with pytest.raises(RuntimeError, match="upstream"):
        async with lane.slot(timeout_s=1.0) as ticket:
            assert ticket.group == "balanced"
            raise RuntimeError("upstream failed")
    assert lane.active == 0


async def test_snapshot_reports_the_line() -> None:
    lane = LaneQueue("code", limit=1, max_depth=4)
    holder = await lane.acquire()
    waiter = asyncio.create_task(lane.acquire())
    await tick()
    snapshot = lane.snapshot(est_service_ms=2500.0)
    expected = GroupSnapshot("code", limit=1, active=1, depth=1, max_depth=4, est_service_ms=2500.0)
    assert dataclasses.replace(snapshot, elapsed_ms=()) == expected
    assert len(snapshot.elapsed_ms) == 1 and 0.0 <= snapshot.elapsed_ms[0] < 1000.0
    lane.release(holder)
    lane.release(await settle(waiter))


@pytest.mark.parametrize("seed", range(8))
async def test_random_cancellation_never_leaks_a_slot(seed: int) -> None:
    rng = random.Random(seed)
    lane = LaneQueue("balanced", limit=3, max_depth=40)
    arrivals: list[int] = []
    granted: dict[int, int] = {}  # arrival index -> ticket serial
    waiting: dict[int, asyncio.Task[Any]] = {}  # suspended in acquire(), by arrival index
    cancelled: set[int] = set()
    holding = 0
    races = 0  # cancels that landed after the grant but before the waiter ran

    def cancel_oldest_waiter() -> None:
        nonlocal races
        candidates = [i for i in sorted(waiting) if i not in cancelled]
        if candidates:
            depth = lane.depth
            waiting[candidates[0]].cancel()
            cancelled.add(candidates[0])
            races += lane.depth == depth

    async def worker(index: int) -> None:
        nonlocal holding
        await tick(rng.randrange(5))
        arrivals.append(index)
        task = asyncio.current_task()
        assert task is not None
        waiting[index] = task
        try:
            ticket = await lane.acquire()
        except LaneFullError:
            return
        finally:
            del waiting[index]
        granted[index] = ticket.serial
        holding += 1
        assert holding <= lane.limit
        try:
            await tick(rng.randrange(4))
        finally:
            holding -= 1
            lane.release(ticket)
            if rng.random() < 0.5:
                cancel_oldest_waiter()

    tasks = [asyncio.create_task(worker(i)) for i in range(300)]
    for _ in range(40):
        await tick(rng.randrange(1, 4))
        victim = rng.randrange(len(tasks))
        tasks[victim].cancel()
        cancelled.add(victim)
    results = await settle(asyncio.gather(*tasks, return_exceptions=True))

    # Only a cancel may end a worker early: an AssertionError inside one (over the limit) must fail the test.
    assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results), results
    assert (lane.active, lane.depth, holding) == (0, 0, 0)
    assert races > 0
    served = [granted[i] for i in arrivals if i in granted]
    assert served == sorted(served), "slots were not granted in arrival order"
    ticket = await lane.acquire(timeout_s=0.0)  # the lane still works
    lane.release(ticket)


async def test_concurrent_acquirers_with_run_time_limit_changes() -> None:
    rng = random.Random(99)
    lane = LaneQueue("fast-chat", limit=2, max_depth=1000)
    limits = [2]  # every limit the lane has had: a lowered one takes effect only as slots come back
    holding = 0

    async def worker() -> None:
        nonlocal holding
        async with lane.slot(timeout_s=rng.choice([None, 0.001, 0.01])):
            holding += 1
            try:
                assert holding <= lane.active <= max(limits)  # granted ones may not have run yet
                await asyncio.sleep(rng.random() / 1000)
            finally:
                holding -= 1

    tasks = [asyncio.create_task(worker()) for _ in range(200)]
    for limit in (5, 0, 1, 4, 2):
        await asyncio.sleep(0.001)
        limits.append(limit)
        lane.limit = limit
        rng.choice(tasks).cancel()
    limits.append(3)
    lane.limit = 3
    results = await settle(asyncio.gather(*tasks, return_exceptions=True))
    # A worker may end only served, timed out or cancelled; anything else is a bug it caught.
    assert all(r is None or isinstance(r, TimeoutError | asyncio.CancelledError) for r in results), results
    assert (
        sum(r is None for r in results) > 50
    )  # about a third wait without a timeout: all of them are served
    assert (lane.active, lane.depth) == (0, 0)
