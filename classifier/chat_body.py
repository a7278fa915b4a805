"""Validation of incoming chat bodies: bad input is answered here, without a round trip to LiteLLM.

One schema, two validators: fastjsonschema (compiled to Python, about 2 us a body) decides on the hot
path; only a body it rejects goes through jsonschema, whose first error names the field for the reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastjsonschema
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from classifier.body_decode import judge_content_type
from classifier.nesting import MAX_JSON_DEPTH, may_be_too_deep, too_deep
from classifier.nulls import drop_optional_nulls
from torchrouter_core.errors import BadRequest, UnsupportedMediaType
from torchrouter_core.privileged import privileged_field

# A content part: OpenAI's part types, each carried in the field of its name (openai_chat_request.schema.json
# has the full shapes). Checked here because LiteLLM answers a malformed part with a 500, a 400 carrying its
# traceback, or a local provider failure that its fallbacks carry on to the paid cloud. The two rules the
# schema could only say with if/then (which fastjsonschema runs through exceptions, 15x slower a body) are in
# :func:`_check_parts`: the part's field is present, and a refusal part is in an assistant message.
_PART_FIELDS: dict[str, dict[str, Any]] = {
    "text": {"type": "string"},
    "refusal": {"type": "string"},
    "image_url": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}},
    "input_audio": {"type": "object", "required": ["data", "format"]},
    "file": {"type": "object"},
}
_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"enum": list(_PART_FIELDS)}, **_PART_FIELDS},
}

# Tools, the tool choice and the calls an assistant made: the fields LiteLLM and the providers read, with
# their types. Without them a malformed tool reached LiteLLM (a 500 for an invalid tool_choice) and a call
# whose arguments are an object failed on the local lane and was carried on to the cloud by a fallback.
# ``type`` is not required to be "function" (a provider may know other tool kinds); ``function`` is.
_FUNCTION_CALL = {
    "type": "object",
    "required": ["name", "arguments"],
    "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
}
_TOOL_CALL = {
    "type": "object",
    "required": ["function"],
    "properties": {"id": {"type": "string"}, "type": {"type": "string"}, "function": _FUNCTION_CALL},
}
_TOOL = {
    "type": "object",
    "required": ["function"],
    "properties": {
        "type": {"type": "string"},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
        },
    },
}
# A string (pattern applies to strings only) or an object naming a function (required/properties apply to
# objects only): one node, so a refusal names the exact field instead of "not valid under any of".
_TOOL_CHOICE = {
    "type": ["string", "object"],
    "pattern": "^(none|auto|required)$",
    "required": ["function"],
    "properties": {
        "type": {"type": "string"},
        "function": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
    },
}

# A bound on max_tokens / max_completion_tokens far above any model's output (a JSON number past 64 bits
# arrives as a float: 1e308 is an "integer" to JSON Schema, and its 309 digits ended up in an error message).
MAX_OUTPUT_TOKENS = 2**31 - 1

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": list(_ROLES)},
        "content": {"type": ["string", "array", "null"], "items": _PART},
        "name": {"type": "string"},
        "tool_calls": {"type": "array", "items": _TOOL_CALL},
        "tool_call_id": {"type": "string"},
    },
}

CHAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": {"type": "string", "maxLength": 256},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "stream": {"type": "boolean"},
        "stream_options": {"type": ["object", "null"]},
        "tools": {"type": "array", "items": _TOOL},
        "tool_choice": _TOOL_CHOICE,
        "max_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_OUTPUT_TOKENS},
        "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_OUTPUT_TOKENS},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 1},
        "reasoning_effort": {"type": ["string", "null"]},
    },
}

_VALIDATOR = Draft202012Validator(CHAT_SCHEMA)
_FAST = fastjsonschema.compile(CHAT_SCHEMA)

# The shape nearly every request has: plain-text messages and scalar options. A body of exactly that shape
# is valid under CHAT_SCHEMA by construction (each check below is that field's rule, or stricter), so the
# compiled schema (about 3 us even for a one-line turn) is skipped for it; anything else (content parts,
# tools, tool calls, a null, a float max_tokens, a bool where a number goes) takes the schema's path, which
# alone words the errors. tests/test_chat_body.py holds the two to agreeing on generated bodies.
_ROLE_SET = frozenset(_ROLES)
_PLAIN_MESSAGE_KEYS = frozenset({"role", "content"})


def _number_in(low: float, high: float) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        return (type(value) is float or type(value) is int) and low <= value <= high

    return check


_PLAIN_OPTIONS: dict[str, Callable[[object], bool]] = {
    "model": lambda v: type(v) is str and len(v) <= 256,
    "messages": lambda v: True,  # checked on its own, below
    "stream": lambda v: type(v) is bool,
    "max_tokens": lambda v: type(v) is int and 1 <= v <= MAX_OUTPUT_TOKENS,
    "max_completion_tokens": lambda v: type(v) is int and 1 <= v <= MAX_OUTPUT_TOKENS,
    "temperature": _number_in(0, 2),
    "top_p": _number_in(0, 1),
    "n": lambda v: type(v) is int and v == 1,
    "reasoning_effort": lambda v: type(v) is str,
    "stream_options": lambda v: type(v) is dict,
}
_OTHER_SCHEMA_FIELDS = frozenset(CHAT_SCHEMA["properties"]) - _PLAIN_OPTIONS.keys()  # tools, tool_choice


def _plain_body(body: dict[str, Any]) -> bool:
    """True only for a body of the common shape (see above); False says nothing about validity."""
    messages = body.get("messages")
    if type(messages) is not list or not messages or not _OTHER_SCHEMA_FIELDS.isdisjoint(body):
        return False
    for key, value in body.items():
        check = _PLAIN_OPTIONS.get(key)
        if check is not None and not check(value):
            return False
    for message in messages:
        if type(message) is not dict or not message.keys() <= _PLAIN_MESSAGE_KEYS:
            return False
        role = message.get("role")
        if type(role) is not str or role not in _ROLE_SET or type(message.get("content", "")) is not str:
            return False
    return True


def _where(error: ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "body"


def _deep(where: str) -> BadRequest:
    return BadRequest(
        f"{where} nests deeper than {MAX_JSON_DEPTH} levels; flatten it", param=where, code="nesting_too_deep"
    )


def parse_chat_body(raw: bytes, content_type: str | None = None) -> dict[str, Any]:
    """Parse and check a (decoded) chat body; optional fields sent as null are dropped
    (:mod:`classifier.nulls`). Raises BadRequest (400), or UnsupportedMediaType (415) for a body that is
    not JSON under a Content-Type that is not JSON either (:func:`body_decode.judge_content_type`)."""
    if not raw.strip():
        raise BadRequest("request body is empty; expected a JSON chat completion request")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc).lower() or "recursion" in str(exc).lower():  # orjson stops at 1024
            raise _deep("body") from None
        refused = judge_content_type(content_type)
        if refused is not None:
            raise UnsupportedMediaType(refused.message, code=refused.code, param="Content-Type") from None
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(body).__name__}")
    if may_be_too_deep(len(raw)) and (where := too_deep(body)) is not None:
        raise _deep(where)
    if b"null" in raw:  # most bodies have none: skip the walk
        drop_optional_nulls(body)
    valid = _plain_body(body)  # valid by construction, and without content parts to check
    if not valid:
        try:
            _FAST(body)
        except fastjsonschema.JsonSchemaException as exc:
            fast_message = str(exc)
        else:
            _check_parts(body["messages"])
            valid = True
    if valid:
        if (field := privileged_field(body)) is not None:
            raise BadRequest(
                f"{field} may not be sent in a request body: the router and LiteLLM's configuration set it",
                param=field,
                code="field_not_allowed",
            )
        return body
    errors = sorted(_VALIDATOR.iter_errors(body), key=lambda e: list(e.absolute_path))
    if not errors:  # the two libraries disagree: trust the rejection, say what the fast one saw
        raise BadRequest(fast_message.removeprefix("data.").removeprefix("data "))
    first = errors[0]
    raise BadRequest(f"{_where(first)}: {first.message}", param=_where(first))


def _check_parts(messages: list[dict[str, Any]]) -> None:
    """The content-part rules the schema leaves out (see ``_PART_FIELDS``), on a body the schema accepted:
    every part has a known ``type`` there. Raises BadRequest naming the part."""
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            kind = part["type"]
            if kind not in part:
                where = f"messages[{i}].content[{j}]"
                raise BadRequest(f"{where}: {kind!r} is a required property", param=where)
            if kind == "refusal" and message.get("role") != "assistant":
                where = f"messages[{i}].content[{j}].type"
                raise BadRequest(f"{where}: a 'refusal' part belongs in an assistant message", param=where)
