"""The whole request path: openai SDK -> classifier -> real LiteLLM with our hooks -> simulated fleet."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import ClassifierFactory, Stack
from tests.harness import free_ports, wait_for_event

ROUTING_HEADERS = (
    "x-router-request-id",
    "x-router-tier",
    "x-router-group",
    "x-router-model",
    "x-router-fallback",
    "x-router-timing-score-ms",
    "x-router-timing-queue-ms",
    "x-router-timing-litellm-ttft-ms",
    "x-router-timing-total-ms",
)
SPEC_MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Summarize the routing policy."}
]


def client(url: str, agent: str | None) -> AsyncOpenAI:
    headers = {"X-Agent-Id": agent} if agent else {}
    return AsyncOpenAI(
        base_url=url + "/v1", api_key="unused-by-classifier", default_headers=headers, max_retries=0
    )


def lane_models(stack: Stack, lane: str) -> set[str]:
    import yaml

    doc = yaml.safe_load(stack.matrix_path.read_text())
    return {p["model"] for p in doc["profiles"].values() if p["lane"] == lane}


@pytest.mark.parametrize(
    ("agent", "tier", "group"),
    [("webmaster", "H", "balanced"), ("inbox-triage", "R", "fast-chat"), ("codex-runner", "C", "code")],
)
async def test_non_streaming_answer_comes_from_the_tiers_lane(
    stack: Stack, classifier_url: str, agent: str, tier: str, group: str
) -> None:
    async with client(classifier_url, agent) as oa:
        raw = await oa.chat.completions.with_raw_response.create(model="auto", messages=SPEC_MESSAGES)
    completion = raw.parse()
    for name in ROUTING_HEADERS:
        assert raw.headers.get(name), f"missing {name}"
    assert raw.headers["x-router-tier"] == tier
    assert raw.headers["x-router-group"] == group
    assert raw.headers["x-router-fallback"] == "none"
    deployment = raw.headers["x-router-model"]
    host_id, provider, model = deployment.split("/", 2)
    assert provider == "ollama" and model in lane_models(stack, group)
    # The simulated host prefixes every answer with who produced it: proof the answer travelled.
    content = completion.choices[0].message.content or ""
    assert content.startswith(f"sim:{host_id}:{model}"), content

    request_id = raw.headers["x-router-request-id"]
    trail = [e for e in stack.events() if e["request_id"] == request_id]
    kinds = [e["event"] for e in trail]
    assert "request_classified" in kinds and "route_selected" in kinds and "request_completed" in kinds
    selected = next(e for e in trail if e["event"] == "route_selected")
    assert selected["deployment"] == deployment and selected["group"] == group and selected["tier"] == tier
    assert selected["agent_id"] == agent


async def test_streaming_relays_chunks_and_fast_chat_gets_think_false(
    stack: Stack, classifier_url: str
) -> None:
    before = stack.sim.state()
    async with client(classifier_url, "inbox-triage") as oa:
        raw = await oa.chat.completions.with_raw_response.create(
            model="auto", messages=SPEC_MESSAGES, stream=True
        )
        assert raw.headers["x-router-group"] == "fast-chat"
        assert raw.headers["content-type"].startswith("text/event-stream")
        stream = raw.parse()
        assert isinstance(stream, AsyncStream)
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    text = "".join(pieces)
    assert len([p for p in pieces if p]) > 1, "expected several content chunks"
    host_id, _, model = raw.headers["x-router-model"].split("/", 2)
    assert text.startswith(f"sim:{host_id}:{model}")
    after = stack.sim.state()
    assert _think_false_count(after, host_id, model) > _think_false_count(before, host_id, model)
    completed = await wait_for_event(
        stack.events_path, raw.headers["x-router-request-id"], "request_completed"
    )
    assert completed["ttft_ms"] is not None and completed["outcome"] == "ok"


def _think_false_count(state: dict[str, object], host_id: str, model: str) -> int:
    think = state[host_id]["think"]  # type: ignore[index]
    return int(think.get(model, {}).get("false", 0))


async def test_spec_example_body_agent_passthrough(classifier_url: str) -> None:
    """``model: "agent:group"`` names the agent without a header; the header wins when both exist."""
    async with client(classifier_url, None) as oa:
        raw = await oa.chat.completions.with_raw_response.create(
            model="codex-runner:auto", messages=SPEC_MESSAGES
        )
    assert raw.headers["x-router-tier"] == "C"
    async with client(classifier_url, "webmaster") as oa:
        raw = await oa.chat.completions.with_raw_response.create(
            model="codex-runner:auto", messages=SPEC_MESSAGES
        )
    assert raw.headers["x-router-tier"] == "H"


async def test_models_and_health(classifier_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(classifier_url + "/health") as resp:
            body = await resp.json()
        assert resp.status == 200 and body["status"] == "ok" and isinstance(body["daily_spend_usd"], float)
        async with http.get(classifier_url + "/v1/models") as resp:
            models = await resp.json()
    ids = {m["id"] for m in models["data"]}
    assert {"auto", "balanced", "fast-chat", "code"} <= ids


BAD_BODIES = [
    (b"{not json", "not valid JSON"),
    (b"", "empty"),
    (b"[1, 2]", "JSON object"),
    (b'{"model": "auto"}', "messages"),
    (b'{"messages": []}', "messages"),
    (b'{"messages": "hi"}', "messages"),
    (b'{"messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role"),
    (b'{"messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
    (b'{"messages": [{"role": "user", "content": "x"}], "model": 12}', "model"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -3}', "max_tokens"),
]


@pytest.mark.parametrize(("body", "mentions"), BAD_BODIES)
async def test_bad_bodies_are_answered_by_the_classifier_itself(
    make_classifier: ClassifierFactory, body: bytes, mentions: str
) -> None:
    # Point the classifier at a port where nothing listens: a forwarded request would come back 502.
    url = await make_classifier(litellm_url=f"http://127.0.0.1:{free_ports(1)[0]}")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
        ) as resp,
    ):
        payload = await resp.json()
        assert resp.status == 400, payload
        assert resp.headers["X-Router-Request-Id"]
    error = payload["error"]
    assert error["type"] == "invalid_request_error"
    assert mentions in error["message"]


async def test_health_says_when_litellm_cannot_be_reached(make_classifier: ClassifierFactory) -> None:
    """A classifier whose LiteLLM is gone (nothing listens there): requests get 502, and ``/health`` says
    ``degraded`` with ``litellm:unreachable`` (not ``ok`` while every request fails)."""
    url = await make_classifier(litellm_url=f"http://127.0.0.1:{free_ports(1)[0]}")
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/health") as resp:
            assert (await resp.json())["status"] == "ok"  # nothing tried yet
        async with http.post(
            url + "/v1/chat/completions", json=body, headers={"X-Agent-Id": "inbox-triage"}
        ) as resp:
            error = (await resp.json())["error"]
            assert resp.status == 502 and error["code"] == "upstream_unavailable", error
            assert "unreachable" in error["message"]
        async with http.get(url + "/health") as resp:
            health = await resp.json()
    assert health["status"] == "degraded" and "litellm:unreachable" in health["degraded"], health


async def test_oversized_body_gets_413(make_classifier: ClassifierFactory) -> None:
    url = await make_classifier(max_body_bytes=1024)
    body = b'{"messages": [{"role": "user", "content": "' + b"x" * 4096 + b'"}]}'
    async with aiohttp.ClientSession() as http, http.post(url + "/v1/chat/completions", data=body) as resp:
        payload = await resp.json()
    assert resp.status == 413 and payload["error"]["code"] == "payload_too_large"


async def test_litellm_unreachable_is_a_clear_502(make_classifier: ClassifierFactory) -> None:
    url = await make_classifier(litellm_url=f"http://127.0.0.1:{free_ports(1)[0]}")
    body = {"messages": SPEC_MESSAGES}
    async with aiohttp.ClientSession() as http, http.post(url + "/v1/chat/completions", json=body) as resp:
        payload = await resp.json()
    assert resp.status == 502
    assert payload["error"]["code"] == "upstream_unavailable"
    assert resp.headers["X-Router-Tier"] == "R"


async def test_secrets_never_reach_the_trail_logs_metrics_or_answers(
    stack: Stack, make_classifier: ClassifierFactory, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import CLOUD_KEY

    caplog.set_level(logging.DEBUG)
    url = await make_classifier()
    dead = await make_classifier(litellm_url=f"http://127.0.0.1:{free_ports(1)[0]}")
    seen: list[str] = []
    answered: list[tuple[int, str]] = []
    async with aiohttp.ClientSession() as http:
        for base, model in ((url, "auto"), (url, "cloud-balanced"), (dead, "auto")):
            body: dict[str, object] = {"model": model, "messages": SPEC_MESSAGES}
            async with http.post(
                base + "/v1/chat/completions", json=body, headers={"X-Agent-Id": "webmaster"}
            ) as r:
                seen += [await r.text(), str(dict(r.headers))]
                answered.append((r.status, r.headers["X-Router-Group"]))
        async with http.get(url + "/metrics") as r:
            seen.append(await r.text())
    seen += [caplog.text, stack.events_path.read_text(), stack.litellm.log_path.read_text(errors="replace")]
    # The paths where a key could leak really ran: a local answer, a cloud answer (the cloud key was
    # used), and the classifier's own error when LiteLLM is unreachable.
    assert answered == [(200, "balanced"), (200, "cloud-balanced"), (502, "balanced")]
    for where, text in enumerate(seen):
        assert stack.master_key not in text, f"master key leaked in item {where}"
        assert CLOUD_KEY not in text, f"cloud key leaked in item {where}"


async def test_client_keys_when_configured(make_classifier: ClassifierFactory) -> None:
    from classifier.settings import Secret

    url = await make_classifier(client_keys=(Secret("agent-key-1"),))
    body = {"messages": SPEC_MESSAGES}
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_api_key"
        wrong = {"Authorization": "Bearer agent-key-2"}
        async with http.post(url + "/v1/chat/completions", json=body, headers=wrong) as resp:
            assert resp.status == 401
        right = {"Authorization": "Bearer agent-key-1", "X-Agent-Id": "webmaster"}
        async with http.post(url + "/v1/chat/completions", json=body, headers=right) as resp:
            assert resp.status == 200
        async with http.get(url + "/health") as resp:
            assert resp.status == 200  # health stays open for probes


async def test_metrics_expose_queue_state_and_hook_health(classifier_url: str) -> None:
    async with client(classifier_url, "inbox-triage") as oa:
        await oa.chat.completions.create(model="auto", messages=SPEC_MESSAGES)
    async with aiohttp.ClientSession() as http, http.get(classifier_url + "/metrics") as resp:
        text = await resp.text()
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("classifier_") and " " in line
    }
    assert values["classifier_litellm_hook_errors"] == 0.0, "the hooks inside LiteLLM reported errors"
    assert values['classifier_queue_limit{group="fast-chat"}'] > 0
    assert values['classifier_queue_active{group="fast-chat"}'] == 0
    assert values['classifier_requests_total{group="fast-chat",outcome="ok",tier="R"}'] >= 1
    assert values["classifier_event_write_errors_total"] == 0.0
