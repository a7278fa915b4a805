"""DailySpend: today's cloud spend, per UTC day, counting only real amounts."""

from __future__ import annotations

import math

import pytest

from torchrouter_core.spend import DailySpend, parse_cost

NOON = 1_772_366_400.0  # 2026-03-01 12:00 UTC
MIDNIGHT = 1_772_409_600.0  # 2026-03-02 00:00 UTC


def test_adds_within_a_day_and_starts_over_at_utc_midnight() -> None:
    spend = DailySpend()
    spend.add(0.25, NOON)
    spend.add(0.5, MIDNIGHT - 1)
    assert spend.today(MIDNIGHT - 1) == pytest.approx(0.75)
    assert spend.today(MIDNIGHT) == 0.0  # yesterday's total never leaks into today
    spend.add(0.1, MIDNIGHT + 5)
    assert spend.today(MIDNIGHT + 6) == pytest.approx(0.1)


@pytest.mark.parametrize("garbage", [0.0, -1.0, math.nan, math.inf, -math.inf, True])
def test_only_a_finite_positive_amount_is_spend(garbage: float) -> None:
    spend = DailySpend()
    spend.add(0.5, NOON)
    spend.add(garbage, NOON)
    spend.at_least(garbage, NOON)
    assert spend.today(NOON) == 0.5


def test_at_least_keeps_the_larger_total() -> None:
    spend = DailySpend()
    spend.add(0.5, NOON)
    spend.at_least(0.2, NOON)
    assert spend.today(NOON) == 0.5
    spend.at_least(2.0, NOON)
    assert spend.today(NOON) == 2.0


@pytest.mark.parametrize(
    ("header", "cost"),
    [(None, 0.0), ("", 0.0), ("abc", 0.0), ("nan", 0.0), ("inf", 0.0), ("-0.5", 0.0), ("0.0125", 0.0125)],
)
def test_parse_cost(header: str | None, cost: float) -> None:
    assert parse_cost(header) == cost
