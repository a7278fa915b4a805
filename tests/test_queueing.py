"""Tiering, ladders and queues through the real stack: classifier -> LiteLLM with hooks -> simulated fleet."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from capability_matrix import load_matrix
from tests.conftest import ClassifierFactory, Stack
from tests.harness import eventually

CHAT = "/v1/chat/completions"


async def post(
    http: aiohttp.ClientSession, url: str, agent: str | None, content: str, **extra: Any
) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"X-Agent-Id": agent} if agent else {}
    headers.update(extra.pop("headers", {}))
    body = {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}
    async with http.post(url + CHAT, json=body, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def queue_status(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/queue/status") as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def test_unknown_agents_coding_request_lands_in_code(classifier_url: str) -> None:
    prompt = "Fix this bug:\n```python\ndef add(a, b):\n    return a - b\n```"
    async with aiohttp.ClientSession() as http:
        status, headers, body = await post(http, classifier_url, "someone-new", prompt)
    assert status == 200, body
    assert headers["X-Router-Tier"] == "C" and headers["X-Router-Group"] == "code"
    assert body["choices"][0]["message"]["content"].startswith("sim:")


async def test_unknown_agents_routine_and_reasoning_requests(classifier_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        routine_status, routine, _ = await post(http, classifier_url, None, "What time zone is Lisbon in?")
        heavy_status, heavy, _ = await post(
            http, classifier_url, None, "Think step by step and analyze the tradeoffs of two designs."
        )
    assert (routine_status, heavy_status) == (200, 200)  # the tier headers come on errors too
    assert (routine["X-Router-Tier"], routine["X-Router-Group"]) == ("R", "fast-chat")
    assert (heavy["X-Router-Tier"], heavy["X-Router-Group"]) == ("H", "balanced")


async def test_queue_status_shape_and_spec_jq_paths(classifier_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        status = await queue_status(http, classifier_url)
    groups = status["groups"]
    assert status["queue_enabled"] is True
    assert isinstance(groups["balanced"]["depth"], int)  # jq '.groups.balanced.depth'
    assert isinstance(groups["fast-chat"]["wait_ms"], float)  # jq '.groups["fast-chat"].wait_ms'
    for name in ("balanced", "fast-chat", "code"):
        g = groups[name]
        assert {"depth", "active", "wait_ms", "limit", "policy", "fallback"} <= g.keys()
        assert g["limit"] > 0 and g["policy"] == "accepting"
    expected = {
        "overflow": "code",
        "tier": "H",
        # per tier: the agents file's failure chain for a request sent to balanced (mode and budget applied)
        "on_failure": {
            "H": ["cloud-balanced", "code"],
            "R": ["cloud-fast", "fast-chat"],
            "C": ["cloud-code", "code"],
        },
        "litellm_on_failure": ["cloud-balanced"],  # LiteLLM's own, for requests sent to it directly
    }
    assert groups["balanced"]["fallback"] == expected
    assert groups["fast-chat"]["fallback"]["overflow"] == "balanced"


async def test_queue_disabled_is_reported(make_classifier: ClassifierFactory) -> None:
    url = await make_classifier(queue_enabled=False)
    async with aiohttp.ClientSession() as http:
        status = await queue_status(http, url)
        code, headers, _ = await post(http, url, "webmaster", "hello")
    assert status["queue_enabled"] is False
    assert {g["policy"] for g in status["groups"].values()} == {"bypassed"}
    assert code == 200 and headers["X-Router-Timing-Queue-Ms"] == "0.0"


async def test_burst_queues_diverts_and_sheds_with_retry_after(
    stack: Stack, make_classifier: ClassifierFactory
) -> None:
    """Lanes capped at one slot, local-only: the burst fills fast-chat (1 running + 1 waiting), diverts to
    balanced (the same), then sheds the rest with 429 and a Retry-After from the estimate."""
    url = await make_classifier(lane_caps={"fast-chat": 1, "balanced": 1}, routing_mode="local-only")
    warm_up: set[str] = set()
    async with aiohttp.ClientSession() as http:
        # Run alone, the fleet may start cold and the probe may not list fast-chat's model before the burst's
        # second request is picked: warm it first (until a pick finds it resident), so learning is checkable.
        async def fast_chat_resident() -> bool:
            _, headers, _ = await post(http, url, "inbox-triage", "warm up")
            warm_up.add(headers["X-Router-Request-Id"])
            events = stack.events()
            picks = [e for e in events if e["request_id"] in warm_up and e["event"] == "route_selected"]
            return any(pick.get("warm_state") in ("warm", "hot") for pick in picks)

        for _ in range(40):
            if await fast_chat_resident():
                break
            await asyncio.sleep(0.25)
        results = await asyncio.gather(
            *(post(http, url, "inbox-triage", f"routine {i}", max_tokens=1500) for i in range(12))
        )
    statuses = Counter(status for status, _, _ in results)
    assert set(statuses) <= {200, 429}, statuses
    answered = [(h, b) for s, h, b in results if s == 200]
    shed = [(h, b) for s, h, b in results if s == 429]
    assert len(answered) >= 2 and shed, statuses
    groups = Counter(h["X-Router-Group"] for h, _ in answered)
    assert groups["fast-chat"] >= 1 and groups["balanced"] >= 1, groups
    assert any(float(h["X-Router-Timing-Queue-Ms"]) > 50 for h, _ in answered), "nobody waited"
    assert any(h["X-Router-Fallback"].startswith("ladder:fast-chat->balanced") for h, _ in answered)
    for headers, body in shed:
        assert int(headers["Retry-After"]) >= 1
        assert body["error"]["code"] == "queue_full" and "fast-chat" in body["error"]["message"]
    ids = {h["X-Router-Request-Id"] for _, h, _ in results}
    trail = [e for e in stack.events() if e["request_id"] in ids]
    assert {e["event"] for e in trail} >= {"degradation_ladder_step", "queue_rejected", "request_completed"}
    trail += [e for e in stack.events() if e["request_id"] in warm_up]  # the estimator learned from these too
    async with aiohttp.ClientSession() as http:
        after = await queue_status(http, url)
    for lane in ("fast-chat", "balanced"):
        assert after["groups"][lane]["active"] == 0 and after["groups"][lane]["depth"] == 0, after["groups"][
            lane
        ]
    # The estimator learned from exactly the answers whose model was resident when picked (not cold loads).
    completed = [e for e in trail if e["event"] == "request_completed" and e["outcome"] == "ok"]
    for lane in ("fast-chat", "balanced"):
        learned = [e for e in completed if e["group"] == lane and e["warm_state"] in ("warm", "hot")]
        assert after["groups"][lane]["service_observations"] == len(learned), lane
    assert any(e["group"] == "fast-chat" and e["warm_state"] == "hot" for e in completed), "nothing learned"


async def test_burst_overflows_to_cloud_in_local_first(make_classifier: ClassifierFactory) -> None:
    url = await make_classifier(lane_caps={"fast-chat": 1, "balanced": 1})
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(
            *(post(http, url, "inbox-triage", f"routine {i}", max_tokens=1500) for i in range(10))
        )
    assert {s for s, _, _ in results} == {200}
    cloud = [b for s, h, b in results if h["X-Router-Group"] == "cloud-fast"]
    assert cloud and all(b["choices"][0]["message"]["content"].startswith("sim:cloud:") for b in cloud)


async def test_disconnected_waiter_leaves_the_line(make_classifier: ClassifierFactory) -> None:
    url = await make_classifier(lane_caps={"fast-chat": 1})
    async with aiohttp.ClientSession() as http:

        async def fast_chat() -> dict[str, Any]:
            lane: dict[str, Any] = (await queue_status(http, url))["groups"]["fast-chat"]
            return lane

        holder = asyncio.create_task(post(http, url, "inbox-triage", "long", max_tokens=4000))
        await eventually(lambda: _has(fast_chat(), active=1), what="the first request holding the slot")
        waiter = asyncio.create_task(post(http, url, "inbox-triage", "waiting"))
        await eventually(lambda: _has(fast_chat(), depth=1), what="the second request queued")
        waiter.cancel()  # closes its connection: the client went away
        await asyncio.gather(waiter, return_exceptions=True)
        await eventually(lambda: _has(fast_chat(), depth=0), what="the waiter leaving the line")
        status = await fast_chat()
        assert status["depth"] == 0 and status["active"] == 1, status
        code, _, _ = await holder
    assert code == 200


async def test_canary_share_over_1000_requests(stack: Stack, make_classifier: ClassifierFactory) -> None:
    share = 0.3
    url = await make_classifier(canary_share=share)
    sem = asyncio.Semaphore(24)

    async def one(i: int) -> dict[str, str]:
        async with sem:
            _, headers, _ = await post(http, url, "webmaster", f"Summarize item {i}.", max_tokens=4)
            return headers

    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(one(i) for i in range(1000)))
    canaried = [h for h in results if h.get("X-Router-Canary") == "fast-chat"]
    # A canary never waits: when fast-chat is busy it moves on down the ladder, and says so.
    assert all(
        h["X-Router-Group"] == "fast-chat" or h["X-Router-Fallback"].startswith("ladder:fast-chat->")
        for h in canaried
    )
    assert sum(h["X-Router-Group"] == "fast-chat" for h in canaried) > len(canaried) / 2
    observed = len(canaried) / len(results)
    # Binomial(1000, 0.3): sd 1.45 points; 4 points is beyond 2.7 sd.
    assert math.isclose(observed, share, abs_tol=0.04), observed
    ids = {h["X-Router-Request-Id"] for h in canaried}
    flagged = {e["request_id"] for e in stack.events() if e["event"] == "request_classified" and e["canary"]}
    assert ids <= flagged


async def test_canary_is_replayable_by_request_id(make_classifier: ClassifierFactory) -> None:
    url = await make_classifier(canary_share=0.5)
    async with aiohttp.ClientSession() as http:
        first = [
            (await post(http, url, "webmaster", "s", headers={"X-Request-Id": f"replay-{i:04d}"}))[1]
            for i in range(20)
        ]
        again = [
            (await post(http, url, "webmaster", "s", headers={"X-Request-Id": f"replay-{i:04d}"}))[1]
            for i in range(20)
        ]
    assert [h.get("X-Router-Canary") for h in first] == [h.get("X-Router-Canary") for h in again]
    assert any(h.get("X-Router-Canary") for h in first) and not all(h.get("X-Router-Canary") for h in first)


@pytest.mark.parametrize(("mode", "group"), [("cloud-only", "cloud-balanced"), ("local-only", "balanced")])
async def test_routing_mode(stack: Stack, make_classifier: ClassifierFactory, mode: str, group: str) -> None:
    url = await make_classifier(routing_mode=mode)
    async with aiohttp.ClientSession() as http:
        status, headers, body = await post(http, url, "webmaster", "Summarize the routing policy.")
    assert status == 200 and headers["X-Router-Group"] == group
    content = body["choices"][0]["message"]["content"]
    served_by_cloud = content.startswith("sim:cloud:")  # a local host answers "sim:<host>:<model>"
    assert served_by_cloud == ("cloud" in group), content
    served = load_matrix(stack.matrix_path).profiles[headers["X-Router-Model"]]
    assert served.is_local == ("cloud" not in group)


async def test_agent_directory_hot_reload_good_and_bad_edits(
    make_classifier: ClassifierFactory, tmp_path: Path
) -> None:
    from classifier.settings import DEFAULT_AGENTS_PATH

    agents = tmp_path / "agents.yaml"
    original = DEFAULT_AGENTS_PATH.read_text()
    agents.write_text(original)
    url = await make_classifier(agents_path=agents)
    async with aiohttp.ClientSession() as http:

        async def tier_of_newbie() -> str:
            _, headers, _ = await post(http, url, "newbie", "What time is it in Lisbon?", max_tokens=4)
            return headers["X-Router-Tier"]

        assert await tier_of_newbie() == "R"  # unknown agent, routine content
        agents.write_text(original + "  newbie: C\n")

        async def newbie_is_c() -> bool:
            return await tier_of_newbie() == "C"

        await eventually(newbie_is_c, what="the agents edit taking effect")
        agents.write_bytes(b"agents:\n  caf\xe9: H\n")  # not UTF-8: rejected, the last good stays

        async def metrics_text() -> str:
            async with http.get(url + "/metrics") as resp:
                return await resp.text()

        rejected = 'classifier_agents_reloads_total{outcome="rejected"} 1.0'
        text = await eventually(lambda: _contains(metrics_text(), rejected), what="the bad edit rejected")
        assert await tier_of_newbie() == "C"
    assert 'classifier_agents_reloads_total{outcome="rejected"} 1.0' in text
    assert 'classifier_agents_reloads_total{outcome="reloaded"} 1.0' in text


def _agents_with_r_budget(tmp_path: Path, wait_budget_ms: int) -> Path:
    """The shipped agents file with tier R's wait budget changed."""
    from classifier.settings import DEFAULT_AGENTS_PATH

    text = DEFAULT_AGENTS_PATH.read_text()
    old = "    first_lane: fast-chat     # qwen3:8b with think:false\n    wait_budget_ms: 5000\n"
    assert old in text
    path = tmp_path / "agents.yaml"
    path.write_text(text.replace(old, old.replace("5000", str(wait_budget_ms))))
    return path


