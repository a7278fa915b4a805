"""Daily cloud spend: a pure accumulator keyed by UTC day (yesterday's total never leaks into today).

One book: the hooks inside LiteLLM keep the :class:`SpendBook` (every answer's cost, counted once per
LiteLLM call whichever callback reports it first) and report its total on each response; the classifier's
:class:`DailySpend` mirrors that total.

Shared: with ``TORCHROUTER_LEDGER_REDIS_URL`` set, the book is kept in Redis
(``torchrouter.redis_spend.RedisSpendBook``, a :class:`SharedSpend`): every LiteLLM worker books into it,
each keeps a :class:`SpendBook` as its local view (it dedupes a call's second report, and counts on while
Redis does not answer), mirrored from the shared total; the classifier reads it at start.

Durable otherwise: with ``TORCHROUTER_SPEND_PATH`` set, the book is kept in that file (``{"day": "YYYY-MM-DD",
"total_usd": x}``, :meth:`DailySpend.to_record` / :meth:`DailySpend.from_record`; written by atomic replace,
``torchrouter_core.spend_file``), so today's total survives a restart of either process: the hooks resume
from it, the classifier starts from it until the first response reports the book.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from capability_matrix import utc_day


class SharedSpend(Protocol):
    """A day book several processes share (``torchrouter.redis_spend.RedisSpendBook``). USD, Unix seconds.
    Every method may raise (the backend did not answer)."""

    async def book(self, call_id: str, cost_usd: float, now: float) -> float:
        """Add one call's cost to the day of ``now``, once per call id; that day's total after it."""
        ...

    async def today(self, now: float) -> float:
        """The total of the day of ``now`` (0 when nothing was booked)."""
        ...

    async def close(self) -> None: ...


@dataclass
class DailySpend:
    day: dt.date | None = None
    total_usd: float = 0.0
    _day_ends: float = float("-inf")  # the current day's end as a timestamp: one float compare per call
    unknown_why: str | None = None  # why this day's total is unknown (a corrupt book); cleared with the day
    checked_at: float = float("-inf")  # when the book's file was last read again while unknown

    def add(self, cost_usd: float, now: float) -> None:
        """One answer's cost; only a finite, positive amount counts (a garbage cost is no spend)."""
        self._roll(now)
        if _spend(cost_usd):
            self.total_usd += cost_usd

    def mirror(self, total_usd: float, now: float) -> None:
        """Take the one book's total for today as ours (the classifier mirrors what the hooks report: they
        see every answer's cost, streamed ones included). A garbage total is ignored; zero is a total."""
        self._roll(now)
        if total_usd == 0 or _spend(total_usd):
            self.total_usd = float(total_usd)

    def at_least(self, total_usd: float, now: float) -> None:
        """Take ``total_usd`` only if it is more than the total known (a report from a book that could not
        read the shared total: it may know less than we do, never more than was spent)."""
        self._roll(now)
        if _spend(total_usd) and total_usd > self.total_usd:
            self.total_usd = float(total_usd)

    def today(self, now: float) -> float:
        self._roll(now)
        return self.total_usd

    def unknown(self, now: float) -> str | None:
        """Why today's total is unknown (the saved book was corrupt), or None: it is known."""
        self._roll(now)
        return self.unknown_why

    def to_record(self, now: float) -> dict[str, object]:
        self._roll(now)
        return {"day": self.day.isoformat() if self.day else None, "total_usd": self.total_usd}

    @classmethod
    def from_record(cls, record: object, now: float) -> DailySpend:
        """Today's total from a saved record; another day's, or a malformed record, is no spend today."""
        spend = cls()
        spend._roll(now)
        if isinstance(record, dict) and record.get("day") == (spend.day.isoformat() if spend.day else None):
            total = record.get("total_usd")
            if _spend(total):
                spend.total_usd = float(total)  # type: ignore[arg-type]  # _spend checked it is a number
        return spend

    def _roll(self, now: float) -> None:
        if self.day is not None and self._day_ends > now >= self._day_ends - 86400:
            return
        day = utc_day(now)
        if day != self.day:
            if self.day is not None:
                self.unknown_why = None  # a new day's spend starts at 0, known
            self.day, self.total_usd = day, 0.0
        midnight = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        self._day_ends = (midnight + dt.timedelta(days=1)).timestamp()


class SpendBook:
    """Today's cloud spend, each LiteLLM call counted once (by its call id).

    A non-streamed answer's cost is known when its response headers are built (so the response that
    crosses the budget already reports it); a streamed one's only when LiteLLM logs the success. Both
    places record; the second record of the same call is ignored. At most ``max_calls`` call ids are
    remembered (oldest forgotten first), so memory stays bounded."""

    def __init__(self, max_calls: int = 100_000, daily: DailySpend | None = None) -> None:
        self.daily = daily or DailySpend()
        self._counted: OrderedDict[str, None] = OrderedDict()
        self._max_calls = max_calls

    def record(self, call_id: str | None, cost_usd: object, now: float) -> bool:
        """``cost_usd`` that is not a finite, positive number is no spend (and does not mark the call).
        True when the total changed (the caller saves the book)."""
        if not _spend(cost_usd):
            return False
        if call_id is not None:
            if call_id in self._counted:
                return False
            self._counted[call_id] = None
            if len(self._counted) > self._max_calls:
                self._counted.popitem(last=False)
        self.daily.add(cost_usd, now)  # type: ignore[arg-type]  # _spend checked it is a number
        return True

    def today(self, now: float) -> float:
        return self.daily.today(now)


def _spend(amount: object) -> bool:
    """A real amount of money: a finite, positive number (not a bool, NaN or infinity)."""
    return (
        isinstance(amount, int | float)
        and not isinstance(amount, bool)
        and math.isfinite(amount)
        and amount > 0
    )
