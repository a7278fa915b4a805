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

import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import litellm
import pytest
import yaml
from openai import AsyncOpenAI

from tests.conftest import Stack, classifiers_for, running_stack
from tests.harness import eventually, wait_for_event
from torchrouter import cli
from torchrouter_core import contract
from torchrouter_core.budgets import parse_time_budgets

OUTCOMES = {"ok", "upstream_error", "shed", "timeout", "upstream_unavailable", "cancelled", "error"}
HOST = "matthew-100.86.174.11"
FAST = f"{HOST}/ollama/qwen3:8b"
CLOUD_HOST = "openai-api/"
BREAKER = (
    "consecutive_failures=2,min_requests=100,cool_off_s=1.0,auth_recheck_s=1.5,default_retry_after_s=1.0"
)
BUDGETS = "R.connect_s=0.25,R.first_byte_s=1.0,R.first_byte_cold_s=2.0,R.total_s=10"
CONNECT_S, FIRST_BYTE_S = 0.25, 1.0
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


@dataclass
class Answer:
    status: int
    text: str
    took_s: float
    request_id: str
    headers: Mapping[str, str]


async def ask(
    url: str,
    *,
    stream: bool = False,
    model: str = "auto",
    agent: str = "fault-tester",
    body: dict[str, Any] | None = None,
) -> Answer:
    """One request (``body``, else a one-line question to ``model``), read whole."""
    if body is None:
        body = {
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": "Status, one line?"}],
        }
    t0 = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/chat/completions", json=body, headers={"X-Agent-Id": agent}) as resp,
    ):
        try:
            text = await resp.text()
        except aiohttp.ClientPayloadError:  # a stream the classifier had to end early
            text = "<stream ended early>"
        return Answer(
            resp.status, text, time.monotonic() - t0, resp.headers["X-Router-Request-Id"], resp.headers
        )


def routed(events: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """(time, deployment) of every pick the hooks made."""
    return [
        (e["ts"], e["deployment"]) for e in events if e["event"] == "route_selected" and e.get("deployment")
    ]


def changes(events: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "breaker_changed" and e["target"] == target]


def on_target(deployment: str, target: str) -> bool:
    return deployment == target or deployment.startswith(target + "/")


def assert_nothing_sent_while_open(events: list[dict[str, Any]], target: str) -> None:
    """Between each ``open`` and the following ``half_open``, no pick of the target (or a model on it)."""
    opened: float | None = None
    windows: list[tuple[float, float]] = []
    for e in changes(events, target):
        if e["to_state"] == "open":
            opened = e["ts"]
        elif opened is not None:
            windows.append((opened, e["ts"]))
            opened = None
    if opened is not None:
        windows.append((opened, float("inf")))
    assert windows, f"the breaker of {target} never opened"
    sent = [(t, d) for t, d in routed(events) for a, b in windows if a < t < b and on_target(d, target)]
    assert sent == [], f"sent to {target} while its breaker was open: {sent}"


async def recover(url: str, stack: Stack, target: str, *, model: str = "auto") -> None:
    """With the fault cleared: requests flow until the target's breaker has closed again (half-open after
    its cool-off, one trial, closed)."""

    async def closed() -> bool:
        answer = await ask(url, model=model)
        assert answer.status == 200, answer.text
        states = [e["to_state"] for e in changes(stack.events(), target)]
        return bool(states) and states[-1] == "closed"

    await eventually(closed, timeout_s=20.0, what=f"the breaker of {target} closing again")
    states = [e["to_state"] for e in changes(stack.events(), target)]
    assert states[-2:] == ["half_open", "closed"], states


async def no_slot_leaks(url: str) -> None:
    async def idle() -> bool:
        async with aiohttp.ClientSession() as session, session.get(url + "/queue/status") as resp:
            groups = (await resp.json())["groups"]
        return all(g["active"] == 0 and g["depth"] == 0 for g in groups.values())

    await eventually(idle, what="every lane idle again")


async def run_fault(
    stack: Stack, url: str, target: str, mode: str, *, n: int = 6, stream: bool = False, model: str = "auto"
) -> list[Answer]:
    stack.sim.set_fault(target, mode)
    stack.mark = len(stack.events())  # what this fault's checks read: the trail from here on
    answers = [await ask(url, stream=stream, model=model) for _ in range(n)]
    for a in answers:
        assert a.took_s < ANSWER_WITHIN_S, (mode, a)
    return answers


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("error_500", "server_error"), ("hang", "timeout")],
)
async def test_a_failing_local_host_is_left_for_the_next_step_until_its_trial(
    fault_stack: Stack, fault_url: str, mode: str, reason: str
) -> None:
    answers = await run_fault(fault_stack, fault_url, HOST, mode)
    assert [a.status for a in answers] == [200] * len(answers), [a.text[:200] for a in answers]
    events = fault_stack.events()[fault_stack.mark :]
    [opened] = [e for e in changes(events, FAST) if e["to_state"] == "open"][-1:]
    assert opened["reason"] == f"2_in_a_row:{reason}" and opened["scope"] == "deployment"
    assert_nothing_sent_while_open(events, FAST)
    # The failed-over request's trail, in order: classified, picked FAST, fell back, picked another, done.
    first = answers[0].request_id
    kinds = [e["event"] for e in events if e["request_id"] == first]
    assert kinds[0] == "request_classified" and kinds[-1] == "request_completed", kinds
    picks = [e["deployment"] for e in events if e["request_id"] == first and e["event"] == "route_selected"]
    assert picks[0] == FAST and len(picks) >= 2 and FAST not in picks[1:], picks
    fault_stack.sim.set_fault(HOST, "none")
    await recover(fault_url, fault_stack, FAST)
    await no_slot_leaks(fault_url)


