"""Daily cloud spend: a pure accumulator keyed by UTC day (yesterday's total never leaks into today)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from capability_matrix import utc_day


@dataclass
class DailySpend:
    day: dt.date | None = None
    total_usd: float = 0.0
    _day_ends: float = float("-inf")  # the current day's end as a timestamp: one float compare per call

    def add(self, cost_usd: float, now: float) -> None:
        """One answer's cost; only a finite, positive amount counts (a garbage cost is no spend)."""
        self._roll(now)
        if _spend(cost_usd):
            self.total_usd += cost_usd

    def at_least(self, total_usd: float, now: float) -> None:
        """Another counter's total for today (the hooks see every answer's cost): keep the larger."""
        self._roll(now)
        if _spend(total_usd) and total_usd > self.total_usd:
            self.total_usd = total_usd

    def today(self, now: float) -> float:
        self._roll(now)
        return self.total_usd

    def _roll(self, now: float) -> None:
        if self.day is not None and self._day_ends > now >= self._day_ends - 86400:
            return
        day = utc_day(now)
        if day != self.day:
            self.day, self.total_usd = day, 0.0
        midnight = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        self._day_ends = (midnight + dt.timedelta(days=1)).timestamp()


def _spend(amount: object) -> bool:
    """A real amount of money: a finite, positive number (not a bool, NaN or infinity)."""
    return (
        isinstance(amount, int | float)
        and not isinstance(amount, bool)
        and math.isfinite(amount)
        and amount > 0
    )


def parse_cost(header_value: str | None) -> float:
    """LiteLLM's ``x-litellm-response-cost``; absent, empty or garbage counts as zero."""
    if not header_value:
        return 0.0
    try:
        cost = float(header_value)
    except ValueError:
        return 0.0
    return cost if _spend(cost) else 0.0
