"""Issue 8, kinds 2, 3 and 10 through the real stack: openai SDK / raw HTTP -> classifier -> real LiteLLM
with our hooks -> simulated fleet.

Kind 2: every chunk of every stream, local lane and cloud lane, include_usage on and off, text and tool
calls, validates against OpenAI's chunk shape (``tests/schemas/chat_completion_chunk.json``, written from
OpenAI's API reference), with one id, created and model per stream; non-streamed answers against
``chat_completion.json``; ``model`` is the group on every lane.
Kind 3: a client that leaves stops the work upstream (the simulated host counts it ``cancelled``), streaming
or not, before the first byte, midway, while queued and during a LiteLLM fallback, and an abandoned request
is not carried on to another group for no one; its lane slot is given back and the trail says
``cancelled``.
Kind 10: tool round trips through the openai SDK on a local lane and the cloud lane, ``finish_reason``
``length`` when max_tokens cuts the answer, ``stop`` sequences.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from jsonschema import Draft202012Validator
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.conftest import ClassifierFactory, Stack
from tests.harness import read_events
from torchrouter_core.identity import GROUPS

SCHEMAS = Path(__file__).parent / "schemas"
CHUNK = Draft202012Validator(json.loads((SCHEMAS / "chat_completion_chunk.json").read_text()))
COMPLETION = Draft202012Validator(json.loads((SCHEMAS / "chat_completion.json").read_text()))
CHAT = "/v1/chat/completions"
LANES = [("fast-chat", "local"), ("cloud-fast", "cloud")]
ALL_LANES = [(g, "cloud" if g.startswith("cloud-") else "local") for g in sorted(GROUPS)]
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
ASK_WEATHER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Use get_weather for Paris."}]


def client(url: str) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=url + "/v1", api_key="unused", default_headers={"X-Agent-Id": "conformance"}, max_retries=0
    )


def shape_errors(validator: Draft202012Validator, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


async def raw_stream(
    url: str, body: dict[str, Any]
) -> tuple[dict[str, str], list[dict[str, Any]], list[str]]:
    """Headers, every ``data:`` chunk parsed, and the raw event payloads (``[DONE]`` included)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + CHAT, json={**body, "stream": True}, headers={"X-Agent-Id": "conformance"}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        text = await resp.text()
        headers = dict(resp.headers)
    events = [b.removeprefix("data: ") for b in text.split("\n\n") if b.strip()]
    return headers, [orjson.loads(e) for e in events if e.startswith("{")], events


def assert_one_well_formed_stream(chunks: list[dict[str, Any]], events: list[str], group: str) -> None:
    assert chunks and events[-1] == "[DONE]"
    for i, chunk in enumerate(chunks):
        assert shape_errors(CHUNK, chunk) == [], (i, chunk)
    assert len({c["id"] for c in chunks}) == 1, [c["id"] for c in chunks]
    assert len({c["created"] for c in chunks}) == 1
    assert {c["model"] for c in chunks} == {group}  # the group the classifier routed to, on every lane


# -- kind 2: stream shape ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("group", "lane"), ALL_LANES)
@pytest.mark.parametrize("include_usage", [False, True])
async def test_every_chunk_has_openais_shape(
    classifier_url: str, group: str, lane: str, include_usage: bool
) -> None:
    body: dict[str, Any] = {"model": group, "max_tokens": 6, "messages": [{"role": "user", "content": "hi"}]}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    headers, chunks, events = await raw_stream(classifier_url, body)
    assert headers["X-Router-Group"] == group
    assert headers["X-Router-Model"].startswith("openai-api/") == (lane == "cloud")  # the lane really served
    assert_one_well_formed_stream(chunks, events, group)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.startswith("sim:cloud:" if lane == "cloud" else "sim:")
    with_usage = [c for c in chunks if c.get("usage")]
    if include_usage:  # one usage chunk, the last, with "choices": [] (OpenAI's include_usage contract)
        assert with_usage == [chunks[-1]] and chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["completion_tokens"] == 6
        assert all(c["choices"] for c in chunks[:-1])
    else:
        assert with_usage == [] and all(c["choices"] for c in chunks)
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"]]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}  # max_tokens 6 cut the answer