async def test_a_stream_cut_midway_ends_clearly_and_opens_the_breaker(
    fault_stack: Stack, fault_url: str
) -> None:
    answers = await run_fault(fault_stack, fault_url, HOST, "cut_stream", stream=True)
    events = fault_stack.events()[fault_stack.mark :]
    for a in answers:  # either a whole answer from the next step or the one error event, never a hang
        whole = "data: [DONE]" in a.text
        assert a.status == 200 and (whole or '"upstream_stream_broken"' in a.text), a.text[-300:]
        completed = await wait_for_event(fault_stack.events_path, a.request_id, "request_completed")
        assert completed["outcome"] == ("ok" if whole else "upstream_error"), completed
    # The deployment's breaker opens on the cut streams; on a loaded machine the host's (its probe timing out
    # while the host cuts streams) can open first and take the requests away before the deployment's does.
    opened = [t for t in (FAST, HOST) if any(c["to_state"] == "open" for c in changes(events, t))]
    assert opened, "neither the deployment's breaker nor its host's opened"
    for target in opened:
        assert_nothing_sent_while_open(events, target)
    fault_stack.sim.set_fault(HOST, "none")
    for target in opened:  # each breaker that opened closes again, so the next test starts clean
        await recover(fault_url, fault_stack, target)
    await no_slot_leaks(fault_url)


async def health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + "/health") as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def test_a_stream_that_fails_before_its_first_chunk_is_credited_to_the_deployment_that_answered(
    fault_stack: Stack, fault_url: str
) -> None:
    """LiteLLM continues a stream whose attempt failed before its first chunk from its fallback group (its
    mid-stream fallback), after the response headers were made: the client's headers, the trail's
    ``request_completed`` and the spend book name the deployment that answered, and the hooks' report of
    it (an SSE comment ahead of the first chunk) never reaches the client."""
    await breakers_clear(fault_url)
    spent_before = (await health(fault_url))["daily_spend_usd"]
    fault_stack.sim.set_fault(HOST, "cut_stream", count=1, after_chunks=0)
    body = {
        "model": "auto",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Status, one line?"}],
    }
    answer = await ask(fault_url, body=body)
    text, headers = answer.text, answer.headers
    assert answer.status == 200 and text.rstrip().endswith("data: [DONE]"), text[-300:]
    assert "x-torchrouter" not in text and not any(line.startswith(":") for line in text.splitlines())
    request_id = headers["X-Router-Request-Id"]
    completed = await wait_for_event(fault_stack.events_path, request_id, "request_completed")
    mine = [e for e in fault_stack.events() if e["request_id"] == request_id]
    picks = [d for _, d in routed(mine)]
    assert picks[0] == FAST and len(picks) == 2 and picks[1].startswith(CLOUD_HOST), picks
    answered = picks[1]
    [failed] = [e for e in mine if e["event"] == "attempt_failed"]
    assert failed["deployment"] == FAST and failed["failure"] == "stream_broken", failed
    [hop] = [e for e in mine if e["event"] == "fallback_selected"]
    assert hop["reason"] == "attempt_failed:before_first_chunk" and hop["to_group"] == "cloud-fast", hop
    assert headers["X-Router-Model"] == answered == completed["deployment"], (dict(headers), completed)
    assert headers["X-Router-Fallback"] == "fallback:fast-chat->cloud-fast" == completed["fallback"]
    assert completed["outcome"] == "ok" and completed["warm_state"] == "warm", completed
    # The cloud's cost is booked once, at the answering deployment's prices, from the stream's usage.
    usage = next(
        json.loads(line[6:])["usage"]
        for line in text.splitlines()
        if line.startswith("data: {") and json.loads(line[6:]).get("usage")
    )
    model = {
        "openai-api/openai/gpt-4o-mini": "openai/gpt-4o-mini",
        "openai-api/openai/gpt-4.1-nano": "openai/gpt-4.1-nano",
    }[answered]
    prompt_usd, completion_usd = litellm.cost_per_token(
        model=model, prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"]
    )
    assert prompt_usd + completion_usd > 0
    assert (await ask(fault_url)).status == 200  # the classifier mirrors the book from the next response
    spent = (await health(fault_url))["daily_spend_usd"] - spent_before
    # Booked once (not 0, not twice); /health shows 8 decimals, as the hooks' report carries them.
    assert spent == pytest.approx(prompt_usd + completion_usd, abs=2e-8), (spent, usage)
    await no_slot_leaks(fault_url)


