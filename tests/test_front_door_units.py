"""Unit tests of the front door's pure modules: nulls, nesting, body decoding, aliases, feasibility.

The ranker's modality filter is tested through the real stack (test_conformance_input): importing
``litellm_hooks`` loads LiteLLM.
"""

from __future__ import annotations

import dataclasses
import gzip
import zlib
from typing import Any

import brotli
import orjson
import pytest
from backports import zstd
from multidict import CIMultiDict

from capability_matrix import DEFAULT_MATRIX_PATH, load_matrix
from classifier.body_decode import (
    DecodedTooLarge,
    NotEncodedAs,
    UnknownEncoding,
    decode_body,
    judge_content_type,
    parse_content_encoding,
)
from classifier.chat_body import parse_chat_body
from classifier.nesting import MAX_JSON_DEPTH, may_be_too_deep, too_deep
from classifier.nulls import drop_optional_nulls
from torchrouter_core.aliases import (
    AliasError,
    AliasMap,
    UnknownModel,
    parse_aliases,
    parse_aliases_yaml,
    resolve_model,
)
from torchrouter_core.errors import BadRequest
from torchrouter_core.feasibility import Impossible, explain_no_deployment, feasible_steps
from torchrouter_core.identity import IdentityError, identify
from torchrouter_core.needs import input_modalities, output_tokens, request_needs
from torchrouter_core.privileged import LITELLM_BANNED, NESTED, PRIVILEGED
from torchrouter_core.ranker.interfaces import RequestNeeds
from torchrouter_core.routing import LadderStep
from torchrouter_core.tiering import approx_prompt_tokens

MATRIX = load_matrix(DEFAULT_MATRIX_PATH)


# --- nulls --------------------------------------------------------------------------------------------------
def test_optional_nulls_are_dropped_at_every_level_and_meaningful_ones_kept() -> None:
    body: dict[str, Any] = {
        "model": "auto",
        "tools": None,
        "stream": None,
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": None}}]},
            {"role": "assistant", "content": None, "tool_calls": None, "refusal": None, "audio": None},
            {"role": "tool", "content": "x", "tool_call_id": None},  # required: left for validation
        ],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "description": None}},
        "x-provider-extra": None,  # not in the schema: passes through as sent
    }
    tool = {
        "type": "function",
        "function": {"name": "f", "description": None, "parameters": {"default": None}},
    }
    body["functions"] = [tool["function"]]
    dropped = drop_optional_nulls(body)
    assert sorted(dropped) == sorted(
        [
            "tools",
            "stream",
            "messages[0].content[0].image_url.detail",
            "messages[1].tool_calls",
            "messages[1].refusal",
            "messages[1].audio",
            "response_format.json_schema.description",
            "functions[0].description",
        ]
    )
    assert body["messages"][1] == {"role": "assistant", "content": None}
    assert body["messages"][2]["tool_call_id"] is None
    assert body["functions"][0]["parameters"] == {"default": None}  # the client's own schema
    assert "x-provider-extra" in body


def test_null_message_fields_of_another_role_are_dropped_too() -> None:
    body: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": "hi", "tool_calls": None, "tool_call_id": None, "name": None},
            {"role": "tool", "content": "42", "tool_call_id": "call_1", "name": None},
            {"role": "system", "content": "s", "x-extra": None},
        ]
    }
    dropped = drop_optional_nulls(body)
    assert "messages[0].tool_calls" in dropped and "messages[0].tool_call_id" in dropped
    assert body["messages"][0] == {"role": "user", "content": "hi"}
    assert body["messages"][1] == {"role": "tool", "content": "42", "tool_call_id": "call_1"}
    assert body["messages"][2] == {"role": "system", "content": "s", "x-extra": None}  # not a message field


def test_a_malformed_body_is_left_for_validation() -> None:
    bodies: list[dict[str, Any]] = [
        {"messages": "hi", "tools": None},
        {"messages": [3, None, {"role": 5, "name": None}]},
    ]
    assert [drop_optional_nulls(b) for b in bodies] == [["tools"], []]
    assert drop_optional_nulls({"messages": [{"role": "wizard", "name": None}]}) == []


# --- nesting ------------------------------------------------------------------------------------------------
def nest(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels - 1):
        value = [value]
    return value


def test_nesting_bound() -> None:
    assert too_deep({"a": nest(MAX_JSON_DEPTH)}) is None  # the body object is level 1
    assert too_deep({"tools": nest(MAX_JSON_DEPTH + 1)}) == "tools"
    assert too_deep(nest(100_000)) == "body"  # iterative: no RecursionError
    assert not may_be_too_deep(200) and may_be_too_deep(10_000)


