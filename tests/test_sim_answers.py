"""What the simulated fleet answers besides text (issue 8, kind 10): tool calls, stop, length, logprobs.

The rules are torchrouter.sim.answer's (pure, tested first); then each on the wire, Ollama's native
/api/chat and the OpenAI-compatible endpoints of a host and of the cloud.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.test_sim_http import FAST, HOST, KEY, SPEC, chat, sse_events
from torchrouter.sim import SimFleet
from torchrouter.sim.answer import (
    ToolCall,
    arguments_for,
    cut_at_stop,
    logprobs_request,
    pick_tool_call,
    stop_strings,
    token_logprob,
)

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
                "when": {"type": "object", "properties": {"hour": {"type": "number"}}, "required": ["hour"]},
                "note": {"type": "string"},
            },
            "required": ["city", "unit", "days", "when"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
WEATHER_ARGS = {"city": "sim", "unit": "celsius", "days": 1, "when": {"hour": 1.5}}
ASK_WEATHER = [{"role": "user", "content": "Call get_weather for Paris"}]
ASK_NOTHING = [{"role": "user", "content": "Tell me a story"}]


# -- the rules ----------------------------------------------------------------------------------------------
def test_tool_choice_rules() -> None:
    tools = [CLOCK, WEATHER]
    assert pick_tool_call(tools, "required", ASK_NOTHING) == ToolCall("get_time", {})
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert pick_tool_call(tools, named, ASK_NOTHING) == ToolCall("get_weather", WEATHER_ARGS)
    assert pick_tool_call(tools, "auto", ASK_WEATHER) == ToolCall("get_weather", WEATHER_ARGS)
    assert pick_tool_call(tools, None, ASK_WEATHER) == ToolCall("get_weather", WEATHER_ARGS)
    assert pick_tool_call(tools, "auto", ASK_NOTHING) is None  # auto: only when the user names the tool
    assert pick_tool_call(tools, "none", ASK_WEATHER) is None
    assert pick_tool_call(None, "required", ASK_WEATHER) is None  # nothing offered, nothing called
    after_tool = [*ASK_WEATHER, {"role": "tool", "tool_call_id": "x", "content": "sunny"}]
    assert pick_tool_call(tools, "auto", after_tool) is None  # a round trip ends in text
    parts = [{"role": "user", "content": [{"type": "text", "text": "use get_time"}]}]
    assert pick_tool_call(tools, "auto", parts) == ToolCall("get_time", {})


def test_arguments_hold_every_required_property_with_its_type() -> None:
    assert arguments_for(WEATHER["function"]["parameters"]) == WEATHER_ARGS
    schema = {
        "properties": {"x": {"type": ["null", "boolean"]}, "y": {"type": "array"}},
        "required": ["x", "y"],
    }
    assert arguments_for(schema) == {"x": True, "y": []}
    assert arguments_for("not a schema") == {}


def test_stop_cuts_before_the_first_stop_string() -> None:
    tokens = ("sim:h:m", " reply", " to", " 'x'")
    assert cut_at_stop(tokens, (" to",)) == (("sim:h:m", " reply"), True)
    assert cut_at_stop(tokens, ("ply", " to")) == (("sim:h:m", " re"), True)  # mid-token
    assert cut_at_stop(tokens, ("sim",)) == ((), True)
    assert cut_at_stop(tokens, ("absent",)) == (tokens, False)
    assert (
        stop_strings(" to") == (" to",) and stop_strings(["a", 3, ""]) == ("a",) and stop_strings(None) == ()
    )


def test_logprob_entries() -> None:
    entry = token_logprob(7, " reply", 3)
    assert entry["token"] == " reply" and entry["bytes"] == list(b" reply") and entry["logprob"] < 0
    assert entry["top_logprobs"][0]["token"] == " reply" and len(entry["top_logprobs"]) == 3
    assert entry["top_logprobs"][0]["logprob"] == entry["logprob"]
    assert all(t["logprob"] < entry["logprob"] for t in entry["top_logprobs"][1:])  # the chosen is likeliest
    assert token_logprob(7, " reply", 3) == entry
    assert logprobs_request(True, 2) == 2 and logprobs_request(True, None) == 0
    assert logprobs_request(None, 5) is None and logprobs_request(False, 5) is None


# -- on the wire -------------------------------------------------------------------------------------------
@pytest.fixture
async def fleet() -> AsyncIterator[SimFleet]:
    async with SimFleet(SPEC) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def ndjson(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in raw.splitlines() if line.strip()]


async def native_stream(http: aiohttp.ClientSession, url: str, **body: Any) -> list[dict[str, Any]]:
    payload = {"model": FAST, "messages": ASK_NOTHING, "think": False} | body
    async with http.post(url + "/api/chat", data=orjson.dumps(payload)) as resp:
        return ndjson(await resp.read())


async def test_native_tool_call_like_ollama(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    url = fleet.host_urls[HOST]
    status, body = await chat(http, url, think=False, messages=ASK_WEATHER, tools=[CLOCK, WEATHER])
    assert status == 200
    assert body["message"]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": WEATHER_ARGS}}]
    assert body["message"]["content"] == "" and body["done_reason"] == "stop"
    lines = await native_stream(http, url, messages=ASK_WEATHER, tools=[WEATHER])
    calls = [line["message"]["tool_calls"] for line in lines if line["message"].get("tool_calls")]
    assert calls == [[{"function": {"name": "get_weather", "arguments": WEATHER_ARGS}}]]
    assert lines[-1]["done"] is True and not any(line["message"].get("content") for line in lines)
    # Not named by the user: Ollama's model answers in text (native /api/chat has no tool_choice).
    status, body = await chat(http, url, think=False, messages=ASK_NOTHING, tools=[WEATHER])
    assert "tool_calls" not in body["message"] and body["message"]["content"].startswith("sim:")


async def test_native_length_stop_and_logprobs(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    url = fleet.host_urls[HOST]
    _, free = await chat(http, url, think=False)
    assert free["done_reason"] == "stop" and free["eval_count"] == 24  # no budget: the model's own end
    _, cut = await chat(http, url, think=False, options={"num_predict": 5})
    assert cut["done_reason"] == "length" and cut["eval_count"] == 5
    _, stopped = await chat(http, url, think=False, options={"num_predict": 50, "stop": [" reply"]})
    assert stopped["message"]["content"] == f"sim:{HOST}:{FAST}" and stopped["done_reason"] == "stop"
    lines = await native_stream(http, url, options={"num_predict": 50, "stop": [" to"]})
    text = "".join(line["message"].get("content", "") for line in lines)
    assert text == f"sim:{HOST}:{FAST} reply" and lines[-1]["done_reason"] == "stop"

    _, plain = await chat(http, url, think=False, options={"num_predict": 4})
    assert "logprobs" not in plain  # only when asked
    _, probs = await chat(http, url, think=False, options={"num_predict": 4}, logprobs=True, top_logprobs=2)
    assert [e["token"] for e in probs["logprobs"]] == [
        f"sim:{HOST}:{FAST}",
        " reply",
        " to",
        " 'Summarize the routing decision for this …'",
    ]
    assert all(len(e["top_logprobs"]) == 2 for e in probs["logprobs"])
    lines = await native_stream(http, url, options={"num_predict": 3}, logprobs=True)
    assert [line["logprobs"][0]["token"] for line in lines[:-1]] == [f"sim:{HOST}:{FAST}", " reply", " to"]
    assert all(line["logprobs"][0]["top_logprobs"] == [] for line in lines[:-1])


async def openai_post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with http.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        if body.get("stream"):
            return [orjson.loads(e) for e in sse_events(await resp.text()) if e != "[DONE]"]
        return await resp.json()


@pytest.mark.parametrize("where", ["host", "cloud"])
async def test_openai_endpoints_tool_calls_finish_reasons_logprobs(
    fleet: SimFleet, http: aiohttp.ClientSession, where: str
) -> None:
    url, model = (fleet.host_urls[HOST], FAST) if where == "host" else (str(fleet.cloud_url), "gpt-4o-mini")
    base: dict[str, Any] = {"model": model, "messages": ASK_NOTHING}
    if where == "host":
        base["reasoning_effort"] = "none"  # qwen3 thinks by default, and thinking eats into max_tokens
    named = {"type": "function", "function": {"name": "get_weather"}}
    data = await openai_post(http, url, base | {"tools": [CLOCK, WEATHER], "tool_choice": named})
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == WEATHER_ARGS
    data = await openai_post(http, url, base | {"tools": [CLOCK], "tool_choice": "required"})
    assert data["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_time"
    data = await openai_post(http, url, base | {"tools": [CLOCK], "tool_choice": "auto"})
    assert data["choices"][0]["finish_reason"] == "stop" and "tool_calls" not in data["choices"][0]["message"]

    chunks = await openai_post(
        http, url, base | {"tools": [WEATHER], "tool_choice": "required", "stream": True}
    )
    deltas = [c["choices"][0]["delta"] for c in chunks]
    (streamed,) = [d["tool_calls"] for d in deltas if d.get("tool_calls")]
    assert streamed[0]["index"] == 0 and streamed[0]["function"]["name"] == "get_weather"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    data = await openai_post(http, url, base | {"max_tokens": 3})
    assert data["choices"][0]["finish_reason"] == "length" and data["usage"]["completion_tokens"] == 3
    data = await openai_post(http, url, base | {"max_tokens": 30, "stop": " reply"})
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["choices"][0]["message"]["content"] == f"sim:{'cloud' if where == 'cloud' else HOST}:{model}"
    data = await openai_post(http, url, base | {"max_tokens": 2, "logprobs": True, "top_logprobs": 2})
    content = data["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in content][1] == " reply" and all(len(e["top_logprobs"]) == 2 for e in content)
    chunks = await openai_post(http, url, base | {"max_tokens": 2, "logprobs": True, "stream": True})
    assert [
        c["choices"][0]["logprobs"]["content"][0]["token"] for c in chunks if "logprobs" in c["choices"][0]
    ][1] == " reply"