async def test_a_cloud_stream_cut_after_its_role_chunk_is_credited_to_the_fallback_that_answered(
    fault_stack: Stack, fault_url: str
) -> None:
    """The cloud (as OpenAI does) sends a role-only chunk, then its stream is cut before any content; LiteLLM
    continues from the fallback group. The hooks' report comes after that role chunk, and still names who
    answered."""
    await breakers_clear(fault_url)
    fault_stack.sim.set_fault("cloud", "cut_stream", count=1, after_chunks=0)
    body = {
        "model": "cloud-fast",
        "stream": True,
        "messages": [{"role": "user", "content": "please answer " + "word " * 3000}],
    }
    answer = await ask(fault_url, body=body)
    text, headers = answer.text, answer.headers
    fault_stack.sim.reset()
    assert answer.status == 200 and text.rstrip().endswith("data: [DONE]"), text[-300:]
    assert "x-torchrouter" not in text
    request_id = headers["X-Router-Request-Id"]
    completed = await wait_for_event(fault_stack.events_path, request_id, "request_completed")
    picks = [d for _, d in routed([e for e in fault_stack.events() if e["request_id"] == request_id])]
    assert picks[0].startswith(CLOUD_HOST) and not picks[-1].startswith(CLOUD_HOST), picks
    assert headers["X-Router-Model"] == picks[-1] == completed["deployment"], (dict(headers), picks)
    assert headers["X-Router-Fallback"].startswith("fallback:cloud-fast->"), dict(headers)
    await no_slot_leaks(fault_url)


async def test_a_stream_whose_fallback_fails_before_its_first_chunk_too_goes_on_down_the_chain(
    fault_stack: Stack, fault_url: str
) -> None:
    """Tier R's chain is fast-chat -> cloud-fast -> balanced. The fast-chat host and the cloud both cut
    their streams before the first chunk: LiteLLM continues the stream from cloud-fast once and stops there;
    the classifier, which has sent nothing yet, goes on to balanced, which answers."""
    await breakers_clear(fault_url)
    fault_stack.sim.set_fault(HOST, "cut_stream", count=1, after_chunks=0)
    fault_stack.sim.set_fault("cloud", "cut_stream", count=1, after_chunks=0)
    answer = await ask(fault_url, stream=True)
    fault_stack.sim.reset()
    assert answer.status == 200 and answer.text.rstrip().endswith("data: [DONE]"), answer.text[-300:]
    assert "upstream_stream_broken" not in answer.text and "x-torchrouter" not in answer.text
    completed = await wait_for_event(fault_stack.events_path, answer.request_id, "request_completed")
    mine = [e for e in fault_stack.events() if e["request_id"] == answer.request_id]
    picks = [d for _, d in routed(mine)]
    assert picks[0] == FAST and picks[1].startswith(CLOUD_HOST) and len(picks) == 3, picks
    hops = [(e["from_group"], e["to_group"], e["hop"]) for e in mine if e["event"] == "fallback_selected"]
    assert hops == [("fast-chat", "cloud-fast", 1), ("cloud-fast", "balanced", 2)], hops
    assert answer.headers["X-Router-Model"] == picks[2] == completed["deployment"], (picks, completed)
    path = "fallback:fast-chat->cloud-fast->balanced"
    assert answer.headers["X-Router-Fallback"] == path == completed["fallback"], completed
    assert completed["outcome"] == "ok" and completed["status"] == 200, completed
    await no_slot_leaks(fault_url)


async def test_a_stream_failing_before_its_first_chunk_never_leaves_the_requests_own_chain(
    fault_stack: Stack,
) -> None:
    """LiteLLM continues such a stream from litellm_config.yaml's router-level fallbacks (fast-chat ->
    cloud-fast), whatever the request's chain said. With ROUTING_MODE=local-only the chain has no cloud:
    the hooks refuse the off-chain hop (``not_in_chain``), the classifier goes on to balanced, and the
    cloud never sees a request."""
    fault_stack.sim.reset()
    async with classifiers_for(fault_stack) as factory:
        url = await factory(probe_interval_s=0.2, routing_mode="local-only")
        await breakers_clear(url)
        cloud_before = fault_stack.sim.state()["cloud"]["counters"]["requests"]
        fault_stack.sim.set_fault(HOST, "cut_stream", count=1, after_chunks=0)
        answer = await ask(url, stream=True)
        cloud_after = fault_stack.sim.state()["cloud"]["counters"]["requests"]
        fault_stack.sim.reset()
        assert answer.status == 200 and answer.text.rstrip().endswith("data: [DONE]"), answer.text[-300:]
        assert cloud_after == cloud_before, "the cloud got a request in local-only mode"
        mine = [e for e in fault_stack.events() if e["request_id"] == answer.request_id]
        picks = [d for _, d in routed(mine)]
        assert picks[0] == FAST and not any(p.startswith(CLOUD_HOST) for p in picks), picks
        refused = [e for e in mine if e["event"] == "route_selected" and e.get("group") == "cloud-fast"]
        assert all(set(e["rejected"].values()) == {"not_in_chain"} for e in refused), refused
        assert (
            answer.headers["X-Router-Model"] == picks[-1] and answer.headers["X-Router-Group"] == "fast-chat"
        )
        assert not answer.headers["X-Router-Model"].startswith(CLOUD_HOST)
        await no_slot_leaks(url)


