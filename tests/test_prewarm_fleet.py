"""A prewarm end to end (issue #9): real LiteLLM with our hooks, the simulated fleet, a burst on a group whose
one resident copy has two slots.

The shipped fleet with every ``fast-chat`` deployment but matthew's and samwise's locked out (``codex``);
matthew (2 slots) has ``qwen3:8b`` loaded directly at the simulated Ollama before LiteLLM starts, samwise
has nothing. A burst of requests to ``fast-chat`` puts more than 3/4 of matthew's two slots in flight, so the
hooks load the model on samwise ahead of need (``/api/chat`` with no messages), holding its memory in the
VRAM ledger. Checked from the simulator's own accounting, sampled throughout: memory in use never above any
host's capacity, zero spills and zero evictions, one load on samwise that no request asked for; from the
trail: ``prewarm`` started then loaded, for samwise, with the demand and slots that set it off; every request
answered 200; the ledger back at zero afterwards. Then the same with ``TORCHROUTER_PREWARM=off``: no prewarm;
and with an idle model of another group filling samwise: the prewarm evicts it (as a request's pick could),
never over capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from litellm_hooks.prewarm import LoadFailed, load_model
from tests.harness import SimThread, eventually, ledger_is_empty, litellm_on_sim, read_events, served
from torchrouter.litellm_process import LiteLLMProcess
from torchrouter_core import trail

TIME_SCALE = 0.2
MATTHEW, SAMWISE = "matthew-100.86.174.11", "samwise-100.86.174.14"
MODEL = "qwen3:8b"
WARM, SPARE = f"{MATTHEW}/ollama/{MODEL}", f"{SAMWISE}/ollama/{MODEL}"


def two_copies(
    tmp: Path, prewarm: str | None, on_samwise: str | None = None, warm_matthew: bool = True
) -> contextlib.AbstractContextManager[tuple[SimThread, LiteLLMProcess, str]]:
    preload = ([(MATTHEW, MODEL)] if warm_matthew else []) + (
        [(SAMWISE, on_samwise)] if on_samwise is not None else []
    )
    return litellm_on_sim(
        tmp,
        only={"fast-chat": {WARM, SPARE}},
        preload=preload,  # resident before the router watches (the other group's model: idle, not hot)
        time_scale=TIME_SCALE,
        env={"TORCHROUTER_PREWARM": prewarm},
    )


async def _burst(sim: SimThread, proxy: LiteLLMProcess, key: str, n: int) -> list[tuple[int, str]]:
    """``n`` concurrent requests to fast-chat, the simulator's memory checked against capacity throughout."""
    headers = {"Authorization": f"Bearer {key}"}
    states = sim.state()
    capacity = {h: float(s["gpu_memory_gb"]) for h, s in states.items() if "gpu_memory_gb" in s}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def post(i: int) -> tuple[int, str]:
            body = {
                "model": "fast-chat",
                "messages": [{"role": "user", "content": f"summarise item {i}"}],
                "max_tokens": 120,
            }
            request_headers = {**headers, "x-torchrouter-request-id": f"burst-{i}"}
            url = proxy.url + "/v1/chat/completions"
            async with session.post(url, json=body, headers=request_headers) as resp:
                return resp.status, await resp.text()

        calls = [asyncio.create_task(post(i)) for i in range(n)]
        while not all(c.done() for c in calls):
            for host, state in sim.state().items():
                if host in capacity:
                    assert state["memory_in_use_gb"] <= capacity[host] + 1e-6, state
            await asyncio.sleep(0.01)
        return [c.result() for c in calls]


def _prewarms(tmp: Path) -> list[dict[str, Any]]:
    return [e for e in read_events(tmp / "events.jsonl") if e["event"] == "prewarm"]


async def test_a_burst_on_one_resident_copy_loads_a_second_copy_ahead_of_need(tmp_path: Path) -> None:
    with two_copies(tmp_path, None) as (sim, proxy, key):
        answers = await _burst(sim, proxy, key, 4)
        assert [status for status, _ in answers] == [200] * 4, answers

        async def loaded() -> bool:
            return [e["outcome"] for e in _prewarms(tmp_path)] == ["started", "loaded"]

        await eventually(loaded, timeout_s=30, what="the prewarm loaded")
        started, done = _prewarms(tmp_path)
        assert started["deployment"] == done["deployment"] == SPARE and started["host_id"] == SAMWISE
        assert started["group"] == "fast-chat" and started["slots"] == 2 and started["demand"] >= 2
        assert started["reservation"]["gb"] > 0 and started["reservation"]["victims"] == []
        assert done["load_ms"] > 0 and done["error"] is None
        assert started["request_id"] in {f"burst-{i}" for i in range(4)}
        assert trail.problems(read_events(tmp_path / "events.jsonl")) == []
        story = trail.render(trail.story(read_events(tmp_path / "events.jsonl"), started["request_id"]))
        assert f"prewarm of {SPARE}: loaded in" in story, story
        samwise = sim.state()[SAMWISE]
        assert MODEL in [r["model"] for r in samwise["resident"]]
        counters = samwise["counters"]
        assert (counters["loads"], counters["evictions"], counters["spills"]) == (1, 0, 0), counters
        for state in sim.state().values():
            if "counters" in state:
                assert state["counters"].get("spills", 0) == 0 and state["counters"].get("evictions", 0) == 0

        async def settled() -> bool:
            return await ledger_is_empty(proxy, key)

        await eventually(settled, timeout_s=30, what="the ledger back at zero")