def test_the_token_estimate_walks_deep_tool_schemas_without_recursion() -> None:
    schema: Any = {"type": "string"}
    for _ in range(5000):
        schema = {"properties": {"p": schema}}
    assert approx_prompt_tokens([], [schema]) > 5000


# --- body decoding ------------------------------------------------------------------------------------------
BODY = b'{"messages": [{"role": "user", "content": "hi"}]}'


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("gzip", gzip.compress(BODY)),
        ("GZIP", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),
        ("deflate", zlib.compress(BODY)[2:-4]),
        ("br", brotli.compress(BODY)),
        ("zstd", zstd.compress(BODY)),
        ("zstd", zstd.compress(BODY[:10]) + zstd.compress(BODY[10:])),  # two frames
        ("gzip", gzip.compress(BODY[:10]) + gzip.compress(BODY[10:])),  # two members
        ("gzip, zstd", zstd.compress(gzip.compress(BODY))),
        ("identity", BODY),
        (None, BODY),
    ],
)
def test_decode(encoding: str | None, data: bytes) -> None:
    assert decode_body(data, encoding, max_bytes=1000) == BODY


@pytest.mark.parametrize(
    ("encoding", "data", "error"),
    [
        ("gzip", BODY, NotEncodedAs),
        ("gzip", gzip.compress(BODY) + b"junk", NotEncodedAs),
        ("deflate", b"not-deflate", NotEncodedAs),
        ("br", b"\xff\xff\xff", NotEncodedAs),
        ("zstd", zstd.compress(BODY)[:-2], NotEncodedAs),
        ("compress", BODY, UnknownEncoding),
        ("gzip", gzip.compress(b"0" * 10_000_000), DecodedTooLarge),
        ("deflate", zlib.compress(b"0" * 10_000_000), DecodedTooLarge),
        ("br", brotli.compress(b"0" * 10_000_000), DecodedTooLarge),
        ("zstd", zstd.compress(b"0" * 10_000_000), DecodedTooLarge),
    ],
)
def test_decode_errors(encoding: str, data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_body(data, encoding, max_bytes=1000)


def test_content_encoding_and_type_parsing() -> None:
    assert parse_content_encoding(" gzip , identity, x-gzip ") == ["gzip", "gzip"]
    for ok in (None, "", "application/json", "application/vnd.api+json; charset=utf-8"):
        assert judge_content_type(ok) is None
    refused = judge_content_type("text/plain; charset=utf-8")
    assert refused is not None and refused.status == 415 and "text/plain" in refused.message


# --- model names --------------------------------------------------------------------------------------------
ALIASES = AliasMap({"gpt-4o": "balanced", "gpt-4o-mini": "fast-chat"})
AGENTS = ("webmaster", "inbox-triage")


@pytest.mark.parametrize(
    ("model", "resolved"),
    [
        ("auto", "auto"),
        ("GPT-4o", "balanced"),
        ("code", "code"),
        ("webmaster:balanced", "webmaster:balanced"),
        ("new-agent:auto", "new-agent:auto"),
        (None, None),
        (5, 5),
    ],
)
def test_resolve_model(model: object, resolved: object) -> None:
    assert resolve_model(model, ALIASES, AGENTS) == resolved


@pytest.mark.parametrize(
    ("model", "suggestion"),
    [
        ("gpt-4", "gpt-4o"),
        ("webmaster", "webmaster:auto"),
        ("webmaster:balance", "webmaster:balanced"),
        ("agent:no-such-group", None),
        ("qwen3:8b", None),
    ],
)
def test_unknown_models(model: str, suggestion: str | None) -> None:
    with pytest.raises(UnknownModel) as caught:
        resolve_model(model, ALIASES, AGENTS)
    assert caught.value.suggestion == suggestion
    assert "gpt-4o" in str(caught.value) and "cloud-fast" in str(caught.value)


@pytest.mark.parametrize(
    ("doc", "mentions"),
    [
        ({"aliases": {"gpt-4o": "nowhere"}}, "target"),
        ({"aliases": {"auto": "balanced"}}, "already a model name"),
        ({"aliases": {"a:b": "balanced"}}, "':'"),
        ({"aliases": {"X": "code", "x": "code"}}, "twice"),
        ({"alias": {}}, "unknown top-level"),
        ([1], "mapping"),
    ],
)
def test_bad_aliases_files(doc: object, mentions: str) -> None:
    with pytest.raises(AliasError, match=mentions):
        parse_aliases(doc)


def test_the_shipped_aliases_parse() -> None:
    from classifier.settings import DEFAULT_ALIASES_PATH

    aliases = parse_aliases_yaml(DEFAULT_ALIASES_PATH.read_text())
    assert aliases.target("gpt-4o") == "balanced"


def test_agent_header_errors_name_the_header() -> None:
    with pytest.raises(IdentityError) as caught:
        identify({"X-Agent-Id": "bad id!"}, "auto")
    assert caught.value.param == "X-Agent-Id"
    two = CIMultiDict([("X-Agent-Id", "a"), ("X-Agent-Id", "b")])
    with pytest.raises(IdentityError) as caught:
        identify(two, "auto")
    assert caught.value.param == "X-Agent-Id"
    same = CIMultiDict([("X-Agent-Id", "a"), ("x-agent-id", " A ")])
    assert identify(same, "auto").agent_id == "a"
    with pytest.raises(IdentityError) as caught:
        identify({}, 7)
    assert caught.value.param == "model"


# --- feasibility --------------------------------------------------------------------------------------------
H_LADDER = (
    LadderStep("balanced", "primary"),
    LadderStep("code", "local"),
    LadderStep("cloud-balanced", "cloud"),
)


def test_modalities_of_messages() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "weird"}],
        },
        {"role": "user", "content": [{"type": "input_audio"}, {"type": "image_url"}]},
    ]
    modalities, where = input_modalities(messages)
    assert modalities == {"text", "image", "audio"}
    assert where["image"] == "messages[1].content[1]" and where["audio"] == "messages[2].content[0]"


