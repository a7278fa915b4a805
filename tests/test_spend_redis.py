"""The daily spend book in Redis (``TORCHROUTER_LEDGER_REDIS_URL``): one book for every LiteLLM worker,
surviving a restart of either process. A real ``redis-server``; end to end, real LiteLLM with our hooks,
the simulated cloud (its answers priced by LiteLLM's cost map) and real classifiers."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.conftest import CLOUD_KEY, Stack, classifiers_for, running_stack
from tests.harness import eventually, free_ports, read_events
from tests.redis_server import RedisServer
from tests.test_ledger_fleet import Fleet, fleet
from torchrouter.litellm_process import LiteLLMProcess
from torchrouter.redis_spend import KEEP_S, RedisSpendBook

NOON = 1_772_366_400.0  # 2026-03-01 12:00 UTC
MIDNIGHT = 1_772_409_600.0  # 2026-03-02 00:00 UTC
BODY = {
    "model": "cloud-fast",
    "messages": [{"role": "user", "content": "What does it cost?"}],
    "max_tokens": 16,
}


async def test_each_call_counts_once_and_every_writer_shares_the_total(
    redis_server: RedisServer, flushed: aioredis.Redis
) -> None:
    a, b = RedisSpendBook(redis_server.url), RedisSpendBook(redis_server.url)  # two workers
    try:
        assert await a.today(NOON) == 0.0
        assert await a.book("call-1", 0.25, NOON) == 0.25
        assert await b.book("call-1", 0.25, NOON) == 0.25  # the same call reported again: counted once
        assert await b.book("call-2", 0.5, NOON) == 0.75
        assert await a.today(NOON) == 0.75 and await a.today(MIDNIGHT) == 0.0  # a new UTC day starts at 0
        assert 0 < await flushed.ttl(a.day_key(NOON)) <= KEEP_S  # a finished day's keys clean themselves up
        assert 0 < await flushed.ttl(a.day_key(NOON) + ":calls") <= KEEP_S
        # 400 bookings at once from both, half of them repeats of the other's calls: the total is exact.
        calls = [(a if i % 2 else b).book(f"c{i // 2}", 0.125, NOON) for i in range(400)]
        await asyncio.gather(*calls)
        assert await a.today(NOON) == 0.75 + 200 * 0.125
    finally:
        await a.close()
        await b.close()


async def _health_spend(http: aiohttp.ClientSession, url: str) -> float:
    async with http.get(url + "/health") as resp:
        return float((await resp.json())["daily_spend_usd"])


async def _cloud_answer(http: aiohttp.ClientSession, url: str) -> float:
    """One cloud answer through the classifier; its cost, as LiteLLM priced it (USD)."""
    async with http.post(url + "/v1/chat/completions", json=BODY, headers={"X-Agent-Id": "spender"}) as resp:
        assert resp.status == 200, await resp.text()
        return float(resp.headers["x-litellm-response-cost"])


def _restart_litellm(stack: Stack, env_extra: dict[str, str], *, same_port: bool = False) -> None:
    """Stop the stack's LiteLLM and start another on the same config, matrix and environment (the caller
    stops it); ``same_port``: where the running classifiers find it."""
    port = stack.litellm.port if same_port else free_ports(1)[0]
    stack.litellm.stop()
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": stack.master_key,
        "TORCHROUTER_CLOUD_API_KEY": CLOUD_KEY,
        "TORCHROUTER_CAPABILITY_MATRIX_PATH": str(stack.matrix_path),
        "TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH": str(stack.events_path),
        **env_extra,
    }
    stack.litellm = LiteLLMProcess.start(
        stack.config_path, port=port, env=env, log_path=stack.dir / "litellm-2.log"
    )
    stack.litellm.wait_ready()


async def test_the_spend_survives_a_litellm_restart_and_a_classifier_restart(
    tmp_path: Path, redis_server: RedisServer, flushed: aioredis.Redis
) -> None:
    env = {"TORCHROUTER_LEDGER_REDIS_URL": redis_server.url}
    with running_stack(tmp_path, env) as stack:
        async with aiohttp.ClientSession() as http:
            async with classifiers_for(stack) as factory:
                url = await factory(spend_redis_url=redis_server.url)
                spent = sum([await _cloud_answer(http, url) for _ in range(3)])
                assert spent > 0
                assert await _health_spend(http, url) == pytest.approx(spent, abs=1e-6)
            book = RedisSpendBook(redis_server.url)
            try:
                assert await book.today(time.time()) == pytest.approx(spent)
            finally:
                await book.close()
            events = read_events(stack.events_path)
            assert {e["spend_book"] for e in events if e["event"] == "hooks_started"} == {"redis"}

            _restart_litellm(stack, env)  # the book lives on in Redis, not in either process
            try:
                async with classifiers_for(stack) as factory:
                    url = await factory(spend_redis_url=redis_server.url)  # a restarted classifier
                    # Before any request: the classifier read today's total from the book at start.
                    assert await _health_spend(http, url) == pytest.approx(spent, abs=1e-6)
                    more = await _cloud_answer(http, url)
                    # The restarted LiteLLM resumed the book: it reports the whole day, not its own spend.
                    assert await _health_spend(http, url) == pytest.approx(spent + more, abs=1e-6)
            finally:
                stack.litellm.stop()  # running_stack stops the LiteLLM it started, already stopped here


async def _direct(http: aiohttp.ClientSession, f: Fleet, request_id: str) -> tuple[float, float]:
    """One cloud answer straight from LiteLLM (fresh connection): (its cost, the spend the hooks report)."""
    headers = {"Authorization": f"Bearer {f.key}", "x-torchrouter-request-id": request_id}
    async with http.post(f.litellm.url + "/v1/chat/completions", json=BODY, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return float(resp.headers["x-litellm-response-cost"]), float(
            resp.headers["x-torchrouter-daily-spend-usd"]
        )


def _worker_of(f: Fleet) -> dict[str, int]:
    """Request id -> the LiteLLM worker (pid) whose hooks routed it."""
    return {
        str(e["request_id"]): int(e["worker"])
        for e in read_events(f.dir / "events.jsonl")
        if e["event"] == "route_selected" and e.get("worker")
    }


async def test_two_litellm_workers_keep_one_book(
    tmp_path: Path, redis_server: RedisServer, flushed: aioredis.Redis
) -> None:
    with fleet(tmp_path, workers=2, redis_url=redis_server.url) as f:
        await eventually(lambda: len(f.litellm.worker_pids()) == 2, timeout_s=90, what="two workers")
        costs: dict[str, float] = {}
        # A new connection for every request, so that both workers' accept loops get some.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            batch = 0

            async def both_workers_spent() -> bool:
                nonlocal batch
                ids = [f"spend-{batch}-{i}" for i in range(8)]
                batch += 1
                answers = await asyncio.gather(*(_direct(http, f, rid) for rid in ids))
                costs.update({rid: cost for rid, (cost, _) in zip(ids, answers, strict=True)})
                workers = _worker_of(f)
                return len({workers[rid] for rid in costs if rid in workers}) == 2

            await eventually(both_workers_spent, timeout_s=60, what="cloud answers from both workers")
            total = sum(costs.values())
            book = RedisSpendBook(redis_server.url)
            try:
                assert await book.today(time.time()) == pytest.approx(total, rel=1e-9)
            finally:
                await book.close()
            # Sequential answers until each worker has answered again: each reports the one book's total.
            seen: set[int] = set()
            i = 0
            while len(seen) < 2 and i < 60:
                rid = f"report-{i}"
                cost, reported = await _direct(http, f, rid)
                total += cost
                assert reported == pytest.approx(total, abs=2e-8), (rid, reported, total)
                seen.add(_worker_of(f)[rid])
                i += 1
            assert len(seen) == 2, "one worker answered every sequential request"


async def test_redis_down_keeps_the_spend_known_and_says_degraded(tmp_path: Path) -> None:
    """Redis stops, and LiteLLM restarts meanwhile (a worker that never read the shared book): every cold
    local pick is refused (never overcommit), the day's spend the classifier knew never drops, ``/health``
    says ``degraded`` and why, and LiteLLM's log has one line per kind of failure, no traceback."""
    (tmp_path / "redis").mkdir()
    redis = RedisServer.start(tmp_path / "redis")
    env = {"TORCHROUTER_LEDGER_REDIS_URL": redis.url}
    try:
        with running_stack(tmp_path / "stack", env) as stack:
            async with aiohttp.ClientSession() as http, classifiers_for(stack) as factory:
                url = await factory(spend_redis_url=redis.url)
                spent = sum([await _cloud_answer(http, url) for _ in range(3)])
                assert await _health_spend(http, url) == pytest.approx(spent, abs=1e-6)
                redis.stop()
                _restart_litellm(stack, env, same_port=True)  # a worker that never read the book
                try:
                    more = await _cloud_answer(http, url)
                    for _ in range(3):  # local picks meet the ledger that does not answer
                        body = {
                            "model": "auto",
                            "messages": [{"role": "user", "content": "hi"}],
                            "max_tokens": 8,
                        }
                        async with http.post(url + "/v1/chat/completions", json=body) as resp:
                            await resp.read()
                    async with http.get(url + "/health") as resp:
                        health = await resp.json()
                    assert health["daily_spend_usd"] >= round(spent, 6) - 1e-6, (health, spent, more)
                    assert health["status"] == "degraded", health
                    assert any(d.startswith("spend_book:") for d in health["degraded"]), health
                    text = (stack.dir / "litellm-2.log").read_text()
                    assert "Traceback" not in text, text[-3000:]
                    assert text.count("spend_book failed") == 1, text[-3000:]
                    assert text.count("vram_ledger_view failed") <= 1, text[-3000:]
                    assert text.count("vram_ledger_reserve failed") <= 1, text[-3000:]
                finally:
                    stack.litellm.stop()
    finally:
        redis.stop()
