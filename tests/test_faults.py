"""Fault injection through the real stack: classifier -> LiteLLM with our hooks -> the simulated fleet.

A module-scoped stack of its own (its breakers and budgets are set small, and its breaker state must not
leak into the session stack's tests). Fast-chat is one host only (the others' fast-chat profiles are
locked out by the operator, ``codex``), so a fault on that host meets every R-tier request until its
breaker opens. For each mode: every request is answered (by the next step) or gets a clear error within
its budget, the breaker opens and recovers as configured, and after it opens no request is routed to the
failed target until its half-open trial (read from the trail: ``route_selected`` against
``breaker_changed``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Stack, classifiers_for, running_stack
from tests.harness import eventually, read_events

HOST = "matthew-100.86.174.11"
FAST = f"{HOST}/ollama/qwen3:8b"
BREAKER = (
    "consecutive_failures=2,min_requests=100,cool_off_s=1.0,auth_recheck_s=1.5,default_retry_after_s=1.0"
)
BUDGETS = "R.first_byte_s=1.0,R.first_byte_cold_s=2.0,R.total_s=10"
ANSWER_WITHIN_S = 8.0  # every request: at most one failed attempt (1-2 s budget) plus a fallback answer


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("faults")
    env = {
        "TORCHROUTER_BREAKER": BREAKER,
        "TORCHROUTER_TIME_BUDGETS": BUDGETS,
        "TORCHROUTER_PROBE_INTERVAL_S": "0.2",
    }
    with running_stack(root, env, edit_matrix=_one_fast_chat_host) as stack:
        yield stack


def _one_fast_chat_host(doc: dict[str, Any]) -> None:
    for key, profile in doc["profiles"].items():
        if profile["lane"] == "fast-chat" and key != FAST:
            profile["lockout_state"] = "codex"


@pytest.fixture
async def fault_url(fault_stack: Stack, tmp_path: Path) -> AsyncIterator[str]:
    fault_stack.sim.reset()
    async with classifiers_for(fault_stack) as factory:
        yield await factory(probe_interval_s=0.2)


async def ask(
    url: str, request_id: str, *, stream: bool = False, model: str = "auto"
) -> tuple[int, str, float]:
    body = {
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Status in one line?"}],
    }
    headers = {"X-Agent-Id": "fault-tester", "X-Request-Id": request_id}
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
            text = await resp.text()
            return resp.status, text, time.monotonic() - t0


def story(stack: Stack) -> list[dict[str, Any]]:
    return stack.events()


def routed_to(events: list[dict[str, Any]], rid: str) -> list[str]:
    return [e["deployment"] for e in events if e["event"] == "route_selected" and e["request_id"] == rid and e.get("deployment")]


def breaker_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "breaker_changed"]


async def test_explore(fault_stack: Stack, fault_url: str) -> None:
    fault_stack.sim.set_fault(HOST, "hang")
    for i in range(5):
        status, text, took = await ask(fault_url, f"hang-{i}")
        ev = read_events(fault_stack.events_path)
        print(i, status, round(took, 2), routed_to(ev, f"hang-{i}"), text[:100])
    for e in breaker_events(read_events(fault_stack.events_path)):
        print(e)
    assert False
