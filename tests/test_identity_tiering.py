"""Identity, the agent directory, request features and the tier rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from torchrouter_core.identity import Identity, IdentityError, identify, sanitize_agent_id
from torchrouter_core.tiering import (
    CONTENT_SIGNALS,
    AgentDirectory,
    DirectoryError,
    Tier,
    classify,
    extract_features,
    parse_agent_directory,
    parse_agent_directory_yaml,
)

AGENTS_YAML = Path(__file__).resolve().parent.parent / "classifier" / "agents.yaml"
TIERS = {
    "H": {"first_lane": "balanced", "wait_budget_ms": 20000},
    "R": {"first_lane": "fast-chat", "wait_budget_ms": 5000},
    "C": {"first_lane": "code", "wait_budget_ms": 15000},
}


@pytest.fixture(scope="module")
def directory() -> AgentDirectory:
    return parse_agent_directory_yaml(AGENTS_YAML.read_text())


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


# --- identity ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "model", "expected"),
    [
        ({"X-Agent-Id": "webmaster"}, "auto", Identity("webmaster", "header", None, None)),
        ({"x-agent-id": " WebMaster "}, None, Identity("webmaster", "header", None, None)),
        ({"X-AGENT-ID": "webmaster"}, "code", Identity("webmaster", "header", "code", None)),
        ({}, "webmaster:code", Identity("webmaster", "body", "code", None)),
        ({}, "webmaster:auto", Identity("webmaster", "body", None, None)),
        ({}, "webmaster:", Identity("webmaster", "body", None, None)),
        ({"X-Agent-Id": "triage"}, "webmaster:cloud-code", Identity("triage", "header", "cloud-code", None)),
        ({"X-Agent-Id": "triage"}, "bad agent!:code", Identity("triage", "header", "code", None)),
        ({"X-Agent-Id": "  "}, "Fast-Chat", Identity(None, "anonymous", "fast-chat", None)),
        ({}, "", Identity(None, "anonymous", None, None)),
        ({}, "AUTO", Identity(None, "anonymous", None, None)),
        ({}, "gpt-4o", Identity(None, "anonymous", None, "gpt-4o")),
        ({}, "qwen3:8b", Identity(None, "anonymous", None, "qwen3:8b")),
        ({"X-Agent-Id": "a.b_c-1"}, "ollama/qwen3", Identity("a.b_c-1", "header", None, "ollama/qwen3")),
    ],
)
def test_identify(headers: dict[str, str], model: object, expected: Identity) -> None:
    assert identify(headers, model) == expected
    # The same through aiohttp's header type (the classifier's real input), whatever the case of the name.
    assert identify(CIMultiDictProxy(CIMultiDict(headers)), model) == expected


@pytest.mark.parametrize(
    ("headers", "model", "message"),
    [
        ({"X-Agent-Id": "web master"}, "auto", "X-Agent-Id header"),
        ({"X-Agent-Id": "-leading"}, "auto", "X-Agent-Id header"),
        ({"X-Agent-Id": "x" * 129}, "auto", "longer than 128"),
        ({"X-Agent-Id": "webmaster:code"}, "auto", "X-Agent-Id header"),
        ({}, "bad agent!:code", "agent in model field"),
        ({}, "a:b:code", "agent in model field"),
        ({}, 42, "model must be a string"),
        ({}, "gpt\n4o", "printable"),
        ({}, "m" * 257, "printable"),
    ],
)
def test_identify_rejects(headers: dict[str, str], model: object, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        identify(headers, model)


def test_agent_id_at_max_length_is_kept() -> None:
    assert sanitize_agent_id("A" * 128) == "a" * 128


# --- agent directory ---------------------------------------------------------------------------------------


def test_shipped_directory(directory: AgentDirectory) -> None:
    assert directory.tier_of("webmaster") is Tier.H
    assert {directory.tier_of(agent) for agent in directory.agents} == set(Tier)
    assert [directory.first_lane(t) for t in (Tier.H, Tier.R, Tier.C)] == ["balanced", "fast-chat", "code"]
    assert [directory.wait_budget_ms(t) for t in (Tier.H, Tier.R, Tier.C)] == [20000, 5000, 15000]
    assert directory.tier_of(None) is None
    assert directory.tier_of("stranger") is None


def test_directory_normalises_ids_and_tiers() -> None:
    directory = parse_agent_directory({"tiers": TIERS, "agents": {" Planner ": "h", "bot": "R"}})
    assert dict(directory.agents) == {"planner": Tier.H, "bot": Tier.R}
    assert parse_agent_directory({"tiers": TIERS, "agents": None}).agents == {}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "expected a mapping"),
        ({"tiers": TIERS, "agent": {}}, "unknown top-level keys"),
        ({"agents": {}}, "tiers: expected a mapping"),
        ({"tiers": {"H": TIERS["H"], "R": TIERS["R"]}}, "tiers: missing C"),
        ({"tiers": {**TIERS, "X": TIERS["H"]}}, r"tiers\.X: tier must be one of"),
        ({"tiers": {**TIERS, "h": TIERS["H"]}}, r"tiers\.h: tier H is listed twice"),
        ({"tiers": {**TIERS, "R": {"first_lane": "cloud-fast", "wait_budget_ms": 1}}}, r"R\.first_lane"),
        ({"tiers": {**TIERS, "C": {"first_lane": "code", "wait_budget_ms": -1}}}, r"C\.wait_budget_ms"),
        ({"tiers": {**TIERS, "C": {"first_lane": "code", "wait_budget_ms": True}}}, r"C\.wait_budget_ms"),
        ({"tiers": {**TIERS, "C": {"first_lane": "code", "wait_budget_ms": 1, "x": 1}}}, r"C: unknown"),
        ({"tiers": TIERS, "agents": ["webmaster"]}, "agents: expected a mapping"),
        ({"tiers": TIERS, "agents": {"webmaster": "Z"}}, r"agents\.webmaster: tier must be one of"),
        ({"tiers": TIERS, "agents": {"web master": "H"}}, r"agents\.web master .*invalid"),
        ({"tiers": TIERS, "agents": {7: "H"}}, r"agents\.7: agent id must be a string"),
        ({"tiers": TIERS, "agents": {"Bot": "H", "bot": "R"}}, r"agents\.bot: agent 'bot' is listed twice"),
    ],
)
def test_directory_errors_name_the_entry(doc: object, message: str) -> None:
    with pytest.raises(DirectoryError, match=message):
        parse_agent_directory(doc)


def test_invalid_yaml_is_a_directory_error() -> None:
    with pytest.raises(DirectoryError, match="invalid YAML"):
        parse_agent_directory_yaml("tiers: [unclosed")


# --- features ----------------------------------------------------------------------------------------------


def test_features_tokens_tools_and_last_user_message() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    body = {
        "messages": [
            {"role": "system", "content": "x" * 400},
            {"role": "user", "content": [{"type": "text", "text": "y" * 100}, {"type": "image_url"}]},
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "tool", "content": "z" * 20},
            "not a message",
        ],
        "tools": tools,
    }
    features = extract_features(body)
    assert features.has_tools
    assert features.last_user_chars == 100
    tool_chars = len("type function function name get_weather parameters type object".replace(" ", ""))
    assert features.approx_prompt_tokens == -(-(400 + 100 + 20 + tool_chars) // 4)


def test_features_tolerate_malformed_bodies() -> None:
    bodies: list[dict[str, Any]] = [{}, {"messages": "hi"}, {"messages": [{"role": "user", "content": 5}]}]
    for body in [*bodies, {"tools": []}]:
        features = extract_features(body)
        assert (features.has_tools, features.approx_prompt_tokens, features.code_signals) == (False, 0, ())


def test_only_the_last_user_message_is_scanned() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "```python\nprint(1)\n```"},
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": "thanks, what's the weather?"},
        ]
    }
    assert extract_features(body).code_signals == ()


@pytest.mark.parametrize(
    ("effort", "asks"),
    [("high", True), ("low", True), ("none", False), ("minimal", False), (None, False)],
)
def test_reasoning_effort(effort: str | None, asks: bool) -> None:
    assert extract_features(chat("hello", reasoning_effort=effort)).asks_reasoning is asks


def test_nested_reasoning_effort() -> None:
    features = extract_features(chat("hi", reasoning={"effort": "medium"}))
    assert features.reasoning_signals == ("reasoning:effort",)


# --- classification: the table -----------------------------------------------------------------------------

TRACE = 'Traceback (most recent call last):\n  File "app/main.py", line 12, in <module>\nKeyError: "x"'
JAVA_TRACE = 'Exception in thread "main"\n    at com.acme.App.run(App.java:42)'
LONG = "word " * 7000


def case(name: str, text: str, tier: Tier, signals: str, agent: str | None = None, **body: Any) -> Any:
    """One row: the last user message (and body extras), the expected tier and space-separated signals."""
    headers = {"X-Agent-Id": agent} if agent else {}
    return pytest.param(headers, chat(text, **body), tier, tuple(signals.split()), id=name)


H, R, C = Tier.H, Tier.R, Tier.C
CASES = [
    case("known H agent", "Summarize the routing policy.", H, "agent:webmaster", agent="webmaster"),
    case("known R agent", "Think step by step.", R, "agent:inbox-triage", agent="inbox-triage"),
    case("known C agent", "hello", C, "agent:codex-runner", agent="Codex-Runner"),
    case("agent wins over code", "```py\nx=1\n```", H, "agent:webmaster", agent="webmaster"),
    case("body agent", "hello", C, "agent:code-reviewer", model="code-reviewer:auto"),
    case("routine", "Summarize the routing policy.", R, "content:routine"),
    case("unknown agent routine", "What time is it in Oslo?", R, "content:routine", agent="stranger"),
    case("greeting", "Hello!", R, "content:routine"),
    case("fenced code", "Why does this fail?\n```\nx = [1,2\n```", C, "code:fence"),
    case("python trace", TRACE, C, "code:stack_trace code:file_path"),
    case("java trace", JAVA_TRACE, C, "code:stack_trace code:file_path"),
    case("file path", "What does src/router/queue.ts export?", C, "code:file_path"),
    case("python def", "def add(a, b):\n    return a + b", C, "code:syntax"),
    case("js import", "import React from 'react'", C, "code:syntax"),
    case("shell command", "$ pip install litellm fails for me", C, "code:syntax"),
    case("refactor", "Please refactor the billing module", C, "code:vocabulary"),
    case("unit tests", "Write unit tests for the parser", C, "code:vocabulary"),
    case("bug", "There is a bug in the login flow", C, "code:vocabulary"),
    case("code beats reasoning", "Think step by step: why does this unit test fail?", C, "code:vocabulary"),
    case("step by step", "Think step by step about our hiring plan.", H, "reasoning:step_by_step"),
    case("tradeoffs", "Analyze the trade-offs of renting vs buying.", H, "reasoning:tradeoffs"),
    case("pros and cons", "Pros and cons of a four-day week?", H, "reasoning:tradeoffs"),
    case("proof", "Prove that there are infinitely many primes.", H, "reasoning:proof"),
    case("root cause", "What is the root cause of the outage in the report?", H, "reasoning:analysis"),
    case("reasoning effort", "Plan the offsite.", H, "reasoning:effort", reasoning_effort="high"),
    case("effort and ask", "Think hard.", H, "reasoning:effort reasoning:analysis", reasoning_effort="high"),
    case("low effort counts", "Plan the offsite.", H, "reasoning:effort", reasoning_effort="low"),
    case("no effort", "Plan the offsite.", R, "content:routine", reasoning_effort="none"),
    case("long prompt", LONG, H, "prompt:long"),
    case("long and step by step", "step by step " + LONG, H, "reasoning:step_by_step prompt:long"),
    case("prose with dotted words", "See e.g. the U.S. report, p. 4.", R, "content:routine"),
    case("prose like syntax", "Import duties rose.\nclass notes: bring a pen", R, "content:routine"),
    case("requested model routes as auto", "Hello", R, "content:routine", model="gpt-4o"),
    case("requested group keeps content tier", "Hello", R, "content:routine", model="code"),
]


@pytest.mark.parametrize(("headers", "body", "tier", "signals"), CASES)
def test_classify(
    directory: AgentDirectory,
    headers: dict[str, str],
    body: dict[str, Any],
    tier: Tier,
    signals: tuple[str, ...],
) -> None:
    decision = classify(identify(headers, body.get("model")), extract_features(body), directory)
    assert (decision.tier, decision.signals) == (tier, signals)
    assert decision.source == ("agent" if signals[0].startswith("agent:") else "content")
    if decision.source == "content":
        assert set(decision.signals) <= CONTENT_SIGNALS


def test_long_prompt_threshold_is_a_parameter(directory: AgentDirectory) -> None:
    features = extract_features(chat("x" * 400))
    identity = identify({}, "auto")
    assert classify(identity, features, directory).tier is Tier.R
    assert classify(identity, features, directory, long_prompt_tokens=100).signals == ("prompt:long",)


def test_a_long_message_is_scanned_at_its_head_and_tail() -> None:
    code = "\n```python\nprint(1)\n```\n"
    assert extract_features(chat(code + "a" * 40_000)).code_signals == ("code:fence",)
    assert extract_features(chat("a" * 40_000 + code)).code_signals == ("code:fence",)
    features = extract_features(chat("a" * 20_000 + code + "a" * 20_000))
    assert features.code_signals == ()
    assert features.last_user_chars > 40_000
