"""The classifier <-> hooks contract: each type round-trips through headers, and a missing or malformed
value is a logged problem and a missing field, never an exception (table-driven)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from multidict import CIMultiDict

from capability_matrix import WarmState
from torchrouter_core import contract
from torchrouter_core.contract import HostReport, RouteReport, RouteRequest, decode_needs, encode_needs
from torchrouter_core.needs import output_tokens, request_needs
from torchrouter_core.ranker import RequestNeeds

Problems = list[tuple[str, str, str]]


def collect() -> tuple[Problems, contract.Problem]:
    seen: Problems = []
    return seen, lambda header, value, why: seen.append((header, value, why))


# --- round trips ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "request_",
    [
        RouteRequest(request_id="rq-1", group="balanced"),
        RouteRequest(
            request_id="0f3c2a",
            group="code",
            tier="C",
            agent_id="codex-runner",
            needs=RequestNeeds(prompt_tokens=1234, max_output_tokens=512, needs_tools=True),
            route=("code", "balanced", "cloud-code"),
            hops=2,
        ),
        RouteRequest(request_id="x", group="fast-chat", tier="R", needs=RequestNeeds()),
        RouteRequest(
            request_id="img",
            group="cloud-balanced",
            needs=RequestNeeds(prompt_tokens=9, modalities=frozenset({"text", "image", "file"})),
        ),
    ],
)
def test_route_request_round_trips(request_: RouteRequest) -> None:
    problems, problem = collect()
    headers = request_.to_headers()
    assert headers[contract.VERSION_HEADER] == str(contract.PROTOCOL_VERSION)
    decoded = RouteRequest.from_headers(headers, default_request_id="-", default_group="-", problem=problem)
    assert decoded == request_ and problems == []


@pytest.mark.parametrize(
    "report",
    [
        RouteReport(),
        RouteReport(
            deployment="matthew-100.86.174.11/ollama/qwen3:8b",
            warm_state=WarmState.HOT,
            score_ms=0.125,
            auth_lockouts=frozenset(
                {"cloud-api.example/openai/gpt-4o-mini", "cloud-api.example/openai/gpt-4o"}
            ),
            daily_spend_usd=0.01234567,
            hook_errors=3,
        ),
        RouteReport(auth_lockouts=frozenset(), daily_spend_usd=0.0, hook_errors=0),  # reported, and empty
        RouteReport(no_candidate="context_window,modality:image"),
        RouteReport(no_candidate="lockout:auth"),
        RouteReport(degraded=("spend_book:ConnectionError", "vram_ledger_reserve:TimeoutError")),
        RouteReport(degraded=(), own={}),  # every backend answers; the request holds nothing
        RouteReport(ledger={"h1": HostReport(6.5, 2, 1, 3)}, own={"h1": HostReport(6.5, 1, 1, 1)}),
    ],
)
def test_route_report_round_trips(report: RouteReport) -> None:
    problems, problem = collect()
    # The classifier reads an aiohttp response's headers: a case-insensitive multidict.
    headers = CIMultiDict({k.title(): v for k, v in report.to_headers().items()})
    assert RouteReport.from_headers(headers, problem=problem) == report and problems == []


def test_report_reads_litellms_fallback_count_and_model_id() -> None:
    headers = {"x-litellm-attempted-fallbacks": "2", "x-litellm-model-id": "cloud/openai/gpt"}
    problems, problem = collect()
    report = RouteReport.from_headers(headers, problem=problem)
    assert (report.fallbacks, report.deployment) == (2, "cloud/openai/gpt") and problems == []
    ours = {**headers, **RouteReport(deployment="box/ollama/m").to_headers()}
    assert RouteReport.from_headers(ours).deployment == "box/ollama/m"  # the hooks' name wins


# --- tolerance --------------------------------------------------------------------------------------------
GOOD_REQUEST = RouteRequest(
    request_id="rq",
    group="balanced",
    tier="H",
    agent_id="a",
    needs=RequestNeeds(1, 2, True),
    route=("balanced",),
).to_headers()


@pytest.mark.parametrize(
    ("header", "value", "field", "expected"),
    [
        (contract.REQUEST_ID_HEADER, "has space", "request_id", "call-id"),
        (contract.REQUEST_ID_HEADER, "x" * 300, "request_id", "call-id"),
        (contract.GROUP_HEADER, "bad,group", "group", "asked-group"),
        (contract.TIER_HEADER, "X", "tier", None),
        (contract.AGENT_HEADER, "a\tb", "agent_id", None),
        (contract.NEEDS_HEADER, "prompt_tokens=1", "needs", None),
        (contract.NEEDS_HEADER, "prompt_tokens=-1;max_output_tokens=2;tools=1", "needs", None),
        (contract.NEEDS_HEADER, "prompt_tokens=1;max_output_tokens=2;tools=yes", "needs", None),
        (contract.NEEDS_HEADER, "garbage", "needs", None),
        (contract.NEEDS_HEADER, "prompt_tokens=١٢;max_output_tokens=2;tools=1", "needs", None),  # not ASCII
        (contract.NEEDS_HEADER, "prompt_tokens=1;max_output_tokens=0;tools=1;modalities=x", "needs", None),
        (contract.ROUTE_HEADER, "a,,b", "route", ()),
        (contract.ROUTE_HEADER, ",".join(["g"] * 17), "route", ()),
    ],
)
def test_a_malformed_request_value_is_logged_and_missing(
    header: str, value: str, field: str, expected: Any
) -> None:
    problems, problem = collect()
    decoded = RouteRequest.from_headers(
        {**GOOD_REQUEST, header: value},
        default_request_id="call-id",
        default_group="asked-group",
        problem=problem,
    )
    assert getattr(decoded, field) == expected
    assert [p[0] for p in problems] == [header]


@pytest.mark.parametrize(
    ("header", "value", "field", "expected"),
    [
        (contract.SCORE_MS_HEADER, "fast", "score_ms", None),
        (contract.SCORE_MS_HEADER, "nan", "score_ms", None),
        (contract.SCORE_MS_HEADER, "-1", "score_ms", None),
        (contract.DAILY_SPEND_HEADER, "inf", "daily_spend_usd", None),
        (contract.HOOK_ERRORS_HEADER, "1.5", "hook_errors", None),
        (contract.HOOK_ERRORS_HEADER, "٣", "hook_errors", None),  # a non-ASCII digit
        (contract.WARM_STATE_HEADER, "lukewarm", "warm_state", None),
        (contract.AUTH_LOCKOUTS_HEADER, "a b,c", "auth_lockouts", None),
        (contract.DEPLOYMENT_HEADER, "no spaces please", "deployment", None),
        (contract.LITELLM_FALLBACKS_HEADER, "many", "fallbacks", 0),
        (contract.NO_CANDIDATE_HEADER, "Context Window", "no_candidate", None),
        (contract.NO_CANDIDATE_HEADER, "a,,b", "no_candidate", None),
    ],
)
def test_a_malformed_report_value_is_logged_and_missing(
    header: str, value: str, field: str, expected: Any
) -> None:
    problems, problem = collect()
    base = RouteReport(hook_errors=1).to_headers()
    report = RouteReport.from_headers({**base, header: value}, problem=problem)
    assert getattr(report, field) == expected
    assert [p[0] for p in problems] == [header]


def test_the_default_problem_handler_logs_one_line_naming_the_header(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="torchrouter.contract"):
        report = RouteReport.from_headers({**RouteReport().to_headers(), contract.HOOK_ERRORS_HEADER: "lots"})
    assert report.hook_errors is None
    assert [r.getMessage() for r in caplog.records] == [
        "contract: header x-torchrouter-hook-errors='lots' is not a non-negative integer; treated as missing"
    ]


def test_versions() -> None:
    problems, problem = collect()
    # A response the hooks never saw (LiteLLM refused the key, say) carries none of ours: nothing to say.
    assert RouteReport.from_headers({"content-type": "application/json"}, problem=problem) == RouteReport()
    # A request that bypassed the classifier: the defaults stand in, quietly.
    bare = RouteRequest.from_headers({}, default_request_id="c", default_group="g", problem=problem)
    assert bare == RouteRequest(request_id="c", group="g") and problems == []
    # Ours without a version, or another version: said once, and the fields version 1 knows are read.
    unversioned = {contract.HOOK_ERRORS_HEADER: "2"}
    assert RouteReport.from_headers(unversioned, problem=problem).hook_errors == 2
    future = {**GOOD_REQUEST, contract.VERSION_HEADER: "2"}
    assert (
        RouteRequest.from_headers(future, default_request_id="", default_group="", problem=problem).tier
        == "H"
    )
    assert [p[0] for p in problems] == [contract.VERSION_HEADER, contract.VERSION_HEADER]


# --- request needs: worked out once, by one rule ----------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, None),
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 50, "max_tokens": 100}, 50),  # the current name wins
        ({"max_completion_tokens": 0, "max_tokens": 100}, 100),
        ({"max_completion_tokens": None, "max_tokens": 7}, 7),
        ({"max_tokens": True}, None),
        ({"max_tokens": -5}, None),
        ({"max_tokens": "100"}, None),
    ],
)
def test_output_tokens_precedence(body: dict[str, Any], expected: int | None) -> None:
    assert output_tokens(body) == expected


@pytest.mark.parametrize(
    ("body", "needs"),
    [
        ({"messages": [{"role": "user", "content": "abcd" * 10}]}, RequestNeeds(10, 0, False)),
        ({"messages": [], "tools": [{"type": "function", "function": {"name": "f"}}]}, None),
        ({"messages": [], "functions": [{"name": "f", "parameters": {}}]}, None),  # legacy name counts
        ({"messages": [], "tools": []}, RequestNeeds(0, 0, False)),
        ({"messages": [], "max_completion_tokens": 9, "max_tokens": 99}, RequestNeeds(0, 9, False)),
    ],
)
def test_request_needs(body: dict[str, Any], needs: RequestNeeds | None) -> None:
    got = request_needs(body)
    if needs is None:
        assert got.needs_tools and got.prompt_tokens > 0
    else:
        assert got == needs


def test_needs_encoding_round_trips() -> None:
    needs = RequestNeeds(prompt_tokens=10**9, max_output_tokens=0, needs_tools=False)
    assert decode_needs(encode_needs(needs)) == needs
    # Text only (almost every request) is not written; a version-1 peer without the field reads text only.
    assert "modalities" not in encode_needs(needs)
    audio = RequestNeeds(modalities=frozenset({"text", "audio"}))
    assert encode_needs(audio).endswith(";modalities=audio+text")
    assert decode_needs(encode_needs(audio)) == audio


# --- the stream report: the report again as a stream's first event ---------------------------------------
def test_the_stream_report_carries_the_whole_report() -> None:
    report = RouteReport(
        deployment="openai-api/openai/gpt-4o-mini",
        warm_state=WarmState.WARM,
        score_ms=0.25,
        daily_spend_usd=0.0001,
        groups=("fast-chat", "cloud-fast"),
        breakers=frozenset({"matthew-100.86.174.11/ollama/qwen3:8b"}),
    )
    event = contract.encode_stream_report(report)
    assert event.startswith(b": ") and event.endswith(b"\n\n") and event.count(b"\n") == 2  # one SSE comment
    problems, problem = collect()
    headers = contract.decode_stream_report(event, problem=problem)
    assert headers is not None and problems == []
    assert RouteReport.from_headers(CIMultiDict(headers)) == report


@pytest.mark.parametrize(
    ("event", "problem_seen"),
    [
        (b'data: {"id": "chatcmpl-1"}', False),  # an ordinary first chunk
        (b": keep-alive", False),  # another comment
        (b": x-torchrouter-report {not json", True),
        (b': x-torchrouter-report ["x-torchrouter-deployment"]', True),
        (b': x-torchrouter-report {"x-torchrouter-score-ms": 1.5}', True),  # values are strings
    ],
)
def test_anything_else_is_not_a_stream_report(event: bytes, problem_seen: bool) -> None:
    problems, problem = collect()
    assert contract.decode_stream_report(event, problem=problem) is None
    assert bool(problems) == problem_seen, problems


def test_a_stream_report_sets_only_our_headers() -> None:
    event = b': x-torchrouter-report {"X-TorchRouter-Deployment": "a/b/c", "Content-Type": "text/html"}'
    assert contract.decode_stream_report(event) == {"x-torchrouter-deployment": "a/b/c"}