def test_steps_that_cannot_carry_are_dropped() -> None:
    image = RequestNeeds(modalities=frozenset({"text", "image"}))
    kept = feasible_steps(H_LADDER, MATRIX, image)
    assert [s.group for s in kept.steps] == ["cloud-balanced"]
    assert kept.dropped == {"balanced": "modality:image", "code": "modality:image"}
    assert feasible_steps(H_LADDER, MATRIX, RequestNeeds()).steps == H_LADDER


@pytest.mark.parametrize(
    ("needs", "code", "mentions"),
    [
        (RequestNeeds(modalities=frozenset({"text", "audio"})), "unsupported_modality", "audio input"),
        (RequestNeeds(max_output_tokens=10_000_000), "context_length_exceeded", "1,047,576"),
        (RequestNeeds(prompt_tokens=2_000_000), "context_length_exceeded", "prompt about 2,000,000"),
    ],
)
def test_no_step_left_is_a_400_naming_the_limit(needs: RequestNeeds, code: str, mentions: str) -> None:
    with pytest.raises(Impossible) as caught:
        feasible_steps(H_LADDER, MATRIX, needs)
    assert caught.value.code == code and mentions in caught.value.message


def test_tools_on_a_route_without_tool_support() -> None:
    no_tools = {k: dataclasses.replace(p, supports_tools=False) for k, p in MATRIX.profiles.items()}
    matrix = dataclasses.replace(MATRIX, profiles=no_tools)
    with pytest.raises(Impossible) as caught:
        feasible_steps(H_LADDER, matrix, RequestNeeds(needs_tools=True))
    assert caught.value.code == "tools_not_supported" and caught.value.param == "tools"


def test_request_needs_reads_the_body() -> None:
    body = {
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "max_completion_tokens": 50,
    }
    needs = request_needs(body)
    assert needs.needs_tools and needs.max_output_tokens == 50 and "image" in needs.modalities


def test_the_prompt_estimate_counts_what_the_assistant_called() -> None:
    call = {"name": "write_file", "arguments": "x" * 4000}
    plain = [{"role": "assistant", "content": None}]
    assert request_needs({"messages": plain}).prompt_tokens == 0
    with_tools = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": call}],
        }
    ]
    assert request_needs({"messages": with_tools}).prompt_tokens >= 1000
    legacy = [{"role": "assistant", "content": None, "function_call": call}]
    assert request_needs({"messages": legacy}).prompt_tokens >= 1000


@pytest.mark.parametrize(
    ("field", "value", "tokens"),
    [
        ("max_tokens", 50, 50),
        ("max_tokens", 50.0, 50),  # JSON Schema's (and the validator's) integer: a float with no fraction
        ("max_completion_tokens", 1e30, int(1e30)),  # orjson parses an integer past 64 bits as a float
        ("max_tokens", 5.5, None),  # not an integer: validation refuses it; never a size
        ("max_tokens", 0.0, None),
        ("max_tokens", True, None),
    ],
)
def test_output_tokens_reads_every_integer_the_validator_lets_through(
    field: str, value: object, tokens: int | None
) -> None:
    assert output_tokens({field: value}) == tokens
    assert request_needs({"messages": [], field: value}).max_output_tokens == (tokens or 0)


