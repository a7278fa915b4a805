"""Deadlines that are nearly always cancelled: many of them on one loop timer.

Every request sets its tier's total budget, and every request that waits for a lane slot sets its wait
budget; almost all of them are cancelled within milliseconds, long before they are due. As one
``loop.call_later`` each, every one is a ``TimerHandle`` pushed onto the loop's heap, whose order is a
Python ``__lt__`` per comparison, and a cancelled one stays there until it reaches the top or the loop
rebuilds the heap: several microseconds a request, measured (BENCHMARKS.md). Here a deadline is a tuple
on a heap of our own (compared in C) and the loop holds one timer, for the earliest; a cancelled deadline
is marked and dropped when it reaches the top, or when the dead outnumber the live.

A deadline still fires when the loop reaches its time, as its own ``call_later`` would: the loop timer is
always set for the earliest deadline still held, and each firing re-arms it for the next. Callbacks run
in deadline order; one that raises is reported to the loop's exception handler, as a handle's would be.

A :class:`Deadlines` is owned by what uses it (the application for the tier budgets, each lane queue for
its waiters) and works on the loop that is running when it is called (it starts over on another one).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

# Rebuild the heap once this many cancelled deadlines are in it and they outnumber the live ones.
_MIN_DEAD_TO_COMPACT = 64


class Deadline:
    """One deadline; ``cancel()`` before it fires and it never will (after, a no-op)."""

    __slots__ = ("_args", "_callback", "_owner", "done")

    def __init__(self, owner: Deadlines, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self._owner: Deadlines | None = owner
        self._callback: Callable[..., object] | None = callback
        self._args = args
        self.done = False  # fired or cancelled

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            owner, self._owner, self._callback, self._args = self._owner, None, None, ()
            if owner is not None:
                owner._one_cancelled()


class Deadlines:
    """Deadlines on the running loop; see the module docstring."""

    __slots__ = ("_armed_at", "_dead", "_handle", "_heap", "_loop", "_serial")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heap: list[tuple[float, int, Deadline]] = []
        self._serial = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._dead = 0

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Deadline:
        """``callback(*args)`` after ``delay`` seconds on the running loop, unless cancelled first."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._start_on(loop)
        when = loop.time() + delay
        deadline = Deadline(self, callback, args)
        heapq.heappush(self._heap, (when, next(self._serial), deadline))
        if when < self._armed_at:
            self._arm(loop, when)
        return deadline

    def _start_on(self, loop: asyncio.AbstractEventLoop) -> None:
        # The deadlines of another loop cannot fire any more (their loop is gone or not running).
        if self._handle is not None:
            self._handle.cancel()
        self._loop, self._heap, self._handle, self._armed_at, self._dead = loop, [], None, math.inf, 0

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = loop.call_at(when, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return  # armed on a loop since left behind
        # The loop judged the armed deadline due (to its clock's resolution): it and all before now are.
        due = max(self._armed_at, loop.time())
        self._handle, self._armed_at = None, math.inf
        heap = self._heap
        while heap and heap[0][0] <= due:
            deadline = heapq.heappop(heap)[2]
            if deadline.done:
                self._dead -= 1
                continue
            callback, args = deadline._callback, deadline._args
            deadline.done, deadline._owner, deadline._callback, deadline._args = True, None, None, ()
            try:
                callback(*args)  # type: ignore[misc]  # set until done
            except Exception as exc:  # as asyncio reports a failing handle, and go on with the rest
                loop.call_exception_handler(
                    {"message": f"Exception in deadline callback {callback!r}", "exception": exc}
                )
        if heap:
            self._arm(loop, heap[0][0])

    def _one_cancelled(self) -> None:
        self._dead += 1
        heap = self._heap
        if self._dead >= _MIN_DEAD_TO_COMPACT and 2 * self._dead > len(heap):
            heap[:] = [entry for entry in heap if not entry[2].done]
            heapq.heapify(heap)
            self._dead = 0
            # The loop timer may now be set for a deadline that is gone: it fires, finds nothing due and
            # re-arms for the earliest one left.
        if not heap and self._handle is not None:
            self._handle.cancel()
            self._handle, self._armed_at = None, math.inf

    def __len__(self) -> int:
        """Deadlines held (cancelled ones not yet dropped included)."""
        return len(self._heap)
