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
import json
import os
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.harness import SimThread, eventually, free_ports, read_events, render_fleet_files
from torchrouter.litellm_process import LiteLLMProcess
from torchrouter.sim import fleet_spec_from_matrix
from torchrouter_core.contract import RouteReport

TIME_SCALE = 0.05
FRODO = "frodo-100.86.174.12"
BIG = f"{FRODO}/ollama/qwen2.5:32b"
SMALL = "qwen3:8b"


@contextlib.contextmanager
def frodo_only_balanced(tmp: Path) -> Iterator[tuple[SimThread, LiteLLMProcess, str]]:
    render_fleet_files(tmp)
    matrix_path = tmp / "matrix.yaml"
    doc = yaml.safe_load(matrix_path.read_text())
    for key, profile in doc["profiles"].items():
        if profile["lane"] == "balanced" and key != BIG:
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
    proxy: LiteLLMProcess | None = None
    try:
        # qwen3:8b resident on frodo before the router starts watching, as after an earlier session
        _preload(sim.fleet.host_urls[FRODO], SMALL)
        proxy = LiteLLMProcess.start(
            tmp / "litellm_config.yaml", port=free_ports(1)[0], env=env, log_path=tmp / "litellm.log"
        )
        proxy.wait_ready()
        yield sim, proxy, key
    finally:
        if proxy is not None:
            proxy.stop()
        sim.stop()


def _preload(url: str, model: str) -> None:
    """One request straight to the simulated Ollama (not through the router): the model loads there."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False})
    request = urllib.request.Request(url + "/api/chat", data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
        resp.read()


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
            probe = {"model": "cloud-fast", "messages": [{"role": "user", "content": "?"}], "max_tokens": 2}
            async with (
                aiohttp.ClientSession() as s,
                s.post(
                    proxy.url + "/v1/chat/completions", json=probe, headers={"Authorization": f"Bearer {key}"}
                ) as resp,
            ):
                await resp.read()
                seen = RouteReport.from_headers({k.lower(): v for k, v in resp.headers.items()})
            return seen.ledger == {}

        await eventually(ledger_empty, timeout_s=30, what="the ledger back at zero")