@pytest.mark.parametrize(("group", "lane"), LANES)
async def test_tool_call_streams_and_non_streamed_answers_have_openais_shape(
    classifier_url: str, group: str, lane: str
) -> None:
    body: dict[str, Any] = {"model": group, "messages": ASK_WEATHER, "tools": [WEATHER]}
    _, chunks, events = await raw_stream(classifier_url, body)
    assert_one_well_formed_stream(chunks, events, group)
    calls = [tc for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls") or []]
    assert [tc["function"]["name"] for tc in calls if tc.get("function", {}).get("name")] == ["get_weather"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    async with aiohttp.ClientSession() as http:
        for extra in ({}, {"tools": [WEATHER]}):
            plain = {
                "model": group,
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
                **extra,
            }
            async with http.post(
                classifier_url + CHAT, json=plain | ({"messages": ASK_WEATHER} if extra else {})
            ) as r:
                doc = await r.json()
            assert r.status == 200 and shape_errors(COMPLETION, doc) == [], doc
            assert doc["model"] == group


async def test_openai_sdk_sees_one_id_per_stream_on_every_lane(classifier_url: str) -> None:
    async with client(classifier_url) as oa:
        for group, _ in LANES:
            stream = await oa.chat.completions.create(
                model=group,
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [c async for c in stream]
            assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
            assert chunks[-1].choices == [] and chunks[-1].usage is not None
            assert chunks[-1].usage.completion_tokens == 5


# -- kind 10 through the stack: tool round trips, length, stop --------------------------------------------
@pytest.mark.parametrize(("group", "lane"), LANES)
@pytest.mark.parametrize("stream", [False, True])
async def test_tool_round_trip_through_the_openai_sdk(
    classifier_url: str, group: str, lane: str, stream: bool
) -> None:
    messages = list(ASK_WEATHER)
    async with client(classifier_url) as oa:
        if stream:
            parts = [
                c
                async for c in await oa.chat.completions.create(
                    model=group, messages=messages, tools=[WEATHER], stream=True
                )
            ]
            deltas = [tc for c in parts for ch in c.choices for tc in ch.delta.tool_calls or []]
            assert len(deltas) >= 1 and deltas[0].function is not None
            call_id, name = deltas[0].id, deltas[0].function.name
            args = "".join((d.function.arguments or "") if d.function else "" for d in deltas)
            assert parts[-1].choices[0].finish_reason == "tool_calls"
        else:
            first = await oa.chat.completions.create(model=group, messages=messages, tools=[WEATHER])
            choice = first.choices[0]
            assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
            call = choice.message.tool_calls[0]
            assert call.type == "function"
            call_id, name, args = call.id, call.function.name, call.function.arguments
        assert name == "get_weather" and call_id
        assert json.loads(args) == {"city": "sim", "unit": "celsius"}  # valid for the schema's required keys
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": call_id, "content": '{"temp_c": 21}'})
        second = await oa.chat.completions.create(model=group, messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    assert (second.choices[0].message.content or "").startswith("sim:")


async def test_tool_choice_required_and_named_on_the_cloud_lane(classifier_url: str) -> None:
    # LiteLLM drops tool_choice for ollama_chat/ (Ollama's /api/chat has none): only the cloud honours it.
    quiet: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
    async with client(classifier_url) as oa:
        required = await oa.chat.completions.create(
            model="cloud-fast", messages=quiet, tools=[WEATHER], tool_choice="required"
        )
        named = await oa.chat.completions.create(
            model="cloud-fast",
            messages=quiet,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
        auto = await oa.chat.completions.create(model="cloud-fast", messages=quiet, tools=[WEATHER])
    for answer in (required, named):
        assert answer.choices[0].finish_reason == "tool_calls"
        assert answer.choices[0].message.tool_calls
    assert auto.choices[0].finish_reason == "stop"  # auto, and the user did not name the tool


@pytest.mark.parametrize(("group", "lane"), LANES)
async def test_finish_reason_length_and_stop_sequences(classifier_url: str, group: str, lane: str) -> None:
    hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    async with client(classifier_url) as oa:
        cut = await oa.chat.completions.create(model=group, messages=hi, max_tokens=3)
        assert cut.choices[0].finish_reason == "length" and cut.usage and cut.usage.completion_tokens == 3
        free = await oa.chat.completions.create(model=group, messages=hi)
        assert free.choices[0].finish_reason == "stop"
        for stop in (" reply", [" to", " reply"]):
            stopped = await oa.chat.completions.create(model=group, messages=hi, max_tokens=30, stop=stop)
            content = stopped.choices[0].message.content or ""
            assert stopped.choices[0].finish_reason == "stop" and " reply" not in content
            assert content.startswith("sim:") and len(content.split()) == 1
        chunks = [
            c
            async for c in await oa.chat.completions.create(
                model=group, messages=hi, max_tokens=30, stop=" reply", stream=True
            )
        ]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("sim:")
    assert chunks[-1].choices[0].finish_reason == "stop"


# -- kind 3: a client that leaves stops the work ----------------------------------------------------------
async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.02)


def counters(stack: Stack, key: str, *, where: str = "hosts") -> int:
    state = stack.sim.state()
    names = [n for n in state if (n == "cloud") == (where == "cloud")]
    return sum(int(state[n]["counters"][key]) for n in names)


def in_flight(stack: Stack, *, where: str = "hosts") -> int:
    state = stack.sim.state()
    return sum(int(s["in_flight"]) for n, s in state.items() if (n == "cloud") == (where == "cloud"))


async def lane(url: str, group: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url + "/queue/status") as resp:
        data: dict[str, Any] = await resp.json()
    return dict(data["groups"][group])


def outcome_of(stack: Stack, client_request_id: str) -> str | None:
    events = read_events(stack.events_path)
    ours = {
        e["request_id"]
        for e in events
        if e["event"] == "request_classified" and e.get("client_request_id") == client_request_id
    }
    done = [e["outcome"] for e in events if e["event"] == "request_completed" and e["request_id"] in ours]
    return done[0] if done else None


@pytest.fixture
async def faults(stack: Stack) -> AsyncIterator[Callable[[str, str], None]]:
    """Set faults on simulated hosts (or "cloud") for one test; all cleared afterwards."""
    touched: list[str] = []

    def set_fault(target: str, mode: str) -> None:
        touched.append(target)
        stack.sim.set_fault(target, mode)

    yield set_fault
    for target in touched:
        stack.sim.set_fault(target, "none")


LONG = 20000  # tokens: seconds of generation at the tests' time scale, long after the client has left


async def leave_midway(stack: Stack, url: str, *, stream: bool, group: str = "fast-chat") -> str:
    """Start a long request, let the model start generating, then hang up; returns its X-Request-Id."""
    rid = "conf-" + uuid.uuid4().hex[:12]
    body = {
        "model": group,
        "max_tokens": LONG,
        "stream": stream,
        "messages": [{"role": "user", "content": "long"}],
    }
    first_byte = asyncio.Event()

    async def go() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url + CHAT, json=body, headers={"X-Agent-Id": "conformance", "X-Request-Id": rid}
            ) as resp,
        ):
            await resp.content.readany()  # the headers and the first bytes (a stream) or the answer
            first_byte.set()
            await resp.content.read()

    where = "cloud" if group.startswith("cloud") else "hosts"
    task = asyncio.create_task(go())

    async def generating() -> bool:
        return in_flight(stack, where=where) >= 1 and (not stream or first_byte.is_set())

    await wait_until(generating, "the model is generating")
    task.cancel()  # closes the connection: the client is gone
    await asyncio.gather(task, return_exceptions=True)
    return rid


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("group", ["fast-chat", "cloud-fast"])
async def test_client_that_leaves_midway_stops_the_model_and_gives_its_slot_back(
    stack: Stack, classifier_url: str, stream: bool, group: str
) -> None:
    where = "cloud" if group.startswith("cloud") else "hosts"
    cancelled = counters(stack, "cancelled", where=where)
    rid = await leave_midway(stack, classifier_url, stream=stream, group=group)

    async def stopped() -> bool:
        return counters(stack, "cancelled", where=where) > cancelled and in_flight(stack, where=where) == 0

    await wait_until(stopped, f"the simulated {where} stops generating (counted cancelled)")
    if where == "hosts":
        await wait_until(lambda: _active_is(classifier_url, group, 0), "the lane slot is given back")
    await wait_until(lambda: _async(outcome_of(stack, rid) is not None), "the trail records the request")
    assert outcome_of(stack, rid) == "cancelled"
    if stream:  # the hooks closed the provider stream, and ended the deployment's in-flight count

        def closed_events() -> list[dict[str, Any]]:
            return [e for e in trail_of(stack, rid) if e["event"] == "upstream_cancelled"]

        await wait_until(lambda: _async(bool(closed_events())), "the hooks record the closed provider stream")
        (closed,) = closed_events()
        assert closed["deployment"] and closed["reason"] == "client_disconnected"


def trail_of(stack: Stack, client_request_id: str) -> list[dict[str, Any]]:
    events = read_events(stack.events_path)
    ours = {
        e["request_id"]
        for e in events
        if e["event"] == "request_classified" and e.get("client_request_id") == client_request_id
    }
    return [e for e in events if e["request_id"] in ours]


async def _active_is(url: str, group: str, n: int) -> bool:
    return bool((await lane(url, group))["active"] == n)


async def _async(value: bool) -> bool:
    return value


async def test_client_that_leaves_while_queued_never_reaches_a_model(
    stack: Stack, make_classifier: ClassifierFactory, tmp_path: Path
) -> None:
    agents = tmp_path / "agents.yaml"
    agents.write_text(
        "tiers:\n"
        "  H: {first_lane: balanced, wait_budget_ms: 600000}\n"
        "  R: {first_lane: fast-chat, wait_budget_ms: 600000}\n"
        "  C: {first_lane: code, wait_budget_ms: 600000}\n"
        "agents: {conformance: R}\n"
    )
    url = await make_classifier(lane_caps={"fast-chat": 1}, agents_path=agents)
    holder_rid = "conf-hold-" + uuid.uuid4().hex[:8]
    waiter_rid = "conf-wait-" + uuid.uuid4().hex[:8]
    body = {"model": "fast-chat", "messages": [{"role": "user", "content": "work"}]}

    async def post(rid: str, max_tokens: int) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url + CHAT,
                json=body | {"max_tokens": max_tokens},
                headers={"X-Agent-Id": "conformance", "X-Request-Id": rid},
            ) as resp,
        ):
            await resp.read()
            return resp.status

    before = counters(stack, "requests")
    holder = asyncio.create_task(post(holder_rid, LONG))
    await wait_until(lambda: _active_is(url, "fast-chat", 1), "the holder has the lane's one slot")
    await wait_until(lambda: _async(counters(stack, "requests") > before), "the holder reaches a host")
    requests = counters(stack, "requests")
    waiter = asyncio.create_task(post(waiter_rid, 5))

    async def queued() -> bool:
        return bool((await lane(url, "fast-chat"))["depth"] == 1)

    await wait_until(queued, "the second request waits in the lane's line")
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)

    async def left() -> bool:
        return bool((await lane(url, "fast-chat"))["depth"] == 0)

    await wait_until(left, "the waiter leaves the line")
    await wait_until(
        lambda: _async(outcome_of(stack, waiter_rid) is not None), "the trail records the waiter"
    )
    assert outcome_of(stack, waiter_rid) == "cancelled"
    assert await holder == 200
    assert counters(stack, "requests") == requests  # the abandoned request never reached a model


