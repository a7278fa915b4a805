"""DailySpend and SpendBook: today's cloud spend, per UTC day, counting only real amounts, once per call."""

from __future__ import annotations

import math

import pytest

from torchrouter_core.spend import DailySpend, SpendBook

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
    assert spend.today(NOON) == 0.5


@pytest.mark.parametrize("garbage", [-1.0, math.nan, math.inf, -math.inf, True])
def test_mirror_takes_the_books_total_and_ignores_garbage(garbage: float) -> None:
    spend = DailySpend()
    spend.mirror(2.0, NOON)
    spend.mirror(0.5, NOON)  # the book's total, not the larger of two: a LiteLLM restart starts it over
    assert spend.today(NOON) == 0.5
    spend.mirror(garbage, NOON)
    assert spend.today(NOON) == 0.5
    spend.mirror(0, NOON)
    assert spend.today(NOON) == 0.0


def test_the_book_counts_each_call_once_whichever_callback_reports_it() -> None:
    book = SpendBook()
    book.record("call-1", 0.25, NOON)  # response headers (non-streamed: cost known)
    book.record("call-1", 0.25, NOON)  # the success log of the same call
    book.record("call-2", None, NOON)  # a stream: no cost at header time ...
    book.record("call-2", 0.5, NOON)  # ... counted when LiteLLM logs it
    book.record("call-3", math.nan, NOON)
    book.record(None, 0.125, NOON)  # no call id: counted (never dropped)
    assert book.today(NOON) == pytest.approx(0.875)
    assert book.today(MIDNIGHT) == 0.0


def test_the_book_forgets_old_call_ids_so_memory_stays_bounded() -> None:
    book = SpendBook(max_calls=2)
    for call in ("a", "b", "c"):
        book.record(call, 1.0, NOON)
    book.record("a", 1.0, NOON)  # forgotten: counted again (the bound is far above a day's calls)
    book.record("c", 1.0, NOON)  # remembered: not counted
    assert book.today(NOON) == 4.0