async def test_no_prewarm_when_it_is_turned_off(tmp_path: Path) -> None:
    with two_copies(tmp_path, "off") as (sim, proxy, key):
        answers = await _burst(sim, proxy, key, 4)
        assert [status for status, _ in answers] == [200] * 4, answers
        assert _prewarms(tmp_path) == []
        picked = [
            e["deployment"] for e in read_events(tmp_path / "events.jsonl") if e["event"] == "route_selected"
        ]
        if SPARE not in picked:  # a load there can only have been a request's own
            assert sim.state()[SAMWISE]["counters"]["loads"] == 0


async def test_a_prewarm_evicts_an_idle_model_as_a_requests_pick_could(tmp_path: Path) -> None:
    # samwise (24 GB) holds qwen2.5-coder:32b (21 GB), idle and never served by the router: qwen3:8b fits
    # there only once it is unloaded, which the eviction rules allow (not busy, not hot, listed long ago)
    coder = "qwen2.5-coder:32b"
    with two_copies(tmp_path, None, on_samwise=coder) as (sim, proxy, key):
        answers = await _burst(sim, proxy, key, 4)
        assert [status for status, _ in answers] == [200] * 4, answers

        async def loaded() -> bool:
            return [e["outcome"] for e in _prewarms(tmp_path)] == ["started", "loaded"]

        await eventually(loaded, timeout_s=30, what="the prewarm loaded")
        started, _ = _prewarms(tmp_path)
        assert started["deployment"] == SPARE and started["reservation"]["victims"] == [coder]
        assert [v["model"] for v in started["eviction"]["victims"]] == [coder]
        story = trail.render(trail.story(read_events(tmp_path / "events.jsonl"), started["request_id"]))
        assert f'"victims": ["{coder}"]' in story, story  # explain names what the prewarm evicted
        samwise = sim.state()[SAMWISE]
        assert [r["model"] for r in samwise["resident"]] == [MODEL]
        counters = samwise["counters"]
        assert (counters["loads"], counters["evictions"], counters["busy_evictions"], counters["spills"]) == (
            2,
            1,
            0,
            0,
        ), counters
        assert trail.problems(read_events(tmp_path / "events.jsonl")) == []

        async def settled() -> bool:
            return await ledger_is_empty(proxy, key)

        await eventually(settled, timeout_s=30, what="the ledger back at zero")


async def test_a_burst_on_a_cold_group_does_not_all_pick_the_same_copy(tmp_path: Path) -> None:
    # Nothing resident, prewarm off: the first pick's reserve lets the others rank meanwhile; they see its
    # load under way and its place in the line, so the burst spreads instead of all waiting on one copy
    with two_copies(tmp_path, "off", warm_matthew=False) as (sim, proxy, key):
        answers = await _burst(sim, proxy, key, 6)
        assert [status for status, _ in answers] == [200] * 6, answers
        picked = [
            e["deployment"] for e in read_events(tmp_path / "events.jsonl") if e["event"] == "route_selected"
        ]
        assert len(picked) == 6 and set(picked) == {WARM, SPARE}, picked
        for host in (MATTHEW, SAMWISE):
            counters = sim.state()[host]["counters"]
            assert (counters["loads"], counters["spills"]) == (1, 0), (host, counters)

        async def settled() -> bool:
            return await ledger_is_empty(proxy, key)

        await eventually(settled, timeout_s=30, what="the ledger back at zero")


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (200, b'{"model": "m", "done": true, "done_reason": "load"}', None),
        (500, b'{"error": "out of memory"}', "HTTP 500 from http://ops:***@127.0.0.1:"),
        (200, b"<html>proxy</html>", "not Ollama's answer from http://ops:***@"),
        (200, b'{"done": false}', "not Ollama's answer"),
    ],
)
async def test_the_load_call_says_what_the_host_answered_and_never_the_password(
    status: int, body: bytes, said: str | None
) -> None:
    seen: list[dict[str, Any]] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/chat", chat)
    async with served(app) as url:
        base = url.replace("http://", "http://ops:hunter2@")  # credentials in api_base
        if said is None:
            await load_model(base, "m", "30s", 5.0)
        else:
            with pytest.raises(LoadFailed) as failed:
                await load_model(base, "m", "30s", 5.0)
            assert said in str(failed.value) and "hunter2" not in str(failed.value), failed.value
    assert seen == [{"model": "m", "messages": [], "stream": False, "keep_alive": "30s"}]


async def test_the_load_call_gives_up_at_its_budget_and_on_a_closed_port() -> None:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    app = web.Application()
    app.router.add_post("/api/chat", hang)
    async with served(app) as url:
        with pytest.raises(LoadFailed, match=r"within 0\.2 s"):
            await load_model(url, "m", None, 0.2)
    with pytest.raises(LoadFailed, match="ClientConnectorError"):
        await load_model(url, "m", None, 2.0)  # the server is gone
