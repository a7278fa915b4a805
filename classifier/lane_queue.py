"""LaneQueue: the asyncio admission gate in front of one LiteLLM group (our backpressure on Ollama).

This module owns slots and the line for them. It grants at most ``limit`` slots at a time, first come first
served, and keeps at most ``max_depth`` requests waiting. ``queue_policy`` decides *whether* to join a line;
this module enforces it.

Exceptions::

    Exception
     ├── LaneFullError    acquire() found the line already holding max_depth waiters
     └── TimeoutError     (builtin) acquire() waited longer than its timeout

Guarantees:

* FIFO: a newcomer never takes a slot while anyone is waiting; a freed slot goes straight to the head of the
  line (``active`` stays the same), so no one can overtake between a release and the wake-up.
* Cancellation-safe: a waiter whose task is cancelled (client disconnect) or times out leaves the line at
  once (``depth`` no longer counts it) and never leaks a slot. If the slot was granted at the same moment,
  the waiter hands it on before re-raising, so the grant is not lost either.
* ``limit`` and ``max_depth`` may change at run time (the fleet changed). A higher limit wakes waiters; a
  lower one takes effect as slots are released, and a lower max_depth only refuses newcomers: running and
  waiting requests are never evicted.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from classifier.deadlines import Deadlines
from torchrouter_core.queue_policy import GroupSnapshot

# Waiters are the loop's futures (``loop.create_future()``); their ``done`` as a plain function lets the
# line be counted and filtered in C rather than a Python loop over every waiter on each arrival.
_done = asyncio.Future.done
_size_of: Callable[[tuple[float, int | None]], int | None] = operator.itemgetter(1)


class LaneFullError(Exception):
    """The lane's line is full; the caller should move down the ladder or shed."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """Proof of a held slot; give it back with ``LaneQueue.release``."""

    group: str
    serial: int


def _non_negative(group: str, name: str, value: int) -> int:
    if value < 0:
        raise ValueError(f"{group}: {name} must be >= 0, got {value}")
    return value


class LaneQueue:
    def __init__(self, group: str, limit: int, max_depth: int) -> None:
        self.group = group
        self._limit = _non_negative(group, "limit", limit)
        self._max_depth = _non_negative(group, "max_depth", max_depth)
        self._waiters: deque[asyncio.Future[Ticket]] = deque()
        self._held: dict[int, tuple[float, int | None]] = {}  # serial -> (granted at, monotonic s; size)
        self._sizes: dict[asyncio.Future[Ticket], int | None] = {}  # each waiter's request size
        self._serials = itertools.count(1)
        self._timers = Deadlines()  # the waiters' timeouts (classifier.deadlines)

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._limit = _non_negative(self.group, "limit", value)
        self._grant_waiters()

    @property
    def max_depth(self) -> int:
        return self._max_depth

    @max_depth.setter
    def max_depth(self, value: int) -> None:
        self._max_depth = _non_negative(self.group, "max_depth", value)

    @property
    def active(self) -> int:
        return len(self._held)

    @property
    def depth(self) -> int:
        # A cancelled waiter's future is done at once, before its task runs again: don't count it.
        return len(self._waiters) - sum(map(_done, self._waiters))

    def snapshot(
        self, est_service_ms: float, service_of: Callable[[int | None], float] | None = None
    ) -> GroupSnapshot:
        """The line as the policy sees it; ``service_of`` prices one request by its size (else the mean),
        called once per distinct size."""
        now = time.monotonic()
        held = list(self._held.values())
        elapsed = tuple([(now - start) * 1e3 for start, _ in held])
        live = list(itertools.filterfalse(_done, self._waiters))
        busy: tuple[float, ...] = ()
        line: tuple[float, ...] = ()
        if service_of is not None and len(held) + len(live) >= self._limit:
            # Only a full lane needs its line priced (the estimate is 0 while a slot is free). Sizes
            # repeat (most requests give the same max_tokens or none): price each once.
            held_sizes = list(map(_size_of, held))
            line_sizes = list(map(self._sizes.get, live))
            price = {size: service_of(size) for size in {*held_sizes, *line_sizes}}
            busy = tuple(map(price.__getitem__, held_sizes))
            line = tuple(map(price.__getitem__, line_sizes))
        return GroupSnapshot(
            self.group,
            self._limit,
            len(held),
            len(live),
            self._max_depth,
            est_service_ms,
            elapsed,
            busy,
            line,
        )

    def _grant(self, size: int | None) -> Ticket:
        ticket = Ticket(self.group, next(self._serials))
        self._held[ticket.serial] = (time.monotonic(), size)
        return ticket

    def _grant_waiters(self) -> None:
        while self._waiters and self.active < self._limit:
            waiter = self._waiters.popleft()
            size = self._sizes.pop(waiter, None)
            if not waiter.done():
                waiter.set_result(self._grant(size))

    def grant_now(self, size: int | None = None) -> Ticket | None:
        """A slot at once if one is free and nobody is waiting (as ``acquire`` would grant it), else None."""
        if len(self._held) < self._limit and self.depth == 0:
            return self._grant(size)
        return None

    async def acquire(self, timeout_s: float | None = None, *, size: int | None = None) -> Ticket:
        """Wait for a slot, first come first served. Raises LaneFullError or TimeoutError.

        ``size`` (the request's output-token budget, when known) only feeds the wait estimate."""
        depth = self.depth
        if depth == 0 and self.active < self._limit:
            return self._grant(size)
        if depth >= self._max_depth:
            raise LaneFullError(f"{self.group}: {depth} requests already waiting (max {self._max_depth})")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Ticket] = loop.create_future()
        self._waiters.append(waiter)
        self._sizes[waiter] = size
        # A plain timer rather than asyncio.timeout(): on expiry it takes the waiter out of the line and
        # fails its future with TimeoutError, which costs the waiting task nothing extra per wake-up. It is
        # one of the lane's shared deadlines (almost every wait ends with a grant long before it is due).
        timer = (
            None if timeout_s is None else self._timers.call_later(timeout_s, self._expire, waiter, timeout_s)
        )
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled (client disconnect). If the grant landed in the same loop step, pass the slot on.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())
            else:
                waiter.cancel()
                with suppress(ValueError):  # already popped by a grant or an expiry
                    self._waiters.remove(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._sizes.pop(waiter, None)

    def _expire(self, waiter: asyncio.Future[Ticket], timeout_s: float) -> None:
        if waiter.done():
            return
        with suppress(ValueError):
            self._waiters.remove(waiter)
        self._sizes.pop(waiter, None)
        waiter.set_exception(TimeoutError(f"{self.group}: no slot within {timeout_s:.3f} s"))

    def release(self, ticket: Ticket) -> None:
        """Give a slot back; the head of the line gets it. Releasing twice is a bug and raises ValueError."""
        if ticket.group != self.group or ticket.serial not in self._held:
            raise ValueError(f"{self.group}: ticket {ticket} is not held here (released twice?)")
        del self._held[ticket.serial]
        self._grant_waiters()

    @asynccontextmanager
    async def slot(self, timeout_s: float | None = None) -> AsyncIterator[Ticket]:
        """``async with lane.slot(timeout_s) as ticket:`` holds a slot for the block, however it ends."""
        ticket = await self.acquire(timeout_s)
        try:
            yield ticket
        finally:
            self.release(ticket)