async def test_client_that_leaves_before_the_first_byte_stops_a_hung_call_without_a_fallback(
    stack: Stack, classifier_url: str, faults: Callable[[str, str], None]
) -> None:
    hosts = [n for n in stack.sim.state() if n != "cloud"]
    for host in hosts:
        faults(host, "hang")  # LiteLLM waits on the host; its fallback would be cloud-fast
    cancelled, cloud_requests = counters(stack, "cancelled"), counters(stack, "requests", where="cloud")
    requests = counters(stack, "requests")
    rid = "conf-hang-" + uuid.uuid4().hex[:8]
    body = {"model": "fast-chat", "stream": True, "messages": [{"role": "user", "content": "hello?"}]}

    async def go() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url_of(classifier_url), json=body, headers={"X-Agent-Id": "conformance", "X-Request-Id": rid}
            ) as r,
        ):
            await r.read()

    task = asyncio.create_task(go())
    await wait_until(lambda: _async(counters(stack, "requests") > requests), "the hung host has the request")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await wait_until(lambda: _async(counters(stack, "cancelled") > cancelled), "the hung call is cancelled")
    await wait_until(lambda: _async(outcome_of(stack, rid) is not None), "the trail records the request")
    assert outcome_of(stack, rid) == "cancelled"
    # Cancelled, so nothing is left to fall back: the cloud never hears of it.
    assert counters(stack, "requests", where="cloud") == cloud_requests
    assert in_flight(stack) == 0


