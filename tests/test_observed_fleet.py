"""The ranker learns a deployment's service time from Ollama's own timings (issue #9): real LiteLLM with our
hooks, the simulated fleet, requests that wait in Ollama's line.

The shipped fleet with every balanced deployment but frodo's ``qwen2.5:32b`` locked out (frodo has one
slot), that model loaded before the router starts. Three requests sent at once run one after another on
the slot, so their calls take about R, 2R and 3R of wall time for R on the slot; a service time taken from
the wall would blend to about 1.8R, one from Ollama's ``prompt_eval_duration`` + ``eval_duration`` stays at
R. Then one request holds the slot and another ranks behind it: its ``route_selected`` estimate is the
prompt plus one service time of wait (``torchrouter_core.ranker.scorers.estimated_ttft_s``), read against
a third request's estimate on the idle slot (the prompt alone) and R from the simulated host's own records.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import SimThread, eventually, litellm_on_sim, read_events
from torchrouter.sim.ollama_app import HostRuntime

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


async def test_a_call_that_waited_in_ollama_s_line_teaches_its_run_time_not_its_wait(tmp_path: Path) -> None:
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

        routed = {
            e["request_id"]: e
            for e in read_events(tmp_path / "events.jsonl")
            if e["event"] == "route_selected" and e["deployment"] == BIG
        }
        assert {"behind", "alone"} <= routed.keys(), sorted(routed)
        wait_s = (routed["behind"]["estimated_ttft_ms"] - routed["alone"]["estimated_ttft_ms"]) / 1e3
        # The estimate's service time is the last sample blended in (the holder's, an answer of 200 tokens,
        # is still running): the three lined-up calls' run on the slot, not their 1R-3R of wall time.
        assert 0.7 * on_slot <= wait_s <= 1.3 * on_slot, (wait_s, on_slot, walls)
