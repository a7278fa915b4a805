"""An eviction end to end (issue #9): real LiteLLM with our hooks, the simulated fleet, one request that can
only be served by loading a model that does not fit beside an idle resident one.

The shipped fleet, with every balanced deployment but frodo's ``qwen2.5:32b`` locked out (``codex``) so
that the only local candidate is that one; frodo (16 GB, two models at most) has ``qwen3:8b`` (6.5 GB)
loaded directly at the simulated Ollama before LiteLLM starts (loaded before the hooks watched: no
hysteresis; never served by the router: not hot). The 32B model (14 GB + Ollama's minimum memory) does not
fit in the 9.5 GB left, so the ranker plans to evict ``qwen3:8b`` (idle), reserves with it as the victim,
and the simulated Ollama evicts exactly that model and loads the 32B one. Checked from the simulator's own
accounting, sampled while the request runs: memory in use never above capacity, zero spills, one eviction;
and the trail's ``route_selected`` names the victim; the ledger is back at zero afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import SimThread, eventually, ledger_is_empty, litellm_on_sim, read_events
from torchrouter.litellm_process import LiteLLMProcess
from torchrouter_core.contract import RouteReport

TIME_SCALE = 0.05
FRODO = "frodo-100.86.174.12"
BIG = f"{FRODO}/ollama/qwen2.5:32b"
SMALL = "qwen3:8b"


def frodo_only_balanced(
    tmp: Path,
) -> contextlib.AbstractContextManager[tuple[SimThread, LiteLLMProcess, str]]:
    # qwen3:8b resident on frodo before the router starts watching, as after an earlier session
    return litellm_on_sim(tmp, only={"balanced": {BIG}}, preload=[(FRODO, SMALL)], time_scale=TIME_SCALE)


def _frodo(sim: SimThread) -> dict[str, Any]:
    state: dict[str, Any] = sim.state()[FRODO]
    return state


async def test_a_request_that_needs_an_eviction_gets_it_without_overcommit(tmp_path: Path) -> None:
    with frodo_only_balanced(tmp_path) as (sim, proxy, key):
        before = _frodo(sim)
        assert [r["model"] for r in before["resident"]] == [SMALL] and before["counters"]["evictions"] == 0
        capacity = float(before["gpu_memory_gb"])
        headers = {"Authorization": f"Bearer {key}", "x-torchrouter-request-id": "evict-1"}
        body = {"model": "balanced", "messages": [{"role": "user", "content": "plan this"}], "max_tokens": 8}
        peak: list[float] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

            async def post() -> tuple[int, dict[str, str], str]:
                url = proxy.url + "/v1/chat/completions"
                async with session.post(url, json=body, headers=headers) as resp:
                    text = await resp.text()
                    return resp.status, {k.lower(): v for k, v in resp.headers.items()}, text

            call = asyncio.create_task(post())
            while not call.done():  # the simulator's own accounting, sampled throughout
                state = _frodo(sim)
                peak.append(state["memory_in_use_gb"])
                assert state["memory_in_use_gb"] <= capacity + 1e-6, state
                await asyncio.sleep(0.01)
            status, response_headers, text = await call
        assert status == 200, text
        report = RouteReport.from_headers(response_headers)
        assert report.deployment == BIG and f"sim:{FRODO}:qwen2.5:32b" in text
        after = _frodo(sim)
        assert [r["model"] for r in after["resident"]] == ["qwen2.5:32b"]
        counters = after["counters"]
        assert (counters["evictions"], counters["spills"], counters["loads"]) == (1, 0, 2)
        assert max(peak) <= capacity
        routed = [
            e for e in read_events(tmp_path / "events.jsonl")
            if e["event"] == "route_selected" and e["request_id"] == "evict-1"
        ]  # fmt: skip
        assert len(routed) == 1 and routed[0]["deployment"] == BIG
        assert [v["model"] for v in routed[0]["eviction"]["victims"]] == [SMALL]
        assert routed[0]["reservation"]["victims"] == [SMALL]
        assert routed[0]["estimated_ttft_ms"] > 0

        async def ledger_empty() -> bool:
            return await ledger_is_empty(proxy, key)

        await eventually(ledger_empty, timeout_s=30, what="the ledger back at zero")