@pytest.mark.parametrize(
    ("header", "status", "retry_after"),
    [
        ("context_window", 400, None),
        ("modality:image,context_window", 400, None),
        ("lockout:auth", 503, None),
        ("lockout:auth,context_window", 503, "5"),
        (None, 503, "7"),
    ],
)
def test_litellm_no_deployments_explained(header: str | None, status: int, retry_after: str | None) -> None:
    verdict = explain_no_deployment("balanced", header, "7" if header is None else None)
    assert verdict.status == status and verdict.retry_after == retry_after


def test_matrix_modalities_default_and_validation() -> None:
    from capability_matrix import MatrixError
    from capability_matrix.loader import parse_matrix_text
    from classifier.settings import PACKAGE_ROOT

    text = (PACKAGE_ROOT / "capability_matrix" / "matrix.yaml").read_text()
    assert MATRIX.profiles["openai-api/openai/gpt-4o"].input_modalities == {"text", "image", "file"}
    assert all(p.input_modalities == {"text"} for p in MATRIX.profiles.values() if p.is_local)
    stripped = parse_matrix_text(text.replace("    input_modalities: [text, image, file]", "    # none"))
    assert stripped.profiles["openai-api/openai/gpt-4o"].input_modalities == {"text"}  # absent: text only
    with pytest.raises(MatrixError, match="input_modalities"):
        parse_matrix_text(
            text.replace("input_modalities: [text, image, file]", "input_modalities: [smell]", 1)
        )


# --- privileged body fields and bounded numbers ----------------------------------------------------------
def _chat(**fields: Any) -> bytes:
    return orjson.dumps({"messages": [{"role": "user", "content": "hi"}], **fields})


def test_the_privileged_list_covers_every_field_litellm_refuses() -> None:
    from litellm.proxy.auth.auth_utils import _BANNED_REQUEST_BODY_PARAMS, _NESTED_METADATA_KEYS

    assert set(_BANNED_REQUEST_BODY_PARAMS) <= LITELLM_BANNED, (
        set(_BANNED_REQUEST_BODY_PARAMS) - LITELLM_BANNED
    )
    assert set(_NESTED_METADATA_KEYS) <= set(NESTED)


@pytest.mark.parametrize("field", sorted(PRIVILEGED))
def test_every_privileged_field_is_a_400_naming_it(field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_chat_body(_chat(**{field: "http://127.0.0.1:9"}))
    assert caught.value.param == field and caught.value.code == "field_not_allowed"
    assert field in caught.value.message


@pytest.mark.parametrize("container", NESTED)
@pytest.mark.parametrize("as_string", [False, True])
def test_a_privileged_field_one_level_down_is_refused_too(container: str, as_string: bool) -> None:
    inner: Any = {"api_base": "http://127.0.0.1:9", "user": "x"}
    with pytest.raises(BadRequest) as caught:
        parse_chat_body(_chat(**{container: orjson.dumps(inner).decode() if as_string else inner}))
    assert caught.value.param == f"{container}.api_base"


def test_ordinary_fields_and_metadata_pass() -> None:
    body = parse_chat_body(_chat(metadata={"user": "x"}, user="u", seed=3, extra_body={"top_k": 3}))
    assert body["metadata"] == {"user": "x"}


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("raw", [b"1e308", b"1e20", b"9" * 400, b"2147483648"])
def test_a_huge_token_count_is_refused_in_a_short_message(field: str, raw: bytes) -> None:
    body = b'{"messages":[{"role":"user","content":"hi"}],"%s":%s}' % (field.encode(), raw)
    if len(raw) > 300:  # past a double: orjson refuses the number itself
        with pytest.raises(BadRequest) as caught:
            parse_chat_body(body)
    else:
        with pytest.raises(BadRequest) as caught:
            parse_chat_body(body)
        assert caught.value.param == field
    assert len(caught.value.message) < 200, caught.value.message


@pytest.mark.parametrize("raw", [b"1.5", b"0", b"-1e308"])
def test_a_non_integral_or_non_positive_token_count_is_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_chat_body(b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":%s}' % raw)
    assert caught.value.param == "max_tokens" and len(caught.value.message) < 200