def url_of(base: str) -> str:
    return base + CHAT


async def test_client_that_leaves_during_a_fallback_stops_the_fallback_call(
    stack: Stack, classifier_url: str, faults: Callable[[str, str], None]
) -> None:
    hosts = [n for n in stack.sim.state() if n != "cloud"]
    for host in hosts:
        faults(host, "error_500")  # every local attempt fails: LiteLLM falls back to cloud-fast
    faults("cloud", "hang")  # where the fallback waits
    cloud_cancelled, cloud_requests = (
        counters(stack, "cancelled", where="cloud"),
        counters(stack, "requests", where="cloud"),
    )
    rid = "conf-fb-" + uuid.uuid4().hex[:8]
    body = {"model": "fast-chat", "messages": [{"role": "user", "content": "hello?"}]}

    async def go() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url_of(classifier_url), json=body, headers={"X-Agent-Id": "conformance", "X-Request-Id": rid}
            ) as r,
        ):
            await r.read()

    task = asyncio.create_task(go())
    await wait_until(
        lambda: _async(counters(stack, "requests", where="cloud") > cloud_requests),
        "LiteLLM falls back to the cloud",
    )
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await wait_until(
        lambda: _async(counters(stack, "cancelled", where="cloud") > cloud_cancelled),
        "the fallback call is cancelled",
    )
    await wait_until(lambda: _async(outcome_of(stack, rid) is not None), "the trail records the request")
    assert outcome_of(stack, rid) == "cancelled"
    assert in_flight(stack, where="cloud") == 0


