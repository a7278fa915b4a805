"""The hooks inside LiteLLM: started with the proxy, and their adapters read and write the contract.

The first test reads the trail of the session's real LiteLLM proxy. The others drive a real
:class:`RouterHooks` in this process against the session's simulated fleet, calling the hook methods the
way LiteLLM 1.102.4 does (the data shapes of ``DESIGN.md``); nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from capability_matrix import WarmState
from litellm_hooks.hooks import RouterHooks
from litellm_hooks.reservations import Held
from litellm_hooks.settings import HooksSettings
from tests.conftest import Stack
from tests.harness import eventually, read_events, wait_for_event
from tests.test_ollama_timings import answer as ollama_answer
from torchrouter_core.contract import RouteReport, RouteRequest
from torchrouter_core.ranker import RequestNeeds
from torchrouter_core.usability import HostRoom


def test_litellm_starts_the_hooks_before_the_first_route(stack: Stack) -> None:
    trail = read_events(stack.events_path)
    kinds = [e["event"] for e in trail]
    assert "hooks_started" in kinds, "LiteLLM's start-up hook did not run ours"
    started = trail[kinds.index("hooks_started")]
    assert started["started_by"] == "litellm_startup", started
    assert started["matrix_path"] == str(stack.matrix_path)
    assert kinds.count("hooks_started") == 1
    if "route_selected" in kinds:
        assert kinds.index("hooks_started") < kinds.index("route_selected")


@pytest.fixture
async def hooks(stack: Stack, tmp_path: Path) -> AsyncIterator[tuple[RouterHooks, Path]]:
    events = tmp_path / "events.jsonl"
    settings = HooksSettings(matrix_path=stack.matrix_path, event_path=str(events), probe_interval_s=0.2)
    instance = RouterHooks(load_settings=lambda: settings)
    await instance.start()
    yield instance, events
    await instance.stop()


async def _last(path: Path, kind: str) -> dict[str, Any]:
    """The last ``kind`` event (the sink writes a loop iteration's lines at the end of it)."""

    def found() -> dict[str, Any] | None:
        return next((e for e in reversed(read_events(path)) if e["event"] == kind), None)

    event: dict[str, Any] = await eventually(found, what=f"a {kind} event")
    return event


def _deployments(stack: Stack, group: str) -> list[dict[str, Any]]:
    config = yaml.safe_load(stack.config_path.read_text())
    return [d for d in config["model_list"] if d["model_name"] == group]


async def test_start_polls_the_fleet_and_stop_ends_the_probe(hooks: tuple[RouterHooks, Path]) -> None:
    instance, events = hooks
    runtime = instance._runtime
    assert runtime is not None and runtime.probe_task is not None
    await asyncio.wait_for(runtime.first_round.wait(), 10)
    assert len(runtime.fleet.observations) == 5 and all(
        o.reachable for o in runtime.fleet.observations.values()
    )
    task = runtime.probe_task
    await instance.stop()
    assert task.done() and runtime.probe_task is None
    assert [e["started_by"] for e in read_events(events) if e["event"] == "hooks_started"] == [
        "litellm_startup"
    ]


async def test_litellm_knows_every_local_model_so_it_never_asks_a_host_synchronously(
    stack: Stack, hooks: tuple[RouterHooks, Path]
) -> None:
    """LiteLLM's success logging fetches ``/api/show`` synchronously, on the event loop, for an Ollama
    model it does not know; the hooks tell it every local model of the matrix at start."""
    from litellm.llms.ollama.common_utils import OllamaModelInfo

    models = {p["model"] for p in yaml.safe_load(stack.matrix_path.read_text())["profiles"].values()
              if p["provider"] == "ollama"}  # fmt: skip
    assert models
    for model in sorted(models):
        assert OllamaModelInfo._is_static_ollama_model(f"ollama_chat/{model}"), model


async def test_the_adapters_carry_the_contract(stack: Stack, hooks: tuple[RouterHooks, Path]) -> None:
    instance, events = hooks
    request = RouteRequest(
        request_id="hooks-test-1",
        group="balanced",
        tier="H",
        agent_id="webmaster",
        # Only the 40k-context deployments of the lane hold this: the filter must use these needs.
        needs=RequestNeeds(prompt_tokens=35_000, max_output_tokens=1000, needs_tools=True),
        route=("balanced", "code"),
    )
    data: dict[str, Any] = {
        "model": "balanced",
        "litellm_call_id": "call-1",
        "messages": [{"role": "user", "content": "hi"}],  # short: the carried needs, not the body, decide
        "proxy_server_request": {"headers": {**request.to_headers(), "authorization": "Bearer x"}},
    }
    data = await instance.async_pre_call_hook(None, None, data, "completion")
    deployments = _deployments(stack, "balanced")
    picked = await instance.async_filter_deployments("balanced", deployments, data["messages"], data)
    assert len(picked) == 1
    key = picked[0]["model_info"]["id"]
    selected = await _last(events, "route_selected")
    assert selected["request_id"] == "hooks-test-1" and selected["deployment"] == key
    assert selected["outcome"] == "routed"
    assert key.endswith("/qwen3:30b-a3b"), key
    assert {k for k, why in selected["rejected"].items() if why == "context_window"} == {
        d["model_info"]["id"] for d in deployments if d["model_info"]["id"].endswith("/qwen2.5:32b")
    }
    headers = await instance.async_post_call_response_headers_hook(data, None, None)
    assert headers is not None
    report = RouteReport.from_headers(headers)
    assert report.deployment == key and report.warm_state is not None
    assert report.hook_errors == 0 and report.auth_lockouts == frozenset() and report.daily_spend_usd == 0.0


async def test_a_request_that_bypassed_the_classifier_is_ranked_from_its_body(
    stack: Stack, hooks: tuple[RouterHooks, Path]
) -> None:
    instance, events = hooks
    data: dict[str, Any] = {
        "model": "fast-chat",
        "litellm_call_id": "call-2",
        "messages": [{"role": "user", "content": "x" * 200_000}],  # 50k tokens: no fast-chat model holds it
        "proxy_server_request": {"headers": {}},
    }
    data = await instance.async_pre_call_hook(None, None, data, "completion")
    picked = await instance.async_filter_deployments(
        "fast-chat", _deployments(stack, "fast-chat"), None, data
    )
    assert picked == []  # LiteLLM answers "no deployments" and falls back
    selected = await _last(events, "route_selected")
    assert selected["request_id"] == "call-2" and selected["outcome"] == "no_candidate"
    # the body decides (context window); usability rules may also rule some out first, by fleet state
    assert "context_window" in set(selected["rejected"].values())
    assert set(selected["rejected"].values()) <= {"context_window", "host_unreachable", "no_room"}
    assert instance.errors == 0


async def test_a_stream_cut_midway_releases_its_reservation_exactly_once(
    stack: Stack, hooks: tuple[RouterHooks, Path]
) -> None:
    instance, _ = hooks
    runtime = instance._runtime
    assert runtime is not None
    await asyncio.wait_for(runtime.first_round.wait(), 10)
    matrix = runtime.fleet.matrix()
    local = next(p for p in matrix.profiles.values() if p.is_local)
    cold = dataclasses.replace(local, warm_state=WarmState.COLD)
    token = "lease-token-cut"
    held = await runtime.reservations.reserve(token, cold, HostRoom(1000.0, 10), matrix, time.time())
    assert isinstance(held, Held)
    metadata = {"torchrouter": {"lease_token": token}}

    async def chunks() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    stream = instance.async_post_call_streaming_iterator_hook(None, chunks(), {"metadata": metadata})
    assert await stream.__anext__() == 0
    assert runtime.reservations.held  # held while the stream runs
    await stream.aclose()  # the client went away after the first chunk
    assert runtime.reservations.held == {}
    assert await runtime.reservations.ledger.release(held.lease_id, held.host_id, time.time()) is False
    # LiteLLM's failure log for the same call comes later and finds nothing left to release
    kwargs = {"metadata": metadata, "litellm_params": {"model_info": {"id": cold.key}}}
    await instance.async_log_failure_event(kwargs, None, None, None)
    assert instance.errors == 0


async def test_a_request_never_retries_a_deployment_and_failures_open_its_breaker(
    stack: Stack, hooks: tuple[RouterHooks, Path]
) -> None:
    """Two attempts of one request pick two deployments; three failed attempts (as LiteLLM logs them) open
    the deployment's breaker, which the ranking and the report then honour."""
    from litellm.exceptions import InternalServerError

    instance, events = hooks
    deployments = _deployments(stack, "balanced")

    async def attempt(rid: str, among: list[dict[str, Any]] = deployments) -> tuple[dict[str, Any], str]:
        request = RouteRequest(request_id=rid, group="balanced", tier="H", needs=RequestNeeds(10, 10, False))
        data: dict[str, Any] = {
            "model": "balanced",
            "litellm_call_id": rid,
            "messages": [{"role": "user", "content": "hi"}],
            "proxy_server_request": {"headers": request.to_headers()},
        }
        data = await instance.async_pre_call_hook(None, None, data, "completion")
        [picked] = await instance.async_filter_deployments("balanced", among, data["messages"], data)
        return data, picked["model_info"]["id"]

    data, first = await attempt("tried-1")
    [again] = await instance.async_filter_deployments("balanced", deployments, data["messages"], data)
    assert again["model_info"]["id"] != first

    def second_pick() -> dict[str, Any] | None:
        picks = [
            e for e in read_events(events) if e["request_id"] == "tried-1" and e["event"] == "route_selected"
        ]
        return picks[1] if len(picks) > 1 else None

    assert (await eventually(second_pick, what="the second attempt"))["rejected"].get(
        first
    ) == "already_tried"

    error = InternalServerError("boom", llm_provider="ollama", model="m")
    only_first = [d for d in deployments if d["model_info"]["id"] == first]
    for n in range(3):
        data, key = await attempt(f"fail-{n}", only_first)
        assert key == first  # the breaker is still closed
        kwargs = {**data, "litellm_params": {"model_info": {"id": key}, "metadata": data["metadata"]}}
        await instance.async_log_failure_event({**kwargs, "exception": error}, None, None, None)
    changed = await _last(events, "breaker_changed")
    assert (changed["target"], changed["to_state"], changed["reason"]) == (
        first,
        "open",
        "3_in_a_row:server_error",
    )
    failed = await _last(events, "attempt_failed")
    assert (failed["deployment"], failed["failure"]) == (first, "server_error")
    data, key = await attempt("after-open")
    assert key != first
    after = await wait_for_event(events, "after-open", "route_selected")
    assert after["rejected"].get(first) == "breaker_open"
    headers = await instance.async_post_call_response_headers_hook(data, None, None)
    assert headers is not None and first in (RouteReport.from_headers(headers).breakers or ())
    assert instance.errors == 0


async def test_a_hop_with_no_candidate_is_not_taken_for_the_next_hop_s_attempt(
    stack: Stack, hooks: tuple[RouterHooks, Path]
) -> None:
    """Hop 1 leaves no candidate (every deployment of its group too small for the request); LiteLLM logs
    that hop's "no deployments available" failure while hop 2's attempt is already under way. That failure
    belongs to no attempt: hop 2's own failure, told next, is the one charged to hop 2's deployment."""
    from litellm.exceptions import InternalServerError
    from litellm.types.router import RouterRateLimitError

    instance, events = hooks
    request = RouteRequest(
        request_id="hops-1", group="fast-chat", tier="R", needs=RequestNeeds(60_000, 10, False)
    )
    data: dict[str, Any] = {
        "model": "fast-chat",
        "litellm_call_id": "hops-1",
        "messages": [{"role": "user", "content": "hi"}],
        "proxy_server_request": {"headers": request.to_headers()},
    }
    data = await instance.async_pre_call_hook(None, None, data, "completion")
    assert (
        await instance.async_filter_deployments("fast-chat", _deployments(stack, "fast-chat"), [], data) == []
    )
    wide = _deployments(stack, "cloud-fast")
    [picked] = await instance.async_filter_deployments("cloud-fast", wide, data["messages"], data)
    key = picked["model_info"]["id"]
    no_candidate = RouterRateLimitError("fast-chat", 0.0, False, [])
    hop1 = {**data, "litellm_params": {"metadata": data["metadata"]}, "exception": no_candidate}
    await instance.async_log_failure_event(hop1, None, None, None)
    error = InternalServerError("boom", llm_provider="openai", model="m")
    hop2 = {**data, "litellm_params": {"model_info": {"id": key}, "metadata": data["metadata"]}}
    await instance.async_log_failure_event({**hop2, "exception": error}, None, None, None)
    failed = await _last(events, "attempt_failed")
    assert (failed["request_id"], failed["deployment"], failed["failure"]) == ("hops-1", key, "server_error")
    assert [
        e for e in read_events(events) if e["event"] == "attempt_failed" and e["request_id"] == "hops-1"
    ] == [failed]
    assert instance.errors == 0


async def test_the_first_request_after_the_auth_recheck_is_the_trial(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 locks every profile behind the same credentials; once ``auth_recheck_s`` has passed, the very
    next request re-checks them (the breaker turns half-open before the matrix is read), and the lockout's
    log line says it is a re-check, not that the provider accepted them."""
    from litellm.exceptions import AuthenticationError

    from torchrouter_core.breaker import BreakerConfig

    events = tmp_path / "events.jsonl"
    settings = HooksSettings(
        matrix_path=stack.matrix_path,
        event_path=str(events),
        probe_interval_s=0.2,
        breaker=BreakerConfig(auth_recheck_s=0.3),
    )
    instance = RouterHooks(load_settings=lambda: settings)
    await instance.start()
    try:
        deployments = _deployments(stack, "cloud-fast")

        async def pick(rid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            request = RouteRequest(request_id=rid, group="cloud-fast", tier="R", needs=RequestNeeds(10, 10))
            data: dict[str, Any] = {
                "model": "cloud-fast",
                "litellm_call_id": rid,
                "messages": [{"role": "user", "content": "hi"}],
                "proxy_server_request": {"headers": request.to_headers()},
            }
            data = await instance.async_pre_call_hook(None, None, data, "completion")
            return data, await instance.async_filter_deployments("cloud-fast", deployments, [], data)

        data, [first] = await pick("auth-1")
        key = first["model_info"]["id"]
        kwargs = {**data, "litellm_params": {"model_info": {"id": key}, "metadata": data["metadata"]}}
        error = AuthenticationError("bad key", llm_provider="openai", model="m")
        await instance.async_log_failure_event({**kwargs, "exception": error}, None, None, None)
        _, none_left = await pick("auth-2")
        assert none_left == []  # every cloud-fast profile shares the credentials: all locked
        await asyncio.sleep(0.4)
        _, trial = await pick("auth-3")
        assert len(trial) == 1, "the first request after auth_recheck_s must be the re-check"
        lifted = [r.getMessage() for r in caplog.records if "-> none:" in r.getMessage()]
        assert lifted and all("re-checking the credentials" in m for m in lifted), lifted
    finally:
        await instance.stop()


def test_a_backend_failing_is_logged_once_per_kind_and_window_and_reported_until_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from litellm_hooks.backend import BackendFaults

    now = [100.0]
    faults = BackendFaults(log_every_s=30.0, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="torchrouter.hooks.backend"):
        for _ in range(5):
            faults.failed("vram_ledger_reserve", "treated as refused", ConnectionError("refused"))
        faults.failed("spend_book", "counting on its own", ConnectionError("refused"))
        assert faults.report() == ("spend_book:ConnectionError", "vram_ledger_reserve:ConnectionError")
        now[0] += 31.0
        faults.failed("vram_ledger_reserve", "treated as refused", ConnectionError("refused"))
        faults.ok("spend_book")
    lines = [r.getMessage() for r in caplog.records]
    assert sum("vram_ledger_reserve failed" in line for line in lines) == 2, lines
    assert any("(4 more since the last line)" in line for line in lines), lines
    assert all(r.exc_info is None for r in caplog.records)
    assert "spend_book answers again" in lines[-1]
    assert faults.report() == ("vram_ledger_reserve:ConnectionError",)


async def test_a_cold_call_teaches_ollama_s_load_duration_not_its_whole_call(
    stack: Stack, hooks: tuple[RouterHooks, Path]
) -> None:
    """LiteLLM logs an answer that was not streamed with its completion_start_time at its end: the call's
    TTFT is the whole call (here 30 s: load, prompt and answer). A cold pick's load sample is Ollama's
    load_duration (4 s), its service time is not learnt, and its prompt pace is (2,000 tokens in 0.5 s)."""
    instance, _ = hooks
    runtime = instance._runtime
    assert runtime is not None
    key = next(p.key for p in runtime.fleet.matrix().profiles.values() if p.is_local)
    runtime.observed.load_s.pop(key, None)
    service_before = runtime.observed.service_s.get(key)
    body = ollama_answer(load_duration=4 * 10**9, prompt_eval_count=2000, prompt_eval_duration=500_000_000,
                   eval_duration=25_500_000_000)  # fmt: skip
    start = datetime.now(UTC)
    end = start + timedelta(seconds=30)
    kwargs = {
        "metadata": {"torchrouter": {"warm_state": WarmState.COLD.value}},
        "litellm_params": {"model_info": {"id": key}},
        "original_response": body,
        "completion_start_time": end,
    }
    await instance.async_log_success_event(kwargs, None, start, end)
    assert runtime.observed.load_s[key] == pytest.approx(4.0)  # not 30 s
    assert runtime.observed.service_s.get(key) == service_before  # a cold call teaches no service time
    assert runtime.observed.prompt_s_per_token[key] == pytest.approx(0.5 / 2000)
    assert instance.errors == 0
