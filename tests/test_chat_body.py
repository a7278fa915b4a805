"""The chat body's plain-shape shortcut (classifier.chat_body._plain_body) against the compiled schema.

The shortcut skips the schema for the common shape; it must never pass a body the schema refuses, and the
common shapes must really take it. Bodies are generated from a fixed seed around the common shape: valid
and invalid values for every schema field, messages with odd roles, content kinds and extra keys.
"""

from __future__ import annotations

import random
from typing import Any

import fastjsonschema
import orjson
import pytest

from classifier.chat_body import _FAST, _plain_body, parse_chat_body
from torchrouter_core.errors import BadRequest

SCALARS: list[Any] = [None, True, False, 0, 1, 2, -1, 8, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5, 5e6]
SCALARS += ["", "x", [], {}]
OPTIONS: dict[str, list[Any]] = {
    "model": [*SCALARS, "auto", "fast-chat", "a" * 256, "a" * 257, "webmaster:auto"],
    "stream": SCALARS,
    "stream_options": [*SCALARS, {"include_usage": True}],
    "max_tokens": SCALARS,
    "max_completion_tokens": SCALARS,
    "temperature": SCALARS,
    "top_p": SCALARS,
    "n": SCALARS,
    "reasoning_effort": [*SCALARS, "low", "high"],
    "tools": [[], [{"type": "function", "function": {"name": "f"}}], ["f"], None],
    "tool_choice": ["auto", "none", "bogus", {"type": "function", "function": {"name": "f"}}, None, 3],
    "user": SCALARS,  # not in the schema: anything goes
}
ROLES: list[Any] = ["system", "developer", "user", "assistant", "tool", "function"]
ROLES += ["bot", "", None, 1, ["user"]]
CONTENTS: list[Any] = [
    "hello",
    "",
    None,
    1,
    {"text": "x"},
    [],
    [{"type": "text", "text": "x"}],
    [{"type": "image_url", "image_url": {"url": "data:x"}}],
    [{"type": "text"}],
    [{"type": "refusal", "refusal": "no"}],
]
EXTRAS: dict[str, list[Any]] = {
    "name": ["bob", 1, None],
    "tool_call_id": ["c1", 2, None],
    "tool_calls": [[], [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}], "x"],
    "refusal": [None, "no"],
}


def random_message(rng: random.Random) -> Any:
    if rng.random() < 0.03:
        return rng.choice(["user", 1, None, []])
    message: dict[str, Any] = {}
    if rng.random() < 0.95:
        message["role"] = rng.choice(ROLES) if rng.random() < 0.3 else "user"
    if rng.random() < 0.95:
        message["content"] = rng.choice(CONTENTS) if rng.random() < 0.3 else "hello"
    for key, values in EXTRAS.items():
        if rng.random() < 0.08:
            message[key] = rng.choice(values)
    return message


# A value the common shape has, per option: most generated bodies are near the common shape.
USUAL: dict[str, Any] = {
    "model": "auto",
    "stream": False,
    "stream_options": {"include_usage": True},
    "max_tokens": 8,
    "max_completion_tokens": 64,
    "temperature": 0.7,
    "top_p": 1,
    "n": 1,
    "reasoning_effort": "low",
    "user": "u",
}


def random_body(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, values in OPTIONS.items():
        if rng.random() < 0.25:
            odd = key not in USUAL or rng.random() < 0.15
            body[key] = rng.choice(values) if odd else USUAL[key]
    if rng.random() < 0.97:
        roll = rng.random()
        if roll < 0.03:
            body["messages"] = rng.choice([[], "hi", None, {}])
        else:
            body["messages"] = [random_message(rng) for _ in range(rng.randint(1, 4))]
    return body


def schema_accepts(body: dict[str, Any]) -> bool:
    try:
        _FAST(body)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def test_the_shortcut_never_passes_a_body_the_schema_refuses() -> None:
    rng = random.Random(20261130)
    taken = refused_by_schema = 0
    for _ in range(20_000):
        body = random_body(rng)
        if _plain_body(body):
            taken += 1
            assert schema_accepts(body), body
        elif not schema_accepts(body):
            refused_by_schema += 1
    # The generator reaches both sides, so the property above was really exercised.
    assert taken > 1_000 and refused_by_schema > 1_000


@pytest.mark.parametrize(
    "body",
    [
        {"model": "auto", "messages": [{"role": "user", "content": "Status in one line?"}], "max_tokens": 8},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
        {"model": "fast-chat", "messages": [{"role": "user", "content": "x"}], "stream": True, "top_p": 0.9},
        {"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}, "n": 1},
    ],
)
def test_common_bodies_take_the_shortcut(body: dict[str, Any]) -> None:
    assert _plain_body(body)
    assert parse_chat_body(orjson.dumps(body)) == body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": True}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "model": "a" * 257}, "model"),
        ({"messages": []}, "messages"),
    ],
)
def test_near_misses_are_worded_by_the_schema(body: dict[str, Any], message: str) -> None:
    assert not _plain_body(body)
    with pytest.raises(BadRequest) as caught:
        parse_chat_body(orjson.dumps(body))
    assert caught.value.param == message


@pytest.mark.parametrize("field", ["api_base", "metadata"])
def test_the_shortcut_still_refuses_privileged_fields(field: str) -> None:
    value: object = "http://elsewhere" if field == "api_base" else {"api_base": "http://elsewhere"}
    body = {"messages": [{"role": "user", "content": "x"}], field: value}
    assert _plain_body(body)  # the shape is plain; the field is what is refused
    with pytest.raises(BadRequest) as caught:
        parse_chat_body(orjson.dumps(body))
    assert caught.value.code == "field_not_allowed"
