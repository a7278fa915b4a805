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
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.harness import SimThread, eventually, free_ports, read_events, render_fleet_files
from tests.test_eviction_fleet import _preload
from torchrouter.litellm_process import LiteLLMProcess
from torchrouter.sim import fleet_spec_from_matrix
from torchrouter_core import trail
from torchrouter_core.contract import RouteReport

TIME_SCALE = 0.2
MATTHEW, SAMWISE = "matthew-100.86.174.11", "samwise-100.86.174.14"
MODEL = "qwen3:8b"
WARM, SPARE = f"{MATTHEW}/ollama/{MODEL}", f"{SAMWISE}/ollama/{MODEL}"


@contextlib.contextmanager
def two_copies(
    tmp: Path, prewarm: str | None, on_samwise: str | None = None
) -> Iterator[tuple[SimThread, LiteLLMProcess, str]]:
    render_fleet_files(tmp)
    matrix_path = tmp / "matrix.yaml"
    doc = yaml.safe_load(matrix_path.read_text())
    for key, profile in doc["profiles"].items():
        if profile["lane"] == "fast-chat" and key not in (WARM, SPARE):
            profile["lockout_state"] = "codex"
    matrix_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    sim = SimThread(fleet_spec_from_matrix(doc, cloud_api_key="k", seed=5, time_scale=TIME_SCALE))
    sim.start()
    key = "sk-test-" + secrets.token_hex(8)
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": key,
        "TORCHROUTER_CLOUD_API_KEY": "k",
        "TORCHROUTER_CAPABILITY_MATRIX_PATH": str(matrix_path),
        "TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH": str(tmp / "events.jsonl"),
        "TORCHROUTER_PROBE_INTERVAL_S": "0.5",
    }
    env.pop("TORCHROUTER_LEDGER_REDIS_URL", None)
    env.pop("TORCHROUTER_PREWARM", None)
    if prewarm is not None:
        env["TORCHROUTER_PREWARM"] = prewarm
    proxy: LiteLLMProcess | None = None
    try:
        _preload(sim.fleet.host_urls[MATTHEW], MODEL)  # resident on matthew before the router watches
        if on_samwise is not None:  # an idle model of another group, loaded before the router watched
            _preload(sim.fleet.host_urls[SAMWISE], on_samwise)
        proxy = LiteLLMProcess.start(
            tmp / "litellm_config.yaml", port=free_ports(1)[0], env=env, log_path=tmp / "litellm.log"
        )
        proxy.wait_ready()
        yield sim, proxy, key
    finally:
        if proxy is not None:
            proxy.stop()
        sim.stop()


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


async def _ledger_empty(proxy: LiteLLMProcess, key: str) -> bool:
    probe = {"model": "cloud-fast", "messages": [{"role": "user", "content": "?"}], "max_tokens": 2}
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            proxy.url + "/v1/chat/completions", json=probe, headers={"Authorization": f"Bearer {key}"}
        ) as r,
    ):
        await r.read()
        return RouteReport.from_headers({k.lower(): v for k, v in r.headers.items()}).ledger == {}


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
            return await _ledger_empty(proxy, key)

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
            return await _ledger_empty(proxy, key)

        await eventually(settled, timeout_s=30, what="the ledger back at zero")