async def _hold_balanced(stack: Stack, http: aiohttp.ClientSession, url: str) -> asyncio.Task[Any]:
    """A routine request holding balanced's one slot: whichever host it lands on hangs (every local host
    hangs its next chat request), then the faults are cleared so the next request is served. The caller
    ends the hold by cancelling the task (its client leaves, which frees the slot)."""
    hosts = sorted(yaml.safe_load(stack.matrix_path.read_text())["hosts"])
    mark = len(stack.events())
    for host in hosts:
        stack.sim.set_fault(host, "hang", count=1)
    holder = asyncio.create_task(post(http, url, "inbox-triage", "hold the slot"))

    def picked() -> bool:
        return any(e["event"] == "route_selected" and e.get("deployment") for e in stack.events()[mark:])

    await eventually(picked, what="the holder picked and hanging on a balanced host")
    for host in hosts:
        stack.sim.set_fault(host, "none")
    return holder


def _waiter_steps(stack: Stack, request_id: str) -> list[tuple[str, str | None, str, str]]:
    return [
        (e["from_group"], e["to_group"], e["step"], e["reason"])
        for e in stack.events()
        if e["request_id"] == request_id and e["event"] == "degradation_ladder_step"
    ]


async def test_every_lane_full_or_unusable_the_request_waits_then_is_served(
    stack: Stack, make_classifier: ClassifierFactory, tmp_path: Path
) -> None:
    """fast-chat has no capacity (cap 0), balanced's one slot is held: a routine request steps past
    fast-chat, waits for balanced (the ladder records it, with why, when the wait begins), and is served
    once the slot frees."""
    agents = _agents_with_r_budget(tmp_path, 60_000)
    url = await make_classifier(
        agents_path=agents, lane_caps={"fast-chat": 0, "balanced": 1}, routing_mode="local-only"
    )
    async with aiohttp.ClientSession() as http:
        holder = await _hold_balanced(stack, http, url)
        mark = len(stack.events())
        waiter = asyncio.create_task(post(http, url, "inbox-triage", "served after a wait", max_tokens=8))

        def waiting() -> str | None:
            for e in stack.events()[mark:]:
                if e["event"] == "degradation_ladder_step" and e["step"] == "wait":
                    return str(e["request_id"])
            return None

        request_id = await eventually(waiting, what="the waiter's wait step in the trail")
        assert not waiter.done()
        holder.cancel()  # the holder's client leaves: its slot frees, the waiter takes it
        await asyncio.gather(holder, return_exceptions=True)
        status, headers, body = await waiter
    assert status == 200, body
    assert headers["X-Router-Request-Id"] == request_id and headers["X-Router-Group"] == "balanced"
    assert headers["X-Router-Fallback"] == "ladder:fast-chat->balanced"
    assert float(headers["X-Router-Timing-Queue-Ms"]) > 0
    assert _waiter_steps(stack, request_id) == [
        ("fast-chat", "balanced", "another_lane", "no_capacity"),
        ("balanced", "balanced", "wait", "slots_busy"),
    ]
    mine = [e for e in stack.events() if e["request_id"] == request_id]
    kinds = [e["event"] for e in mine]
    assert kinds[:3] == ["request_classified", "degradation_ladder_step", "degradation_ladder_step"], kinds
    assert kinds[3] == "route_selected" and kinds[-1] == "request_completed", kinds
    wait = next(e for e in mine if e["event"] == "degradation_ladder_step" and e["step"] == "wait")
    assert (wait["slots"], wait["busy"], wait["ahead"], wait["wait_budget_ms"]) == (1, 1, 0, 60_000)
    assert 0 < wait["estimated_wait_ms"] <= 60_000
    done = mine[-1]
    assert done["outcome"] == "ok" and done["queue_ms"] > 0 and done["estimated_wait_ms"] > 0