async def test_model_is_the_group_after_a_litellm_fallback_too(
    classifier_url: str, stack: Stack, faults: Callable[[str, str], None]
) -> None:
    for host in (n for n in stack.sim.state() if n != "cloud"):
        faults(host, "error_500")  # every local attempt fails: LiteLLM falls back to cloud-fast
    body: dict[str, Any] = {
        "model": "fast-chat",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with aiohttp.ClientSession() as http, http.post(classifier_url + CHAT, json=body) as resp:
        doc = await resp.json()
        fallback = resp.headers["X-Router-Fallback"]
    assert resp.status == 200 and fallback == "fallback:fast-chat->cloud-fast", fallback
    assert doc["choices"][0]["message"]["content"].startswith("sim:cloud:")
    assert shape_errors(COMPLETION, doc) == [] and doc["model"] == "fast-chat"
    headers, chunks, events = await raw_stream(classifier_url, body)
    assert headers["X-Router-Fallback"] == "fallback:fast-chat->cloud-fast"
    assert_one_well_formed_stream(chunks, events, "fast-chat")


@pytest.mark.parametrize("extra", ["include_usage", "tool call"])
async def test_a_stream_after_a_litellm_fallback_keeps_openais_shape(
    classifier_url: str, stack: Stack, faults: Callable[[str, str], None], extra: str
) -> None:
    """Siblings of the fallback case above: the usage chunk and a tool-call stream, served by the cloud
    lane after every local attempt failed."""
    for host in (n for n in stack.sim.state() if n != "cloud"):
        faults(host, "error_500")
    body: dict[str, Any] = {
        "model": "fast-chat",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}],
    }
    if extra == "include_usage":
        body["stream_options"] = {"include_usage": True}
    else:
        body["tools"] = [
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        ]
        body["tool_choice"] = "required"
    headers, chunks, events = await raw_stream(classifier_url, body)
    assert headers["X-Router-Fallback"] == "fallback:fast-chat->cloud-fast"
    assert_one_well_formed_stream(chunks, events, "fast-chat")
    if extra == "include_usage":
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
        assert all(c["choices"] and not c.get("usage") for c in chunks[:-1])
    else:
        calls = [tc for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls") or []]
        assert calls and calls[0]["function"]["name"] == "lookup"
        assert [ch["finish_reason"] for c in chunks for ch in c["choices"]][-1] == "tool_calls"


async def test_logprobs_on_the_cloud_lane_keep_openais_shape(classifier_url: str) -> None:
    # The cloud answers logprobs; LiteLLM's ollama_chat/ provider drops the parameter (local lanes get none).
    body: dict[str, Any] = {
        "model": "cloud-fast",
        "max_tokens": 3,
        "logprobs": True,
        "top_logprobs": 2,
        "messages": [{"role": "user", "content": "hi"}],
    }
    _, chunks, events = await raw_stream(classifier_url, body)
    assert_one_well_formed_stream(chunks, events, "cloud-fast")
    tokens = [
        e["token"]
        for c in chunks
        for ch in c["choices"]
        for e in (ch.get("logprobs") or {}).get("content") or []
    ]
    assert tokens[0].startswith("sim:cloud:") and tokens[1] == " reply"  # cloud-fast has two models
    async with aiohttp.ClientSession() as http, http.post(classifier_url + CHAT, json=body) as resp:
        doc = await resp.json()
    assert shape_errors(COMPLETION, doc) == []
    content = doc["choices"][0]["logprobs"]["content"]
    assert content[0]["token"].startswith("sim:cloud:") and content[1]["token"] == " reply"
    assert all(len(e["top_logprobs"]) == 2 for e in content)
