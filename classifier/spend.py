"""Daily cloud spend: a pure accumulator keyed by UTC day (yesterday's total never leaks into today)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


def utc_day(now: float) -> dt.date:
    return dt.datetime.fromtimestamp(now, tz=dt.UTC).date()


@dataclass
class DailySpend:
    day: dt.date | None = None
    total_usd: float = 0.0
    _day_ends: float = float("-inf")  # the current day's end as a timestamp: one float compare per call

    def add(self, cost_usd: float, now: float) -> None:
        self._roll(now)
        if cost_usd > 0:
            self.total_usd += cost_usd

    def at_least(self, total_usd: float, now: float) -> None:
        """Another counter's total for today (the hooks see every answer's cost): keep the larger."""
        self._roll(now)
        if total_usd > self.total_usd:
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


def parse_cost(header_value: str | None) -> float:
    """LiteLLM's ``x-litellm-response-cost``; absent, empty or garbage counts as zero."""
    if not header_value:
        return 0.0
    try:
        cost = float(header_value)
    except ValueError:
        return 0.0
    return cost if cost > 0 and cost == cost and cost != float("inf") else 0.0