async def test_a_wait_past_the_budget_steps_on_and_sheds(
    stack: Stack, make_classifier: ClassifierFactory, tmp_path: Path
) -> None:
    """The same full lanes, with a wait budget the estimate fits in (4.5 s against the 4 s service prior)
    but the held slot outlasts: the request waits, its budget runs out (wait_exceeded), nothing is left
    below balanced, and it is shed with 429 and a Retry-After, every step in order."""
    agents = _agents_with_r_budget(tmp_path, 4_500)
    url = await make_classifier(
        agents_path=agents, lane_caps={"fast-chat": 0, "balanced": 1}, routing_mode="local-only"
    )
    async with aiohttp.ClientSession() as http:
        holder = await _hold_balanced(stack, http, url)
        started = asyncio.get_running_loop().time()
        status, headers, body = await post(http, url, "inbox-triage", "shed after the wait")
        took = asyncio.get_running_loop().time() - started
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
    assert status == 429 and body["error"]["code"] == "queue_full", body
    assert int(headers["Retry-After"]) >= 1 and 4.0 < took < 8.0, took
    request_id = headers["X-Router-Request-Id"]
    assert _waiter_steps(stack, request_id) == [
        ("fast-chat", "balanced", "another_lane", "no_capacity"),
        ("balanced", "balanced", "wait", "slots_busy"),
        ("balanced", None, "shed", "wait_exceeded"),
    ]
    kinds = [e["event"] for e in stack.events() if e["request_id"] == request_id]
    assert kinds[-2:] == ["queue_rejected", "request_completed"] and "route_selected" not in kinds, kinds
    done = [e for e in stack.events() if e["request_id"] == request_id][-1]
    assert (done["outcome"], done["status"]) == ("shed", 429)
    async with aiohttp.ClientSession() as http:
        await eventually(
            lambda: _has(_lane(http, url, "balanced"), active=0, depth=0), what="balanced idle again"
        )


async def _lane(http: aiohttp.ClientSession, url: str, group: str) -> dict[str, Any]:
    lane: dict[str, Any] = (await queue_status(http, url))["groups"][group]
    return lane


async def _has(lane: Awaitable[dict[str, Any]], **expected: int) -> bool:
    got = await lane
    return all(got[k] == v for k, v in expected.items())


async def _contains(text: Awaitable[str], needle: str) -> str | None:
    value = await text
    return value if needle in value else None
