"""The ranker learns a deployment's service time and prompt rate from Ollama's own timings (issue #9): real
LiteLLM with our hooks, the simulated fleet, requests that wait in Ollama's line.

The shipped fleet with every balanced deployment but frodo's ``qwen2.5:32b`` locked out (frodo has one
slot), that model loaded before the router starts. Three requests sent at once run one after another on
the slot, so their calls take about R, 2R and 3R of wall time for R on the slot; a service time taken from
the wall would blend to about 1.8R, one from Ollama's ``prompt_eval_duration`` + ``eval_duration`` stays at
R. Then one request holds the slot and another ranks behind it: its ``route_selected`` estimate is the
prompt plus one service time of wait (``torchrouter_core.ranker.scorers.estimated_ttft_s``), read against
a third request's estimate on the idle slot (the prompt alone) and R from the simulated host's own records.
Last, a long prompt teaches the prompt rate (``prompt_eval_count`` / ``prompt_eval_duration``): the next
long prompt's estimate on the idle slot is its evaluation at the simulated host's pace, not at the prior
(2000 tokens/s x ``speed_score``, real seconds, twenty times this fleet's time scale).
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import SimThread, eventually, litellm_on_sim, read_events
from torchrouter.sim.ollama_app import PROMPT_SPEEDUP, HostRuntime

TIME_SCALE = 0.05
FRODO = "frodo-100.86.174.12"
BIG = f"{FRODO}/ollama/qwen2.5:32b"


def _runs(sim: SimThread, prefix: str) -> list[tuple[float, float]]:
    """(seconds on the slot, seconds since it was submitted) of each finished request whose prompt starts
    with ``prefix``, from frodo's own history (wall time)."""

    async def read() -> list[tuple[float, float]]:
        runtime = sim.fleet.runtime(FRODO)
        assert isinstance(runtime, HostRuntime)
        out = []
        for t in runtime.sched.history:
            if t.label.startswith(prefix) and t.finished_at is not None and t.started_at is not None:
                began = max(t.started_at, t.ready_at or t.started_at)
                out.append((t.finished_at - began, t.finished_at - t.submitted_at))
        return out

    return sim.run(read())


def _busy(sim: SimThread) -> bool:
    return any(r["active"] for r in sim.state()[FRODO]["resident"])


def _prompt_s(sim: SimThread, prompt: str) -> float:
    """Wall seconds frodo's qwen2.5:32b takes to evaluate ``prompt`` as one user message (the simulated
    Ollama's own count and pace: ``torchrouter.sim.ollama_app``)."""
    runtime = sim.fleet.runtime(FRODO)
    assert isinstance(runtime, HostRuntime)
    model = runtime.spec.model("qwen2.5:32b")
    assert model is not None
    tokens = 4 + -(-len(prompt) // 4)
    return tokens / (model.tokens_per_s * PROMPT_SPEEDUP) * TIME_SCALE


async def test_ollama_s_timings_teach_the_run_time_not_the_wait_and_the_prompt_rate(tmp_path: Path) -> None:
    with litellm_on_sim(
        tmp_path,
        only={"balanced": {BIG}},
        preload=[(FRODO, "qwen2.5:32b")],
        time_scale=TIME_SCALE,
        env={"TORCHROUTER_PREWARM": "off"},
    ) as (sim, proxy, key):
        url = proxy.url + "/v1/chat/completions"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

            async def post(request_id: str, prompt: str, max_tokens: int) -> None:
                body: dict[str, Any] = {
                    "model": "balanced",
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens,
                }
                headers = {"Authorization": f"Bearer {key}", "x-torchrouter-request-id": request_id}
                async with session.post(url, json=body, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()

            # Three at once on one slot: the second and third wait in Ollama's line.
            await asyncio.gather(*(post(f"line-{i}", f"lined {i} up", 24) for i in range(3)))
            runs = _runs(sim, "lined")
            assert len(runs) == 3
            on_slot = statistics.fmean(run for run, _ in runs)
            walls = sorted(wall for _, wall in runs)
            assert walls[-1] > 2.5 * on_slot, runs  # the last one did wait for the two before it

            # One holds the slot; one more ranks behind it.
            holder = asyncio.create_task(post("holder", "hold the slot", 200))
            await eventually(lambda: _busy(sim), timeout_s=10, what="the holder running on frodo")
            await post("behind", "wait your turn", 4)
            await holder
            await post("alone", "wait your turn", 4)  # same prompt, the slot idle: the prompt's part alone
            long_prompt = "review this diff line by line " * 400  # about 3,000 tokens
            await post("teach", long_prompt, 4)  # its prompt's evaluation teaches the rate
            await post("long", long_prompt + "again", 4)
            prompt_s = _prompt_s(sim, long_prompt + "again")

        routed = {
            e["request_id"]: e
            for e in read_events(tmp_path / "events.jsonl")
            if e["event"] == "route_selected" and e["deployment"] == BIG
        }
        assert {"behind", "alone", "teach", "long"} <= routed.keys(), sorted(routed)
        wait_s = (routed["behind"]["estimated_ttft_ms"] - routed["alone"]["estimated_ttft_ms"]) / 1e3
        # The estimate's service time is the last sample blended in (the holder's, an answer of 200 tokens,
        # is still running): the three lined-up calls' run on the slot, not their 1R-3R of wall time.
        assert 0.7 * on_slot <= wait_s <= 1.3 * on_slot, (wait_s, on_slot, walls)
        # The long prompt on the idle slot: its evaluation at the rate the first one showed (the hooks count
        # chars / 4 tokens, Ollama 4 + chars / 4: within a few percent), where the prior says ~20x more.
        before, after = routed["teach"]["estimated_ttft_ms"] / 1e3, routed["long"]["estimated_ttft_ms"] / 1e3
        assert 0.75 * prompt_s <= after <= 1.25 * prompt_s, (after, prompt_s)
        assert before > 5 * prompt_s, (before, prompt_s)  # the prior, before any long prompt was seen


async def test_a_long_prompt_is_not_cut_at_the_tier_s_first_byte_budget(tmp_path: Path) -> None:
    """A prompt whose evaluation alone takes longer than the tier's first-byte budget (here 0.05 s; the
    request names no tier: H) is given twice the ranker's expected time to first token, and answers; a
    short one keeps the tier's budget. Before, the attempt was cut at the budget (LiteLLM's 408, a breaker
    charge), then the next deployment's."""
    with litellm_on_sim(
        tmp_path,
        only={"balanced": {BIG}},
        preload=[(FRODO, "qwen2.5:32b")],
        time_scale=TIME_SCALE,
        env={"TORCHROUTER_PREWARM": "off", "TORCHROUTER_TIME_BUDGETS": "H.first_byte_s=0.05"},
    ) as (sim, proxy, key):
        long_prompt = "review this diff line by line " * 400  # about 3,000 tokens
        assert _prompt_s(sim, long_prompt) > 0.05 * 2  # its evaluation alone is over the budget
        body = {"model": "balanced", "messages": [{"role": "user", "content": long_prompt}], "max_tokens": 4}
        headers = {"Authorization": f"Bearer {key}", "x-torchrouter-request-id": "long-1"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
            session.post(proxy.url + "/v1/chat/completions", json=body, headers=headers) as resp,
        ):
            text = await resp.text()
        assert resp.status == 200, text
        failed = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "attempt_failed"]
        assert failed == []
