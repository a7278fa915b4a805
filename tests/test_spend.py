"""DailySpend and SpendBook: today's cloud spend, per UTC day, counting only real amounts, once per call."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from capability_matrix import DEFAULT_MATRIX_PATH, MatrixStore, utc_day
from capability_matrix.view import FleetView
from tests.conftest import ClassifierFactory, Stack
from torchrouter_core import spend_file
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


def test_the_book_survives_a_restart_through_its_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "spend.json"
    book = SpendBook(daily=spend_file.load(path, NOON))  # no file yet: nothing spent
    assert book.record("c1", 0.25, NOON) and not book.record("c1", 0.25, NOON)
    spend_file.save(path, book.daily, NOON)
    assert spend_file.load(path, NOON + 60).today(NOON + 60) == 0.25  # a restarted process resumes
    assert spend_file.load(path, MIDNIGHT).today(MIDNIGHT) == 0.0  # yesterday's book is not today's
    assert [p.name for p in path.parent.iterdir()] == ["spend.json"]  # no temporary file left behind


CORRUPT = [
    "{not json",
    "[1, 2]",
    '"str"',
    '{"day": "2026-03-01", "total_usd": "lots"}',
    '{"total_usd": -1}',
    "",
]


@pytest.mark.parametrize("text", CORRUPT)
def test_a_corrupt_book_is_kept_aside_and_today_is_unknown_and_locked(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spend.json"
    path.write_text(text)
    spend = spend_file.load(path, NOON)
    why = spend.unknown(NOON)
    assert why is not None and "corrupt" in why
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("spend.json.corrupt-20260301T")]
    assert not path.exists() and len(aside) == 1 and aside[0].read_text() == text  # kept, not lost
    assert len([r for r in caplog.records if "corrupt" in r.getMessage()]) == 1  # one clear line

    spend_file.save(path, spend, NOON)  # the hooks never write over the book the operator has to fix
    assert not path.exists()
    other = spend_file.load(path, NOON + 1)  # the other process, starting after the rename: unknown too
    assert other.unknown(NOON + 1) is not None

    clock = [NOON + 2]
    fleet = FleetView(
        MatrixStore(DEFAULT_MATRIX_PATH),
        daily_budget_usd=10.0,
        spend_today=spend.today,
        spend_unknown=lambda now: spend_file.unknown_reason(path, spend, now),
        clock=lambda: clock[0],
    )
    reason = fleet.budget_reason(NOON + 2)
    assert reason is not None and "unknown" in reason and aside[0].name in reason
    # The operator writes a valid book back: read again within RECHECK_S, the lockout lifts.
    path.write_text('{"day": "2026-03-01", "total_usd": 2.5}')
    assert fleet.budget_reason(NOON + 3) is not None  # not re-read yet
    assert fleet.budget_reason(NOON + 3 + spend_file.RECHECK_S) is None
    assert spend.today(NOON + 10) == 2.5


def test_an_unknown_day_clears_when_the_utc_day_rolls(tmp_path: Path) -> None:
    path = tmp_path / "spend.json"
    path.write_text("{garbage")
    spend = spend_file.load(path, NOON)
    fleet = FleetView(
        MatrixStore(DEFAULT_MATRIX_PATH),
        daily_budget_usd=10.0,
        spend_today=spend.today,
        spend_unknown=lambda now: spend_file.unknown_reason(path, spend, now),
    )
    assert fleet.budget_reason(NOON) is not None
    assert fleet.budget_reason(MIDNIGHT + 1) is None  # a new day starts known, at 0
    assert spend_file.load(path, MIDNIGHT + 2).unknown(MIDNIGHT + 2) is None  # yesterday's aside is old


def test_without_a_budget_an_unknown_spend_locks_nothing(tmp_path: Path) -> None:
    path = tmp_path / "spend.json"
    path.write_text("{garbage")
    spend = spend_file.load(path, NOON)
    fleet = FleetView(
        MatrixStore(DEFAULT_MATRIX_PATH),
        daily_budget_usd=None,
        spend_today=spend.today,
        spend_unknown=lambda now: spend_file.unknown_reason(path, spend, now),
    )
    assert fleet.budget_reason(NOON) is None


async def test_a_restarted_classifier_starts_from_the_durable_book(
    make_classifier: ClassifierFactory, tmp_path: Path
) -> None:
    import time

    import aiohttp

    path = tmp_path / "spend.json"
    now = time.time()
    spend_file.save(
        path, DailySpend.from_record({"day": utc_day(now).isoformat(), "total_usd": 1.5}, now), now
    )
    url = await make_classifier(spend_path=path)
    async with aiohttp.ClientSession() as session, session.get(url + "/health") as resp:
        assert (await resp.json())["daily_spend_usd"] == 1.5


async def test_a_classifier_started_on_a_corrupt_book_keeps_the_cloud_locked(
    stack: Stack, make_classifier: ClassifierFactory, tmp_path: Path
) -> None:
    import aiohttp

    path = tmp_path / "spend.json"
    path.write_text("{corrupt")
    url = await make_classifier(spend_path=path, daily_budget_usd=5.0)
    body = {"model": "cloud-fast", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status == 200
        group = resp.headers["X-Router-Group"]
    assert not group.startswith("cloud"), group  # the cloud is locked: a local lane answered
    locked = [e for e in stack.events() if e["event"] == "lockout_changed" and "corrupt" in e["reason"]]
    assert locked and locked[-1]["state"] == "budget" and "spend.json.corrupt-" in locked[-1]["reason"]
    async with aiohttp.ClientSession() as session:  # unknown is not zero: /health and the metric say so
        async with session.get(url + "/health") as resp:
            health = await resp.json()
        async with session.get(url + "/metrics") as resp:
            metrics_text = await resp.text()
    assert health["status"] == "degraded" and health["daily_spend_usd"] is None, health
    assert "spend.json.corrupt-" in health["spend_unknown"] and "spend_book:unknown" in health["degraded"]
    assert "classifier_daily_spend_usd NaN" in metrics_text