async def test_every_local_host_hanging_is_a_gateway_error_not_the_clients(fault_stack: Stack) -> None:
    """Local-only, every host hangs: each attempt ends at its first-byte budget and LiteLLM answers 408.
    The client gets 502 ``upstream_stream_broken`` for a stream and 504 ``upstream_timeout`` otherwise,
    never a 408 ``invalid_request_error`` (that would tell it the request was at fault)."""
    fault_stack.sim.reset()
    async with classifiers_for(fault_stack) as factory:
        url = await factory(probe_interval_s=0.2, routing_mode="local-only")
        await breakers_clear(url)
        for host in local_hosts(fault_stack):
            fault_stack.sim.set_fault(host, "hang")
        try:
            streamed, plain = await ask(url, stream=True), await ask(url)
        finally:
            fault_stack.sim.reset()
        for answer, status, code in (
            (streamed, 502, "upstream_stream_broken"),
            (plain, 504, "upstream_timeout"),
        ):
            error = json.loads(answer.text)["error"]
            assert answer.status == status and error["code"] == code, (answer.status, error)
            assert error["type"] == "api_error" and "Deployment Info" not in error["message"], error
        await breakers_clear(url)


async def test_a_stream_that_fails_before_its_first_chunk_everywhere_is_an_error_status(
    fault_stack: Stack, fault_url: str
) -> None:
    """Every step of the chain cuts its stream before the first chunk: nothing of an answer went out, so
    the client gets 502 ``upstream_stream_broken`` (not a 200 followed by an error event)."""
    await breakers_clear(fault_url)
    for target in (*local_hosts(fault_stack), "cloud"):
        fault_stack.sim.set_fault(target, "cut_stream", after_chunks=0)
    answer = await ask(fault_url, stream=True)
    fault_stack.sim.reset()
    assert answer.status == 502, (answer.status, answer.text[:300])
    error = json.loads(answer.text)["error"]
    assert error["code"] == "upstream_stream_broken" and error["type"] == "api_error", error
    assert float(answer.headers["X-Router-Timing-Total-Ms"]) > 0  # every answer carries its timings
    completed = await wait_for_event(fault_stack.events_path, answer.request_id, "request_completed")
    assert (completed["outcome"], completed["status"], completed["deployment"]) == (
        "upstream_error",
        502,
        None,
    )
    await breakers_clear(fault_url)
    await no_slot_leaks(fault_url)


async def test_a_cloud_stream_the_client_leaves_is_still_booked(fault_stack: Stack, fault_url: str) -> None:
    """The client reads part of a cloud stream and leaves: the hooks close the provider's stream, and its
    cost (estimated from the prompt and the answer relayed so far) is booked, never nothing."""
    await breakers_clear(fault_url)
    spent_before = (await health(fault_url))["daily_spend_usd"]
    body = {
        "model": "cloud-fast",
        "stream": True,
        "max_tokens": 3000,
        "messages": [{"role": "user", "content": "Write a long story, please."}],
    }
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            fault_url + "/v1/chat/completions", json=body, headers={"X-Agent-Id": "fault-tester"}
        )
        assert resp.status == 200
        received = b""
        while received.count(b'"content":"') < 3:
            received += await resp.content.readany()
        request_id = resp.headers["X-Router-Request-Id"]
        resp.close()  # the client leaves part-way
    cancelled = await wait_for_event(fault_stack.events_path, request_id, "upstream_cancelled")
    assert cancelled["deployment"].startswith(CLOUD_HOST), cancelled
    assert (await ask(fault_url)).status == 200  # the classifier mirrors the book from the next response
    assert (await health(fault_url))["daily_spend_usd"] > spent_before


async def test_a_client_of_litellm_itself_reads_such_a_stream_with_the_openai_sdk(
    fault_stack: Stack, fault_url: str
) -> None:
    """Sent to LiteLLM directly (no classifier to take the hooks' report out), the stream's first event is
    an SSE comment, which the OpenAI SDK skips: the answer reads as any other."""
    await breakers_clear(fault_url)
    fault_stack.sim.set_fault(HOST, "cut_stream", count=1, after_chunks=0)
    body = {
        "model": "fast-chat",
        "stream": True,
        "fallbacks": ["cloud-fast"],
        "messages": [{"role": "user", "content": "Status, one line?"}],
    }
    auth = {"Authorization": f"Bearer {fault_stack.master_key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(fault_stack.litellm.url + "/v1/chat/completions", json=body, headers=auth) as resp,
    ):
        raw = await resp.read()
    first, _, rest = raw.partition(b"\n\n")
    report = contract.decode_stream_report(first)
    assert report is not None, raw[:300]
    assert report[contract.DEPLOYMENT_HEADER].startswith(CLOUD_HOST), report
    assert resp.headers[contract.DEPLOYMENT_HEADER] == FAST  # what the headers said before the switch
    assert rest.rstrip().endswith(b"data: [DONE]"), rest[-200:]
    fault_stack.sim.set_fault(HOST, "cut_stream", count=1, after_chunks=0)
    client = AsyncOpenAI(
        base_url=fault_stack.litellm.url + "/v1", api_key=fault_stack.master_key, max_retries=0
    )
    try:
        stream = await client.chat.completions.create(
            model="fast-chat",
            messages=[{"role": "user", "content": "Status, one line?"}],
            stream=True,
            extra_body={"fallbacks": ["cloud-fast"]},
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    finally:
        await client.close()
    assert text.strip(), "no answer"
    events = fault_stack.events()
    [failed] = [e for e in events[-20:] if e["event"] == "attempt_failed" and e["deployment"] == FAST][-1:]
    assert failed["failure"] == "stream_broken", failed
    picks = routed([e for e in events if e["request_id"] == failed["request_id"]])
    assert picks[-1][1].startswith(CLOUD_HOST), picks  # the fallback answered
    await no_slot_leaks(fault_url)


async def test_a_chain_whose_first_hop_has_no_candidate_reports_the_later_attempts_failure(
    fault_stack: Stack, fault_url: str
) -> None:
    """The cloud locked out (a 401), every host answering 500, a request for ``cloud-fast``: its first hop
    has no candidate, its local fallback's attempt fails. LiteLLM answers with the first hop's "no
    deployments" error; the client gets the upstream failure it was (502), not "locked out, do not retry",
    and the later attempt's failure is recorded (logged once, counted by its breaker)."""
    await breakers_clear(fault_url)
    fault_stack.sim.set_fault("cloud", "auth")
    assert (await ask(fault_url, model="cloud-fast")).status == 200  # 401, then the local fallback answers
    for host in local_hosts(fault_stack):
        fault_stack.sim.set_fault(host, "error_500")
    fault_stack.mark = len(fault_stack.events())
    answers = [await ask(fault_url, model="cloud-fast") for _ in range(3)]
    events = fault_stack.events()[fault_stack.mark :]
    fault_stack.sim.reset()
    exercised = 0
    for answer in answers:
        mine = [e for e in events if e["request_id"] == answer.request_id]
        hops = [e for e in mine if e["event"] == "route_selected"]
        picked = [e["deployment"] for e in hops if e.get("deployment")]
        failed = [e["deployment"] for e in mine if e["event"] == "attempt_failed"]
        assert sorted(failed) == sorted(picked), (picked, failed)  # every attempt's failure, once
        assert answer.status != 200 and answer.headers["X-Router-Model"] == "none", answer
        if hops and hops[0]["outcome"] == "no_candidate" and picked:
            exercised += 1
            assert answer.status == 502, answer.text
            error = json.loads(answer.text)["error"]
            assert error["code"] == "upstream_error" and picked[-1] in error["message"], error
        completed = await wait_for_event(fault_stack.events_path, answer.request_id, "request_completed")
        assert completed["deployment"] is None and completed["outcome"] == "upstream_error", completed
    assert exercised, [a.text[:200] for a in answers]  # the auth re-check (1.5 s here) came later
    await breakers_clear(fault_url)
    await no_slot_leaks(fault_url)


async def test_a_host_that_goes_down_and_comes_back(fault_stack: Stack, fault_url: str) -> None:
    await breakers_clear(fault_url)  # an earlier test's open host breaker would hide this one's opening
    answers = await run_fault(fault_stack, fault_url, HOST, "refuse")
    assert [a.status for a in answers] == [200] * len(answers)
    events = fault_stack.events()[fault_stack.mark :]
    host_changes = changes(events, HOST)
    # It opened (by now it may already be half-open: the cool-off here is 1 s, and a busy machine is slow).
    assert any(c["to_state"] == "open" and c["scope"] == "host" for c in host_changes), host_changes
    assert_nothing_sent_while_open(events, HOST)
    fault_stack.sim.set_fault(HOST, "none")
    await recover(fault_url, fault_stack, HOST)

    async def served_by_host_again() -> bool:
        answer = await ask(fault_url)
        return any(
            d == FAST
            for _, d in routed([e for e in fault_stack.events() if e["request_id"] == answer.request_id])
        )

    await eventually(served_by_host_again, timeout_s=10.0, what="fast-chat answered by the recovered host")
    await no_slot_leaks(fault_url)


async def test_a_host_whose_packets_vanish_is_given_up_on_after_the_connect_budget(
    fault_stack: Stack, fault_url: str
) -> None:
    """A black-holed host (a SYN never answered) costs an attempt the tier's connect budget, not its
    first-byte budget; the next step answers; the host's breakers open and recover as for a refusal."""
    for _ in range(3):
        await breakers_clear(fault_url)
        answers = await run_fault(fault_stack, fault_url, HOST, "blackhole")
        assert [a.status for a in answers] == [200] * len(answers), [a.text[:200] for a in answers]
        events = fault_stack.events()[fault_stack.mark :]
        failed = [e for e in events if e["event"] == "attempt_failed" and on_target(e["deployment"], HOST)]
        if failed:
            break
        # On a loaded machine the probes (every 0.2 s here) can find the silent host before the first
        # request reaches the hooks: then nothing is sent to it at all (right, but nothing to measure).
        assert all(not on_target(d, HOST) for _, d in routed(events)), routed(events)
        fault_stack.sim.set_fault(HOST, "none")
    assert failed and {e["failure"] for e in failed} <= {"connect_timeout", "refused"}, failed
    assert "connect_timeout" in {e["failure"] for e in failed}, failed
    # From the pick of the black-holed host to the request's next pick: at least the connect budget, and
    # (for the quickest of them, so a busy machine's scheduling does not decide it) less than the
    # first-byte budget, which is what a connect bounded only by that would have cost.
    noticed = []
    for request_id in {e["request_id"] for e in failed}:
        picks = routed([e for e in events if e["request_id"] == request_id])
        noticed += [b[0] - a[0] for a, b in itertools.pairwise(picks) if on_target(a[1], HOST)]
    assert noticed and CONNECT_S * 0.9 <= min(noticed) < FIRST_BYTE_S, noticed
    opened = [t for t in (FAST, HOST) if any(c["to_state"] == "open" for c in changes(events, t))]
    assert opened, "neither the deployment's breaker nor its host's opened"
    for target in opened:
        assert_nothing_sent_while_open(events, target)
    fault_stack.sim.set_fault(HOST, "none")
    for target in opened:
        await recover(fault_url, fault_stack, target)
    await no_slot_leaks(fault_url)


@pytest.mark.parametrize(("mode", "reason"), [("auth", "auth"), ("error_429", "rate_limited")])
async def test_the_cloud_refusing_backs_off_and_rechecks(
    fault_stack: Stack, fault_url: str, mode: str, reason: str
) -> None:
    answers = await run_fault(fault_stack, fault_url, "cloud", mode, n=4, model="cloud-fast")
    assert [a.status for a in answers] == [200] * len(answers)  # answered by the local fallback group
    events = fault_stack.events()[fault_stack.mark :]
    opened = [e for e in events if e["event"] == "breaker_changed" and e["target"].startswith(CLOUD_HOST)]
    assert opened and {e["reason"] for e in opened if e["to_state"] == "open"} == {reason}
    targets = sorted({e["target"] for e in opened})
    for target in targets:
        assert_nothing_sent_while_open(events, target)
    fault_stack.sim.set_fault("cloud", "none")
    # The first to open is the one the ranker prefers: after its cool-off it takes the trial and closes.
    await recover(
        fault_url, fault_stack, targets[0] if len(targets) == 1 else opened[0]["target"], model="cloud-fast"
    )

    async def none_refused() -> bool:  # every other one is half-open at least: admitted again
        await ask(fault_url, model="cloud-fast")
        async with aiohttp.ClientSession() as session, session.get(fault_url + "/breakers") as resp:
            refused: list[object] = (await resp.json())["refused"]
        return refused == []

    await eventually(none_refused, what="no cloud deployment refused")
    await no_slot_leaks(fault_url)


def local_hosts(stack: Stack) -> list[str]:
    return sorted(yaml.safe_load(stack.matrix_path.read_text())["hosts"])


async def test_explain_tells_the_story_of_a_request_that_fell_back_twice(
    fault_stack: Stack, fault_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """fast-chat's only host is down (the classifier's ladder steps to balanced), every other host hangs
    (the balanced attempt times out; LiteLLM falls back along tier R's chain, past fast-chat, which the
    ladder already passed over, to cloud-fast): two fallbacks, one story."""
    fault_stack.sim.set_fault(HOST, "refuse")
    await eventually(
        lambda: any(e["to_state"] == "open" for e in changes(fault_stack.events()[fault_stack.mark :], HOST)),
        what="the host's probe breaker opening",
    )
    for host in local_hosts(fault_stack):
        if host != HOST:
            fault_stack.sim.set_fault(host, "hang")

    async def ladder_step_taken() -> Answer | None:
        # The classifier's own step (its lane limit follows the breaker from the next report on); until
        # then LiteLLM's failure fallback may carry the request, which is not the story under test.
        answer = await ask(fault_url)
        return answer if _stepped(fault_stack, answer.request_id, "fast-chat", "balanced") else None

    answer: Answer = await eventually(ladder_step_taken, what="a request stepping down the ladder")
    assert answer.status == 200, answer.text
    assert cli.main(["explain", answer.request_id, "--events", str(fault_stack.events_path)]) == 0
    text = capsys.readouterr().out
    assert f"request {answer.request_id}" in text and "tier R" in text
    assert "ladder step: fast-chat -> balanced" in text
    steps = [
        (e["from_group"], e["to_group"], e["step"], e["reason"])
        for e in fault_stack.events()
        if e["request_id"] == answer.request_id and e["event"] == "degradation_ladder_step"
    ]
    lanes = [(a, b, kind) for a, b, kind, _ in steps if kind != "another_deployment"]
    assert lanes == [("fast-chat", "balanced", "another_lane"), ("balanced", "cloud-fast", "cloud")], steps
    assert steps[-1][3].startswith("attempt_failed:"), steps
    assert "attempt 1 in balanced" in text and "attempt 2 in cloud-fast" in text
    assert "failed: timeout" in text
    assert "fallback: balanced -> cloud-fast (hop 1, planned" in text
    assert "failure chain: cloud-fast" in text
    assert "outcome: ok (status 200) from openai-api/" in text and "timings: total" in text
    assert "queue: waited" in text and "candidate " in text
    assert cli.main(["explain", "--last", "--json", "--events", str(fault_stack.events_path)]) == 0
    story = json.loads(capsys.readouterr().out)
    assert story["found"] and story["completed"]["outcome"] in OUTCOMES
    fault_stack.sim.reset()
    await recover(fault_url, fault_stack, HOST)


def _stepped(stack: Stack, request_id: str, from_group: str, to_group: str) -> bool:
    return any(
        e["event"] == "degradation_ladder_step"
        and e["request_id"] == request_id
        and (e["from_group"], e["to_group"]) == (from_group, to_group)
        for e in stack.events()
    )


async def breakers_clear(url: str) -> None:
    """Until no breaker refuses anything (the classifier mirrors the hooks' report of each response): a
    test that starts while an earlier one's breakers are still open would meet them instead of its fault."""

    async def clear() -> bool:
        await ask(url)
        async with aiohttp.ClientSession() as session, session.get(url + "/breakers") as resp:
            refused: list[object] = (await resp.json())["refused"]
        return refused == []

    try:
        await eventually(clear, timeout_s=30.0, what="no deployment refused by a breaker")
    except AssertionError as exc:
        async with aiohttp.ClientSession() as session, session.get(url + "/breakers") as resp:
            raise AssertionError(f"{exc}; /breakers: {await resp.text()}") from None


def _agents_with_r_chain(path: Path, chain: str) -> None:
    """The shipped agents file, tier R's failure chain replaced, and the agent ``chain-tester`` in tier R."""
    from classifier.settings import DEFAULT_AGENTS_PATH

    shipped = "    fallbacks: [cloud-fast, fast-chat, balanced]\n"
    text = DEFAULT_AGENTS_PATH.read_text()
    assert shipped in text
    path.write_text(text.replace(shipped, f"    fallbacks: [{chain}]\n") + "  chain-tester: R\n")


async def test_a_configured_failure_chain_is_followed_in_order_and_an_edit_changes_it(
    fault_stack: Stack, tmp_path: Path
) -> None:
    """Every local host answers 500, the cloud answers. Tier R's chain in the agents file is
    code -> balanced -> cloud-fast: a request sent to fast-chat fails there and walks the chain in that
    order, one attempt and one ``fallback_selected`` per hop, never a deployment twice, until the cloud
    answers. The operator then edits the chain to balanced -> cloud-fast: the next request follows it."""
    fault_stack.sim.reset()
    agents = tmp_path / "agents.yaml"
    _agents_with_r_chain(agents, "code, balanced, cloud-fast")
    async with classifiers_for(fault_stack) as factory:
        url = await factory(probe_interval_s=0.2, agents_path=agents)
        await breakers_clear(url)
        for host in local_hosts(fault_stack):
            fault_stack.sim.set_fault(host, "error_500")

        async def walk() -> tuple[Answer, list[dict[str, Any]]]:
            mark = len(fault_stack.events())
            answer = await ask(url, agent="chain-tester")
            assert answer.status == 200, answer.text
            mine = [e for e in fault_stack.events()[mark:] if e["request_id"] == answer.request_id]
            return answer, mine

        answer, mine = await walk()
        picks = [(e["group"], e["deployment"]) for e in mine if e["event"] == "route_selected"]
        assert [g for g, _ in picks] == ["fast-chat", "code", "balanced", "cloud-fast"], picks
        assert len({d for _, d in picks}) == len(picks)  # never the same deployment twice
        hops = [(e["from_group"], e["to_group"], e["hop"], e["planned"]) for e in mine if _is_hop(e)]
        assert hops == [
            ("fast-chat", "code", 1, True),
            ("code", "balanced", 2, True),
            ("balanced", "cloud-fast", 3, True),
        ]
        assert all(e["reason"].startswith("attempt_failed:") for e in mine if _is_hop(e))
        assert answer.headers["X-Router-Fallback"] == "fallback:fast-chat->code->balanced->cloud-fast"
        done = mine[-1]
        assert done["event"] == "request_completed" and done["fallbacks"] == [
            "code",
            "balanced",
            "cloud-fast",
        ]
        assert (
            done["deployment"].startswith(CLOUD_HOST)
            and done["fallback"] == answer.headers["X-Router-Fallback"]
        )

        _agents_with_r_chain(agents, "balanced, cloud-fast")  # the operator's edit, hot-reloaded

        async def chain_edited() -> bool:
            async with aiohttp.ClientSession() as session, session.get(url + "/queue/status") as resp:
                on_failure = (await resp.json())["groups"]["fast-chat"]["fallback"]["on_failure"]
            return bool(on_failure["R"] == ["balanced", "cloud-fast"])

        await eventually(chain_edited, what="the edited chain in force")
        answer, mine = await walk()
        groups = [e["group"] for e in mine if e["event"] == "route_selected"]
        assert groups == ["fast-chat", "balanced", "cloud-fast"], groups
        edited = [(e["from_group"], e["to_group"], e["hop"]) for e in mine if _is_hop(e)]
        assert edited == [("fast-chat", "balanced", 1), ("balanced", "cloud-fast", 2)]
        assert answer.headers["X-Router-Fallback"] == "fallback:fast-chat->balanced->cloud-fast"
        fault_stack.sim.reset()
        await breakers_clear(url)


def _is_hop(event: dict[str, Any]) -> bool:
    return bool(event["event"] == "fallback_selected")


async def test_every_failed_hop_of_a_chain_is_recorded_once(
    fault_stack: Stack, fault_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every step of tier H's chain fails once (a 500 from every host and the cloud): each attempt's failure
    is its own ``attempt_failed`` (LiteLLM logs only the first failure of a request's shared logging object
    unless the hooks re-arm it for the next attempt), once each, and ``explain`` names every one."""
    await breakers_clear(fault_url)
    fault_stack.sim.reset()
    # Three failures each: the chain has three hops, and two of them may land on one host (balanced and code
    # both have models on aragorn), so one failure per host would let a later hop succeed.
    for host in [*local_hosts(fault_stack), "cloud"]:
        fault_stack.sim.set_fault(host, "error_500", count=3)
    answer = await ask(fault_url, agent="webmaster")
    assert answer.status >= 500, answer.text
    mine = [e for e in fault_stack.events() if e["request_id"] == answer.request_id]
    picked = [e["deployment"] for e in mine if e["event"] == "route_selected" and e.get("deployment")]
    failed = [e["deployment"] for e in mine if e["event"] == "attempt_failed"]
    assert len(picked) >= 2, picked
    assert failed == picked, (picked, failed)
    assert all(e["failure"] == "server_error" for e in mine if e["event"] == "attempt_failed")
    assert cli.main(["explain", answer.request_id, "--events", str(fault_stack.events_path)]) == 0
    text = capsys.readouterr().out
    assert text.count("failed: server_error") == len(picked), text
    fault_stack.sim.reset()
    await breakers_clear(fault_url)


async def test_the_tier_total_budget_answers_a_hung_fleet_with_a_clear_504(fault_stack: Stack) -> None:
    """Last in this module: it leaves a breaker or two open. Every step hangs; the classifier's total
    budget for the tier (1.5 s here) ends the request with a 504 in the OpenAI error shape."""
    fault_stack.sim.reset()
    budgets = parse_time_budgets("R.total_s=1.5")
    async with classifiers_for(fault_stack) as factory:
        url = await factory(probe_interval_s=0.2, time_budgets=budgets)
        await breakers_clear(url)
        for host in [*local_hosts(fault_stack), "cloud"]:
            fault_stack.sim.set_fault(host, "hang")
        answer = await ask(url)
        assert answer.status == 504 and '"upstream_timeout"' in answer.text, answer.text
        assert 1.4 < answer.took_s < 3.0, answer.took_s
        # (a prewarm its pick set off may write after the request ended: its events carry the request id)
        mine = [e for e in fault_stack.events() if e["request_id"] == answer.request_id]
        (completed,) = [e for e in mine if e["event"] == "request_completed"]
        assert completed["outcome"] == "timeout"
        assert all(e["event"] == "prewarm" for e in mine[mine.index(completed) + 1 :]), mine
        fault_stack.sim.reset()
        await no_slot_leaks(url)
